"""Honest figures for a tuning: K-fold cross-validation over near-duplicate groups, or separate query photos.

Cross-validation: the groups (same normalised title or photo hash, see fit.near_duplicate_groups)
are dealt into K folds; for each fold a tuning is fitted on the other K-1 and the fold's labelled
products and photos query the WHOLE catalog, tuned, each query's own photo left out. Every query
is scored exactly once, by a tuning that never saw it.
"""

from __future__ import annotations

import numpy as np

from shoplens.quality import metrics
from shoplens.quality.evaluate import Evaluation, Ranking, build_evaluation
from shoplens.vectors.tuning import TuningError
from shoplens.query.expansion import NEAR_DUPLICATE, expand_matrix, expansion_setting
from shoplens.tune.fit import choose_expansion
from shoplens.tune.fit import DEFAULT_METHOD, LabelledSet, fit_tuning, holdout_groups, score


def assign_folds(groups: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Fold number (0..k-1) per row; rows of one group share a fold; groups dealt round-robin after a seeded shuffle.

    Rows of group -1 get fold -1: fitted on in every fold, never a query.
    """
    if k < 2:
        raise TuningError("--tune-folds needs at least 2 folds")
    unique = np.unique(groups[groups >= 0])
    if len(unique) < k:
        raise TuningError(f"{len(unique)} groups of products cannot make {k} folds")
    order = np.random.default_rng(seed).permutation(unique)
    fold_of = {g: i % k for i, g in enumerate(order.tolist())} | {-1: -1}
    return np.array([fold_of[g] for g in groups.tolist()], dtype=np.int64)


def merge(parts: list[Evaluation], protocol: str) -> Evaluation:
    """One evaluation from several over the same catalog (the folds): queries and scores concatenated."""
    first = parts[0]
    scores = {name: np.concatenate([p.scores[name] for p in parts]) for name in first.scores}
    ranking = Ranking(*(np.concatenate([getattr(p.ranking, f) for p in parts])
                        for f in ("top", "scores", "rel", "n_relevant")))
    qlabels = [v for p in parts for v in p.query_labels]
    per_label = {}
    values = np.array(qlabels, dtype=object)
    for value in sorted(set(qlabels), key=lambda v: (-qlabels.count(v), v)):
        mask = values == value
        per_label[value] = metrics.summarise({name: s[mask] for name, s in scores.items()})
    info = {"unlabelled": sum(p.info.get("unlabelled", 0) for p in parts), "catalog_size": len(first.catalog)}
    return Evaluation(protocol, first.label, first.encoder, metrics.summarise(scores), per_label,
                      [q for p in parts for q in p.queries], first.catalog, qlabels, ranking, scores, info)


def cross_validate(data: LabelledSet, fit_fields: list[str], eval_fields: list[str], encoder_meta: dict,
                   method: str = DEFAULT_METHOD, folds: int = 5, seed: int = 0, options: dict | None = None,
                   expansion: bool = True) -> tuple[Evaluation, Evaluation]:
    """(untuned, tuned) evaluations where each fold's rows are scored by a tuning fitted on the other folds.

    With `expansion`, each fold's tuning carries the query expansion chosen on part of its own fitted rows
    (shoplens.tune.fit.choose_expansion), so the tuned figure is the whole query path's, chosen without the fold."""
    fold = assign_folds(holdout_groups(data), folds, seed)
    labelled = data.labelled
    before, after = [], []
    for f in range(folds):
        fit_rows = np.flatnonzero(labelled & (fold != f))
        query_rows = np.flatnonzero(fold == f)
        tuning = fit_tuning(data.vectors[fit_rows], [data.labels[i] for i in fit_rows], fit_fields, encoder_meta,
                            method, seed, options)
        if expansion:
            tuning.expansion = choose_expansion(data, fit_rows, fit_fields, encoder_meta, method, seed, options)
        before.append(score(data, query_rows, eval_fields, encoder_meta, protocol="cross-validated"))
        after.append(score(data, query_rows, eval_fields, encoder_meta, tuning, protocol="cross-validated"))
    protocol = (f"{folds}-fold cross-validation over near-duplicate groups (title or photo hash), seed {seed}: "
                f"each fold's photos query the whole catalog")
    if (fold < 0).any():
        protocol = (f"{folds}-fold cross-validation over the extra photos (by photo hash), seed {seed}, every catalog "
                    f"product fitted on: each fold's photos query the whole catalog")
    return merge(before, protocol), merge(after, protocol)


def query_evaluation(data: LabelledSet, query_products, query_hashes: list[str], query_vectors: np.ndarray,
                     fit_fields: list[str], eval_fields: list[str], encoder_meta: dict,
                     method: str = DEFAULT_METHOD, seed: int = 0, options: dict | None = None,
                     expansion: bool = True):
    """(untuned, tuned, tuning, left_out): separate query photos against the catalog, the tuning fitted on all of data.

    A query photo that was also fitted on (same content hash) is left out of both evaluations. With `expansion`,
    the query expansion is chosen on part of the fitted photos held out from an inner fit, never on the queries.
    """
    fitted = {h for h, v in zip(data.hashes, data.labels) if v}
    keep = [i for i, h in enumerate(query_hashes) if h not in fitted]
    tuning = fit_tuning(data.vectors, data.labels, fit_fields, encoder_meta, method, seed, options)
    if expansion:
        tuning.expansion = choose_expansion(data, np.flatnonzero(data.labelled), fit_fields, encoder_meta, method,
                                            seed, options)
    queries = [query_products[i] for i in keep]
    qv = query_vectors[keep]
    catalog = data.products[:data.n_catalog]
    cv = data.vectors[:data.n_catalog]
    before = build_evaluation("queries", eval_fields, encoder_meta, queries, qv, catalog, cv, 10)
    tuned_catalog, tuned_queries = tuning.apply(cv), tuning.apply(qv)
    k, alpha = expansion_setting(tuning.expansion)
    if k:
        tuned_queries = expand_matrix(tuned_queries, tuned_catalog, k, alpha, qv @ cv.T > NEAR_DUPLICATE)
    after = build_evaluation("queries", eval_fields, encoder_meta, queries, tuned_queries, catalog,
                             tuned_catalog, 10)
    return before, after, tuning, len(query_hashes) - len(keep)
