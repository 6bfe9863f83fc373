"""The embedded store: a Qdrant Edge shard on local disk, in this process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from typing import Sequence

from shoplens.store.base import (IMAGE_VECTOR, KEYWORD_VECTOR, TEXT_VECTOR, Filters, Hit, PointData, Sparse, Store,
                                 StoreError, normalise_filters, record_hit, text_dim)

META_FILE = "index.json"
SHARD_DIR = "shard"


def _edge():
    try:
        import qdrant_edge
    except ImportError as exc:
        raise StoreError(f"the embedded store needs qdrant-edge-py (pip install -r requirements.txt): {exc}") from None
    return qdrant_edge


def edge_filter(filters: Filters | None, ids: Sequence[str] | None = None):
    """Our {field: [values]} (and optionally a set of point ids) as a Qdrant Edge Filter (None when empty)."""
    qe = _edge()
    conds = []
    for key, values in normalise_filters(filters).items():
        match = qe.MatchValue(values[0]) if len(values) == 1 else qe.MatchAny(values)
        conds.append(qe.FieldCondition(key, match=match))
    if ids is not None:
        conds.append(qe.HasIdCondition(set(ids)))
    return qe.Filter(must=conds) if conds else None


def edge_vectors(point: PointData) -> dict:
    """A point's named vectors in Qdrant Edge's form."""
    qe = _edge()
    vectors = point.text_vectors()
    if KEYWORD_VECTOR in vectors:
        indices, values = vectors[KEYWORD_VECTOR]
        vectors[KEYWORD_VECTOR] = qe.SparseVector(list(map(int, indices)), list(map(float, values)))
    if point.vector is not None:
        vectors[IMAGE_VECTOR] = np.asarray(point.vector, np.float32).tolist()
    return vectors


# From this many products a new index is created with the LARGE profile (python indexer.py --profile overrides).
LARGE_POINTS = 500_000
PROFILES = ("auto", "default", "large")


def large_profile() -> dict:
    """The shipped configuration for about a million products on one machine (docs/benchmarks.md, 1M row).

    int8 scalar quantization kept in RAM (a quarter of the float32 size) with the float32 originals memory-mapped
    from disk; a denser HNSW graph (m 32, ef_construct 128) than Qdrant's default (16, 100); each search walks the
    graph with hnsw_ef 128 over the int8 vectors, takes 2x the asked k and re-scores those with the originals.
    Measured at 1M (docs/benchmarks.md): recall@10 0.992 at p50 3.3 ms; hnsw_ef 256 gained 0.005 recall for
    about twice the time, and without rescoring recall fell to 0.950.
    """
    qe = _edge()
    return {"hnsw_config": qe.HnswIndexConfig(m=32, ef_construct=128, full_scan_threshold=10_000),
            "quantization_config": qe.ScalarQuantizationConfig(qe.ScalarType.Int8, quantile=0.99, always_ram=True),
            "on_disk_vectors": True,
            "search_params": qe.SearchParams(hnsw_ef=128, quantization=qe.QuantizationSearchParams(
                ignore=False, rescore=True, oversampling=2.0))}


class EdgeStore(Store):
    """Index folder = index.json (metadata) + shard/ (the Qdrant Edge shard with its WAL)."""

    def __init__(self, path: str | Path, *, hnsw_config=None, quantization_config=None,
                 on_disk_vectors: bool | None = None, search_params=None, profile: str = "auto"):
        """The tuning options (qdrant_edge.HnswIndexConfig, e.g. ScalarQuantizationConfig, vectors mmapped from
        disk) only apply when the index is created; None keeps Qdrant's defaults. An existing shard keeps its own.
        `search_params` (qdrant_edge.SearchParams: hnsw_ef, quantization rescoring) applies to non-exact searches.
        `profile` (PROFILES): "large" creates the index with large_profile(), "auto" does so when the metadata's
        catalog_size is LARGE_POINTS or more and no tuning option is given; the choice is kept in the metadata
        (edge_profile), so every later opening searches with the profile's parameters."""
        if profile not in PROFILES:
            raise StoreError(f"unknown index profile {profile!r}; pick one of {', '.join(PROFILES)}")
        self._profile = profile
        self.path = Path(path)
        self.location = str(self.path)
        self._shard = None
        self._tuning = {"hnsw_config": hnsw_config, "quantization_config": quantization_config}
        self._on_disk_vectors = on_disk_vectors
        self._search_params = search_params

    # metadata

    def read_meta(self) -> dict | None:
        meta_file = self.path / META_FILE
        if not meta_file.exists():
            if self.path.exists() and any(self.path.iterdir()):
                raise StoreError(f"{self.path} is not a shoplens index (no {META_FILE}); pick an empty or new folder")
            return None
        try:
            return json.loads(meta_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StoreError(f"{meta_file}: unreadable index metadata ({exc})") from None

    def write_meta(self, meta: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / f"{META_FILE}.tmp"
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
        os.replace(tmp, self.path / META_FILE)

    def _apply_profile(self, meta: dict) -> None:
        """Use the large profile for a new index when asked or when the catalog is that big (see __init__)."""
        explicit = any(v is not None for v in self._tuning.values()) or self._on_disk_vectors is not None
        big = int(meta.get("catalog_size") or 0) >= LARGE_POINTS
        if self._profile == "large" or (self._profile == "auto" and big and not explicit):
            config = large_profile()
            self._tuning = {"hnsw_config": config["hnsw_config"], "quantization_config": config["quantization_config"]}
            self._on_disk_vectors = config["on_disk_vectors"]
            if self._search_params is None:
                self._search_params = config["search_params"]
            meta["edge_profile"] = "large"

    def create(self, meta: dict) -> None:
        qe = _edge()
        self._apply_profile(meta)
        shard_dir = self.path / SHARD_DIR
        shard_dir.mkdir(parents=True, exist_ok=True)
        vectors = {IMAGE_VECTOR: qe.EdgeVectorParams(size=int(meta["dim"]), distance=qe.Distance.Cosine,
                                                     on_disk=self._on_disk_vectors)}
        sparse = None
        if text_dim(meta):
            vectors[TEXT_VECTOR] = qe.EdgeVectorParams(size=text_dim(meta), distance=qe.Distance.Cosine)
            sparse = {KEYWORD_VECTOR: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)}
        config = qe.EdgeConfig(vectors=vectors, sparse_vectors=sparse, **self._tuning)
        if any(shard_dir.iterdir()):
            self._shard = qe.EdgeShard.load(str(shard_dir), config)  # a run killed before index.json was written
        else:
            self._shard = qe.EdgeShard.create(str(shard_dir), config)
        self.write_meta(meta)

    @property
    def shard(self):
        if self._shard is None:
            shard_dir = self.path / SHARD_DIR
            if not (self.path / META_FILE).exists() or not shard_dir.exists():
                raise StoreError(f"no index at {self.path}; build one with: python indexer.py CATALOG --index {self.path}")
            try:
                self._shard = _edge().EdgeShard.load(str(shard_dir))
            except Exception as exc:  # the Rust side raises plain Exceptions
                raise StoreError(f"cannot open the index at {self.path}: {exc}") from None
            if self._search_params is None and (self.read_meta() or {}).get("edge_profile") == "large":
                self._search_params = large_profile()["search_params"]  # search params are not kept in the shard
        return self._shard

    # writes

    def upsert(self, points: list[PointData]) -> None:
        if not points:
            return
        qe = _edge()
        ops = [qe.Point(p.id, edge_vectors(p), p.payload) for p in points]
        self.shard.update(qe.UpdateOperation.upsert_points(ops))

    def update_text(self, points: list[PointData]) -> None:
        qe = _edge()
        ops, emptied = [], []
        for p in points:
            vectors = edge_vectors(PointData(p.id, None, text=p.text, keywords=p.keywords))
            if vectors:
                ops.append(qe.PointVectors(p.id, vectors))
            else:  # the product lost its words: its old ones must stop matching
                emptied.append(p.id)
        if ops:
            self.shard.update(qe.UpdateOperation.update_vectors(ops))
        if emptied:
            self.shard.update(qe.UpdateOperation.delete_vectors(emptied, [TEXT_VECTOR, KEYWORD_VECTOR]))

    def set_vectors(self, ids: list[str], vectors: np.ndarray) -> None:
        qe = _edge()
        ops = [qe.PointVectors(i, {IMAGE_VECTOR: np.asarray(v, np.float32).tolist()}) for i, v in zip(ids, vectors)]
        if ops:
            self.shard.update(qe.UpdateOperation.update_vectors(ops))

    def set_field(self, ids: list[str], key: str, value) -> None:
        if not ids:
            return
        qe = _edge()
        if value is None:
            self.shard.update(qe.UpdateOperation.delete_payload(list(ids), [key]))
        else:
            self.shard.update(qe.UpdateOperation.set_payload(list(ids), {key: value}))

    def set_payload(self, point: str, payload: dict) -> None:
        self.shard.update(_edge().UpdateOperation.overwrite_payload([point], payload))

    def delete(self, ids: list[str]) -> None:
        if ids:
            self.shard.update(_edge().UpdateOperation.delete_points(list(ids)))

    def create_keyword_index(self, field_name: str) -> None:
        qe = _edge()
        self.shard.update(qe.UpdateOperation.create_field_index(field_name, qe.PayloadSchemaType.Keyword))

    def artifact_path(self, name: str) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        return self.path / name

    def write_file(self, name: str, data: bytes) -> None:
        path = self.artifact_path(name)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # a reader sees the old file or the new one, never half of one

    def read_file(self, name: str) -> bytes | None:
        try:
            return (self.path / name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {self.path / name}: {exc}") from None

    def delete_file(self, name: str) -> None:
        (self.path / name).unlink(missing_ok=True)

    def cli_args(self) -> str:
        return f"--index {self.path}"

    def finish(self) -> None:
        self.shard.optimize()
        self.shard.flush()

    def close(self) -> None:
        if self._shard is not None:
            self._shard.close()
            self._shard = None

    # reads

    def search(self, vector: np.ndarray, k: int = 10, filters: Filters | None = None, exact: bool = False,
               using: str = IMAGE_VECTOR, ids: Sequence[str] | None = None) -> list[Hit]:
        qe = _edge()
        params = qe.SearchParams(exact=True) if exact else (self._search_params if using == IMAGE_VECTOR else None)
        return self._query(qe.Query.Nearest(np.asarray(vector, np.float32).tolist(), using=using), k, filters, ids,
                           params)

    def search_keywords(self, keywords: Sparse, k: int = 10, filters: Filters | None = None,
                        ids: Sequence[str] | None = None) -> list[Hit]:
        qe = _edge()
        indices, values = keywords
        if not len(indices):
            return []
        sparse = qe.SparseVector(list(map(int, indices)), list(map(float, values)))
        return self._query(qe.Query.Nearest(sparse, using=KEYWORD_VECTOR), k, filters, ids)

    def _query(self, query, k: int, filters: Filters | None, ids: Sequence[str] | None, params=None) -> list[Hit]:
        if ids is not None and not ids:
            return []
        request = _edge().QueryRequest(limit=k, query=query, filter=edge_filter(filters, ids), with_payload=True,
                                       params=params)
        try:
            points = self.shard.query(request)
        except Exception as exc:  # e.g. a text query against an index built without text vectors
            raise StoreError(f"search failed on the index at {self.path}: {exc}") from None
        return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in points]

    def scroll(self, filters: Filters | None = None, limit: int = 100, offset: str | None = None,
               with_vector: bool = False) -> tuple[list[Hit], str | None]:
        qe = _edge()
        records, next_offset = self.shard.scroll(qe.ScrollRequest(offset=offset, limit=limit, filter=edge_filter(filters),
                                                                  with_payload=True, with_vector=with_vector))
        hits = [record_hit(r, with_vector) for r in records]
        return hits, (str(next_offset) if next_offset is not None else None)

    def retrieve(self, ids: list[str], with_vector: bool = False) -> list[Hit]:
        if not ids:
            return []
        records = self.shard.retrieve(list(ids), with_payload=True, with_vector=with_vector)
        return [record_hit(r, with_vector) for r in records]

    def count(self, filters: Filters | None = None) -> int:
        return int(self.shard.count(_edge().CountRequest(exact=True, filter=edge_filter(filters))))

    def facet(self, field_name: str, filters: Filters | None = None, limit: int = 1000) -> list[tuple[str, int]]:
        response = self.shard.facet(_edge().FacetRequest(field_name, limit=limit, exact=True, filter=edge_filter(filters)))
        return [(str(h.value), int(h.count)) for h in response.hits]
