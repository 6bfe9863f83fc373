"""Re-ranking image candidates by colour: image score + weight x colour similarity.

A photo query's colours come from its pixels, a words query's from its colour words; either way the
query is a colour_vector (shoplens.colour) compared with each candidate's stored one.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from shoplens.store import Hit

# Re-ranking photo queries, from benchmarks/colour.py: most of the best gain in type+colour precision
# for a small loss in type precision (a bigger weight or N adds under 0.01 and costs more type).
RERANK_TOP = 100  # image candidates re-ranked by colour
RERANK_WEIGHT = 0.2  # colour similarity's weight against image cosine


def colour_similarity(query_vector, candidate_vectors) -> np.ndarray:
    """Cosine of the query's colour shares with each candidate's, in [0, 1] (0 when either is empty).

    Cosine weighs the dominant colour most (a square), which measured better than the Bhattacharyya
    coefficient, histogram intersection or matching top names (benchmarks/colour.py).
    """
    q = np.asarray(query_vector, np.float32)
    c = np.atleast_2d(np.asarray(candidate_vectors, np.float32))
    norms = np.linalg.norm(c, axis=1) * np.linalg.norm(q)
    return np.divide(c @ q, norms, out=np.zeros(len(c), np.float32), where=norms > 0)


def rerank(scores, query_vector, candidate_vectors, weight: float) -> tuple[np.ndarray, np.ndarray]:
    """(order, combined scores): candidates sorted by score + weight x colour similarity, best first.

    Ties keep the original order. `order` indexes the candidates; combined scores are in that order.
    """
    combined = np.asarray(scores, np.float32) + weight * colour_similarity(query_vector, candidate_vectors)
    order = np.argsort(-combined, kind="stable")
    return order, combined[order]


def rerank_hits(hits: list[Hit], query_colours, weight: float) -> list[Hit]:
    """`hits` re-ordered by score + weight x similarity of their photo's colours (the payload's colour_vector;
    none counts as no colour) to `query_colours` (a colour_vector). Each hit's score becomes that combined
    score, so it decreases down the list; everything else (similarity included) is kept."""
    vectors = np.array([h.payload.get("colour_vector") or np.zeros(len(query_colours)) for h in hits], np.float32)
    order, combined = rerank([h.score for h in hits], query_colours, vectors, weight)
    return [dataclasses.replace(hits[i], score=float(s)) for i, s in zip(order, combined)]
