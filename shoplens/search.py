"""Search an index by photo, or by a product already in it. One code path for every store."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from shoplens.encoders import Encoder, create_encoder
from shoplens.images import load_image
from shoplens.store import Filters, Hit, Store, StoreError, check_encoder, open_store, point_id


@dataclass
class Results:
    """Ranked hits plus how long the search took."""

    hits: list[Hit]
    seconds: float = 0.0


@dataclass
class Searcher:
    """An opened index and the encoder it was built with; open once per process and share."""

    store: Store
    meta: dict
    _encoder: Encoder | None = None
    _encoder_options: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, index: str | Path | None = None, qdrant_url: str | None = None, collection: str = "products",
             encoder: str | None = None, **encoder_options) -> "Searcher":
        """Open an existing index; `encoder` (optional) must match the one it was built with."""
        store = open_store(index, qdrant_url, collection)
        meta = store.read_meta()
        if meta is None:
            where = f"--qdrant-url {qdrant_url}" if qdrant_url else f"--index {index or 'data/index'}"
            raise StoreError(f"no index at {store.location}; build one with: python indexer.py CATALOG {where}")
        options = {**meta.get("encoder_options", {}), **encoder_options}
        searcher = cls(store, meta, _encoder_options=options)
        if encoder is not None:  # asked for one: refuse now, before any photo is read
            enc = create_encoder(encoder, **(options if encoder == meta.get("encoder") else encoder_options))
            check_encoder(meta, enc.name, enc.version, enc.dim, store.location)
            searcher._encoder = enc
        return searcher

    @property
    def encoder(self) -> Encoder:
        """The index's encoder, created on first use (weights load then too)."""
        with self._lock:
            if self._encoder is None:
                enc = create_encoder(self.meta["encoder"], **self._encoder_options)
                check_encoder(self.meta, enc.name, enc.version, enc.dim, self.store.location)
                self._encoder = enc
            return self._encoder

    @property
    def catalog_root(self) -> Path | None:
        root = self.meta.get("catalog_root")
        return Path(root) if root else None

    @property
    def filter_fields(self) -> list[str]:
        return list(self.meta.get("filter_fields", []))

    def embed(self, image: str | Path | bytes | Image.Image):
        """The query vector for a photo (path, bytes or PIL image)."""
        enc = self.encoder
        return enc.embed(load_image(image, draft_size=enc.draft_size))

    def search_vector(self, vector, k: int = 10, filters: Filters | None = None, exclude: str | None = None) -> Results:
        """Nearest products to a vector; `exclude` leaves one point id out (the query product itself)."""
        started = time.perf_counter()
        extra = 1 if exclude else 0
        hits = [h for h in self.store.search(vector, k + extra, filters) if h.id != exclude][:k]
        return Results(hits, time.perf_counter() - started)

    def search_image(self, image: str | Path | bytes | Image.Image, k: int = 10,
                     filters: Filters | None = None) -> Results:
        """The products most similar to a photo, best first; `seconds` includes encoding."""
        started = time.perf_counter()
        results = self.search_vector(self.embed(image), k, filters)
        results.seconds = time.perf_counter() - started
        return results

    def more_like(self, product_id: str, k: int = 10, filters: Filters | None = None) -> Results:
        """Products similar to one already indexed, from its stored vector (no re-encoding)."""
        started = time.perf_counter()
        pid = point_id(product_id)
        found = self.store.retrieve([pid], with_vector=True)
        if not found:
            raise StoreError(f"product {product_id!r} is not in the index")
        results = self.search_vector(found[0].vector, k, filters, exclude=pid)
        results.seconds = time.perf_counter() - started
        return results

    def product(self, product_id: str) -> Hit | None:
        """One indexed product by its product id."""
        found = self.store.retrieve([point_id(product_id)])
        return found[0] if found else None

    def close(self) -> None:
        self.store.close()
