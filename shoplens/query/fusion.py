"""Weighted reciprocal rank fusion of ranked id lists (keyword, semantic, bridge), exactly as Qdrant fuses.

Qdrant's `Fusion.Rrf(k, weights)` scores the item at 1-based rank r of a list of weight w as
1 / (r / w + k - 1): with w = 1 that is 1 / (r + k - 1), i.e. the textbook 1 / (k + r) with
k one smaller, and a weight stretches ranks (w = 3: that list's 3rd result counts like another
list's 1st) rather than scaling scores. Using the same formula here means a recipe measured in
Python ranks the same as the store's server-side fusion of prefetches with the same k and weights.
"""

from __future__ import annotations

from typing import Hashable, Sequence

DEFAULT_K = 2  # Qdrant's default


def rrf_score(rank: int, k: float = DEFAULT_K, weight: float = 1.0) -> float:
    """One list's contribution for an item at 1-based `rank`; 0 for a weight <= 0 (as Qdrant)."""
    if weight <= 0:
        return 0.0
    return 1.0 / (rank / weight + k - 1.0)


def rrf(rankings: Sequence[Sequence[Hashable]], k: float = DEFAULT_K, weights: Sequence[float] | None = None,
        limit: int | None = None) -> tuple[list, list[float]]:
    """Fuse best-first id lists into (ids, scores), best first; an id's score sums its lists' `rrf_score`s.

    `k` must be >= 1 (Qdrant also accepts 0, where a top result scores infinity). Ties keep the order
    in which ids were first seen, list by list, so the result is deterministic. An id repeated
    within one list counts at its best rank only.
    """
    if weights is None:
        weights = [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    if k < 1:
        raise ValueError(f"k must be >= 1, not {k}")
    scores: dict = {}
    for ranking, weight in zip(rankings, weights):
        seen = set()
        for rank, item in enumerate(ranking, start=1):
            if item in seen:
                continue
            seen.add(item)
            scores[item] = scores.get(item, 0.0) + rrf_score(rank, k, weight)
    fused = sorted(scores.items(), key=lambda kv: -kv[1])  # stable: equal scores stay in first-seen order
    if limit is not None:
        fused = fused[:limit]
    return [item for item, _ in fused], [score for _, score in fused]
