"""A Qdrant server or cluster through qdrant-client (also its ':memory:' mode, used by the tests)."""

from __future__ import annotations

import os
import warnings

import numpy as np

from shoplens.store.base import (IMAGE_VECTOR, Filters, Hit, PointData, Store, StoreError, normalise_filters,
                                 record_hit)

DEFAULT_COLLECTION = "products"


def _models():
    from qdrant_client import models

    return models


def client_filter(filters: Filters | None):
    """Our {field: [values]} as a qdrant-client Filter (None when empty)."""
    m = _models()
    conds = []
    for key, values in normalise_filters(filters).items():
        match = m.MatchValue(value=values[0]) if len(values) == 1 else m.MatchAny(any=values)
        conds.append(m.FieldCondition(key=key, match=match))
    return m.Filter(must=conds) if conds else None


class QdrantStore(Store):
    """One collection, named vector 'image'; the index metadata lives in the collection's metadata."""

    def __init__(self, url: str = ":memory:", collection: str = DEFAULT_COLLECTION, api_key: str | None = None,
                 client=None, timeout: int = 10):
        try:
            from qdrant_client import QdrantClient
        except ImportError as exc:
            raise StoreError(f"a Qdrant server needs qdrant-client (pip install -r requirements.txt): {exc}") from None
        self.collection = collection
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
        return dict(meta)

    def create(self, meta: dict) -> None:
        m = _models()
        if not self._call(self.client.collection_exists, self.collection):
            self._call(self.client.create_collection, self.collection,
                       vectors_config={IMAGE_VECTOR: m.VectorParams(size=int(meta["dim"]), distance=m.Distance.COSINE)},
                       metadata=meta)
        else:
            self.write_meta(meta)

    def write_meta(self, meta: dict) -> None:
        self._call(self.client.update_collection, self.collection, metadata=meta)

    def upsert(self, points: list[PointData]) -> None:
        if not points:
            return
        m = _models()
        structs = [m.PointStruct(id=p.id, vector={IMAGE_VECTOR: np.asarray(p.vector, np.float32).tolist()}, payload=p.payload)
                   for p in points]
        self._call(self.client.upsert, self.collection, points=structs, wait=True)

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

    def search(self, vector: np.ndarray, k: int = 10, filters: Filters | None = None, exact: bool = False) -> list[Hit]:
        m = _models()
        response = self._call(self.client.query_points, self.collection, query=np.asarray(vector, np.float32).tolist(),
                              using=IMAGE_VECTOR, limit=k, query_filter=client_filter(filters), with_payload=True,
                              search_params=m.SearchParams(exact=True) if exact else None)
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

    def close(self) -> None:
        self._call(self.client.close)
