"""Reading a shopper's words through the catalog's own labels ("kicks" -> Casual Shoes, Sports Shoes).

Shoppers say "tote", "sweats" or "shades"; the catalog says Handbags, Track Pants and Sunglasses. BM25
cannot bridge that, and MiniLM over whole product texts blurs the product type with brand names and
colours. The catalog's distinct product types are few (75 article types in the 9.6k fashion set) and
name exactly what a product is, so the query's sentence vector is compared with each type's sentence
vector and the closest types are read as what the shopper means. The vocabulary is the catalog's own
(its facet values), embedded by the same sentence model: nothing here is a hand-written synonym list.

Search then adds one ranked list to the fusion: the semantic search restricted to those types
(shoplens.query.hybrid). How many types to keep and the list's weight were chosen on the "tune" half of
benchmarks/data/text_phrasings.csv and reported on the other half (docs/quality.md).
"""

from __future__ import annotations

import threading
from typing import Callable, Sequence

import numpy as np

# The payload fields that name what a product is, most specific first (catalog.py's names).
TYPE_FIELDS = ("article_type", "product_type", "sub_category", "category")
TOP_LABELS = 2  # at most this many types are read from one query
MARGIN = 0.05  # ...each within this cosine of the best one
MIN_SIMILARITY = 0.3  # below this the query names no type the catalog has ("red", "for men")
VOTE_WEIGHT = 1.0  # weight of the types of the other searches' top hits (type_votes), added to the cosine
VOTE_DEPTH = 20  # how many top hits of each other search vote


def type_votes(field: str, lists, depth: int = VOTE_DEPTH) -> dict[str, float]:
    """label -> share of the top `depth` hits of each list (keyword, semantic) that have it, averaged over
    the lists: what the catalog's own products found by the words say the words mean ("polo shirt" finds
    titles saying Polo, which the catalog files under Tshirts)."""
    lists = [hits[:depth] for hits in lists if hits]
    votes: dict[str, float] = {}
    for hits in lists:
        for hit in hits:
            label = str(hit.payload.get(field, ""))
            votes[label] = votes.get(label, 0.0) + 1.0 / (len(hits) * len(lists))
    return votes


def pick_labels(similarities: Sequence[float], labels: Sequence[str], top: int = TOP_LABELS, margin: float = MARGIN,
                min_similarity: float = MIN_SIMILARITY) -> list[str]:
    """The labels a query means: the `top` most similar, each at least `min_similarity` and within `margin`
    of the best, best first (ties by label, so the choice is the same on every run)."""
    if len(similarities) != len(labels):
        raise ValueError(f"{len(similarities)} similarities for {len(labels)} labels")
    if not labels:
        return []
    best = max(similarities)
    floor = max(min_similarity, best - margin)
    ranked = sorted(((s, lab) for s, lab in zip(similarities, labels) if s >= floor), key=lambda x: (-x[0], x[1]))
    return [lab for _s, lab in ranked[:top]]


class LabelVocabulary:
    """A catalog's product types and their sentence vectors, read from the index on first use."""

    def __init__(self, field: str, labels: Sequence[str], embed_texts: Callable[[list[str]], np.ndarray]):
        self.field = field
        self.labels = list(labels)
        self._embed_texts = embed_texts
        self._vectors: np.ndarray | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_store(cls, store, embed_texts: Callable[[list[str]], np.ndarray]) -> "LabelVocabulary | None":
        """The vocabulary of the first type field with at least two values in the index; None without one."""
        for name in TYPE_FIELDS:
            try:
                values = [value for value, count in store.facet(name, limit=10000) if count > 0 and value.strip()]
            except Exception:  # noqa: BLE001 - a field without a keyword index cannot be faceted: try the next
                continue
            if len(values) >= 2:
                return cls(name, sorted(values), embed_texts)
        return None

    @property
    def vectors(self) -> np.ndarray:
        """Unit sentence vectors of the labels, one row each (embedded once, on first use)."""
        with self._lock:
            if self._vectors is None:
                vectors = np.asarray(self._embed_texts(self.labels), np.float32)
                self._vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            return self._vectors

    def similarities(self, query_vector: np.ndarray) -> np.ndarray:
        """Cosine of the query's sentence vector with each label's."""
        q = np.asarray(query_vector, np.float32).ravel()
        return self.vectors @ (q / max(float(np.linalg.norm(q)), 1e-12))

    def match(self, query_vector: np.ndarray, top: int = TOP_LABELS, margin: float = MARGIN,
              min_similarity: float = MIN_SIMILARITY, votes: dict[str, float] | None = None,
              vote_weight: float = VOTE_WEIGHT) -> list[str]:
        """The catalog's types this query means (see pick_labels): by cosine, plus `vote_weight` x each
        type's share of `votes` (type_votes) when given."""
        scores = self.similarities(query_vector)
        if votes and vote_weight > 0:
            scores = scores + vote_weight * np.array([votes.get(label, 0.0) for label in self.labels], np.float32)
        return pick_labels(scores.tolist(), self.labels, top, margin, min_similarity)
