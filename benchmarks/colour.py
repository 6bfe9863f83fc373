"""Colour re-ranking for docs/quality.md: python -m benchmarks.colour [--datasets DIR] [--no-write]

On fashion-images (2,906 products), leave-one-out exactly as `shoplens evaluate` does it (the
query and same-hash duplicates left out of the ranking and of the relevant count), precision@10
by product type and by product type + colour for:
- the image ranking alone (efficientnet-lite0, centre crop: the default encoder, cached vectors);
- its top N re-ranked by image cosine + weight x colour similarity (`shoplens.query.rerank`),
  for a grid of N, weights and similarity functions.
Also: how often the extracted colour names agree with the catalogs' colour labels (fashion-images
and the 9.6k set), and milliseconds per photo for `colour_profile` on a 224 px thumbnail.
Writes the section "colour" of docs/quality.md with benchmarks.report.write_section.
"""

from __future__ import annotations

import argparse
import pickle
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.common import DATASETS, OUT, met, table
from benchmarks.report import write_section
from shoplens import colour
from shoplens.catalog import Product, read_catalog
from shoplens.colour import pixels as colour_pixels
from shoplens.encoders import DEFAULT_ENCODER, create_encoder
from shoplens.images import ImageError, load_image
from shoplens.vectors.embedcache import embed_products
from shoplens.quality import metrics
from shoplens.quality.evaluate import build_evaluation
from shoplens.query import rerank

DOC = Path(__file__).resolve().parent.parent / "docs" / "quality.md"
NS = (50, 100, 200)
WEIGHTS = (0.1, 0.2, 0.3, 0.5, 1.0)
# The shipped cosine, and benchmark-only alternatives to show why it was chosen.
SIMILARITIES = {
    "cosine": rerank.colour_similarity,
    "bhattacharyya": lambda q, c: np.sqrt(np.clip(c, 0, None)) @ np.sqrt(np.clip(q, 0, None)),
    "intersection": lambda q, c: np.minimum(np.asarray(q)[None, :], c).sum(axis=1),
    "top name": lambda q, c: (np.argmax(c, axis=1) == np.argmax(q)).astype(np.float32),
}


def small_images(products: list[Product], name: str) -> list[np.ndarray | None]:
    """Each product photo reduced by colour_pixels.small_pixels (None when unreadable), cached in benchmarks/out.

    Photos are decoded as the indexer decodes them for efficientnet-lite0 (JPEG draft at 224 px).
    """
    cache = OUT / f"colour-pixels-{name}-{colour_pixels.WORK_SIZE}.pkl"
    known = pickle.loads(cache.read_bytes()) if cache.exists() else {}
    todo = [p for p in products if p.rel_path not in known]

    def load(p: Product):
        try:
            return colour_pixels.small_pixels(load_image(p.path, draft_size=224))
        except ImageError:
            return None

    if todo:
        with ThreadPoolExecutor(max_workers=2) as pool:
            known.update(zip((p.rel_path for p in todo), pool.map(load, todo)))
        OUT.mkdir(parents=True, exist_ok=True)
        cache.write_bytes(pickle.dumps(known))
    return [known[p.rel_path] for p in products]


def shares_matrix(pixels: list[np.ndarray | None]) -> np.ndarray:
    """colour_vector shares of every photo (zeros for unreadable ones)."""
    out = np.zeros((len(pixels), len(colour.PALETTE)), np.float32)
    for i, px in enumerate(pixels):
        if px is not None:
            out[i] = colour_pixels.pixel_shares(px)
    return out


def label_names(value: str) -> list[str]:
    """A catalog colour label in PALETTE names ('Navy Blue' -> ['navy']); [] for 'Multi', 'NA', ..."""
    return colour.colour_words(value)[0]


def agreement(products: list[Product], shares: np.ndarray) -> dict:
    """How often the top extracted name is the label's name, and how often the label is among `colours`."""
    top = first = listed = 0
    for p, s in zip(products, shares):
        want = label_names(p.metadata.get("colour", ""))
        if len(want) != 1 or not s.any():
            continue
        names = colour.names_from_shares(s)
        top += 1
        first += names[0] == want[0]
        listed += want[0] in names
    return {"products": top, "top1": first / max(top, 1), "listed": listed / max(top, 1)}


def confusion(products: list[Product], shares: np.ndarray) -> str:
    """Label name -> counts of the top extracted name (for tuning the anchors)."""
    rows: dict[str, dict[str, int]] = {}
    for p, s in zip(products, shares):
        want = label_names(p.metadata.get("colour", ""))
        if len(want) == 1 and s.any():
            got = colour.PALETTE[int(np.argmax(s))]
            rows.setdefault(want[0], {}).setdefault(got, 0)
            rows[want[0]][got] += 1
    lines = []
    for name in colour.PALETTE:
        if name in rows:
            total = sum(rows[name].values())
            top = sorted(rows[name].items(), key=lambda kv: -kv[1])[:5]
            lines.append(f"{name:>7} ({total:4d}): " + ", ".join(f"{k} {v / total:.2f}" for k, v in top))
    return "\n".join(lines)


class Rankings:
    """The image-only top-N rankings of fashion-images by product type and by product type + colour."""

    def __init__(self, products: list[Product], hashes: list[str], vectors: np.ndarray, n: int):
        info = {"encoder": DEFAULT_ENCODER}
        self.by = {}
        for fields in (["product_type"], ["product_type", "colour"]):
            ev = build_evaluation("leave-one-out", fields, info, products, vectors, products, vectors, n,
                                  hashes, hashes)
            assert len(ev.queries) == len(products), "every fashion-images product has both labels"
            self.by["+".join(fields)] = ev.ranking

    def p10(self, label: str, shares: np.ndarray | None = None, n: int = 0, weight: float = 0.0,
            similarity=rerank.colour_similarity, cands: np.ndarray | None = None) -> float:
        """precision@10 of the image ranking, or of its top n re-ranked by colour with `weight`
        (`cands`: the products' colour vectors when they differ from the queries' `shares`)."""
        cands = shares if cands is None else cands
        r = self.by[label]
        rel = r.rel
        if shares is not None and weight:
            top, scores, rel = r.top[:, :n], r.scores[:, :n], r.rel[:, :n]
            combined = np.empty_like(scores)
            for q in range(len(top)):
                combined[q] = scores[q] + weight * similarity(shares[q], cands[top[q]])
            order = np.argsort(-combined, axis=1, kind="stable")
            rel = np.take_along_axis(rel, order, axis=1)
        return metrics.summarise(metrics.per_query(rel[:, :10], r.n_relevant, (10,)))["precision@10"]


def speed(pixels_source: list[Product], n: int = 200) -> float:
    """Milliseconds per photo for colour_profile on 224 px thumbnails (decoding excluded), best of 3."""
    from PIL import Image

    images = []
    for p in pixels_source[:n]:
        img = load_image(p.path)
        img.thumbnail((224, 224), Image.BILINEAR)
        images.append(img)
    colour.colour_profile(images[0])  # builds the lookup tables once
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for img in images:
            colour.colour_profile(img)
        best = min(best, time.perf_counter() - started)
    return 1000 * best / len(images)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=DATASETS)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/quality.md alone")
    parser.add_argument("--confusion", action="store_true", help="also print label -> extracted name counts")
    args = parser.parse_args(argv)

    fi = read_catalog(args.datasets / "fashion-images")
    emb = embed_products(fi.products, create_encoder(DEFAULT_ENCODER), progress=True)
    fi_shares = shares_matrix(small_images(emb.products, "fashion-images"))
    small = read_catalog(args.datasets / "fashion-product-images-small")
    fs_shares = shares_matrix(small_images(small.products, "fashion-product-images-small"))
    if args.confusion:
        print("fashion-images\n" + confusion(emb.products, fi_shares))
        print("fashion-product-images-small\n" + confusion(small.products, fs_shares))

    rankings = Rankings(emb.products, emb.hashes, emb.vectors, max(NS))
    base_type, base_both = rankings.p10("product_type"), rankings.p10("product_type+colour")
    rows = [["image only", "-", "-", "-", f"{base_type:.3f}", f"{base_both:.3f}"]]
    best: dict[str, tuple] = {}
    for sim_name, sim in SIMILARITIES.items():
        for n in NS:
            for w in WEIGHTS:
                both = rankings.p10("product_type+colour", fi_shares, n, w, sim)
                typ = rankings.p10("product_type", fi_shares, n, w, sim)
                print(f"{sim_name:>13} N={n:<4} w={w:<5} type {typ:.3f} type+colour {both:.3f}", flush=True)
                row = ["re-ranked", sim_name, n, w, f"{typ:.3f}", f"{both:.3f}"]
                if sim is rerank.colour_similarity:
                    rows.append(row)  # every setting of the shipped similarity: the trade-off in full
                elif both > best.get(sim_name, (-1.0,))[0]:
                    best[sim_name] = (both, row)
    rows += [row for _both, row in best.values()]
    # The catalog's own colour labels as the colour signal: what a perfect extractor could reach.
    perfect = np.stack([colour.named_colour_vector(label_names(p.metadata.get("colour", "")))
                        for p in emb.products])
    for n in (100, 200):
        rows.append(["re-ranked by catalog colour labels (reference)", "cosine", n, 0.3,
                     f"{rankings.p10('product_type', perfect, n, 0.3):.3f}",
                     f"{rankings.p10('product_type+colour', perfect, n, 0.3):.3f}"])
    # What the indexer stores: the catalog's label blended into each product's vector (colour_profile's
    # label=); the query photo has no label, so its vector stays the pixels' own.
    blended = np.where((perfect.sum(axis=1) > 0)[:, None],
                       (1 - colour.LABEL_BLEND) * fi_shares + colour.LABEL_BLEND * perfect, fi_shares)
    for blend in (0.5, 1.0):
        cands = np.where((perfect.sum(axis=1) > 0)[:, None], (1 - blend) * fi_shares + blend * perfect, fi_shares)
        rows.append([f"re-ranked, catalog label blended {blend:g} into the products (query: pixels)", "cosine",
                     rerank.RERANK_TOP, rerank.RERANK_WEIGHT,
                     f"{rankings.p10('product_type', fi_shares, rerank.RERANK_TOP, rerank.RERANK_WEIGHT, cands=cands):.3f}",
                     f"{rankings.p10('product_type+colour', fi_shares, rerank.RERANK_TOP, rerank.RERANK_WEIGHT, cands=cands):.3f}"])
    shipped_type = rankings.p10("product_type", fi_shares, rerank.RERANK_TOP, rerank.RERANK_WEIGHT, cands=blended)
    shipped_both = rankings.p10("product_type+colour", fi_shares, rerank.RERANK_TOP, rerank.RERANK_WEIGHT,
                                cands=blended)

    fi_agree = agreement(emb.products, fi_shares)
    fs_agree = agreement(small.products, fs_shares)
    ms = speed(emb.products)

    body = "\n".join([
        "Photo queries re-ranked by product colour (`shoplens/colour/`): each product's colour is measured at "
        "index time from its own pixels (a plain backdrop, grown from the border, is left out), as shares of "
        f"{len(colour.PALETTE)} named colours; the image ranking's top N is re-ordered by image cosine + weight x "
        "colour similarity. fashion-images, leave-one-out as `shoplens evaluate` (duplicates by content hash "
        "left out), efficientnet-lite0 centre crop. Every setting of the shipped cosine similarity, then "
        "the best setting of each alternative similarity:",
        "",
        table(["ranking", "colour similarity", "N", "weight", "P@10 product type", "P@10 type+colour"], rows),
        "",
        f"**Shipped** (`RERANK_TOP` = {rerank.RERANK_TOP}, `RERANK_WEIGHT` = {rerank.RERANK_WEIGHT}, "
        f"cosine, the catalog's colour label blended {colour.LABEL_BLEND:g} into each product's vector where it has "
        f"one): P@10 type+colour **{shipped_both:.3f}** (image only {base_both:.3f}; target 0.45: "
        f"{met(shipped_both >= 0.45)}), by product type {shipped_type:.3f} (image only {base_type:.3f}). "
        "The reference rows bound what any colour extractor can add this way: the catalog's own labels reach "
        "about 0.53, because labels split what pixels cannot (Gold, Silver, Multi, Off White, Peach) and "
        "many labels disagree with the photo. Most remaining misses are neighbours in colour (black / navy / "
        "grey, beige / brown, blue / teal) and white parts that touch a white backdrop, which are taken "
        "for backdrop.",
        "",
        "Extracted colour names against the catalogs' colour labels (labels mapped to the palette with "
        "`colour_words`, e.g. Navy Blue -> navy, Off White -> white; Multi and other unmappable labels skipped):",
        "",
        table(["catalog", "products", "top colour = label", "label among `colours`"], [
            ["fashion-images", fi_agree["products"], f"{fi_agree['top1']:.3f}", f"{fi_agree['listed']:.3f}"],
            ["fashion-product-images-small", fs_agree["products"], f"{fs_agree['top1']:.3f}",
             f"{fs_agree['listed']:.3f}"],
        ]),
        "",
        f"`colour_profile` takes {ms:.2f} ms a photo on a 224 px thumbnail (decoding excluded, best of 3 over "
        "200 photos, one core).",
    ])
    print(body)
    if not args.no_write:
        write_section("colour", body, DOC)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
