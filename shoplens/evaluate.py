"""Measure result quality on a labelled catalog: `python -m shoplens evaluate`.

Two protocols:
- leave-one-out: every product queries all the others; the query and exact duplicates of its
  photo (same content hash) are left out of its ranking and of its relevant count;
- queries against a catalog: photos from another source (e.g. shoppers' phone photos) query
  the catalog; relevant = same label value.

Ranking is exact cosine similarity with NumPy matrix products, which for evaluation is both
faster than an ANN index and free of its recall loss.
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shoplens import metrics
from shoplens.catalog import Catalog, Product, read_catalog
from shoplens.embedcache import Embedded, embed_products
from shoplens.encoders import DEFAULT_ENCODER, Encoder, create_encoder
from shoplens.localise import CROP_MODES, DEFAULT_CROP, DEFAULT_LOCALISER, CropEncoder, Localiser, check_crop, create_localiser
from shoplens.store import check_encoder, open_store

# Index bookkeeping, not catalog metadata.
PAYLOAD_ONLY = {"product_id", "image_path", "content_hash", "colours", "colour_vector"}
CHUNK = 1024  # queries scored per matrix product; bounds memory at CHUNK x catalog floats


def parse_label(values: list[str] | str | None) -> list[str]:
    """['product_type', 'colour'] or 'product_type,colour' or 'product_type+colour' -> ['product_type', 'colour']."""
    if not values:
        raise ValueError("--label is required: the metadata field(s) that say which results are relevant")
    if isinstance(values, str):
        values = [values]
    fields = [f.strip() for v in values for f in v.replace("+", ",").split(",") if f.strip()]
    if not fields:
        raise ValueError("--label names no field")
    return fields


def label_of(metadata: dict, fields: list[str]) -> str:
    """The joined label ('Tshirts+Blue'); empty when any field is missing or empty."""
    parts = [str(metadata.get(f, "")).strip() for f in fields]
    return "+".join(parts) if all(parts) else ""


@dataclass
class Ranking:
    """Top-k catalog rows per query (-1 pads a ranking shorter than k) and the relevance of each."""

    top: np.ndarray  # (queries, k) int
    scores: np.ndarray  # (queries, k) float
    rel: np.ndarray  # (queries, k) bool
    n_relevant: np.ndarray  # (queries,) int


def rank(queries: np.ndarray, catalog: np.ndarray, query_labels: list[str], catalog_labels: list[str], k: int,
         query_groups: np.ndarray | None = None, catalog_groups: np.ndarray | None = None) -> Ranking:
    """Exact cosine top-k of each query among the catalog rows.

    Catalog rows whose group equals the query's group (same content hash in leave-one-out)
    are excluded from both the ranking and the relevant count. Empty labels never match.
    """
    names = {v: i for i, v in enumerate(sorted(set(query_labels) | set(catalog_labels)))}
    qlab = np.array([names[v] if v else -1 for v in query_labels], dtype=np.int64)
    clab = np.array([names[v] if v else -2 for v in catalog_labels], dtype=np.int64)
    per_label = np.bincount(clab[clab >= 0], minlength=len(names)) if len(names) else np.zeros(0, np.int64)
    n_relevant = np.where(qlab >= 0, per_label[np.maximum(qlab, 0)] if len(names) else 0, 0)
    k_eff = min(k, catalog.shape[0])
    top = np.full((len(qlab), k), -1, dtype=np.int64)
    scores = np.full((len(qlab), k), -np.inf, dtype=np.float32)
    for start in range(0, len(qlab), CHUNK):
        stop = min(start + CHUNK, len(qlab))
        sims = queries[start:stop] @ catalog.T
        if query_groups is not None:
            same = query_groups[start:stop, None] == catalog_groups[None, :]
            sims[same] = -np.inf
            # Excluded duplicates that share the label are not "relevant items left to find".
            n_relevant[start:stop] -= (same & (clab[None, :] == qlab[start:stop, None])).sum(axis=1)
        if k_eff == 0:
            continue
        part = np.argpartition(-sims, k_eff - 1, axis=1)[:, :k_eff]
        part_scores = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        top[start:stop, :k_eff] = np.take_along_axis(part, order, axis=1)
        scores[start:stop, :k_eff] = np.take_along_axis(part_scores, order, axis=1)
    top[~np.isfinite(scores)] = -1
    rel = (top >= 0) & (clab[np.maximum(top, 0)] == qlab[:, None]) if len(clab) else np.zeros(top.shape, bool)
    return Ranking(top, scores, rel, n_relevant)


@dataclass
class Evaluation:
    """One evaluation: the summary, per-label figures, and per-query details for analysis."""

    protocol: str
    label: str
    encoder: dict
    summary: dict
    per_label: dict[str, dict]
    queries: list[Product]  # evaluated queries (those with a label), row i of the arrays below
    catalog: list[Product]
    query_labels: list[str]
    ranking: Ranking
    scores: dict[str, np.ndarray]  # metric name -> per-query values (NaN: no relevant item)
    info: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """Plain keys at the top level (`precision@10`, `recall@1`, ...), per-label figures nested."""
        return {**self.summary, "protocol": self.protocol, "label": self.label, **self.encoder, **self.info,
                "per_label": self.per_label}

    def top_products(self, row: int) -> list[Product]:
        """The ranked catalog products for evaluated query `row`."""
        return [self.catalog[i] for i in self.ranking.top[row] if i >= 0]

    def worst(self, n: int = 10, metric: str = "map@10") -> list[int]:
        """Rows of the n queries with the lowest `metric` (ties: lowest precision@10 first)."""
        values = self.scores[metric]
        order = np.lexsort((self.scores["precision@10"], values))
        return [int(i) for i in order if not np.isnan(values[i])][:n]

    def table(self, max_rows: int = 30) -> str:
        """The console table: overall, then per label value (most queries first)."""
        cols = [c for c in self.summary if "@" in c]
        head = f"{'label value':<32} {'queries':>7} " + " ".join(f"{c:>12}" for c in cols)
        lines = [f"{self.protocol}, label {self.label}, encoder {self.encoder['encoder']} "
                 f"{self.encoder.get('encoder_options', {})}", head, "-" * len(head)]

        def row(name, figures):
            cells = (f"{figures[c]:>12.3f}" if figures[c] is not None else f"{'-':>12}" for c in cols)
            return f"{name[:32]:<32} {figures['queries']:>7} " + " ".join(cells)

        lines.append(row("ALL", self.summary))
        items = list(self.per_label.items())
        for name, figures in items[:max_rows]:
            lines.append(row(name, figures))
        if len(items) > max_rows:
            lines.append(f"... {len(items) - max_rows} more label values (write them all with --json FILE)")
        extra = []
        if self.summary["no_relevant"]:
            extra.append(f"{self.summary['no_relevant']} queries with no relevant item in the catalog, not averaged")
        if self.info.get("unlabelled"):
            extra.append(f"{self.info['unlabelled']} queries without a {self.label} label, skipped")
        if self.info.get("failed"):
            extra.append(f"{len(self.info['failed'])} unreadable photos left out")
        return "\n".join(lines + extra)


def build_evaluation(protocol: str, fields: list[str], encoder_info: dict, queries: list[Product],
                     query_vectors: np.ndarray, catalog: list[Product], catalog_vectors: np.ndarray,
                     k: int = 10, query_hashes: list[str] | None = None, catalog_hashes: list[str] | None = None,
                     ks=metrics.KS) -> Evaluation:
    """Rank, score and summarise. With hashes given, same-hash catalog rows are excluded per query."""
    label = "+".join(fields)
    qlabels_all = [label_of(p.metadata, fields) for p in queries]
    keep = [i for i, v in enumerate(qlabels_all) if v]
    qlabels = [qlabels_all[i] for i in keep]
    clabels = [label_of(p.metadata, fields) for p in catalog]
    groups = (None, None)
    if query_hashes is not None and catalog_hashes is not None:
        ids = {h: i for i, h in enumerate(dict.fromkeys([*catalog_hashes, *query_hashes]))}
        groups = (np.array([ids[query_hashes[i]] for i in keep]), np.array([ids[h] for h in catalog_hashes]))
    ranking = rank(query_vectors[keep], catalog_vectors, qlabels, clabels, max(k, *ks), *groups)
    scores = metrics.per_query(ranking.rel, ranking.n_relevant, ks)
    summary = metrics.summarise(scores)
    per_label = {}
    values = np.array(qlabels, dtype=object)
    for value in sorted(set(qlabels), key=lambda v: (-qlabels.count(v), v)):
        mask = values == value
        per_label[value] = metrics.summarise({name: s[mask] for name, s in scores.items()})
    info = {"unlabelled": len(queries) - len(keep), "catalog_size": len(catalog)}
    return Evaluation(protocol, label, encoder_info, summary, per_label, [queries[i] for i in keep], catalog,
                      qlabels, ranking, scores, info)


def vectors_from_index(index=None, qdrant_url: str | None = None, collection: str = "products",
                       encoder: str | None = None) -> tuple[Embedded, dict]:
    """Catalog products, content hashes and vectors scrolled from an existing index, and its metadata."""
    with open_store(index, qdrant_url, collection) as store:
        meta = store.read_meta()
        if meta is None:
            raise ValueError(f"no index at {store.location}; build one with: python indexer.py CATALOG")
        if encoder and encoder != meta.get("encoder"):
            enc = create_encoder(encoder)
            check_encoder(meta, enc.name, enc.version, enc.dim, store.location)
        root = Path(meta.get("catalog_root") or ".")
        products, hashes, rows = [], [], []
        for hit in store.iterate(with_vector=True):
            payload = dict(hit.payload)
            rel = payload.get("image_path", "")
            products.append(Product(hit.product_id, root / rel, rel,
                                    {k: v for k, v in payload.items() if k not in PAYLOAD_ONLY}))
            hashes.append(payload.get("content_hash") or hit.id)
            rows.append(np.asarray(hit.vector, np.float32))
    vectors = np.stack(rows) if rows else np.zeros((0, int(meta.get("dim", 0))), np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return Embedded(products, hashes, vectors / np.maximum(norms, 1e-12)), meta


def sample_products(products: list[Product], n: int | None, seed: int = 0) -> list[Product]:
    """A reproducible random subset of n products (all of them when n is None or too big), in catalog order."""
    if not n or n >= len(products):
        return list(products)
    chosen = set(random.Random(seed).sample(range(len(products)), n))
    return [p for i, p in enumerate(products) if i in chosen]


def evaluate(catalog: str | Path | Catalog | None, label, *, queries: str | Path | Catalog | None = None,
             layout: str = "auto", queries_layout: str = "auto", encoder: str | Encoder | None = None,
             encoder_options: dict | None = None, index=None, qdrant_url: str | None = None,
             collection: str = "products", sample: int | None = None, seed: int = 0, k: int = 10,
             batch_size: int = 32, progress: bool = False, use_cache: bool = True, crop: str = "off",
             localiser: str | Localiser = DEFAULT_LOCALISER) -> Evaluation:
    """Run one evaluation (the Python API behind `python -m shoplens evaluate`).

    Leave-one-out when `queries` is None, else `queries` against the catalog. The catalog's
    vectors come from `index` when one is given (its encoder then embeds the queries), else
    from the embedding cache, encoding only photos it has not seen. `sample` draws that many
    queries (leave-one-out: that many catalog products, which then form the whole catalog).
    `crop="auto"` cuts each query photo to the best box of `localiser` before encoding.
    """
    fields = parse_label(label)
    if check_crop(crop) == "auto" and queries is None:
        raise ValueError("--crop auto crops query photos: give them with --queries (leave-one-out has none)")
    started = time.perf_counter()
    failed: list = []
    if index is not None or qdrant_url:
        catalog_emb, meta = vectors_from_index(index, qdrant_url, collection,
                                               encoder if isinstance(encoder, str) else None)
        enc = create_encoder(meta["encoder"], **meta.get("encoder_options", {}))
        source = meta.get("catalog_root", "")
        if sample and queries is None:
            keep = {id(p) for p in sample_products(catalog_emb.products, sample, seed)}
            rows = [i for i, p in enumerate(catalog_emb.products) if id(p) in keep]
            catalog_emb = Embedded([catalog_emb.products[i] for i in rows], [catalog_emb.hashes[i] for i in rows],
                                   catalog_emb.vectors[rows])
    else:
        if catalog is None:
            raise ValueError("give a catalog folder or an existing index (--index)")
        enc = encoder if isinstance(encoder, Encoder) else create_encoder(encoder or DEFAULT_ENCODER,
                                                                          **(encoder_options or {}))
        cat = catalog if isinstance(catalog, Catalog) else read_catalog(catalog, layout)
        source = str(cat.root)
        products = sample_products(cat.products, sample, seed) if queries is None else cat.products
        catalog_emb = embed_products(products, enc, batch_size, progress, use_cache)
        failed += catalog_emb.failed
    query_enc = enc
    if crop == "auto":  # only the queries: the catalog's vectors stay the index's own
        query_enc = CropEncoder(enc, localiser if isinstance(localiser, Localiser) else create_localiser(localiser))
    embedded_at = time.perf_counter()
    info = {"catalog": source, "crop": crop}
    if queries is None:
        result = build_evaluation("leave-one-out", fields, enc.describe(), catalog_emb.products, catalog_emb.vectors,
                                  catalog_emb.products, catalog_emb.vectors, k, catalog_emb.hashes, catalog_emb.hashes)
    else:
        qcat = queries if isinstance(queries, Catalog) else read_catalog(queries, queries_layout)
        query_emb = embed_products(sample_products(qcat.products, sample, seed), query_enc, batch_size, progress,
                                   use_cache)
        failed += query_emb.failed
        info["queries_source"] = str(qcat.root)
        result = build_evaluation("queries", fields, query_enc.describe(), query_emb.products, query_emb.vectors,
                                  catalog_emb.products, catalog_emb.vectors, k)
    result.info.update(info, failed=[{"image": p, "error": e} for p, e in failed],
                       seconds_embedding=round(embedded_at - started, 2),
                       seconds_ranking=round(time.perf_counter() - embedded_at, 2))
    return result


def add_evaluate_args(p) -> None:
    """The `evaluate` subcommand's options (the parser itself lives in cli.build_parser)."""
    from shoplens.catalog import LAYOUTS
    from shoplens.cli import add_store_args

    p.add_argument("catalog", type=Path, nargs="?", help="labelled catalog (optional with --index)")
    p.add_argument("--label", action="append", default=None, metavar="FIELD",
                   help="metadata field that defines relevance; repeat it or join with ',' for several "
                        "(product_type,colour); required except with --text-phrasings")
    p.add_argument("--queries", type=Path, default=None,
                   help="a second catalog whose photos query CATALOG (e.g. shoppers' photos); default: leave-one-out")
    p.add_argument("--layout", default="auto", choices=["auto", *LAYOUTS], help="catalog layout (default: detect)")
    p.add_argument("--queries-layout", default="auto", choices=["auto", *LAYOUTS], help="layout of --queries")
    add_store_args(p)
    p.add_argument("--encoder", default=None, help=f"encoder name (default {DEFAULT_ENCODER}, or the index's)")
    p.add_argument("--fit", choices=["crop", "pad", "trim"], default=None,
                   help="square the photo by centre crop, padding, or trimming plain margins then padding")
    p.add_argument("--crop", choices=CROP_MODES, default=None,
                   help=f"cut each --queries photo to its best product box first (auto) or not (off); "
                        f"default {DEFAULT_CROP} with --queries, off in leave-one-out")
    p.add_argument("--text-queries", action="append", default=None, metavar="FIELDS",
                   help="evaluate text search instead: held-out products' FIELDS as queries, e.g. "
                        "colour+article_type or title (repeatable); precision per search and label prefix")
    p.add_argument("--text-phrasings", type=Path, default=None, metavar="FILE",
                   help="evaluate text search on shoppers' phrasings with relevance rules (e.g. "
                        "benchmarks/data/text_phrasings.csv): capped precision@10 per search and split; "
                        "with --index DIR the index is kept there and reused")
    p.add_argument("--holdout", type=float, default=0.1, help="share of products held out with --text-queries")
    p.add_argument("--sample", type=int, default=None, help="evaluate a random sample of N queries (seeded)")
    p.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
    p.add_argument("--batch-size", type=int, default=32, help="images per encoder batch (default 32)")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="write the figures as JSON to FILE")
    p.add_argument("--rows", type=int, default=30, help="label values shown in the table (default 30)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def cmd_evaluate(args) -> int:
    """Body of `python -m shoplens evaluate`."""
    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    if args.catalog is None and args.index is None and args.qdrant_url is None:
        raise ValueError("give a CATALOG folder, or --index/--qdrant-url to evaluate an existing index")
    use_index = args.index is not None or args.qdrant_url is not None
    if args.text_phrasings:
        from shoplens.phrasings import cmd_evaluate_phrasings

        return cmd_evaluate_phrasings(args)
    if not args.label:
        raise ValueError("--label FIELD is required (the metadata field that defines relevance)")
    if args.text_queries:
        return _cmd_evaluate_text(args, use_index)
    options = {"fit": args.fit} if args.fit else {}
    if use_index and args.fit:
        raise ValueError("--fit cannot change an existing index's vectors; leave it out or evaluate the catalog")
    result = evaluate(None if use_index else args.catalog, args.label, queries=args.queries, layout=args.layout,
                      queries_layout=args.queries_layout, encoder=args.encoder, encoder_options=options,
                      index=args.index, qdrant_url=args.qdrant_url, collection=args.collection, sample=args.sample,
                      seed=args.seed, batch_size=args.batch_size, progress=not args.quiet,
                      use_cache=not args.no_cache,
                      crop=args.crop or (DEFAULT_CROP if args.queries is not None else "off"))
    print(result.table(args.rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result.as_dict(), indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def _cmd_evaluate_text(args, use_index: bool) -> int:
    from shoplens.textevaluate import evaluate_text, parse_query_kinds

    if use_index or args.queries is not None:
        raise ValueError("--text-queries holds products out of a CATALOG and indexes the rest itself: "
                         "give the catalog, without --index or --queries")
    result = evaluate_text(args.catalog, args.label, parse_query_kinds(args.text_queries), layout=args.layout,
                           encoder=args.encoder, holdout=args.holdout, seed=args.seed, sample=args.sample,
                           progress=not args.quiet, use_cache=not args.no_cache)
    print(result.table())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result.as_dict(), indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
