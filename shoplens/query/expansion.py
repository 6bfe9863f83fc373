"""Alpha query expansion (alpha-QE, Radenović et al.): the query moved towards its own nearest neighbours.

    query' = normalise(query + sum_i max(sim_i, 0)^alpha * x_i)   over the query's top `k` neighbours x_i

Neighbours at cosine above NEAR_DUPLICATE are left out: they are the query photo itself (a product searched by its
own photo, a re-upload), and adding them would only repeat the query. The setting is chosen with a tuning (on
photos held out from its fit, shoplens.tune.fit.choose_expansion) and recorded in it; search applies it on every store with
one more top-k search and a read of those neighbours' stored vectors (`expand_on_store`), and the evaluation
applies the same maths to matrices (`expand_matrix`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

# The same threshold as leave-one-out's near-duplicates (shoplens.quality.evaluate.NEAR_DUPLICATE).
NEAR_DUPLICATE = 0.99


def expansion_setting(setting: dict | None) -> tuple[int, float]:
    """(k, alpha) of a recorded setting; k = 0 means no expansion."""
    if not setting:
        return 0, 0.0
    return int(setting.get("k", 0)), float(setting.get("alpha", 1.0))


def expand(query: np.ndarray, neighbours: np.ndarray, sims: np.ndarray, alpha: float) -> np.ndarray:
    """One query vector (d,) moved towards its neighbours ((m, d), cosines (m,)); unit length."""
    q = np.asarray(query, np.float32)
    if len(neighbours):
        weights = np.maximum(np.asarray(sims, np.float32), 0) ** np.float32(alpha)
        q = q + weights @ np.asarray(neighbours, np.float32)
    return (q / max(float(np.linalg.norm(q)), 1e-12)).astype(np.float32)


def expand_matrix(queries: np.ndarray, catalog: np.ndarray, k: int, alpha: float,
                  excluded: np.ndarray | None = None) -> np.ndarray:
    """Each row of `queries` expanded over its top-k rows of `catalog` (both L2-normalised).

    `excluded` (n_queries, n_catalog) bool marks catalog rows a query may not use (itself, its copies); rows at
    cosine above NEAR_DUPLICATE are left out as well. Computed in blocks, so memory stays bounded.
    """
    q = np.asarray(queries, np.float32)
    if k <= 0 or len(catalog) == 0:
        return q.copy()
    out = np.empty_like(q)
    for start in range(0, len(q), 1024):
        block = q[start:start + 1024]
        sims = block @ catalog.T
        bad = sims > NEAR_DUPLICATE
        if excluded is not None:
            bad |= excluded[start:start + 1024]
        sims = np.where(bad, -np.inf, sims)
        kk = min(k, catalog.shape[0])
        top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        top_sims = np.take_along_axis(sims, top, axis=1)
        weights = np.where(np.isfinite(top_sims), np.maximum(top_sims, 0), 0).astype(np.float32) ** np.float32(alpha)
        moved = block + np.einsum("nk,nkd->nd", weights, catalog[top])
        out[start:start + len(block)] = moved / np.maximum(np.linalg.norm(moved, axis=1, keepdims=True), 1e-12)
    return out


def expand_on_store(search: Callable, retrieve: Callable, vector: np.ndarray, setting: dict | None,
                    filters=None, exclude: str | None = None) -> np.ndarray:
    """`vector` expanded over its top-k in a store: `search(vector, n, filters)` gives hits (id, score) and
    `retrieve(ids, with_vector=True)` their stored vectors; any store's pair works. `exclude`: a point id to
    leave out (the query product itself)."""
    k, alpha = expansion_setting(setting)
    if k <= 0:
        return np.asarray(vector, np.float32)
    hits = [h for h in search(vector, k + 1 + (1 if exclude else 0), filters)
            if h.id != exclude and h.score <= NEAR_DUPLICATE][:k]
    if not hits:
        return np.asarray(vector, np.float32)
    stored = {h.id: h.vector for h in retrieve([h.id for h in hits], with_vector=True) if h.vector is not None}
    kept = [h for h in hits if h.id in stored]
    if not kept:
        return np.asarray(vector, np.float32)
    neighbours = np.stack([np.asarray(stored[h.id], np.float32) for h in kept])
    return expand(vector, neighbours, np.array([h.score for h in kept], np.float32), alpha)
