"""Measure result quality on a labelled catalog: `python -m shoplens evaluate`.

Two protocols:
- leave-one-out: every product queries all the others; the query, exact duplicates of its photo
  (same content hash) and near-duplicate listings (another file, image cosine above
  NEAR_DUPLICATE: the same photo re-saved or re-listed) are left out of its ranking and of its
  relevant count, since finding its own photo again says nothing about finding similar products;
- queries against a catalog: photos from another source (e.g. shoppers' phone photos) query
  the catalog; relevant = same label value.

Ranking is exact cosine similarity with NumPy matrix products, which for evaluation is both
faster than an ANN index and free of its recall loss.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shoplens.catalog import Catalog, Product, read_catalog
from shoplens.encoders import DEFAULT_ENCODER, Encoder, create_encoder
from shoplens.errors import UserError
from shoplens.vectors.embedcache import Embedded, embed_products
from shoplens.localise import DEFAULT_LOCALISER, CropEncoder, Localiser, check_crop, create_localiser
from shoplens.quality import metrics
from shoplens.store import check_encoder, open_store

# Index bookkeeping, not catalog metadata.
PAYLOAD_ONLY = {"product_id", "image_path", "content_hash", "colours", "colour_vector", "tuning_hash"}
CHUNK = 1024  # queries scored per matrix product; bounds memory at CHUNK x catalog floats
# Leave-one-out: another catalog photo this close to the query is a copy of it (re-encoded, resized or
# re-listed under another id), not a similar product. 399 of fashion-images' 2,906 queries have one.
NEAR_DUPLICATE = 0.99


def parse_label(values: list[str] | str | None) -> list[str]:
    """['product_type', 'colour'] or 'product_type,colour' or 'product_type+colour' -> ['product_type', 'colour']."""
    if not values:
        raise UserError("--label is required: the metadata field(s) that say which results are relevant")
    if isinstance(values, str):
        values = [values]
    fields = [f.strip() for v in values for f in v.replace("+", ",").split(",") if f.strip()]
    if not fields:
        raise UserError("--label names no field")
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
    near_duplicates: np.ndarray | None = None  # (queries,) int: other photos excluded as near-duplicates


def rank(queries: np.ndarray, catalog: np.ndarray, query_labels: list[str], catalog_labels: list[str], k: int,
         query_groups: np.ndarray | None = None, catalog_groups: np.ndarray | None = None,
         near_duplicate: float | None = None,
         duplicate_vectors: tuple[np.ndarray, np.ndarray] | None = None) -> Ranking:
    """Exact cosine top-k of each query among the catalog rows.

    Catalog rows whose group equals the query's group (same content hash in leave-one-out), and
    with `near_duplicate` set rows whose cosine to the query is above it, are excluded from both
    the ranking and the relevant count. Empty labels never match. `duplicate_vectors` (query rows,
    catalog rows) are the vectors near-duplicates are judged on when the ranked ones are tuned: a
    tuning pulls every product of a label together, so on tuned vectors all of them would look like copies.
    """
    names = {v: i for i, v in enumerate(sorted(set(query_labels) | set(catalog_labels)))}
    qlab = np.array([names[v] if v else -1 for v in query_labels], dtype=np.int64)
    clab = np.array([names[v] if v else -2 for v in catalog_labels], dtype=np.int64)
    per_label = np.bincount(clab[clab >= 0], minlength=len(names)) if len(names) else np.zeros(0, np.int64)
    n_relevant = np.where(qlab >= 0, per_label[np.maximum(qlab, 0)] if len(names) else 0, 0)
    k_eff = min(k, catalog.shape[0])
    top = np.full((len(qlab), k), -1, dtype=np.int64)
    scores = np.full((len(qlab), k), -np.inf, dtype=np.float32)
    near_counts = np.zeros(len(qlab), np.int64)
    for start in range(0, len(qlab), CHUNK):
        stop = min(start + CHUNK, len(qlab))
        sims = queries[start:stop] @ catalog.T
        if query_groups is not None or near_duplicate is not None:
            same = np.zeros(sims.shape, bool) if query_groups is None else \
                query_groups[start:stop, None] == catalog_groups[None, :]
            if near_duplicate is not None:
                near = (sims if duplicate_vectors is None else
                        duplicate_vectors[0][start:stop] @ duplicate_vectors[1].T) > near_duplicate
                near_counts[start:stop] = (near & ~same).sum(axis=1)
                same |= near
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
    return Ranking(top, scores, rel, n_relevant, near_counts if near_duplicate is not None else None)


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
        """Plain keys at the top level (`precision@10`, `hit@1`, ...), per-label figures nested.

        `recall@k` repeats `hit@k` under the name older versions wrote, for scripts that read it."""
        return {**with_recall_alias(self.summary), "protocol": self.protocol, "label": self.label, **self.encoder,
                **self.info, "per_label": {k: with_recall_alias(v) for k, v in self.per_label.items()}}

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
        if self.info.get("near_duplicate_queries") and self.info.get("near_duplicate_rule"):
            extra.append(f"{self.info['near_duplicate_queries']} queries had duplicate listings of themselves (another "
                         "file, the same duplicate group as the indexer gives), left out like exact copies")
        elif self.info.get("near_duplicate_queries"):
            extra.append(f"{self.info['near_duplicate_queries']} queries had near-duplicate photos of themselves "
                         f"(cosine > {self.info['near_duplicate_cosine']}, another file), left out like exact copies")
        if self.info.get("unlabelled"):
            extra.append(f"{self.info['unlabelled']} queries without a {self.label} label, skipped")
        if self.info.get("failed"):
            extra.append(f"{len(self.info['failed'])} unreadable photos left out")
        return "\n".join(lines + extra)


def duplicate_groups(embedded: Embedded, raw_vectors: np.ndarray | None) -> list[str]:
    """Each product's duplicate group, by the indexer's own rule (shoplens.index.duplicates), as a string per
    row: candidates from the untuned vectors (the tuned ones where those are all there is)."""
    from shoplens.index.duplicates import group_rows, signatures

    sigs = signatures([p.path for p in embedded.products], list(embedded.hashes))
    rows = group_rows(embedded.vectors if raw_vectors is None else raw_vectors, sigs)
    return [f"group-{g}" for g in rows]


def near_duplicate_queries(groups: list[str], hashes: list[str], metadata: list[dict], fields: list[str]) -> int:
    """Labelled queries whose duplicate group holds another file (another content hash)."""
    hashes_of: dict[str, set] = {}
    for g, h in zip(groups, hashes):
        hashes_of.setdefault(g, set()).add(h)
    return sum(1 for g, m in zip(groups, metadata) if label_of(m, fields) and len(hashes_of[g]) > 1)


def build_evaluation(protocol: str, fields: list[str], encoder_info: dict, queries: list[Product],
                     query_vectors: np.ndarray, catalog: list[Product], catalog_vectors: np.ndarray,
                     k: int = 10, query_hashes: list[str] | None = None, catalog_hashes: list[str] | None = None,
                     ks=metrics.KS, near_duplicate: float | None = None,
                     duplicate_vectors: tuple[np.ndarray, np.ndarray] | None = None) -> Evaluation:
    """Rank, score and summarise. With hashes given, same-hash catalog rows are excluded per query; with
    `near_duplicate`, so are rows whose cosine to the query is above it (leave-one-out: NEAR_DUPLICATE),
    judged on `duplicate_vectors` (the untuned query and catalog vectors) when they are given."""
    label = "+".join(fields)
    qlabels_all = [label_of(p.metadata, fields) for p in queries]
    keep = [i for i, v in enumerate(qlabels_all) if v]
    qlabels = [qlabels_all[i] for i in keep]
    clabels = [label_of(p.metadata, fields) for p in catalog]
    groups = (None, None)
    if query_hashes is not None and catalog_hashes is not None:
        ids = {h: i for i, h in enumerate(dict.fromkeys([*catalog_hashes, *query_hashes]))}
        groups = (np.array([ids[query_hashes[i]] for i in keep]), np.array([ids[h] for h in catalog_hashes]))
    if duplicate_vectors is not None:
        duplicate_vectors = (duplicate_vectors[0][keep], duplicate_vectors[1])
    ranking = rank(query_vectors[keep], catalog_vectors, qlabels, clabels, max(k, *ks), *groups,
                   near_duplicate=near_duplicate, duplicate_vectors=duplicate_vectors)
    scores = metrics.per_query(ranking.rel, ranking.n_relevant, ks)
    summary = metrics.summarise(scores)
    per_label = {}
    values = np.array(qlabels, dtype=object)
    for value in sorted(set(qlabels), key=lambda v: (-qlabels.count(v), v)):
        mask = values == value
        per_label[value] = metrics.summarise({name: s[mask] for name, s in scores.items()})
    info = {"unlabelled": len(queries) - len(keep), "catalog_size": len(catalog)}
    if near_duplicate is not None:
        info.update(excluded="the query, exact copies (same content hash) and near-duplicates (another file, "
                             f"cosine > {near_duplicate})",
                    near_duplicate_cosine=near_duplicate,
                    near_duplicate_queries=int((ranking.near_duplicates > 0).sum()))
    return Evaluation(protocol, label, encoder_info, summary, per_label, [queries[i] for i in keep], catalog,
                      qlabels, ranking, scores, info)


def with_recall_alias(figures: dict) -> dict:
    """The figures with each `hit@k` also under `recall@k`, right after it (the name older JSON used)."""
    out = {}
    for key, value in figures.items():
        out[key] = value
        if key.startswith("hit@"):
            out["recall@" + key[4:]] = value
    return out


@dataclass
class IndexVectors:
    """What evaluating an existing index reads from it: its products and stored vectors, metadata and tuning."""

    embedded: Embedded
    meta: dict
    tuning: object = None  # the shoplens.tune.Tuning its vectors carry; query photos must go through it too


def index_vectors(index=None, qdrant_url: str | None = None, collection: str = "products",
                  encoder: str | None = None, tuning=None, milvus_uri: str | None = None) -> IndexVectors:
    """Catalog products, content hashes and vectors scrolled from an existing index, its metadata and tuning.

    `tuning` (optional) must be the index's own: another one is refused with the command that fixes it.
    An index half-way through a change of tuning is refused with the command that finishes it.
    """
    from shoplens.index.tuning import check_query_tuning, index_tuning

    with open_store(index, qdrant_url, collection, milvus_uri=milvus_uri) as store:
        meta = store.require_meta()
        if encoder and encoder != meta.get("encoder"):
            enc = create_encoder(encoder)
            check_encoder(meta, enc.name, enc.version, enc.dim, store.location)
        own = index_tuning(store, meta)
        check_query_tuning(meta, tuning, store.location, store.cli_args())
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
    return IndexVectors(Embedded(products, hashes, vectors / np.maximum(norms, 1e-12)), meta, own)


def cached_vectors(encoder: Encoder, hashes: list[str]) -> np.ndarray | None:
    """The untuned vectors of these photos from the embedding cache, or None when any is missing."""
    from shoplens.vectors.embedcache import EmbeddingCache

    with EmbeddingCache.for_encoder(encoder) as cache:
        known = cache.get_many(hashes)
    if not hashes or any(h not in known for h in hashes):
        return None
    return np.stack([known[h] for h in hashes]).astype(np.float32)


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
             milvus_uri: str | None = None,
             batch_size: int = 32, progress: bool = False, use_cache: bool = True, crop: str = "off",
             localiser: str | Localiser = DEFAULT_LOCALISER, tuning=None) -> Evaluation:
    """Run one evaluation (the Python API behind `python -m shoplens evaluate`).

    Leave-one-out when `queries` is None, else `queries` against the catalog. The catalog's
    vectors come from `index` when one is given (its encoder then embeds the queries), else
    from the embedding cache, encoding only photos it has not seen. `sample` draws that many
    queries (leave-one-out: that many catalog products, which then form the whole catalog).
    `crop="auto"` cuts each query photo to the best box of `localiser` before encoding.
    `tuning` (a shoplens.tune.Tuning) is applied to the catalog's and the queries' vectors before ranking.
    An index's vectors carry its own tuning, and its query photos are tuned the same way without being
    asked; `tuning` must then be that one (another is refused with the command that fixes it).
    """
    fields = parse_label(label)
    if check_crop(crop) == "auto" and queries is None:
        raise UserError("--crop auto crops query photos: give them with --queries (leave-one-out has none)")
    started = time.perf_counter()
    failed: list = []
    if index is not None or qdrant_url or milvus_uri:
        found = index_vectors(index, qdrant_url, collection, encoder if isinstance(encoder, str) else None, tuning,
                              milvus_uri=milvus_uri)
        catalog_emb, meta, tuning = found.embedded, found.meta, found.tuning
        query_tuning = tuning  # the stored vectors are tuned already; only the queries need it
        enc = create_encoder(meta["encoder"], **meta.get("encoder_options", {}))
        source = meta.get("catalog_root", "")
        if sample and queries is None:
            keep = {id(p) for p in sample_products(catalog_emb.products, sample, seed)}
            rows = [i for i, p in enumerate(catalog_emb.products) if id(p) in keep]
            catalog_emb = Embedded([catalog_emb.products[i] for i in rows], [catalog_emb.hashes[i] for i in rows],
                                   catalog_emb.vectors[rows])
        raw_vectors = catalog_emb.vectors if tuning is None else None
    else:
        if catalog is None:
            raise UserError("give a catalog folder or an existing index (--index)")
        enc = encoder if isinstance(encoder, Encoder) else create_encoder(encoder or DEFAULT_ENCODER,
                                                                          **(encoder_options or {}))
        if tuning is not None:
            from shoplens.vectors.tuning import check_tuning

            check_tuning(tuning, enc.describe())
        cat = catalog if isinstance(catalog, Catalog) else read_catalog(catalog, layout)
        source = str(cat.root)
        products = sample_products(cat.products, sample, seed) if queries is None else cat.products
        catalog_emb = embed_products(products, enc, batch_size, progress, use_cache)
        failed += catalog_emb.failed
        raw_vectors = catalog_emb.vectors
        if tuning is not None:
            catalog_emb = Embedded(catalog_emb.products, catalog_emb.hashes, tuning.apply(catalog_emb.vectors),
                                   catalog_emb.failed)
        query_tuning = tuning
    query_enc = enc
    if crop == "auto":  # only the queries: the catalog's vectors stay the index's own
        query_enc = CropEncoder(enc, localiser if isinstance(localiser, Localiser) else create_localiser(localiser))
    embedded_at = time.perf_counter()
    info = {"catalog": source, "crop": crop}
    if tuning is not None:
        info["tuning"] = {k: v for k, v in tuning.describe().items() if k != "encoder"}
    if queries is None:
        if raw_vectors is None:  # a tuned index stores tuned vectors: the untuned ones are in the embedding cache
            raw_vectors = cached_vectors(enc, catalog_emb.hashes)
            if raw_vectors is None:
                info["near_duplicates_judged_on"] = "tuned vectors (untuned ones not in the embedding cache)"
        groups = duplicate_groups(catalog_emb, raw_vectors)
        result = build_evaluation("leave-one-out", fields, enc.describe(), catalog_emb.products, catalog_emb.vectors,
                                  catalog_emb.products, catalog_emb.vectors, k, groups, groups)
        result.info.update(
            excluded="the query and its duplicate listings: the group shoplens.index.duplicates gives it at "
                     "indexing (byte-identical, or the same photo resized, re-compressed, cropped, re-coloured)",
            near_duplicate_rule="duplicate groups (shoplens.index.duplicates)",
            near_duplicate_queries=near_duplicate_queries(groups, catalog_emb.hashes,
                                                          [p.metadata for p in catalog_emb.products],
                                                          fields))
    else:
        qcat = queries if isinstance(queries, Catalog) else read_catalog(queries, queries_layout)
        query_emb = embed_products(sample_products(qcat.products, sample, seed), query_enc, batch_size, progress,
                                   use_cache)
        failed += query_emb.failed
        if query_tuning is not None:  # the cache keeps raw vectors; the tuning is applied on the way out
            query_emb.vectors = query_tuning.apply(query_emb.vectors)
        info["queries_source"] = str(qcat.root)
        result = build_evaluation("queries", fields, query_enc.describe(), query_emb.products, query_emb.vectors,
                                  catalog_emb.products, catalog_emb.vectors, k)
    result.info.update(info, failed=[{"image": p, "error": e} for p, e in failed],
                       seconds_embedding=round(embedded_at - started, 2),
                       seconds_ranking=round(time.perf_counter() - embedded_at, 2))
    return result
