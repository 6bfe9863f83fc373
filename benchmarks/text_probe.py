"""Search by words on the 9.6k fashion catalog: keyword (BM25), semantic (MiniLM), the text-to-image bridge, fusions.

Seeded hold-out: 10% of products are held out; their titles and "<colour> <article type>" strings
are the queries, the other 90% are the catalog (the bridge is fitted on them only). Relevant =
same article type, or same article type and colour. BM25 is scored by a temporary Qdrant Edge
shard (sparse vector with the IDF modifier), so its figures are Qdrant's own.

    python -m benchmarks.text_probe [--catalog DIR] [--seed 0] [--holdout 0.1]

Prints a Markdown table and writes it to benchmarks/out/text_probe.md.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import tempfile
import time

import numpy as np

from benchmarks.common import FASHION_SMALL, OUT, table
from shoplens import metrics
from shoplens.catalog import read_catalog
from shoplens.embedcache import embed_products
from shoplens.encoders import create_encoder
from shoplens.text.bridge import fit_bridge
from shoplens.text.document import AVG_LEN, bm25_document, bm25_query, product_text
from shoplens.text.fusion import rrf
from shoplens.text.minilm import MiniLM

DEPTH = 100  # results taken from each retriever before fusion
FIELD_SETS = {
    "title": ["title"],
    "title+type+colour": ["title", "article_type", "colour"],
    "title+attributes": None,  # product_text's default: every describing field
    "attributes": ["gender", "category", "sub_category", "article_type", "colour", "season", "usage"],
}


def top_ids(scores: np.ndarray, depth: int = DEPTH) -> np.ndarray:
    """Row-wise indices of the `depth` best scores, best first."""
    part = np.argpartition(-scores, depth, axis=1)[:, :depth]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


class KeywordIndex:
    """A temporary Qdrant Edge shard holding the documents' BM25 vectors (IDF modifier) and their colour."""

    def __init__(self, docs: list[str], colours: list[str], avg_len: float = AVG_LEN):
        from qdrant_edge import EdgeConfig, EdgeShard, EdgeSparseVectorParams, Modifier, Point, SparseVector, UpdateOperation

        self.folder = tempfile.mkdtemp(prefix="text-probe-")
        self.shard = EdgeShard.create(self.folder, EdgeConfig(vectors={}, sparse_vectors={
            "bm25": EdgeSparseVectorParams(modifier=Modifier.Idf)}))
        points = []
        for row, (text, colour) in enumerate(zip(docs, colours)):
            indices, values = bm25_document(text, avg_len)
            if indices:  # a product without text has no keyword vector
                points.append(Point(row, {"bm25": SparseVector(indices, values)}, {"colour": colour}))
        for start in range(0, len(points), 1000):
            self.shard.update(UpdateOperation.upsert_points(points[start:start + 1000]))

    def search(self, query: str, colours: list[str] | None = None) -> list[int]:
        """Top-DEPTH rows; with `colours`, only products of those colours (a filtered search, not a post-filter)."""
        from qdrant_edge import FieldCondition, Filter, MatchAny, Query, QueryRequest, SparseVector

        indices, values = bm25_query(query)
        if not indices:
            return []
        where = Filter(must=[FieldCondition("colour", match=MatchAny(colours))]) if colours else None
        hits = self.shard.query(QueryRequest(limit=DEPTH, filter=where,
                                             query=Query.Nearest(SparseVector(indices, values), using="bm25")))
        return [int(h.id) for h in hits]

    def close(self) -> None:
        self.shard.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def keyword_rankings(docs: list[str], colours: list[str], queries: dict[str, list[str]],
                     avg_len: float = AVG_LEN) -> dict[str, list[list[int]]]:
    """Top-DEPTH catalog rows per query kind and query."""
    index = KeywordIndex(docs, colours, avg_len)
    try:
        return {kind: [index.search(q) for q in texts] for kind, texts in queries.items()}
    finally:
        index.close()


def cached_vectors(model: MiniLM, texts: list[str]) -> np.ndarray:
    """MiniLM vectors of `texts`, cached under benchmarks/out so reruns skip the encoding."""
    key = hashlib.sha1("\x1f".join(texts).encode()).hexdigest()[:16]
    path = OUT / "text-probe-cache" / f"{model.name}-{model.version}-{key}.npy"
    if path.exists():
        return np.load(path)
    t = time.perf_counter()
    vectors = model.embed_texts(texts)
    print(f"embedded {len(texts)} texts in {time.perf_counter() - t:.1f}s ({len(texts) / (time.perf_counter() - t):.0f}/s)")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def colour_pattern(colours: set[str]) -> re.Pattern:
    """Matches any catalog colour value as whole words, longest first ("Navy Blue" before "Blue")."""
    names = sorted((c for c in colours if c), key=len, reverse=True)
    return re.compile(r"\b(" + "|".join(re.escape(c) for c in names) + r")\b", re.IGNORECASE)


def named_colours(query: str, pattern: re.Pattern, spelling: dict[str, str]) -> list[str]:
    """The catalog colour values the query names, as the catalog spells them."""
    return sorted({spelling[m.lower()] for m in pattern.findall(query)})


def precision10(rankings, query_labels, catalog_labels, only: np.ndarray | None = None) -> float:
    """Mean P@10 over queries that have at least one relevant catalog product.

    With `only` (a boolean per catalog row), counts only relevant results among those rows.
    """
    counts: dict[str, int] = {}
    for label in catalog_labels:
        counts[label] = counts.get(label, 0) + 1
    rel = np.zeros((len(rankings), 10), bool)
    for i, (ranking, label) in enumerate(zip(rankings, query_labels)):
        for j, row in enumerate(ranking[:10]):
            rel[i, j] = catalog_labels[row] == label and (only is None or only[row])
    n_rel = np.array([counts.get(label, 0) for label in query_labels])
    return float(np.nanmean(metrics.precision_at_k(rel, n_rel, 10)))


def dense_rankings(query_vectors: np.ndarray, vectors: np.ndarray, allowed: list[np.ndarray | None]) -> list[list[int]]:
    """Top-DEPTH rows by cosine per query; `allowed[i]` (boolean rows or None) restricts query i (a filter)."""
    scores = query_vectors @ vectors.T
    for i, mask in enumerate(allowed):
        if mask is not None:
            scores[i, ~mask] = -np.inf
    out = []
    for i, row in enumerate(top_ids(scores).tolist()):
        out.append([r for r in row if np.isfinite(scores[i, r])])
    return out


class Probe:
    """The hold-out split, its queries and labels, and the scoring of rankings into result rows."""

    def __init__(self, catalog_dir: str, seed: int, holdout: float):
        catalog = read_catalog(catalog_dir)
        embedded = embed_products(catalog.products, create_encoder("efficientnet-lite0"), progress=True)
        rng = np.random.default_rng(seed)
        held = np.zeros(len(embedded.products), bool)
        held[rng.choice(len(held), int(round(holdout * len(held))), replace=False)] = True
        self.cat = [p.metadata for p, h in zip(embedded.products, held) if not h]
        self.qry = [p.metadata for p, h in zip(embedded.products, held) if h]
        self.images = embedded.vectors[~held]
        self.colours = [m["colour"] for m in self.cat]
        self.spelling = {c.lower(): c for c in self.colours if c}
        self.pattern = colour_pattern(set(self.colours))
        self.kinds = {"colour+type": [f"{m['colour']} {m['article_type']}" for m in self.qry],
                      "title": [m["title"] for m in self.qry]}
        self.named = {kind: [named_colours(q, self.pattern, self.spelling) for q in texts]
                      for kind, texts in self.kinds.items()}
        self.labels = {"type": ([m["article_type"] for m in self.qry], [m["article_type"] for m in self.cat]),
                       "type+colour": ([f"{m['article_type']}+{m['colour']}" for m in self.qry],
                                       [f"{m['article_type']}+{m['colour']}" for m in self.cat])}
        self.rows: list[dict] = []

    def colour_masks(self, kind: str) -> list[np.ndarray | None]:
        """Per query of `kind`: catalog rows of the colours it names, or None when it names none."""
        colours = np.array(self.colours)
        return [np.isin(colours, names) if names else None for names in self.named[kind]]

    def score(self, method: str, rankings: dict[str, list[list[int]]], only: np.ndarray | None = None) -> dict:
        """P@10 per query kind and label, and their means over both kinds; appended to the table."""
        row = {"method": method}
        for label, (q_labels, c_labels) in self.labels.items():
            for kind in self.kinds:
                row[f"{kind} {label}"] = precision10(rankings[kind], q_labels, c_labels, only)
            row[f"all {label}"] = (row[f"colour+type {label}"] + row[f"title {label}"]) / 2
        self.rows.append(row)
        print(f"{method:70s} type {row['all type']:.3f}  type+colour {row['all type+colour']:.3f}", flush=True)
        return row


def fuse_all(lists: list[dict], k: float, weights: tuple, n: int) -> dict[str, list[list[int]]]:
    """RRF of several retrievers' rankings, query by query."""
    kinds = lists[0].keys()
    return {kind: [rrf([ranks[kind][i] for ranks in lists], k=k, weights=weights)[0] for i in range(n)]
            for kind in kinds}


def best_of(rows: list[dict], prefix: str) -> dict:
    """The row starting with `prefix` with the best sum of the two overall P@10s."""
    return max((r for r in rows if r["method"].startswith(prefix)), key=lambda r: r["all type"] + r["all type+colour"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--catalog", default=str(FASHION_SMALL))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--holdout", type=float, default=0.1)
    args = p.parse_args(argv)
    started = time.perf_counter()
    probe = Probe(args.catalog, args.seed, args.holdout)
    cat, kinds, n = probe.cat, probe.kinds, len(probe.qry)
    print(f"catalog {len(cat)}, held out {n}")
    model = MiniLM()
    query_vectors = {kind: cached_vectors(model, texts) for kind, texts in kinds.items()}

    # 1. Which fields go into the document, for keyword and semantic search alone.
    keyword, semantic, doc_vectors, docs = {}, {}, {}, {}
    for name, fields in FIELD_SETS.items():
        docs[name] = [product_text(m, fields) for m in cat]
        doc_vectors[name] = cached_vectors(model, docs[name])
        keyword[name] = keyword_rankings(docs[name], probe.colours, kinds)
        probe.score(f"keyword, {name}", keyword[name])
        semantic[name] = {kind: dense_rankings(query_vectors[kind], doc_vectors[name], [None] * n) for kind in kinds}
        probe.score(f"semantic, {name}", semantic[name])
    lens = [len(bm25_document(d)[0]) for d in docs["title+attributes"]]
    print(f"distinct BM25 terms per title+attributes document: mean {np.mean(lens):.1f}")
    for avg_len in (5.0, 256.0):
        probe.score(f"keyword, title+attributes, BM25 avg_len {avg_len:g} (default {AVG_LEN:g})",
                    keyword_rankings(docs["title+attributes"], probe.colours, kinds, avg_len))

    # 2. The bridge: text vector -> image space, searched against the catalog's image vectors.
    bridges = {}
    for text_doc in ("title", "title+type+colour"):
        for alpha in (0.01, 0.1, 1.0):
            for neighbours in (1, 10):
                t = time.perf_counter()
                bridge = fit_bridge(doc_vectors[text_doc], probe.images, alpha=alpha, neighbours=neighbours)
                fit_s = time.perf_counter() - t
                ranks = {kind: dense_rankings(bridge.project(query_vectors[kind]), probe.images, [None] * n)
                         for kind in kinds}
                row = probe.score(f"bridge fitted on {text_doc}, alpha {alpha:g}, neighbours {neighbours} "
                                  f"(fit {fit_s:.1f}s)", ranks)
                bridges[(text_doc, alpha, neighbours)] = (row["all type"] + row["all type+colour"], bridge, ranks)
    bridge_key = max(bridges, key=lambda key: bridges[key][0])
    _, bridge, bridge_ranks = bridges[bridge_key]
    print(f"best bridge: {bridge_key}")

    # 3. Fusions: keyword over title+attributes with semantic over either document.
    kw = keyword["title+attributes"]
    for sem_doc in ("title+attributes", "title+type+colour"):
        se = semantic[sem_doc]
        for k in (2, 10, 60):
            for w in ((1, 1), (2, 1), (1, 2)):
                probe.score(f"RRF keyword+semantic({sem_doc}) k {k} w {w}", fuse_all([kw, se], k, w, n))
            for w in ((1, 1, 0.25), (1, 1, 0.5), (1, 2, 0.25), (1, 2, 0.5)):
                probe.score(f"RRF keyword+semantic({sem_doc})+bridge k {k} w {w}",
                            fuse_all([kw, se, bridge_ranks], k, w, n))

    # 4. Colour words in the query: boost matching products within the top 20, or add colour-filtered
    #    prefetches (keyword and semantic searched among products of the named colour only) to the fusion.
    ki = KeywordIndex(docs["title+attributes"], probe.colours)
    kw_c = {kind: [ki.search(q, probe.named[kind][i]) if probe.named[kind][i] else kw[kind][i]
                   for i, q in enumerate(texts)] for kind, texts in kinds.items()}
    ki.close()
    for prefix in ("RRF keyword+semantic(", "RRF keyword+semantic(title+type+colour)+bridge",
                   "RRF keyword+semantic(title+attributes)+bridge"):
        recipe = best_of(probe.rows, prefix)["method"]
        sem_doc = recipe.split("semantic(")[1].split(")")[0]
        k = float(recipe.split(" k ")[1].split()[0])
        w = tuple(float(x) for x in recipe.split(" w ")[1].strip("()").split(","))
        se = semantic[sem_doc]
        se_c = {kind: dense_rankings(query_vectors[kind], doc_vectors[sem_doc], probe.colour_masks(kind))
                for kind in kinds}
        lists = [kw, se] + ([bridge_ranks] if len(w) == 3 else [])
        fused = fuse_all(lists, k, w, n)
        boosted = {kind: [boost(fused[kind][i], probe.named[kind][i], probe.colours, 20) for i in range(n)]
                   for kind in kinds}
        probe.score(f"{recipe} + colour boost in top 20", boosted)
        for cw in (0.5, 1.0):
            probe.score(f"{recipe} + colour-filtered keyword+semantic at {cw:g}x",
                        fuse_all(lists + [kw_c, se_c], k, w + (w[0] * cw, w[1] * cw), n))
        probe.score(f"{recipe}, keyword+semantic colour-filtered only",
                    fuse_all([kw_c, se_c] + lists[2:], k, w, n))

    # 5. Products without text: hide 30% of the catalog's text; does the bridge reach them?
    textless_scenario(probe, docs, doc_vectors, query_vectors, bridge_key)
    return report(probe, bridge_key, started)


def boost(ranking: list[int], names: list[str], colours: list[str], window: int) -> list[int]:
    """Within the first `window` results, products of a named colour go first (stable); the rest keep their order."""
    if not names:
        return ranking
    head = ranking[:window]
    return [r for r in head if colours[r] in names] + [r for r in head if colours[r] not in names] + ranking[window:]


def textless_scenario(probe: Probe, docs, doc_vectors, query_vectors, bridge_key) -> None:
    """30% of catalog products lose their text (no keyword or semantic vector); the bridge still sees their photos."""
    n = len(probe.qry)
    rng = np.random.default_rng(1)
    textless = np.zeros(len(probe.cat), bool)
    textless[rng.choice(len(textless), int(0.3 * len(textless)), replace=False)] = True
    sem_doc = "title+type+colour"
    kw_docs = [("" if t else d) for d, t in zip(docs["title+attributes"], textless)]
    kw = keyword_rankings(kw_docs, probe.colours, probe.kinds)
    masks = [~textless] * n
    se = {kind: dense_rankings(query_vectors[kind], doc_vectors[sem_doc], masks) for kind in probe.kinds}
    text_doc, alpha, neighbours = bridge_key
    bridge = fit_bridge(doc_vectors[text_doc][~textless], probe.images[~textless], alpha=alpha, neighbours=neighbours)
    br = {kind: dense_rankings(bridge.project(query_vectors[kind]), probe.images, [None] * n) for kind in probe.kinds}
    # The bridge searched among the text-less products only: a fallback list that reaches them.
    fallback = {kind: dense_rankings(bridge.project(query_vectors[kind]), probe.images, [textless] * n)
                for kind in probe.kinds}
    runs = [("", 60, (1, 2), [kw, se]), (" + bridge", 60, (1, 2, 0.25), [kw, se, br]),
            (" + bridge", 2, (1, 2, 1), [kw, se, br])]
    runs += [(" + bridge over text-less only", k, w, [kw, se, fallback])
             for k, w in ((60, (1, 2, 1)), (10, (1, 2, 0.5)), (10, (1, 2, 1)), (2, (1, 2, 0.5)), (2, (1, 2, 1)))]
    for name, k, w, lists in runs:
        fused = fuse_all(lists, k, w, n)
        probe.score(f"30% text-less catalog: RRF keyword+semantic{name} k {k} w {w}", fused)
        probe.score(f"... the same, counting only relevant text-less products", fused, only=textless)


def report(probe: Probe, bridge_key, started: float) -> int:
    """Print the Markdown table and save it to benchmarks/out/text_probe.md."""
    keys = ["colour+type type", "colour+type type+colour", "title type", "title type+colour", "all type",
            "all type+colour"]
    headers = ["method", "colour+type q: type", "colour+type q: type+colour", "title q: type",
               "title q: type+colour", "all: type", "all: type+colour"]
    rows = [[r["method"]] + [f"{r[k]:.3f}" for k in keys] for r in probe.rows]
    text = (f"# Text search probe: P@10, fashion-product-images-small, {len(probe.cat)} catalog products, "
            f"{len(probe.qry)} held out (x2 query kinds)\n\n"
            f"Best bridge (alpha, neighbours): {bridge_key}. Run time {time.perf_counter() - started:.0f}s.\n\n"
            + table(headers, rows) + "\n")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "text_probe.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
