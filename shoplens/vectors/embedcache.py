"""The embedding cache: backbone vectors of product photos, by photo content and encoder configuration.

A photo is only encoded when its bytes (sha256, as in the index payload) are not cached yet for this encoder
configuration (encoder.describe()), so an edited photo is re-encoded and a renamed one is not; re-projection
to a new tuning, `tune` and `evaluate` read the vectors back instead of encoding again.

One store per encoder configuration under cache_dir("embeddings"), append-only, made of two files:

- `NAME-KEY.sqlite` (SQLite in WAL mode): content hash -> where its vector lies in the vector file, and a
  CRC32 of its bytes; plus the configuration and vector size it holds;
- `NAME-KEY.f32`: the vectors, float32, appended one batch at a time.

A writer appends its batch to the vector file and records it inside one SQLite write transaction (BEGIN
IMMEDIATE: one writer at a time, across processes), so two processes writing at once both keep every vector.
The vectors live outside SQLite because SQLite in WAL mode writes every page twice (the log, then the
checkpoint): each vector is written once, and only its small row twice (benchmarks/embedcache.py: 1.08x
the vectors' size at 1280 dimensions). A run killed mid-batch leaves at most unreferenced bytes at the end of
the vector file; a vector whose bytes no longer match its CRC (a power cut before the file reached the disk)
reads as missing, so it is encoded again rather than used wrong.

Public API (what encoders, tuning, check and the sync use): `EmbeddingCache.for_encoder(encoder)` or
`EmbeddingCache(path, dim)`; `get_many(keys) -> {key: vector}`, `put_many({key: vector}) -> number added`; it is
also a read-only Mapping (`key in cache`, `cache[key]`, `len(cache)`). `embed_products` embeds a list of
products through it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import threading
import zlib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from shoplens.cache import cache_dir
from shoplens.catalog import Product
from shoplens.encoders import Encoder
from shoplens.images import ImageError, load_image, read_bytes
from shoplens.progress import progress_bar

SUFFIX = ".sqlite"  # a new name: the old whole-file .npz caches are imported once, then left alone
LOOKUP = 500  # keys per SELECT (SQLite's limit on bound parameters is 999 on old builds)
BUSY_SECONDS = 60.0  # how long a writer waits for another process's write transaction


class CacheError(OSError):
    """The cache file cannot be used (not writable, another configuration's, damaged)."""


DESCRIBE_KEYS = ("encoder", "encoder_version", "dim", "encoder_options")  # what Encoder.describe() returns


def config_key(describe: dict) -> str:
    """A short key of an encoder configuration (what describe() says: name, version, size, options)."""
    text = json.dumps({k: describe.get(k) for k in DESCRIBE_KEYS}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def config_file(describe: dict) -> Path:
    """The cache file of an encoder configuration: encoder.describe(), or an index's metadata (which records it)."""
    # An onnx:DIR name holds a path: keep only file-name characters (the key tells configurations apart).
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(describe.get("encoder")))[-80:]
    return cache_dir("embeddings") / f"{stem}-{config_key(describe)}{SUFFIX}"


def cache_file(encoder: Encoder) -> Path:
    """The cache file for this encoder configuration (its vectors lie beside it, ending in .f32)."""
    return config_file(encoder.describe())


def legacy_cache_file(encoder: Encoder) -> Path:
    """The .npz the cache was before (a whole file rewritten every 640 encodes), imported once when present."""
    options = json.dumps(encoder.options, sort_keys=True)
    key = hashlib.sha1(f"{encoder.name}|{encoder.version}|{encoder.dim}|{options}".encode()).hexdigest()[:12]
    return cache_dir("embeddings") / f"{encoder.name}-{key}.npz"


class EmbeddingCache(Mapping):
    """content hash -> float32 vector of one encoder configuration, append-only and safe for concurrent writers.

    Opened lazily; one SQLite connection per cache object, shared by its threads under a lock. `describe` is
    recorded when the file is made and checked when it is opened (CacheError on another configuration's file)."""

    def __init__(self, path: str | Path, dim: int, describe: dict | None = None, legacy: Path | None = None):
        self.path = Path(path)
        self.vector_path = self.path.with_suffix(".f32")
        self.dim = int(dim)
        self.describe = describe
        self.legacy = legacy
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None

    @classmethod
    def for_encoder(cls, encoder: Encoder) -> "EmbeddingCache":
        """The cache of this encoder configuration."""
        return cls(cache_file(encoder), encoder.dim, _described(encoder.describe()), legacy_cache_file(encoder))

    @classmethod
    def for_index(cls, meta: dict) -> "EmbeddingCache":
        """The cache of the encoder configuration an index's metadata records (no encoder is loaded)."""
        return cls(config_file(meta), int(meta.get("dim") or 0), _described(meta))

    # --- reading ---

    def get_many(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        """The cached vectors of `keys` (missing ones are left out)."""
        keys = list(dict.fromkeys(keys))
        if not keys or not self._exists():
            return {}
        rows = []
        with self._lock:
            db = self._connect()
            for start in range(0, len(keys), LOOKUP):
                chunk = keys[start:start + LOOKUP]
                rows += db.execute(f"SELECT key, offset, crc FROM vectors WHERE key IN ({','.join('?' * len(chunk))})",
                                   chunk).fetchall()
        return self._read(rows)

    def __getitem__(self, key: str) -> np.ndarray:
        found = self.get_many([key])
        if key not in found:
            raise KeyError(key)
        return found[key]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and bool(self.get_many([key]))

    def __len__(self) -> int:
        if not self._exists():
            return 0
        with self._lock:
            return self._connect().execute("SELECT COUNT(*) FROM vectors").fetchone()[0]

    def __iter__(self) -> Iterator[str]:
        if not self._exists():
            return iter(())
        with self._lock:
            return iter([row[0] for row in self._connect().execute("SELECT key FROM vectors ORDER BY offset")])

    def _read(self, rows: list[tuple[str, int, int]]) -> dict[str, np.ndarray]:
        size = self.dim * 4
        found: dict[str, np.ndarray] = {}
        if not rows:
            return found
        try:
            fd = os.open(self.vector_path, os.O_RDONLY)
        except OSError:
            return found
        try:
            for key, offset, crc in sorted(rows, key=lambda row: row[1]):
                data = os.pread(fd, size, offset)
                if len(data) == size and zlib.crc32(data) == crc:  # else lost or torn: encode it again
                    found[key] = np.frombuffer(data, np.float32).copy()
        finally:
            os.close(fd)
        return found

    # --- writing ---

    def put_many(self, vectors: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]]) -> int:
        """Add these vectors (those already cached are kept as they are); returns how many were added.

        One transaction: a concurrent writer waits for it (up to BUSY_SECONDS) and neither loses a vector."""
        items = dict(vectors.items() if isinstance(vectors, Mapping) else vectors)
        if not items:
            return 0
        with self._lock:
            db = self._connect()
            try:
                db.execute("BEGIN IMMEDIATE")  # the write lock, taken before looking, so no key is added twice
            except sqlite3.Error as exc:
                raise CacheError(f"cannot write the embedding cache {self.path}: {exc}") from None
            try:
                known = set()
                keys = list(items)
                for start in range(0, len(keys), LOOKUP):
                    chunk = keys[start:start + LOOKUP]
                    known.update(row[0] for row in db.execute(
                        f"SELECT key FROM vectors WHERE key IN ({','.join('?' * len(chunk))})", chunk))
                new = [key for key in keys if key not in known]
                if new:
                    matrix = np.stack([np.asarray(items[k], np.float32).reshape(-1) for k in new])
                    if matrix.shape[1] != self.dim:
                        raise CacheError(f"vectors of size {matrix.shape[1]} for an embedding cache of size {self.dim}")
                    rows = self._append(new, np.ascontiguousarray(matrix))
                    db.executemany("INSERT INTO vectors (key, offset, crc) VALUES (?, ?, ?)", rows)
                db.execute("COMMIT")
                return len(new)
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _append(self, keys: list[str], matrix: np.ndarray) -> list[tuple[str, int, int]]:
        """Append the vectors at the end of the vector file (under the write transaction); their rows."""
        size = self.dim * 4
        data = matrix.tobytes()
        try:
            with open(self.vector_path, "ab") as fh:
                start = fh.seek(0, os.SEEK_END)  # after any bytes a killed writer left: they are never referenced
                fh.write(data)
        except OSError as exc:
            raise CacheError(f"cannot write the embedding cache {self.vector_path}: {exc}") from None
        return [(key, start + i * size, zlib.crc32(data[i * size:(i + 1) * size])) for i, key in enumerate(keys)]

    # --- the file ---

    def _exists(self) -> bool:
        return self._db is not None or self.path.exists() or (self.legacy is not None and self.legacy.exists())

    def _connect(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        self.path.parent.mkdir(parents=True, exist_ok=True)
        made = not self.path.exists()
        deadline = time.monotonic() + BUSY_SECONDS
        while True:
            try:
                db, recorded = self._open()
                break
            except sqlite3.OperationalError as exc:
                # Two processes making the file at once: switching a new file to WAL takes a lock SQLite does not
                # wait for (no busy handler there), so "database is locked" comes at once; try again shortly.
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise CacheError(f"cannot open the embedding cache {self.path}: {exc}") from None
                time.sleep(0.05)
            except sqlite3.Error as exc:
                raise CacheError(f"cannot open the embedding cache {self.path}: {exc}") from None
        wanted = json.dumps(self.describe, sort_keys=True)
        if recorded and (int(recorded.get("dim", -1)) != self.dim or (
                self.describe is not None and recorded.get("describe") not in ("null", wanted))):
            db.close()
            raise CacheError(f"the embedding cache {self.path} holds another encoder configuration "
                             f"({recorded.get('describe')}); delete it to start afresh")
        self._db = db
        if made and self.legacy is not None:
            self._import_legacy()
        return db

    def _open(self) -> tuple[sqlite3.Connection, dict]:
        """Connect, make the tables on a new file, and read what the file records (closed again on an error)."""
        db = sqlite3.connect(self.path, timeout=BUSY_SECONDS, isolation_level=None, check_same_thread=False)
        try:
            # Small pages: each commit (one batch of a sync) rewrites the few pages its rows touch, in the log and
            # again at the checkpoint; 1 KiB pages keep that a few percent of the batch's vector bytes.
            db.execute("PRAGMA page_size=1024")  # only takes effect on a new file
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # a cache: a power cut may lose the last batches, never mix them
            db.execute("BEGIN IMMEDIATE")
            db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, offset INTEGER NOT NULL, "
                       "crc INTEGER NOT NULL) WITHOUT ROWID")
            recorded = dict(db.execute("SELECT name, value FROM meta").fetchall())
            if not recorded:
                db.execute("INSERT INTO meta VALUES ('dim', ?), ('describe', ?)",
                           (str(self.dim), json.dumps(self.describe, sort_keys=True)))
            db.execute("COMMIT")
        except BaseException:
            db.close()
            raise
        return db, recorded

    def _import_legacy(self) -> None:
        """Import the old .npz cache of this configuration, once (when this file is made)."""
        try:
            with np.load(self.legacy, allow_pickle=False) as data:
                old = dict(zip(data["hashes"].tolist(), data["vectors"]))
        except (OSError, KeyError, ValueError):
            return
        old = {k: v for k, v in old.items() if np.asarray(v).shape == (self.dim,)}
        for start in range(0, len(old), 10000):
            self.put_many(dict(list(old.items())[start:start + 10000]))

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> "EmbeddingCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - at interpreter exit
            pass


def _described(describe: dict) -> dict:
    return {k: describe.get(k) for k in DESCRIBE_KEYS}


def remember(cache: EmbeddingCache, vectors: Mapping[str, np.ndarray]) -> None:
    """put_many where the cache is a convenience: a full or read-only cache folder never fails the run
    (re-projection and repair then re-encode the photos they need)."""
    try:
        cache.put_many(vectors)
    except (OSError, sqlite3.Error):
        pass


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
    cache = EmbeddingCache.for_encoder(encoder) if use_cache else None
    with ThreadPoolExecutor(max_workers=2) as pool:
        hashes = list(pool.map(_safe_hash, (p.path for p in products)))
    failed = [(p.rel_path, h[1]) for p, h in zip(products, hashes) if isinstance(h, tuple)]
    good_hashes = [h for h in hashes if isinstance(h, str)]
    known = cache.get_many(good_hashes) if cache is not None else {}
    todo = {h: p for p, h in zip(products, hashes) if isinstance(h, str) and h not in known}
    if todo:
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
                fresh = {h: np.asarray(v, np.float32) for (h, _img), v in zip(good, vectors)}
                known.update(fresh)
                if cache is not None:
                    cache.put_many(fresh)  # each batch: a killed run keeps what it encoded
            bar.update(len(chunk))
        bar.close()
    if cache is not None:
        cache.close()
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
