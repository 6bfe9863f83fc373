"""Vector stores: embedded Qdrant Edge by default, a Qdrant server through qdrant-client."""

from __future__ import annotations

from pathlib import Path

from shoplens.store.base import (IMAGE_VECTOR, KEYWORD_VECTOR, SCHEMA_VERSION, TEXT_VECTOR, DiskSpaceError, Filters,
                                 Hit, IndexDamagedError, IndexMismatchError, PointData, Sparse, Store, StoreError,
                                 normalise_filters, point_id, repair_command, text_dim)

DEFAULT_INDEX = Path("data/index")

__all__ = ["DEFAULT_INDEX", "IMAGE_VECTOR", "KEYWORD_VECTOR", "SCHEMA_VERSION", "TEXT_VECTOR", "DiskSpaceError",
           "Filters", "Hit", "IndexDamagedError", "IndexMismatchError", "PointData", "Sparse", "Store", "StoreError",
           "check_encoder", "normalise_filters", "open_store", "point_id", "repair_command", "text_dim"]


def open_store(index: str | Path | None = None, qdrant_url: str | None = None, collection: str = "products") -> Store:
    """The store named by the command line: a Qdrant server when `qdrant_url` is set, else the Edge folder."""
    if qdrant_url:
        from shoplens.store.remote import QdrantStore

        return QdrantStore(qdrant_url, collection)
    from shoplens.store.edge import EdgeStore

    return EdgeStore(index or DEFAULT_INDEX)


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
