"""Ranking metrics for binary relevance, vectorised over queries.

Every function takes `rel`, a (queries, ranks) boolean array saying whether the result at
each rank is relevant (best first; a row may be shorter than k when the catalog is small),
and `n_relevant`, how many relevant items each query has in the whole catalog. A single
query can be given as a 1-D list and a scalar.

`hit@k` is the hit rate (1 when any of the top k is relevant), not recall: recall would divide the
relevant results found by all there are. Older figures call it `recall@k`; evaluate's JSON keeps that
name as an alias.

Queries with no relevant item (n_relevant == 0) have no defined hit rate, AP or nDCG; every
function returns NaN for them, and `summarise` leaves them out of the averages and counts
them, so a catalog with unmatched queries neither flatters nor punishes an encoder.
"""

from __future__ import annotations

import numpy as np

KS = (1, 5, 10)


def _prepare(rel, n_relevant) -> tuple[np.ndarray, np.ndarray]:
    rel = np.asarray(rel, dtype=bool)
    if rel.ndim == 1:
        rel = rel[None, :]
    n_relevant = np.atleast_1d(np.asarray(n_relevant, dtype=float))
    if n_relevant.shape[0] != rel.shape[0]:
        raise ValueError(f"{rel.shape[0]} rankings but {n_relevant.shape[0]} relevant counts")
    return rel, n_relevant


def _squeeze(values: np.ndarray, single: bool) -> np.ndarray | float:
    return float(values[0]) if single else values


def precision_at_k(rel, n_relevant, k: int):
    """Relevant results in the top k, divided by k (not by the number returned: a short list is penalised)."""
    single = np.ndim(rel) == 1
    rel, n = _prepare(rel, n_relevant)
    out = rel[:, :k].sum(axis=1) / k
    return _squeeze(np.where(n > 0, out, np.nan), single)


def hit_rate_at_k(rel, n_relevant, k: int):
    """Hit rate (hit@k): 1 when at least one relevant result is in the top k, else 0."""
    single = np.ndim(rel) == 1
    rel, n = _prepare(rel, n_relevant)
    out = rel[:, :k].any(axis=1).astype(float)
    return _squeeze(np.where(n > 0, out, np.nan), single)


recall_at_k = hit_rate_at_k  # the name older code used; it is a hit rate, not recall


def average_precision_at_k(rel, n_relevant, k: int = 10):
    """AP@k = sum over ranks r <= k of precision@r * rel_r, divided by min(k, n_relevant).

    The min(k, n_relevant) normaliser makes a perfect top k score 1 even when the catalog
    holds more than k relevant items (as in TREC-style mAP@k used by retrieval benchmarks).
    """
    single = np.ndim(rel) == 1
    rel, n = _prepare(rel, n_relevant)
    top = rel[:, :k].astype(float)
    ranks = np.arange(1, top.shape[1] + 1)
    precision = np.cumsum(top, axis=1) / ranks
    denom = np.minimum(k, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (precision * top).sum(axis=1) / denom
    return _squeeze(np.where(n > 0, out, np.nan), single)


def ndcg_at_k(rel, n_relevant, k: int = 10):
    """nDCG@k with binary gains and a log2(rank + 1) discount; the ideal ranking puts min(k, n_relevant) hits first."""
    single = np.ndim(rel) == 1
    rel, n = _prepare(rel, n_relevant)
    top = rel[:, :k].astype(float)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (top * discounts[: top.shape[1]]).sum(axis=1)
    ideal_cum = np.concatenate([[0.0], np.cumsum(discounts)])
    idcg = ideal_cum[np.minimum(k, n).astype(int)]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = dcg / idcg
    return _squeeze(np.where(n > 0, out, np.nan), single)


def per_query(rel, n_relevant, ks=KS) -> dict[str, np.ndarray]:
    """Every metric for every query: {'precision@1': array, ..., 'hit@10': ..., 'map@10': ..., 'ndcg@10': ...}."""
    rel, n = _prepare(rel, n_relevant)
    out = {}
    for k in ks:
        out[f"precision@{k}"] = precision_at_k(rel, n, k)
    for k in ks:
        out[f"hit@{k}"] = hit_rate_at_k(rel, n, k)
    kmax = max(ks)
    out[f"map@{kmax}"] = average_precision_at_k(rel, n, kmax)
    out[f"ndcg@{kmax}"] = ndcg_at_k(rel, n, kmax)
    return out


def summarise(scores: dict[str, np.ndarray]) -> dict[str, float | int]:
    """Means over the queries that have a relevant item; `queries` counts those, `no_relevant` the rest.

    A metric is None when no query has a relevant item (there is nothing to average).
    """
    first = next(iter(scores.values()))
    valid = ~np.isnan(first)
    out: dict[str, float | int] = {"queries": int(valid.sum()), "no_relevant": int((~valid).sum())}
    for name, values in scores.items():
        out[name] = round(float(np.mean(values[valid])), 4) if valid.any() else None
    return out
