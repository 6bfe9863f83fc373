"""Fit a tuning from a catalog's labels (plus extra labelled photos) and measure it on held-out products.

Vectors come from the embedding cache (embedcache.embed_products), so re-tuning a catalog
that was indexed or evaluated before decodes no photo. Held-out figures hold out whole
groups of near-duplicate listings (same normalised title or same photo content hash, joined
by union-find); an extra photo joins the group of its product (same title, or the only
catalog product with its label value), so no photo of a held-out product is ever fitted on.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import numpy as np

from shoplens.catalog import Catalog, Product, read_catalog
from shoplens.encoders import DEFAULT_ENCODER, Encoder, create_encoder
from shoplens.vectors.embedcache import embed_products
from shoplens.progress import note
from shoplens.query.expansion import expand_matrix, expansion_setting
from shoplens.quality.evaluate import NEAR_DUPLICATE, Evaluation, build_evaluation, label_of, parse_label
from shoplens.vectors.tuning import Tuning, TuningError
from shoplens.tune.methods import get_method

DEFAULT_METHOD = "lda-sqrt"  # measured best: docs/quality.md, "Tuning to the shop"
HOLDOUT = 0.2  # share of product groups held out for tune's before/after figures


@dataclass
class LabelledSet:
    """Catalog rows first (0..n_catalog-1), then extra photo rows; labels are '' where missing."""

    products: list[Product]
    hashes: list[str]
    vectors: np.ndarray
    labels: list[str]
    n_catalog: int
    groups: np.ndarray
    info: dict = field(default_factory=dict)

    @property
    def labelled(self) -> np.ndarray:
        return np.array([bool(v) for v in self.labels], dtype=bool)


@dataclass
class TuneResult:
    """A fitted tuning (fitted on every labelled product and photo), its held-out figures and timings."""

    tuning: Tuning
    figures: dict
    seconds: float
    info: dict = field(default_factory=dict)

    @property
    def improved(self) -> bool:
        """Whether the held-out figure went up (the guard in `tune`)."""
        metric = self.figures.get("metric")
        before, after = self.figures.get("before", {}).get(metric), self.figures.get("after", {}).get(metric)
        return before is not None and after is not None and after > before


def normalise_title(title: str) -> str:
    """'Nike  Men Blue T-shirt ' -> 'nike men blue t shirt': listings that differ only in case/spacing/punctuation."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", title.lower()).split())


def near_duplicate_groups(products: list[Product], hashes: list[str], labels: list[str] | None = None,
                          n_catalog: int | None = None) -> np.ndarray:
    """Group number per row: rows sharing a normalised title or a content hash are in one group (union-find).

    Rows from n_catalog on are extra photos: they also join the catalog product that alone carries
    their label value, so a product and the photos of it are held out together.
    """
    n = len(products)
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i, j):
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)

    first: dict[tuple, int] = {}
    for i, (p, h) in enumerate(zip(products, hashes)):
        keys = [("hash", h)]
        title = normalise_title(p.title)
        if title:
            keys.append(("title", title))
        for key in keys:
            if key in first:
                union(i, first[key])
            else:
                first[key] = i
    if labels is not None and n_catalog is not None:
        owners: dict[str, list[int]] = {}
        for i in range(n_catalog):
            if labels[i]:
                owners.setdefault(labels[i], []).append(i)
        for i in range(n_catalog, n):
            rows = owners.get(labels[i], [])
            if len(rows) == 1:
                union(i, rows[0])
    roots = [find(i) for i in range(n)]
    ids = {r: k for k, r in enumerate(dict.fromkeys(roots))}
    return np.array([ids[r] for r in roots], dtype=np.int64)


def gather(catalog, fields: list[str], photos=(), encoder: Encoder | None = None, layout: str = "auto",
           photos_layout: str = "auto", progress: bool = False, use_cache: bool = True,
           batch_size: int = 32) -> LabelledSet:
    """Catalog and extra photos with their vectors (cached), labels and near-duplicate groups; checks the labels."""
    enc = encoder or create_encoder(DEFAULT_ENCODER)
    cat = catalog if isinstance(catalog, Catalog) else read_catalog(catalog, layout)
    emb = embed_products(cat.products, enc, batch_size, progress, use_cache)
    labels = [label_of(p.metadata, fields) for p in emb.products]
    name = "+".join(fields)
    values = set(v for v in labels if v)
    if not values:
        known = sorted({k for p in emb.products[:200] for k, v in p.metadata.items() if v})
        raise TuningError(f"no product in {cat.root} has a {name} label; fields there: {', '.join(known) or 'none'}")
    if len(values) < 2:
        raise TuningError(f"every labelled product has the same {name} ({next(iter(values))!r}): "
                          "a tuning needs at least two label values")
    products, hashes, vectors = list(emb.products), list(emb.hashes), [emb.vectors]
    info = {"catalog": str(cat.root), "catalog_products": len(emb.products), "labelled": sum(map(bool, labels)),
            "label_values": len(values), "failed": len(emb.failed), "photos": []}
    for source in photos:
        pcat = source if isinstance(source, Catalog) else read_catalog(source, photos_layout)
        pemb = embed_products(pcat.products, enc, batch_size, progress, use_cache)
        plabels = [label_of(p.metadata, fields) for p in pemb.products]
        matched = [i for i, v in enumerate(plabels) if v in values]
        if not matched:
            sample = sorted({v for v in plabels if v})[:3]
            raise TuningError(f"no photo in {pcat.root} has a {name} value the catalog has "
                              f"(photos: {', '.join(map(repr, sample)) or 'no labels'}; catalog: "
                              f"{', '.join(map(repr, sorted(values)[:3]))}, ...)")
        info["photos"].append({"source": str(source) if not isinstance(source, Catalog) else str(pcat.root), "photos": len(pemb.products), "matched": len(matched),
                               "unmatched": len(pemb.products) - len(matched)})
        products += [pemb.products[i] for i in matched]
        hashes += [pemb.hashes[i] for i in matched]
        vectors.append(pemb.vectors[matched])
        labels += [plabels[i] for i in matched]
    groups = near_duplicate_groups(products, hashes, labels, len(emb.products))
    info["groups"] = int(len(np.unique(groups[:len(emb.products)])))
    return LabelledSet(products, hashes, np.concatenate(vectors).astype(np.float32), labels, len(emb.products),
                       groups, info)


def fit_tuning(vectors: np.ndarray, labels: list[str], fields: list[str], encoder_meta: dict,
               method: str = DEFAULT_METHOD, seed: int = 0, options: dict | None = None) -> Tuning:
    """Fit `method` on labelled vectors (empty labels are skipped) and wrap it as a Tuning."""
    fit = get_method(method)
    keep = [i for i, v in enumerate(labels) if v]
    names = {v: k for k, v in enumerate(sorted({labels[i] for i in keep}))}
    if len(names) < 2:
        raise TuningError("a tuning needs at least two label values among the fitted products")
    y = np.array([names[labels[i]] for i in keep], dtype=np.int64)
    branches, arrays = fit(vectors[keep], y, seed=seed, **(options or {}))
    return Tuning(method, list(fields), encoder_meta, branches, arrays,
                  info={"fitted_on": len(keep), "label_values": len(names), "options": dict(options or {})})


def choose_metric(data: LabelledSet) -> str:
    """precision@10 when label values have several catalog products; hit@1 when each names one product."""
    counts: dict[str, int] = {}
    for v in data.labels[:data.n_catalog]:
        if v:
            counts[v] = counts.get(v, 0) + 1
    return "hit@1" if counts and max(counts.values()) == 1 else "precision@10"


def score(data: LabelledSet, query_rows, eval_fields: list[str], encoder_meta: dict,
          tuning: Tuning | None = None, protocol: str = "held-out") -> Evaluation:
    """Rows `query_rows` query the whole catalog (tuned when `tuning` is given); each query's own photo left out."""
    query_rows = np.asarray(query_rows, dtype=np.int64)
    raw = (data.vectors[query_rows], data.vectors[:data.n_catalog])
    q_vec, cat_vec = raw
    if tuning is not None:
        cat_vec, q_vec = tuning.apply(cat_vec), tuning.apply(q_vec)
        k, alpha = expansion_setting(tuning.expansion)
        if k:  # the whole query path: expanded over the tuned catalog, the query's own photo and copies left out
            same = np.array(data.hashes[:data.n_catalog])[None, :] == np.array([data.hashes[i] for i in query_rows])[:, None]
            copies = same | (raw[0] @ raw[1].T > NEAR_DUPLICATE)
            q_vec = expand_matrix(q_vec, cat_vec, k, alpha, copies)
    # As in leave-one-out: near-duplicate photos of a query (untuned cosine > NEAR_DUPLICATE) are copies of it,
    # not neighbours to find, before and after tuning alike.
    return build_evaluation(protocol, eval_fields, encoder_meta, [data.products[i] for i in query_rows], q_vec,
                            data.products[:data.n_catalog], cat_vec, 10, [data.hashes[i] for i in query_rows],
                            data.hashes[:data.n_catalog], near_duplicate=NEAR_DUPLICATE, duplicate_vectors=raw)


def holdout_groups(data: LabelledSet) -> np.ndarray:
    """The groups held out together; -1 marks rows that are always fitted on.

    Usually the near-duplicate groups. But when each label value names one catalog product (the
    label is the product's identity, as fine_id in the grocery set) and extra photos are given,
    holding a product out would hide its label from the fit entirely; what a shop wants to know
    there is how well new photos of KNOWN products find them. So the catalog is always fitted
    on and the extra photos are held out, grouped by photo content hash.
    """
    n_extra = len(data.products) - data.n_catalog
    if n_extra and choose_metric(data) == "hit@1":
        ids = {h: k for k, h in enumerate(dict.fromkeys(data.hashes[data.n_catalog:]))}
        return np.array([-1] * data.n_catalog + [ids[h] for h in data.hashes[data.n_catalog:]], dtype=np.int64)
    return data.groups


def split_groups(groups: np.ndarray, share: float, seed: int) -> np.ndarray:
    """Boolean mask of rows whose group is held out (about `share` of the groups >= 0, seeded)."""
    unique = np.unique(groups[groups >= 0])
    rng = np.random.default_rng(seed)
    n_out = max(1, int(round(share * len(unique))))
    out = set(rng.permutation(unique)[:n_out].tolist())
    return np.array([g in out for g in groups], dtype=bool)


def tune_catalog(catalog, label_fields, photos=(), encoder: str | Encoder | None = None,
                 method: str = DEFAULT_METHOD, progress: bool = False, *, layout: str = "auto",
                 photos_layout: str = "auto", holdout: float = HOLDOUT, seed: int = 0, options: dict | None = None,
                 use_cache: bool = True, batch_size: int = 32, measure: bool = True,
                 expansion: bool = True) -> TuneResult:
    """Fit a tuning on the catalog's labelled products plus extra labelled photo catalogs.

    Figures: a seeded share `holdout` of near-duplicate groups is held out, a tuning is fitted on
    the rest, and the held-out products and photos query the whole catalog, untuned then tuned.
    The returned tuning is then fitted on everything labelled. Products without the label stay
    catalog-only (they are ranked, never fitted on). With `expansion`, the tuning records the query expansion
    (shoplens.tune.fit.choose_expansion) chosen on an inner split of the fitted rows, never on the held-out ones.
    """
    started = time.perf_counter()
    fields = parse_label(label_fields)
    get_method(method)  # an unknown method fails before any photo is read
    enc = encoder if isinstance(encoder, Encoder) else create_encoder(encoder or DEFAULT_ENCODER)
    data = gather(catalog, fields, photos, enc, layout, photos_layout, progress, use_cache, batch_size)
    meta = enc.describe()
    gathered = time.perf_counter()
    labelled = data.labelled
    figures: dict = {}
    chosen: dict = {}
    if measure:
        groups = holdout_groups(data)
        held = split_groups(groups, holdout, seed)
        fit_rows = labelled & ~held
        query_rows = np.flatnonzero(labelled & held)
        tuning = fit_tuning(data.vectors[fit_rows], [data.labels[i] for i in np.flatnonzero(fit_rows)], fields,
                            meta, method, seed, options)
        if expansion:  # chosen inside the fitted rows, so the held-out figure below is of the whole query path
            chosen = choose_expansion(data, np.flatnonzero(fit_rows), fields, meta, method, seed, options)
            tuning.expansion = chosen
        before = score(data, query_rows, fields, meta)
        after = score(data, query_rows, fields, meta, tuning)
        metric = choose_metric(data)
        figures = {"metric": metric, "before": _keep(before.summary), "after": _keep(after.summary),
                   "protocol": (f"held-out: {holdout:.0%} of the extra photos (by photo hash), seed {seed}; every "
                                "catalog product fitted on" if (groups < 0).any() else
                                f"held-out: {holdout:.0%} of near-duplicate groups (title or photo hash), seed {seed}")
                               + f"; {len(query_rows)} held-out labelled photos query the whole catalog",
                   "queries": int(len(query_rows))}
    measured = time.perf_counter()
    note(progress, f"fitting {method} on {int(labelled.sum())} labelled photos ...")
    tuning = fit_tuning(data.vectors, data.labels, fields, meta, method, seed, options)
    if expansion:
        # Without a measured split, chosen on an inner split of everything fitted on; else the measured choice.
        tuning.expansion = chosen if measure else choose_expansion(data, np.flatnonzero(labelled), fields, meta,
                                                                   method, seed, options)
    tuning.figures = figures
    done = time.perf_counter()
    info = {**data.info, "seconds_vectors": round(gathered - started, 2), "seconds_measure": round(measured - gathered, 2),
            "seconds_fit": round(done - measured, 2)}
    tuning.info.update({"catalog": data.info["catalog"], "photos": data.info["photos"]})
    return TuneResult(tuning, figures, round(done - started, 2), info)


def _keep(summary: dict) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items()}


def fit_for_index(catalog, options, encoder, progress=True):
    """--tune-label: fit a tuning on the catalog (its photos encoded once, into the embedding cache) and say how it
    did held-out; (the tuning to apply, or None when it did not beat untuned search; the cached vectors).
    `options`: the indexer's (shoplens.index.indexer.IndexOptions); handed to index_catalog by the command line
    and the app."""
    from shoplens.progress import stream_of
    from shoplens.vectors.embedcache import EmbeddingCache
    from shoplens.vectors.tuning import tuning_line

    result = tune_catalog(catalog, options.tune_label, photos=options.photos, encoder=encoder, progress=progress,
                          batch_size=options.batch_size)
    # Said even when quiet (--quiet hides bars, not outcomes), on the indexer's own terminal.
    out = stream_of(progress)
    line = tuning_line(result.tuning.describe()) or f"Tuned to {options.tune_label}"
    print(f"{line} ({result.seconds:.1f} s)", file=out, flush=True)
    tuning = result.tuning
    if not result.improved and not options.force:
        print("note: the tuning does not beat untuned search on held-out products, so it is not applied "
              "(--force applies it anyway)", file=out, flush=True)
        tuning = None
    # Every catalog photo was just encoded into the cache: indexing reuses those vectors instead of encoding again.
    return tuning, EmbeddingCache.for_encoder(encoder)


# ------------------------------------------------------------------------------------------- query expansion
# Choosing a tuning's query expansion (shoplens.query.expansion) on photos held out from its fit. The setting
# (k neighbours, exponent alpha, or none) is never chosen on the photos it is reported on: within the rows a
# tuning is fitted on, a seeded share of the groups (holdout_groups: near-duplicate groups, or for shoppers'
# photos of known products the photos by hash) is held out, a tuning is fitted on the rest, and each setting of
# GRID ranks the held-out rows; the best (ties: the earlier, i.e. less expansion) is recorded in the tuning
# fitted on all of the rows. It lives here, beside fit_tuning and score, which it calls.

# (k, alpha); (0, 0) = no expansion. Small k: beyond the first few neighbours a query drifts to other products.
GRID = ((0, 0.0), (3, 1.0), (3, 3.0), (5, 1.0), (5, 3.0), (10, 3.0))
INNER_HOLDOUT = 0.2


def choose_expansion(data, fit_rows: np.ndarray, fields: list[str], encoder_meta: dict, method: str, seed: int = 0,
                     options: dict | None = None, grid=GRID) -> dict:
    """The best expansion setting ({} for none) for a tuning fitted on `fit_rows` (indices into data), chosen on
    an inner held-out share of their groups with a tuning fitted on the rest. `{}` when too few rows to split."""
    fit_rows = np.asarray(fit_rows, dtype=np.int64)
    groups = holdout_groups(data)
    sub = groups[fit_rows]
    if len(np.unique(sub[sub >= 0])) < 5:
        return {}
    inner = np.zeros(len(data.products), dtype=bool)
    inner[fit_rows] = split_groups(sub, INNER_HOLDOUT, seed + 1000)
    train = np.setdiff1d(fit_rows, np.flatnonzero(inner))
    queries = np.flatnonzero(inner & data.labelled)
    if not len(queries) or not len(train):
        return {}
    tuning = fit_tuning(data.vectors[train], [data.labels[i] for i in train], fields, encoder_meta, method, seed,
                        options)
    metric = choose_metric(data)
    best, best_value = {}, None
    for k, alpha in grid:
        tuning.expansion = {"k": k, "alpha": alpha} if k else {}
        value = score(data, queries, fields, encoder_meta, tuning).summary.get(metric)
        if value is not None and (best_value is None or value > best_value + 1e-9):
            best, best_value = dict(tuning.expansion), value
    return best
