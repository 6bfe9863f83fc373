"""The embedded store: a Qdrant Edge shard on local disk, in this process."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

from typing import Sequence

from shoplens.store.base import (IMAGE_VECTOR, KEYWORD_VECTOR, TEXT_VECTOR, DiskSpaceError, Filters, Hit,
                                 IndexDamagedError, PointData, Sparse, Store, StoreError, normalise_filters, record_hit,
                                 not_writable, not_writable_error, repair_command, text_dim, tie_ranked)
from shoplens.atomic import atomic_write_bytes, atomic_write_text
from shoplens.store.space import free_bytes, human

META_FILE = "index.json"
# A second copy of index.json, written with it: a truncated or zeroed index.json is restored from it.
META_BACKUP = "index.backup.json"
SHARD_DIR = "shard"
CONFIG_FILE = "edge_config.json"  # Qdrant Edge's own, inside SHARD_DIR
CONFIG_BACKUP = "edge_config.backup.json"  # our copy of it, beside index.json
# Opening a shard can write (it replays the WAL of an unfinished run) through memory maps: on a full disk
# that is a SIGBUS. Below this much free space the open is tried in a child process first.
OPEN_RESERVE = 64 * 2**20
# Not errors of the index: let them through when turning Rust panics (BaseException) into messages.
_PASS_THROUGH = (KeyboardInterrupt, SystemExit, GeneratorExit)


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
                 on_disk_vectors: bool | None = None, search_params=None, optimizers_config=None,
                 profile: str = "auto"):
        """The tuning options (qdrant_edge.HnswIndexConfig, e.g. ScalarQuantizationConfig, vectors mmapped from
        disk, qdrant_edge.EdgeOptimizersConfig) only apply when the index is created; None keeps Qdrant's
        defaults. An existing shard keeps its own.
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
        # The shard opens on first use; two threads opening it at once would both load the WAL and the second
        # would fail on the first one's lock (WouldBlock): one opens, the others wait and share it.
        self._open_lock = threading.Lock()
        self._tuning = {"hnsw_config": hnsw_config, "quantization_config": quantization_config,
                        "optimizers": optimizers_config}
        self._on_disk_vectors = on_disk_vectors
        self._search_params = search_params

    # metadata

    def read_meta(self) -> dict | None:
        meta_file = self.path / META_FILE
        if not meta_file.exists():
            if read_json(self.path / META_BACKUP):
                raise IndexDamagedError(f"{meta_file} is missing; repair it with: {repair_command(str(self.path))}")
            if self.path.exists() and any(self.path.iterdir()):
                raise StoreError(f"{self.path} is not a shoplens index (no {META_FILE}); pick an empty or new folder")
            return None
        try:
            meta = json.loads(meta_file.read_text())
            if not isinstance(meta, dict) or "dim" not in meta:
                raise ValueError("not an index record")
            return meta
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            fix = (f"repair it with: {repair_command(str(self.path))}" if read_json(self.path / META_BACKUP)
                   else "rebuild it into a new folder: python indexer.py CATALOG --index NEW_DIR")
            raise IndexDamagedError(f"{meta_file}: unreadable index metadata ({exc}); {fix}") from None

    def write_meta(self, meta: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        text = json.dumps(meta, indent=2, sort_keys=True)
        for name in (META_FILE, META_BACKUP):  # one after the other: one of them is always whole
            write_atomically(self.path / name, text)

    def _apply_profile(self, meta: dict) -> None:
        """Use the large profile for a new index when asked or when the catalog is that big (see __init__)."""
        explicit = any(v is not None for v in self._tuning.values()) or self._on_disk_vectors is not None
        big = int(meta.get("catalog_size") or 0) >= LARGE_POINTS
        if self._profile == "large" or (self._profile == "auto" and big and not explicit):
            config = large_profile()
            self._tuning = {**self._tuning, "hnsw_config": config["hnsw_config"],
                            "quantization_config": config["quantization_config"]}
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
        with _edge_errors(self.path):
            if any(shard_dir.iterdir()):
                self._shard = qe.EdgeShard.load(str(shard_dir), config)  # a run killed before index.json was written
            else:
                self._shard = qe.EdgeShard.create(str(shard_dir), config)
        self.write_meta(meta)
        self.backup_config()

    def create_from_config(self, config: dict) -> None:
        """Create an empty shard from a Qdrant Edge config as a shard's edge_config.json holds it (another
        shard's: the repair's fresh shard is configured exactly as the damaged one was)."""
        shard_dir = self.path / SHARD_DIR
        shard_dir.mkdir(parents=True)
        write_atomically(shard_dir / CONFIG_FILE, json.dumps(config))
        with _edge_errors(self.path):
            self._shard = _edge().EdgeShard.load(str(shard_dir))  # no segments yet: Edge makes them from the file

    def backup_config(self) -> None:
        """Keep a copy of Qdrant Edge's config (vectors, tuning) to restore a damaged one from."""
        config = read_json(self.path / SHARD_DIR / CONFIG_FILE)
        if config:
            write_atomically(self.path / CONFIG_BACKUP, json.dumps(config))

    @property
    def shard(self):
        shard = self._shard
        if shard is not None:
            return shard
        with self._open_lock:
            return self._open_shard()

    def _open_shard(self):
        # Called under self._open_lock.
        if self._shard is None:
            shard_dir = self.path / SHARD_DIR
            if not (self.path / META_FILE).exists() or not shard_dir.exists():
                raise StoreError(f"no index at {self.path}; build one with: python indexer.py CATALOG --index {self.path}")
            if free_bytes(self.path) < OPEN_RESERVE:
                self._probe_open(shard_dir)
            with _edge_errors(self.path, opening=True):
                self._shard = _edge().EdgeShard.load(str(shard_dir))
            if self._search_params is None and (self.read_meta() or {}).get("edge_profile") == "large":
                self._search_params = large_profile()["search_params"]  # search params are not kept in the shard
        return self._shard

    def _probe_open(self, shard_dir: Path) -> None:
        """On a nearly full disk, open the shard in a child process first: a SIGBUS kills the child, not us."""
        code = "import sys, qdrant_edge as q; q.EdgeShard.load(sys.argv[1]).close()"
        try:
            done = subprocess.run([sys.executable, "-c", code, str(shard_dir)], capture_output=True, text=True,
                                  timeout=600)
        except (OSError, subprocess.TimeoutExpired):
            return  # cannot tell: the open below reports what it finds
        if done.returncode < 0:
            raise DiskSpaceError(f"the disk holding {self.path} is full ({human(free_bytes(self.path))} free): Qdrant "
                                 "Edge has to write to open this index (it finishes the last run's writes); free some "
                                 "space and run the command again")

    # writes

    def upsert(self, points: list[PointData]) -> None:
        if not points:
            return
        qe = _edge()
        ops = [qe.Point(p.id, edge_vectors(p), p.payload) for p in points]
        self._update(qe.UpdateOperation.upsert_points(ops))

    def _update(self, operation) -> None:
        with _edge_errors(self.path):
            self.shard.update(operation)

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
            self._update(qe.UpdateOperation.update_vectors(ops))
        if emptied:
            self._update(qe.UpdateOperation.delete_vectors(emptied, [TEXT_VECTOR, KEYWORD_VECTOR]))

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
        self._update(_edge().UpdateOperation.overwrite_payload([point], payload))

    def delete(self, ids: list[str]) -> None:
        if ids:
            self._update(_edge().UpdateOperation.delete_points(list(ids)))

    def create_keyword_index(self, field_name: str) -> None:
        qe = _edge()
        self._update(qe.UpdateOperation.create_field_index(field_name, qe.PayloadSchemaType.Keyword))

    def artifact_path(self, name: str) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        return self.path / name

    def write_file(self, name: str, data: bytes) -> None:
        atomic_write_bytes(self.artifact_path(name), data)  # a reader sees the old file or the new one

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
        with _edge_errors(self.path):
            self.shard.optimize()
            self.shard.flush()
        self.backup_config()

    def close(self) -> None:
        with self._open_lock:
            if self._shard is not None:
                self._shard.close()
                self._shard = None

    # reads

    def search(self, vector: np.ndarray, k: int = 10, filters: Filters | None = None, exact: bool = False,
               using: str = IMAGE_VECTOR, ids: Sequence[str] | None = None) -> list[Hit]:
        qe = _edge()
        params = qe.SearchParams(exact=True) if exact else (self._search_params if using == IMAGE_VECTOR else None)
        query = qe.Query.Nearest(np.asarray(vector, np.float32).tolist(), using=using)
        return tie_ranked(lambda limit: self._query(query, limit, filters, ids, params), k)

    def search_keywords(self, keywords: Sparse, k: int = 10, filters: Filters | None = None,
                        ids: Sequence[str] | None = None) -> list[Hit]:
        qe = _edge()
        indices, values = keywords
        if not len(indices):
            return []
        sparse = qe.SparseVector(list(map(int, indices)), list(map(float, values)))
        query = qe.Query.Nearest(sparse, using=KEYWORD_VECTOR)
        return tie_ranked(lambda limit: self._query(query, limit, filters, ids), k)

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
        request = qe.ScrollRequest(offset=offset, limit=limit, filter=edge_filter(filters), with_payload=True,
                                   with_vector=with_vector)
        with _edge_errors(self.path, reading=True):
            records, next_offset = self.shard.scroll(request)
        hits = [record_hit(r, with_vector) for r in records]
        return hits, (str(next_offset) if next_offset is not None else None)

    def retrieve(self, ids: list[str], with_vector: bool = False) -> list[Hit]:
        if not ids:
            return []
        with _edge_errors(self.path, reading=True):
            records = self.shard.retrieve(list(ids), with_payload=True, with_vector=with_vector)
        return [record_hit(r, with_vector) for r in records]

    def count(self, filters: Filters | None = None) -> int:
        with _edge_errors(self.path, reading=True):
            return int(self.shard.count(_edge().CountRequest(exact=True, filter=edge_filter(filters))))

    def facet(self, field_name: str, filters: Filters | None = None, limit: int = 1000) -> list[tuple[str, int]]:
        request = _edge().FacetRequest(field_name, limit=limit, exact=True, filter=edge_filter(filters))
        with _edge_errors(self.path, reading=True):
            response = self.shard.facet(request)
        return [(str(h.value), int(h.count)) for h in response.hits]


def wal_locked(index: str | Path) -> bool:
    """Whether a process (this one included, through another opening) has the index's shard open: Qdrant Edge
    holds an exclusive flock on `shard/wal` while a shard is open. Tried and released at once; opens nothing."""
    try:
        fd = os.open(Path(index) / SHARD_DIR / "wal", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False  # no WAL (no index yet, or it was moved aside): nothing can hold it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False  # a file system without flock: the store's own open says WouldBlock instead
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def read_json(path: Path) -> dict | None:
    """A JSON object from `path`, or None when it is missing or unreadable."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) and value else None


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` so a reader (or a crash) sees the old file or the new one, never half of one."""
    try:
        atomic_write_text(path, text, fsync=True)
    except OSError as exc:
        if exc.errno == 28:  # ENOSPC
            raise DiskSpaceError(f"the disk holding {path.parent} is full: free some space and run the command "
                                 "again") from None
        raise StoreError(f"cannot write {path}: {exc}") from None


def first_line(text: str, limit: int = 240) -> str:
    line = next((x.strip() for x in str(text).splitlines() if x.strip()), "")
    return line if len(line) <= limit else line[:limit] + "..."


@contextlib.contextmanager
def _quiet_stderr():
    """Send file descriptor 2 to a temporary file for the duration: Rust panics print a backtrace there
    before Python sees the exception. Yields a function returning what was printed."""
    captured = tempfile.TemporaryFile(mode="w+b")
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (e.g. some embedded interpreters)
        yield lambda: ""
        captured.close()
        return
    os.dup2(captured.fileno(), 2)
    try:
        yield lambda: (captured.seek(0), captured.read().decode(errors="replace"))[1]
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        captured.close()


@contextlib.contextmanager
def _edge_errors(path: Path, opening: bool = False, reading: bool = False):
    """Turn Qdrant Edge's errors (plain Exceptions, and Rust panics, which are BaseExceptions) into one-line
    StoreErrors that say what to do: free disk space, or repair the index. Only an open hides what Rust prints
    (a panic's backtrace): it happens once, before any other thread uses the store, and fd 2 is process-wide."""
    with (_quiet_stderr() if opening else contextlib.nullcontext(lambda: "")) as printed:
        try:
            yield
        except StoreError:
            raise
        except _PASS_THROUGH:
            raise
        except BaseException as exc:  # noqa: BLE001 - pyo3's PanicException derives from BaseException
            reason = first_line(str(exc)) or first_line(printed()) or type(exc).__name__
            if "No space left" in reason or "os error 28" in reason:
                raise DiskSpaceError(f"the disk holding {path} is full ({reason}); free some space and run the "
                                     "command again") from None
            refused = not_writable(exc) or not_writable(reason)
            if refused:  # healthy files this process may not write (permissions, a read-only disk): not damage
                raise not_writable_error(path, refused, reason) from None
            if "WouldBlock" in reason:  # another process holds the write-ahead log: busy, not damaged
                raise StoreError(f"the index at {path} is in use by another process ({reason}); stop it or wait "
                                 "for it to finish, then run the command again") from None
            if opening:
                raise IndexDamagedError(f"the index at {path} is damaged and cannot be opened ({reason}); repair it "
                                        f"with: {repair_command(str(path))}") from None
            if reading:
                raise IndexDamagedError(f"the index at {path} is damaged: some products cannot be read ({reason}); "
                                        f"repair it with: {repair_command(str(path))}") from None
            raise StoreError(f"writing to the index at {path} failed: {reason}") from None
