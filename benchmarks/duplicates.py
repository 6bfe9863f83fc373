"""Duplicate listings for docs/quality.md: python -m benchmarks.duplicates [--copies 500] [--no-write]

On fashion-images (2,906 products), `--copies` catalog photos edited the ways a re-listing edits them
(benchmarks/dupedits.py: resized, re-compressed, lightly cropped, watermarked, re-coloured by a few percent;
seed 0, the same number of each) are added to the catalog as new listings, with the original's metadata, and
so are hard negatives that must not be grouped: 3 phone photos each of 40 grocery-store products (the same
product from other angles). The catalog is indexed once with the indexer (efficientnet-lite0; the vectors of
the unedited photos from the embedding cache), which groups it (shoplens.index.duplicates). Reported:

- recall: edited copies found in their original's group;
- precision over the pairs the grouping put together that hold an edited copy: right when the other listing
  is its original, another copy of it, or a byte-identical copy of the original; pairs with a listing of the
  same title and colour label (the catalog's own likely duplicates) are counted apart, as "same-title";
- on the unedited catalog: byte-identical pairs grouped, and hard negatives grouped: the same model in another
  colour (titles equal but for colour words, colour labels and the photos' own dominant colour different),
  the same product from another angle (grocery photos above), two products on the same plain backdrop (for
  each product its most similar photo of another product type, the 500 most similar such pairs);
- the cost: grouping's CPU seconds against an indexing run's (photos encoded here, scaled to the catalog).

Side by side in the same run: `imagehash`'s pHash with imagededup's default rule (Hamming distance <= 10,
groups as connected pairs over all pairs). imagededup itself is not installed: its PyPI wheel pulls
torch 2.14 with CUDA and torchvision, replacing the pinned torch 2.13.0 (pip install --dry-run).

The thresholds in shoplens.index.duplicates were chosen on edits (seed 1) of the products whose title hash is
even; the copies here are made of the other half only (title hash odd), so no figure comes from a photo they
were chosen on.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import itertools
import shutil
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.common import DATASETS, FASHION_IMAGES, OUT, met, table
from benchmarks.dupedits import KINDS, edit
from benchmarks.report import write_section
from shoplens.catalog import read_catalog
from shoplens.colour.pixels import colour_shares, names_from_shares
from shoplens.encoders import DEFAULT_ENCODER, create_encoder
from shoplens.images import load_image
from shoplens.index import duplicates
from shoplens.vectors.embedcache import EmbeddingCache
from shoplens.index.sync import sync_catalog
from shoplens.store import open_store

DOC = Path(__file__).resolve().parent.parent / "docs" / "quality.md"
WORK = OUT / "duplicates"
GROCERY_PRODUCTS, GROCERY_PHOTOS = 40, 3
BACKDROP_PAIRS = 500
PHASH_DISTANCE = 10  # imagededup's default max_distance_threshold for its hashing methods


def report_half(title: str) -> bool:
    """The half of the catalog the figures are reported on (the thresholds were chosen on the other)."""
    return int(hashlib.md5(title.encode()).hexdigest(), 16) % 2 == 1


def build_catalog(copies: int, seed: int) -> tuple[Path, dict]:
    """A CSV catalog: fashion-images, edited copies, grocery photos; and what each added listing is."""
    if WORK.exists():
        shutil.rmtree(WORK)
    (WORK / "edits").mkdir(parents=True)
    products = read_catalog(FASHION_IMAGES).products
    rng = np.random.default_rng(seed)
    pool = [p for p in products if report_half(p.metadata.get("title", ""))]
    chosen = [pool[i] for i in rng.choice(len(pool), copies, replace=False)]
    # The catalog's own id columns would give every copy its original's id: each row's id is the `id` column.
    fields = sorted({k for p in products for k in p.metadata} - {"product_id", "id", "sku", "path"})
    rows, truth = [], {"copies": {}, "kinds": {}, "grocery": defaultdict(list)}
    for p in products:
        rows.append({"id": p.id, "path": str(p.path), **{k: p.metadata.get(k, "") for k in fields}})
    for n, p in enumerate(chosen):
        kind = KINDS[n % len(KINDS)]
        pid = f"e{n:03d}-{kind}"
        path = WORK / "edits" / f"{pid}.jpg"
        edit(load_image(p.path), kind, rng).save(path, "JPEG", quality=90)
        rows.append({"id": pid, "path": str(path), **{k: p.metadata.get(k, "") for k in fields}})
        truth["copies"][pid] = p.id
        truth["kinds"][pid] = kind
    grocery = DATASETS / "grocery-store"
    if (grocery / "train.txt").exists():
        by_class = defaultdict(list)
        for line in (grocery / "train.txt").read_text().splitlines():
            rel, fine, _coarse = (x.strip() for x in line.split(","))
            by_class[fine].append(rel)
        classes = sorted(by_class, key=int)
        for fine in [classes[i] for i in sorted(rng.choice(len(classes), GROCERY_PRODUCTS, replace=False))]:
            for rel in [by_class[fine][i] for i in sorted(rng.choice(len(by_class[fine]), GROCERY_PHOTOS,
                                                                    replace=False))]:
                pid = f"g{fine}-{Path(rel).stem}"
                rows.append({"id": pid, "path": str(grocery / rel), "title": f"grocery product {fine}"})
                truth["grocery"][fine].append(pid)
    manifest = WORK / "catalog.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "path", *fields])
        writer.writeheader()
        writer.writerows(rows)
    return manifest, truth


def components(ids: list[str], pairs) -> dict[str, str]:
    """id -> its component's smallest id, for the pairs given."""
    parent = {i: i for i in ids}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb, key=duplicates.order_key)] = min(ra, rb, key=duplicates.order_key)
    return {i: find(i) for i in ids}


def imagehash_groups(paths: dict[str, Path]) -> tuple[dict[str, str], float]:
    """imagehash pHash of every photo, grouped as imagededup groups: all pairs at Hamming distance <= 10."""
    import imagehash
    from PIL import Image

    started = time.process_time()
    ids = sorted(paths)
    bits = np.array([imagehash.phash(Image.open(paths[i])).hash.ravel() for i in ids], np.uint8)
    pairs = []
    for start in range(0, len(ids), 512):
        dist = (bits[start:start + 512, None, :] != bits[None, :, :]).sum(-1)
        for a, b in zip(*np.nonzero(dist <= PHASH_DISTANCE)):
            if start + a < b:
                pairs.append((ids[start + a], ids[b]))
    return components(ids, pairs), time.process_time() - started


def score(groups: dict[str, str], truth: dict, meta: dict, hashes: dict, negatives: dict) -> dict:
    """Recall, precision and hard negatives for one grouping (id -> group id)."""
    copies = truth["copies"]
    members = defaultdict(set)
    for pid, g in groups.items():
        members[g].add(pid)
    by_hash = defaultdict(set)
    for pid, h in hashes.items():
        by_hash[h].add(pid)
    found = {pid: groups[pid] == groups[orig] for pid, orig in copies.items()}
    right = wrong = same_title = 0
    seen = set()
    for pid, orig in copies.items():
        allowed = {orig} | by_hash[hashes[orig]] | {c for c, o in copies.items() if o == orig}
        for other in members[groups[pid]] - {pid}:
            pair = tuple(sorted((pid, other)))
            if pair in seen:
                continue
            seen.add(pair)
            other_orig = copies.get(other, other)
            if other in allowed or other_orig in allowed:
                right += 1
            elif (meta.get(other_orig, {}).get("title"), meta.get(other_orig, {}).get("colour")) == \
                    (meta[orig].get("title"), meta[orig].get("colour")):
                same_title += 1
            else:
                wrong += 1
    identical = [(a, b) for ids in by_hash.values() if len(ids) > 1 for a, b in itertools.combinations(sorted(ids), 2)]
    out = {"recall": sum(found.values()) / max(len(found), 1),
           "by_kind": {k: np.mean([found[p] for p in copies if truth["kinds"][p] == k]) for k in KINDS},
           "precision": right / max(right + wrong, 1), "right": right, "wrong": wrong, "same_title": same_title,
           "identical": sum(groups[a] == groups[b] for a, b in identical), "identical_pairs": len(identical)}
    for name, pairs in negatives.items():
        out[f"neg_{name}"] = sum(groups.get(a) == groups.get(b) for a, b in pairs)
        out[f"neg_{name}_pairs"] = len(pairs)
    return out


def hard_negatives(products, truth: dict, store) -> dict[str, list[tuple[str, str]]]:
    """The pairs that must not be grouped, all from the unedited catalog (and the grocery photos)."""
    meta = {p.id: p.metadata for p in products}
    colour_words = {str(m.get("colour", "")).lower() for m in meta.values()} - {""}

    def stem(title: str) -> str:
        return " ".join(w for w in title.lower().split() if w not in colour_words)

    dominant = {p.id: names_from_shares(colour_shares(load_image(p.path, draft_size=128)))[0] for p in products}
    by_stem = defaultdict(list)
    for p in products:
        by_stem[stem(p.metadata.get("title", ""))].append(p.id)
    colour = [(a, b) for ids in by_stem.values() for a, b in itertools.combinations(ids, 2)
              if meta[a].get("colour") != meta[b].get("colour") and dominant[a] != dominant[b]
              and report_half(meta[a].get("title", "")) and report_half(meta[b].get("title", ""))]
    angle = [(a, b) for ids in truth["grocery"].values() for a, b in itertools.combinations(ids, 2)]
    # Two products on the same plain backdrop: each product's most similar photo of another product type.
    best = {}
    vectors = {h.payload["product_id"]: h.vector for h in store.iterate(with_vector=True)}
    for p in products:
        for hit in store.search(vectors[p.id], 20):
            other = hit.product_id
            if other in meta and meta[other].get("product_type") != meta[p.id].get("product_type"):
                pair = tuple(sorted((p.id, other)))
                best[pair] = max(best.get(pair, -1.0), hit.score)
                break
    backdrop = [pair for pair, _ in sorted(best.items(), key=lambda kv: -kv[1])[:BACKDROP_PAIRS]]
    return {"colour": colour, "angle": angle, "backdrop": backdrop}


def encode_ms(products, n: int = 64) -> float:
    """CPU milliseconds a photo of this catalog costs to decode and encode (what an indexing run spends most on)."""
    encoder = create_encoder(DEFAULT_ENCODER)
    encoder.embed_batch([load_image(products[0].path, draft_size=encoder.draft_size)])  # load the weights
    started = time.process_time()
    for batch in range(0, n, 32):
        encoder.embed_batch([load_image(p.path, draft_size=encoder.draft_size) for p in products[batch:batch + 32]])
    return 1000 * (time.process_time() - started) / n


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    manifest, truth = build_catalog(args.copies, args.seed)
    catalog = read_catalog(manifest)
    products = catalog.products
    fashion = read_catalog(FASHION_IMAGES).products
    encoder = create_encoder(DEFAULT_ENCODER)
    timing = {}
    original = duplicates.finalise

    def timed(*a, **kw):
        wall, cpu = time.perf_counter(), time.process_time()
        run = original(*a, **kw)
        timing.update(wall=time.perf_counter() - wall, cpu=time.process_time() - cpu, run=run)
        return run

    duplicates.finalise = timed
    try:
        with open_store(WORK / "index") as store:
            sync_cpu = time.process_time()
            summary = sync_catalog(catalog, store, encoder, known_vectors=EmbeddingCache.for_encoder(encoder),
                                   progress=False)
            sync_cpu = time.process_time() - sync_cpu
            payloads = {p["product_id"]: p for p in store.states().values()}
            negatives = hard_negatives(fashion, truth, store)
    finally:
        duplicates.finalise = original
    groups = {pid: str(p[duplicates.GROUP_FIELD]) for pid, p in payloads.items()}
    hashes = {pid: p["content_hash"] for pid, p in payloads.items()}
    meta = {p.id: p.metadata for p in products}
    ours = score(groups, truth, meta, hashes, negatives)
    theirs_groups, theirs_cpu = imagehash_groups({p.id: p.path for p in products})
    theirs = score(theirs_groups, truth, meta, hashes, negatives)
    per_photo = encode_ms(fashion)
    # An indexing run of fashion-images: every photo decoded and encoded, plus the rest of the sync measured here.
    indexing_cpu = per_photo * len(fashion) / 1000 + max(sync_cpu - timing["cpu"] - summary.encoded * per_photo / 1000,
                                                         0.0)
    cost = timing["cpu"] * len(fashion) / len(products) / indexing_cpu

    def row(name, r, cpu):
        return [name, f"{r['recall']:.3f}", *(f"{r['by_kind'][k]:.2f}" for k in KINDS), f"{r['precision']:.3f}",
                f"{r['right']}/{r['wrong']}/{r['same_title']}", f"{r['identical']}/{r['identical_pairs']}",
                *(f"{r[f'neg_{n}']}/{r[f'neg_{n}_pairs']}" for n in ("colour", "angle", "backdrop")), f"{cpu:.1f}"]

    headers = ["method", "recall", *KINDS, "precision", "pairs right/wrong/same-title", "byte-identical grouped",
               "colour negs grouped", "angle negs grouped", "backdrop negs grouped", "CPU s"]
    body = table(headers, [row("shoplens (pHash of photo and product box + colours, store kNN)", ours, timing["cpu"]),
                           row(f"imagehash pHash, Hamming <= {PHASH_DISTANCE}, all pairs", theirs, theirs_cpu)])
    targets = [("precision >= 0.99 on edited copies", ours["precision"] >= 0.99, f"{ours['precision']:.3f}"),
               ("recall >= 0.95 on edited copies", ours["recall"] >= 0.95, f"{ours['recall']:.3f}"),
               ("every byte-identical pair grouped", ours["identical"] == ours["identical_pairs"],
                f"{ours['identical']}/{ours['identical_pairs']}"),
               ("no hard negative grouped", all(ours[f"neg_{n}"] == 0 for n in ("colour", "angle", "backdrop")),
                ", ".join(f"{n} {ours[f'neg_{n}']}" for n in ("colour", "angle", "backdrop"))),
               ("grouping costs <= 10 % of an indexing run", cost <= 0.10, f"{cost:.1%}")]
    text = (f"{len(fashion):,} fashion-images products + {len(truth['copies'])} edited copies (seed {args.seed}) + "
            f"{sum(len(v) for v in truth['grocery'].values())} grocery photos; {timing['run'].groups} groups after "
            f"indexing. Grouping took {timing['cpu']:.1f} CPU s ({timing['wall']:.1f} s wall) for "
            f"{len(products):,} products; an indexing run of fashion-images is estimated at {indexing_cpu:.0f} CPU s "
            f"({per_photo:.0f} ms a photo to decode and encode, measured here, plus the rest of the sync), so grouping "
            f"adds {cost:.1%} (scaled to the 2,906 products).\n\n{body}\n\n"
            + table(["target", "status", "figure"], [[t, met(ok), fig] for t, ok, fig in targets]))
    print(text)
    if not args.no_write:
        write_section("duplicates", text, DOC)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
