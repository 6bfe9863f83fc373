"""Vector stores: embedded Qdrant Edge by default, a Qdrant server through qdrant-client, Milvus through pymilvus."""

from __future__ import annotations

from pathlib import Path

from shoplens.store.base import (IMAGE_VECTOR, KEYWORD_VECTOR, SCHEMA_VERSION, TEXT_VECTOR, DiskSpaceError, Filters,
                                 Hit, IndexDamagedError, IndexMismatchError, NotWritableError, PointData,
                                 ServerLostError, Sparse, Store, StoreError,
                                 normalise_filters, point_id, repair_command, text_dim)

DEFAULT_INDEX = Path("data/index")

__all__ = ["DEFAULT_INDEX", "IMAGE_VECTOR", "KEYWORD_VECTOR", "SCHEMA_VERSION", "TEXT_VECTOR", "DiskSpaceError",
           "Filters", "Hit", "IndexDamagedError", "IndexMismatchError", "NotWritableError", "PointData",
           "ServerLostError", "Sparse", "Store", "StoreError",
           "check_encoder", "normalise_filters", "open_store", "point_id", "repair_command", "text_dim"]


def open_store(index: str | Path | None = None, qdrant_url: str | None = None, collection: str = "products",
               milvus_uri: str | None = None, profile: str = "auto") -> Store:
    """The store named by the command line: Milvus (a server URL, or a .db path for Milvus Lite) when
    `milvus_uri` is set, a Qdrant server when `qdrant_url` is, else the Edge folder (`profile`: its
    configuration when the indexer creates it, shoplens.store.edge.PROFILES)."""
    if milvus_uri:
        from shoplens.store.milvus import MilvusStore

        return MilvusStore(milvus_uri, collection)
    if qdrant_url:
        from shoplens.store.remote import QdrantStore

        return QdrantStore(qdrant_url, collection)
    from shoplens.store.edge import EdgeStore

    return EdgeStore(index or DEFAULT_INDEX, profile=profile)


def check_encoder(meta: dict, encoder_name: str, encoder_version: str, dim: int, location: str = "") -> None:
    """Refuse an index built by another encoder (or another version of it, or another vector size)."""
    built = (meta.get("encoder"), meta.get("encoder_version"), int(meta.get("dim", 0)))
    if built != (encoder_name, encoder_version, dim):
        raise IndexMismatchError(
            f"the index at {location or 'this location'} was built with encoder {built[0]!r} "
            f"(version {built[1]}, {built[2]}-d) but encoder {encoder_name!r} (version {encoder_version}, {dim}-d) "
            f"was asked for. Use --encoder {built[0]}, or re-index into a new folder: "
            f"python indexer.py CATALOG --index NEW_DIR --encoder {encoder_name}"
        )
