"""One store interface; an embedded Qdrant Edge shard, a qdrant-client collection and a Milvus collection
implement it."""

from __future__ import annotations

import uuid
from pathlib import Path
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from shoplens.errors import UserError

IMAGE_VECTOR = "image"
TEXT_VECTOR = "text"  # dense sentence vector of the product's title and attributes
KEYWORD_VECTOR = "bm25"  # sparse BM25 term weights of the same text; the store applies IDF at query time
SCHEMA_VERSION = 1
# Fixed namespace: the same product id gives the same point id on every machine and every run.
POINT_NAMESPACE = uuid.UUID("6d1f3c2e-6f0a-5b7e-9a51-0c1e5d4f2a10")

# {field: value} or {field: [values]} (any of them).
Filters = Mapping[str, "str | Sequence[str]"]


class StoreError(UserError, RuntimeError):
    """The index cannot be opened or used; the message says what to do."""


class IndexMismatchError(StoreError):
    """The index was built by another encoder than the one asked for."""


class IndexDamagedError(StoreError):
    """Index files are damaged (truncated, zeroed, unreadable); the message names the command that repairs it."""


class DiskSpaceError(StoreError):
    """Not enough free disk space to write (or even open) the index; nothing was changed."""


class ServerLostError(StoreError):
    """The store's server stopped answering (refused, unreachable, or no answer in time): not a damaged index."""


class NotWritableError(StoreError):
    """The index's files are there but this process may not write them (permissions, a read-only disk): not
    damage, so nothing is repaired or moved; the message names the folder and what stops the write."""


# What the OS says when a write is refused, as Python's OSError errno and as Rust's io::Error text ("os error N").
_NOT_WRITABLE = {1: "operation not permitted", 13: "permission denied", 30: "read-only file system"}


def not_writable(error: BaseException | str) -> str | None:
    """Why a failed operation was refused a write ("permission denied", "read-only file system"), or None when
    the failure is something else (damage, a full disk, a busy index)."""
    if isinstance(error, OSError) and error.errno in _NOT_WRITABLE:
        return _NOT_WRITABLE[error.errno]
    text = str(error).lower()
    for code, what in _NOT_WRITABLE.items():
        if f"os error {code})" in text or f"[errno {code}]" in text or what in text:
            return what
    return None


def not_writable_error(path: str | Path, why: str, detail: str = "") -> NotWritableError:
    """The one-line error for an index folder this process cannot write."""
    shown = f" ({detail})" if detail and detail != why else ""
    return NotWritableError(f"cannot write in the index folder {path}: {why}{shown}. The index is not damaged; "
                            f"run as a user who may write there (or make the disk writable), or copy the index "
                            f"to a writable folder and use that")


def repair_command(location: str, qdrant: bool = False) -> str:
    """The command that checks and repairs the index at `location`."""
    where = f"--qdrant-url {location.split(' (collection')[0]}" if qdrant else f"--index {location}"
    return f"python -m shoplens check {where} --repair"


def point_id(product_id: str) -> str:
    """Deterministic point id (uuid5 of the product id): re-indexing never duplicates."""
    return str(uuid.uuid5(POINT_NAMESPACE, str(product_id)))


@dataclass
class Hit:
    """A product returned by the store: its point id, score (cosine, or 0 for listings) and payload.

    `score` is what a list is ranked by, so it decreases down every list; re-ranking (shoplens.query.hybrid)
    replaces it. `similarity` is the raw image cosine to the query photo where there is one.
    """

    id: str
    score: float
    payload: dict
    vector: np.ndarray | None = None
    text_vector: np.ndarray | None = None
    similarity: float | None = None

    @property
    def product_id(self) -> str:
        return str(self.payload.get("product_id", ""))


# A sparse vector as (indices, values).
Sparse = tuple[Sequence[int], Sequence[float]]


@dataclass
class PointData:
    """A point to write: its image vector, payload and, for catalogs with text, its text vectors."""

    id: str
    vector: np.ndarray | None
    payload: dict = field(default_factory=dict)
    text: np.ndarray | None = None
    keywords: Sparse | None = None

    def text_vectors(self) -> dict:
        """The text-side named vectors this point has (a product without text has none)."""
        out = {}
        if self.text is not None:
            out[TEXT_VECTOR] = np.asarray(self.text, np.float32).tolist()
        if self.keywords is not None and len(self.keywords[0]):
            out[KEYWORD_VECTOR] = self.keywords
        return out


def text_dim(meta: dict) -> int | None:
    """The size of the index's text vectors, or None for an index without text search."""
    text = meta.get("text") or {}
    return int(text["dim"]) if text.get("dim") else None


# Hits fetched beyond k so that a group of equal scores at the k-th place is seen whole (more are fetched
# while the last one fetched still ties with the k-th).
TIE_SLACK = 8


def tie_score(hit: Hit) -> float:
    """A hit's score as the engines compute it (float32): equal vectors give equal scores on every store."""
    return float(np.float32(hit.score))


def tie_ranked(fetch: Callable[[int], list[Hit]], k: int, most: int | None = None) -> list[Hit]:
    """The k best of `fetch(limit)` (hits best first), equal scores in product-id order (then point id).

    Engines order equal scores their own way (Edge by segment, Milvus by shard), so photos listed under
    several ids came back in different orders: the same query now gives the same list on every store.
    `most` caps the limit a store accepts.
    """
    if k <= 0:
        return []
    limit = k + TIE_SLACK if most is None else min(k + TIE_SLACK, max(k, most))
    while True:
        hits = fetch(limit)
        if (len(hits) < limit or tie_score(hits[k - 1]) != tie_score(hits[-1])
                or (most is not None and limit >= most)):
            break
        limit = limit * 2 if most is None else min(limit * 2, most)
    hits = sorted(hits, key=lambda h: (-tie_score(h), h.product_id or h.id, h.id))
    return hits[:k]


def record_hit(record, with_vector: bool) -> Hit:
    """A listing (scroll/retrieve) record of either store as a Hit with score 0."""
    vectors = (record.vector or {}) if with_vector else {}
    image, text = vectors.get(IMAGE_VECTOR), vectors.get(TEXT_VECTOR)
    return Hit(str(record.id), 0.0, dict(record.payload or {}),
               None if image is None else np.asarray(image, np.float32),
               None if text is None else np.asarray(text, np.float32))


class Store(ABC):
    """A collection of product points with one named image vector and a metadata record."""

    location: str = ""

    @abstractmethod
    def read_meta(self) -> dict | None:
        """The index's metadata (encoder, dim, catalog, ...), or None when the index does not exist."""

    def require_meta(self) -> dict:
        """The index's metadata; a StoreError with the command that builds the index when there is none."""
        meta = self.read_meta()
        if meta is None:
            where = f" {self.cli_args()}" if self.cli_args() else ""
            raise StoreError(f"no index at {self.location}; build one with: python indexer.py CATALOG{where}")
        return meta

    @abstractmethod
    def create(self, meta: dict) -> None:
        """Create the empty index for vectors of size meta['dim']."""

    @abstractmethod
    def write_meta(self, meta: dict) -> None:
        """Replace the metadata record of an existing index."""

    @abstractmethod
    def upsert(self, points: list[PointData]) -> None:
        """Insert or replace points (vector and payload)."""

    @abstractmethod
    def set_payload(self, point: str, payload: dict) -> None:
        """Replace one point's payload, keeping its vector."""

    @abstractmethod
    def delete(self, ids: list[str]) -> None:
        """Delete points by id."""

    @abstractmethod
    def update_text(self, points: list[PointData]) -> None:
        """Replace the text vectors of existing points, keeping their image vectors."""

    @abstractmethod
    def set_vectors(self, ids: list[str], vectors: np.ndarray) -> None:
        """Replace the image vectors of existing points, keeping their payloads and text vectors."""

    @abstractmethod
    def set_field(self, ids: list[str], key: str, value) -> None:
        """Set one payload key of existing points (None removes the key), keeping the rest of their payload."""

    @abstractmethod
    def search(self, vector: np.ndarray, k: int = 10, filters: Filters | None = None, exact: bool = False,
               using: str = IMAGE_VECTOR, ids: Sequence[str] | None = None) -> list[Hit]:
        """The k nearest points to `vector` (named vector `using`) among those matching `filters`, best first;
        `ids` restricts the search to those point ids."""

    @abstractmethod
    def search_keywords(self, keywords: Sparse, k: int = 10, filters: Filters | None = None,
                        ids: Sequence[str] | None = None) -> list[Hit]:
        """The k best BM25 matches for a sparse query vector (IDF applied by the store), best first."""

    @abstractmethod
    def scroll(self, filters: Filters | None = None, limit: int = 100, offset: str | None = None,
               with_vector: bool = False) -> tuple[list[Hit], str | None]:
        """A page of points in id order, and the offset of the next page (None at the end)."""

    @abstractmethod
    def retrieve(self, ids: list[str], with_vector: bool = False) -> list[Hit]:
        """Points by id (missing ids are left out)."""

    @abstractmethod
    def count(self, filters: Filters | None = None) -> int:
        """How many points match `filters`."""

    @abstractmethod
    def facet(self, field_name: str, filters: Filters | None = None, limit: int = 1000) -> list[tuple[str, int]]:
        """Values of an indexed keyword field with their counts, most common first."""

    @abstractmethod
    def create_keyword_index(self, field_name: str) -> None:
        """Index a payload field for fast exact-match filtering and faceting."""

    @abstractmethod
    def artifact_path(self, name: str) -> Path:
        """Where a file that belongs with this index (e.g. the text bridge) is kept; its folder exists."""

    @abstractmethod
    def write_file(self, name: str, data: bytes) -> None:
        """Keep a small file with the index itself (it travels with the index, unlike `artifact_path`)."""

    @abstractmethod
    def read_file(self, name: str) -> bytes | None:
        """A file kept by `write_file`, or None when there is none."""

    @abstractmethod
    def delete_file(self, name: str) -> None:
        """Forget a file kept by `write_file` (no error when there is none)."""

    def cli_args(self) -> str:
        """The command-line options that name this index, for messages that give a command to run."""
        return ""

    def finish(self) -> None:
        """Make writes durable and build indexes; called at the end of an indexing run."""

    def close(self) -> None:
        """Release files and connections."""

    # Shared logic below, written once against the abstract methods.

    def iterate(self, filters: Filters | None = None, page: int = 1000, with_vector: bool = False) -> Iterator[Hit]:
        """Every matching point, page by page."""
        offset = None
        while True:
            hits, offset = self.scroll(filters, limit=page, offset=offset, with_vector=with_vector)
            yield from hits
            if offset is None:
                return

    def states(self) -> dict[str, dict]:
        """point id -> payload of every point, for incremental indexing."""
        return {hit.id: hit.payload for hit in self.iterate()}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def normalise_filters(filters: Filters | None) -> dict[str, list[str]]:
    """{field: value | [values]} -> {field: [values]}, dropping empty selections."""
    out: dict[str, list[str]] = {}
    for key, value in (filters or {}).items():
        values = [value] if isinstance(value, (str, int)) else list(value)
        values = [str(v) for v in values if v is not None and str(v) != ""]
        if values:
            out[key] = values
    return out
