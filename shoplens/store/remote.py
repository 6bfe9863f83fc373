"""A Qdrant server or cluster through qdrant-client (also its ':memory:' mode, used by the tests)."""

from __future__ import annotations

import base64
import binascii
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from shoplens.cache import cache_dir
from shoplens.store.base import (IMAGE_VECTOR, KEYWORD_VECTOR, TEXT_VECTOR, Filters, Hit, PointData, Sparse, Store,
                                 StoreError, normalise_filters, record_hit, text_dim, tie_ranked)

DEFAULT_COLLECTION = "products"
# Files kept with the collection (e.g. its tuning) live in its metadata, base64-encoded, under this prefix:
# they travel with the collection to every machine that searches it. read_meta leaves them out.
FILE_PREFIX = "file:"
MAX_FILE_BYTES = 16 * 2**20  # a server's default request limit is 32 MB; base64 adds a third


def _models():
    from qdrant_client import models

    return models


def client_filter(filters: Filters | None, ids: Sequence[str] | None = None):
    """Our {field: [values]} (and optionally a set of point ids) as a qdrant-client Filter (None when empty)."""
    m = _models()
    conds = []
    for key, values in normalise_filters(filters).items():
        match = m.MatchValue(value=values[0]) if len(values) == 1 else m.MatchAny(any=values)
        conds.append(m.FieldCondition(key=key, match=match))
    if ids is not None:
        conds.append(m.HasIdCondition(has_id=list(ids)))
    return m.Filter(must=conds) if conds else None


def client_vectors(point: PointData) -> dict:
    """A point's named vectors in qdrant-client's form."""
    m = _models()
    vectors = point.text_vectors()
    if KEYWORD_VECTOR in vectors:
        indices, values = vectors[KEYWORD_VECTOR]
        vectors[KEYWORD_VECTOR] = m.SparseVector(indices=list(map(int, indices)), values=list(map(float, values)))
    if point.vector is not None:
        vectors[IMAGE_VECTOR] = np.asarray(point.vector, np.float32).tolist()
    return vectors


class QdrantStore(Store):
    """One collection, named vector 'image'; the index metadata lives in the collection's metadata."""

    def __init__(self, url: str = ":memory:", collection: str = DEFAULT_COLLECTION, api_key: str | None = None,
                 client=None, timeout: int = 10):
        try:
            from qdrant_client import QdrantClient
        except ImportError as exc:
            raise StoreError(f"a Qdrant server needs qdrant-client (pip install -r requirements.txt): {exc}") from None
        self.collection = collection
        self.url = url
        self._artifacts: Path | None = None
        self.location = f"{url} (collection {collection})"
        if client is not None:
            self.client = client
        elif url == ":memory:":
            self.client = QdrantClient(location=":memory:")
        else:
            # No version probe at construction: an unreachable server fails on first use, with our message.
            self.client = QdrantClient(url=url, api_key=api_key or os.environ.get("QDRANT_API_KEY"), timeout=timeout,
                                       check_compatibility=False)

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StoreError:
            raise
        except Exception as exc:  # connection refused, timeouts, HTTP errors
            raise StoreError(f"Qdrant at {self.location} failed: {exc}") from None

    def read_meta(self) -> dict | None:
        if not self._call(self.client.collection_exists, self.collection):
            return None
        info = self._call(self.client.get_collection, self.collection)
        meta = info.config.metadata or None
        if meta is None:
            raise StoreError(f"collection {self.collection!r} at {self.location} was not made by shoplens "
                             "(no index metadata); use --collection to pick another")
        return {key: value for key, value in meta.items() if value is not None and not key.startswith(FILE_PREFIX)}

    def create(self, meta: dict) -> None:
        m = _models()
        if not self._call(self.client.collection_exists, self.collection):
            vectors = {IMAGE_VECTOR: m.VectorParams(size=int(meta["dim"]), distance=m.Distance.COSINE)}
            sparse = None
            if text_dim(meta):
                vectors[TEXT_VECTOR] = m.VectorParams(size=text_dim(meta), distance=m.Distance.COSINE)
                sparse = {KEYWORD_VECTOR: m.SparseVectorParams(modifier=m.Modifier.IDF)}
            self._call(self.client.create_collection, self.collection, vectors_config=vectors,
                       sparse_vectors_config=sparse, metadata=meta)
        else:
            self.write_meta(meta)

    def write_meta(self, meta: dict) -> None:
        # Qdrant merges collection metadata: a key left out would survive, so dropped keys are set to null.
        old = self.read_meta() or {}
        self._call(self.client.update_collection, self.collection,
                   metadata={**{key: None for key in old if key not in meta}, **meta})

    def upsert(self, points: list[PointData]) -> None:
        if not points:
            return
        m = _models()
        structs = [m.PointStruct(id=p.id, vector=client_vectors(p), payload=p.payload) for p in points]
        self._call(self.client.upsert, self.collection, points=structs, wait=True)

    def update_text(self, points: list[PointData]) -> None:
        m = _models()
        updates, emptied = [], []
        for p in points:
            vectors = client_vectors(PointData(p.id, None, text=p.text, keywords=p.keywords))
            if vectors:
                updates.append(m.PointVectors(id=p.id, vector=vectors))
            else:  # the product lost its words: its old ones must stop matching
                emptied.append(p.id)
        if updates:
            self._call(self.client.update_vectors, self.collection, points=updates, wait=True)
        if emptied:
            self._call(self.client.delete_vectors, self.collection, vectors=[TEXT_VECTOR, KEYWORD_VECTOR],
                       points=m.PointIdsList(points=emptied), wait=True)

    def set_vectors(self, ids: list[str], vectors: np.ndarray) -> None:
        m = _models()
        points = [m.PointVectors(id=i, vector={IMAGE_VECTOR: np.asarray(v, np.float32).tolist()})
                  for i, v in zip(ids, vectors)]
        if points:
            self._call(self.client.update_vectors, self.collection, points=points, wait=True)

    def set_field(self, ids: list[str], key: str, value) -> None:
        if not ids:
            return
        if value is None:
            self._call(self.client.delete_payload, self.collection, keys=[key], points=list(ids), wait=True)
        else:
            self._call(self.client.set_payload, self.collection, payload={key: value}, points=list(ids), wait=True)

    def set_payload(self, point: str, payload: dict) -> None:
        self._call(self.client.overwrite_payload, self.collection, payload=payload, points=[point], wait=True)

    def delete(self, ids: list[str]) -> None:
        if ids:
            m = _models()
            self._call(self.client.delete, self.collection, points_selector=m.PointIdsList(points=list(ids)), wait=True)

    def create_keyword_index(self, field_name: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # local mode says indexes do nothing there; a server uses them
            self._call(self.client.create_payload_index, self.collection, field_name=field_name,
                       field_schema=_models().PayloadSchemaType.KEYWORD, wait=True)

    def search(self, vector: np.ndarray, k: int = 10, filters: Filters | None = None, exact: bool = False,
               using: str = IMAGE_VECTOR, ids: Sequence[str] | None = None) -> list[Hit]:
        m = _models()
        query, params = np.asarray(vector, np.float32).tolist(), m.SearchParams(exact=True) if exact else None
        return tie_ranked(lambda limit: self._query(query, using, limit, filters, ids, params), k)

    def search_keywords(self, keywords: Sparse, k: int = 10, filters: Filters | None = None,
                        ids: Sequence[str] | None = None) -> list[Hit]:
        indices, values = keywords
        if not len(indices):
            return []
        query = _models().SparseVector(indices=list(map(int, indices)), values=list(map(float, values)))
        return tie_ranked(lambda limit: self._query(query, KEYWORD_VECTOR, limit, filters, ids), k)

    def _query(self, query, using: str, k: int, filters: Filters | None, ids: Sequence[str] | None,
               params=None) -> list[Hit]:
        if ids is not None and not ids:
            return []
        response = self._call(self.client.query_points, self.collection, query=query, using=using, limit=k,
                              query_filter=client_filter(filters, ids), with_payload=True, search_params=params)
        return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in response.points]

    def scroll(self, filters: Filters | None = None, limit: int = 100, offset: str | None = None,
               with_vector: bool = False) -> tuple[list[Hit], str | None]:
        records, next_offset = self._call(self.client.scroll, self.collection, scroll_filter=client_filter(filters),
                                          limit=limit, offset=offset, with_payload=True, with_vectors=with_vector)
        return [record_hit(r, with_vector) for r in records], (str(next_offset) if next_offset is not None else None)

    def retrieve(self, ids: list[str], with_vector: bool = False) -> list[Hit]:
        if not ids:
            return []
        records = self._call(self.client.retrieve, self.collection, ids=list(ids), with_payload=True,
                             with_vectors=with_vector)
        return [record_hit(r, with_vector) for r in records]

    def count(self, filters: Filters | None = None) -> int:
        return int(self._call(self.client.count, self.collection, count_filter=client_filter(filters), exact=True).count)

    def facet(self, field_name: str, filters: Filters | None = None, limit: int = 1000) -> list[tuple[str, int]]:
        response = self._call(self.client.facet, self.collection, key=field_name, facet_filter=client_filter(filters),
                              limit=limit, exact=True)
        return [(str(h.value), int(h.count)) for h in response.hits]

    def artifact_path(self, name: str) -> Path:
        # A server keeps vectors, not files: keep them in this machine's cache, one folder per collection.
        # Files there are derived data (a searcher elsewhere re-derives them from the collection).
        if self._artifacts is None:
            if self.url == ":memory:":  # lives as long as this process, like the collection
                self._artifacts = Path(tempfile.mkdtemp(prefix="shoplens-qdrant-"))
            else:
                self._artifacts = cache_dir("qdrant", re.sub(r"[^0-9A-Za-z.-]+", "_", f"{self.url}-{self.collection}"))
        return self._artifacts / name

    def write_file(self, name: str, data: bytes) -> None:
        if len(data) > MAX_FILE_BYTES:
            raise StoreError(f"{name} is {len(data) / 2**20:.1f} MB; a Qdrant collection keeps files of at most "
                             f"{MAX_FILE_BYTES // 2**20} MB in its metadata: use a smaller tuning, or an embedded "
                             "index (--index DIR)")
        self._call(self.client.update_collection, self.collection,
                   metadata={FILE_PREFIX + name: base64.b64encode(data).decode("ascii")})

    def read_file(self, name: str) -> bytes | None:
        if not self._call(self.client.collection_exists, self.collection):
            return None
        meta = self._call(self.client.get_collection, self.collection).config.metadata or {}
        encoded = meta.get(FILE_PREFIX + name)
        if encoded is None:
            return None
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise StoreError(f"the file {name!r} kept in collection {self.collection!r} is damaged") from None

    def delete_file(self, name: str) -> None:
        # Local mode drops a key set to null, a server keeps it as null: read_file treats both as absent.
        self._call(self.client.update_collection, self.collection, metadata={FILE_PREFIX + name: None})

    def cli_args(self) -> str:
        return f"--qdrant-url {self.url}" + (f" --collection {self.collection}" if self.collection != DEFAULT_COLLECTION
                                             else "")

    def close(self) -> None:
        self._call(self.client.close)
        if self.url == ":memory:" and self._artifacts is not None:
            shutil.rmtree(self._artifacts, ignore_errors=True)
