"""Measure text search on a labelled catalog with titles: `python -m shoplens evaluate CATALOG --text-queries ...`.

Protocol: a seeded share of the products is held out. The others are indexed for real (image vectors,
text vectors, colours, the bridge fitted on them only) into a temporary embedded index, and each
held-out product gives text queries: the values of some of its fields ("navy blue tshirts" from
colour + article type) or its title. A result is relevant when it shares the query product's label;
precision@k is reported for each prefix of the label fields (article type, then article type + colour)
and for each search: keyword, semantic, bridge and their fusion, as the app runs them.
"""

from __future__ import annotations

import random
import tempfile
from collections import Counter
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shoplens.catalog import Catalog, Product, read_catalog
from shoplens.encoders import DEFAULT_ENCODER, Encoder, create_encoder
from shoplens.errors import UserError
from shoplens.vectors.embedcache import embed_products
from shoplens.index.sync import sync_catalog
from shoplens.index.text import TextIndexer
from shoplens.quality import metrics
from shoplens.quality.evaluate import label_of, parse_label
from shoplens.query.hybrid import MODES, search_text
from shoplens.query.search import Searcher
from shoplens.store.edge import EdgeStore

TITLE = "title"


def parse_query_kinds(values: list[str] | None) -> list[list[str]]:
    """['colour+article_type', 'title'] -> [['colour', 'article_type'], ['title']]."""
    kinds = [[f.strip() for f in v.replace(",", "+").split("+") if f.strip()] for v in values or []]
    if not kinds or any(not k for k in kinds):
        raise UserError("--text-queries needs field names, e.g. --text-queries colour+article_type "
                        "--text-queries title")
    return kinds


def query_text(product: Product, fields: list[str]) -> str:
    """The query a shopper would type for this product from these fields ('navy blue tshirts')."""
    return " ".join(product.metadata.get(f, "").strip() for f in fields).strip().lower()


def hold_out(products: list[Product], share: float, seed: int) -> tuple[list[Product], list[Product]]:
    """(catalog, held out): a seeded random `share` of the products is held out."""
    if not 0 < share < 1:
        raise UserError(f"--holdout must be between 0 and 1, not {share}")
    chosen = set(random.Random(seed).sample(range(len(products)), max(1, round(len(products) * share))))
    return ([p for i, p in enumerate(products) if i not in chosen], [p for i, p in enumerate(products) if i in chosen])


@dataclass
class TextEvaluation:
    """precision@k per query kind, search mode and label prefix, with counts."""

    k: int
    labels: list[str]  # "article_type", "article_type+colour"
    figures: dict = field(default_factory=dict)  # kind -> mode -> label -> P@k
    queries: dict = field(default_factory=dict)  # kind -> number of queries
    info: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"k": self.k, "labels": self.labels, "precision": self.figures, "queries": self.queries, **self.info}

    def table(self) -> str:
        head = "| queries | search | " + " | ".join(f"P@{self.k} {lab}" for lab in self.labels) + " |"
        lines = [head, "|" + "---|" * (2 + len(self.labels))]
        for kind, modes in self.figures.items():
            for mode, by_label in modes.items():
                cells = " | ".join(f"{by_label[lab]:.3f}" for lab in self.labels)
                lines.append(f"| {kind} ({self.queries[kind]}) | {mode} | {cells} |")
        return "\n".join(lines)


def evaluate_text(catalog: str | Path | Catalog, label, query_kinds: list[list[str]], *, layout: str = "auto",
                  encoder: str | Encoder | None = None, holdout: float = 0.1, seed: int = 0, k: int = 10,
                  sample: int | None = None, modes: tuple[str, ...] = MODES, progress: bool = False,
                  use_cache: bool = True) -> TextEvaluation:
    """Run the held-out text-query evaluation (the API behind `evaluate --text-queries`)."""
    fields = parse_label(label)
    started = time.perf_counter()
    cat = catalog if isinstance(catalog, Catalog) else read_catalog(catalog, layout)
    enc = encoder if isinstance(encoder, Encoder) else create_encoder(encoder or DEFAULT_ENCODER)
    products = [p for p in cat.products if label_of(p.metadata, fields)]
    indexed, held = hold_out(products, holdout, seed)
    for kind in query_kinds:  # before minutes of indexing, not after
        if not any(query_text(p, kind) for p in held):
            raise UserError(f"no held-out product has a value for {' + '.join(kind)}; fields of this catalog: "
                             f"{', '.join(sorted(held[0].metadata)) if held else 'none'}")
    if sample:
        held = random.Random(seed).sample(held, min(sample, len(held)))
    # Image vectors from the embedding cache; everything else goes through the real indexer.
    known = embed_products(indexed, enc, progress=progress, use_cache=use_cache)
    labels = [" + ".join(fields[:n]) for n in range(1, len(fields) + 1)]
    result = TextEvaluation(k, labels)
    with tempfile.TemporaryDirectory(prefix="shoplens-texteval-") as tmp:
        store = EdgeStore(Path(tmp) / "index")
        subset = Catalog(cat.root, cat.layout, indexed)
        sync_catalog(subset, store, enc, text=TextIndexer(), progress=progress,
                     known_vectors=dict(zip(known.hashes, known.vectors)))
        searcher = Searcher(store, store.read_meta(), _encoder=enc)
        side = searcher.text_side
        indexed_at = time.perf_counter()
        for kind in query_kinds:
            name = "+".join(kind)
            queries = [(p, query_text(p, kind)) for p in held]
            queries = [(p, q) for p, q in queries if q]
            result.queries[name] = len(queries)
            result.figures[name] = {}
            for mode in modes:
                if mode == "bridge" and side.get_bridge() is None:
                    continue
                hits = [search_text(side, q, k, mode=mode) for _p, q in queries]
                result.figures[name][mode] = {
                    lab: _precision(queries, hits, fields[:n], indexed, k) for n, lab in enumerate(labels, start=1)}
        store.close()
    if len(query_kinds) > 1:  # every query counts once, whatever its kind
        kinds = list(result.figures)
        total = sum(result.queries[k] for k in kinds)
        result.queries["all"] = total
        result.figures["all"] = {
            mode: {lab: sum(result.figures[k][mode][lab] * result.queries[k] for k in kinds) / max(total, 1)
                   for lab in labels}
            for mode in result.figures[kinds[0]]}
    result.info = {"catalog": str(cat.root), "indexed": len(indexed), "held_out": len(held), "seed": seed,
                   "encoder": enc.name, "seconds_indexing": round(indexed_at - started, 1),
                   "seconds_searching": round(time.perf_counter() - indexed_at, 1)}
    return result


def _precision(queries, hits, fields: list[str], indexed: list[Product], k: int) -> float:
    """Mean precision@k; a query whose label no indexed product has is left out, as in evaluate.py."""
    counts = Counter(label_of(p.metadata, fields) for p in indexed)
    rel = np.zeros((len(queries), k), bool)
    for row, ((p, _q), found) in enumerate(zip(queries, hits)):
        want = label_of(p.metadata, fields)
        rel[row, :len(found[:k])] = [label_of(h.payload, fields) == want for h in found[:k]]
    n_relevant = [counts[label_of(p.metadata, fields)] for p, _q in queries]
    return float(np.nanmean(metrics.precision_at_k(rel, n_relevant, k))) if queries else float("nan")
