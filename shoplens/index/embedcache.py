"""Embeddings of product photos, cached by encoder and photo content so evaluations rerun in seconds.

One file per encoder configuration (name, version, options) under cache_dir("embeddings"),
holding content hashes and their vectors. A photo is only encoded when its bytes (sha256,
as in the index payload) are not in the file yet, so an edited photo is re-encoded and a
renamed one is not.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shoplens.atomic import atomic_write
from shoplens.cache import cache_dir
from shoplens.catalog import Product
from shoplens.encoders import Encoder
from shoplens.images import ImageError, load_image, read_bytes
from shoplens.progress import progress_bar


def cache_file(encoder: Encoder) -> Path:
    """The cache file for this encoder configuration."""
    options = json.dumps(encoder.options, sort_keys=True)
    key = hashlib.sha1(f"{encoder.name}|{encoder.version}|{encoder.dim}|{options}".encode()).hexdigest()[:12]
    # An onnx:DIR name holds a path: keep only file-name characters (the key tells configurations apart).
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in encoder.name)[-80:]
    return cache_dir("embeddings") / f"{stem}-{key}.npz"


def load_cache(path: Path) -> dict[str, np.ndarray]:
    """content hash -> vector; empty when the file is missing or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return dict(zip(data["hashes"].tolist(), data["vectors"]))
    except (OSError, KeyError, ValueError):
        return {}


def save_cache(path: Path, vectors: dict[str, np.ndarray], dim: int) -> None:
    """Write atomically: a concurrent reader sees the old file or the new one, never half of one."""
    hashes = np.array(list(vectors), dtype="U64")
    matrix = np.stack(list(vectors.values())).astype(np.float32) if vectors else np.zeros((0, dim), np.float32)
    # The temporary name ends in .npz: np.savez appends it to any name that lacks it.
    atomic_write(path, lambda tmp: np.savez(tmp, hashes=hashes, vectors=matrix), suffix=".npz")


def content_hash(path: Path) -> str:
    """sha256 of the file's bytes, the same hash the index stores as `content_hash`."""
    return hashlib.sha256(read_bytes(path)).hexdigest()


@dataclass
class Embedded:
    """Products whose photo could be read, with their content hashes and vectors (row i is products[i])."""

    products: list[Product]
    hashes: list[str]
    vectors: np.ndarray
    failed: list[tuple[str, str]] = field(default_factory=list)  # (rel_path, error)


def embed_products(products: list[Product], encoder: Encoder, batch_size: int = 32, progress: bool = False,
                   use_cache: bool = True) -> Embedded:
    """Embed `products` with `encoder`, reusing cached vectors; unreadable photos are listed in `failed`."""
    path = cache_file(encoder)
    known = load_cache(path) if use_cache else {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        hashes = list(pool.map(_safe_hash, (p.path for p in products)))
    failed = [(p.rel_path, h[1]) for p, h in zip(products, hashes) if isinstance(h, tuple)]
    todo = {h: p for p, h in zip(products, hashes) if isinstance(h, str) and h not in known}
    if todo:
        done = 0
        items = list(todo.items())
        bar = progress_bar(len(items), "embedding", enabled=progress)
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            with ThreadPoolExecutor(max_workers=2) as pool:
                images = list(pool.map(lambda item: _safe_load(item[1], encoder.draft_size), chunk))
            good = [(h, img) for (h, _p), img in zip(chunk, images) if not isinstance(img, str)]
            failed += [(p.rel_path, img) for (_h, p), img in zip(chunk, images) if isinstance(img, str)]
            if good:
                vectors = encoder.embed_batch([img for _h, img in good])
                known.update((h, v) for (h, _img), v in zip(good, vectors))
            done += len(chunk)
            bar.update(len(chunk))
            if use_cache and (done % (batch_size * 20) == 0):
                save_cache(path, known, encoder.dim)  # a killed run keeps what it encoded
        bar.close()
        if use_cache:
            save_cache(path, known, encoder.dim)
    rows = [(p, h) for p, h in zip(products, hashes) if isinstance(h, str) and h in known]
    matrix = np.zeros((0, encoder.dim), np.float32)
    if rows:
        matrix = np.stack([known[h] for _p, h in rows]).astype(np.float32)
    return Embedded([p for p, _h in rows], [h for _p, h in rows], matrix, failed)


def _safe_hash(path: Path):
    try:
        return content_hash(path)
    except ImageError as exc:
        return ("error", str(exc))


def _safe_load(product: Product, draft_size: int | None):
    try:
        return load_image(product.path, name=product.rel_path, draft_size=draft_size)
    except ImageError as exc:
        return str(exc)
