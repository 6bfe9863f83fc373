"""A serving app and the command line on one index: syncs handed to the app, reads from a snapshot it makes.

An Edge index is one process's at a time (its write-ahead log is locked). While an app serves it, the
indexer connects to the app's local channel (shoplens.index.channel) and the app runs the very same sync
(shoplens.index.indexer.index_catalog) on its own store, drawing the progress bar on the indexer's stderr and returning the
Summary, which the indexer prints as a direct run would. Searches go on meanwhile: they read the same
shard object the sync writes to, so new products are found as soon as their batch is written.
`search`, `info`, `evaluate --index` and `check` ask the app for a snapshot of the folder taken between two writes
(the files optimized segments never rewrite hard-linked, the rest copied), opened in their own process. `check --repair` rewrites the folder's files, so it refuses while an app
serves the index or another process has it open (refuse_if_held).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from shoplens.index.channel import SOCKET_NAME, Channel, ChannelError, StaleChannel, connect, request, socket_path
from shoplens.index.indexer import IndexOptions
from shoplens.store import DEFAULT_INDEX, Store, StoreError

log = logging.getLogger("shoplens.index.live")

# Store methods that change the index: the app's sync holds the write lock around each, snapshots between them.
WRITES = ("create", "write_meta", "upsert", "set_payload", "delete", "update_text", "set_vectors", "set_field",
          "create_keyword_index", "write_file", "delete_file", "finish")


def is_locked(exc: Exception) -> bool:
    """Whether opening the index failed because another process holds its write-ahead log."""
    return "WouldBlock" in str(exc)


def index_locked_message(index: str | Path) -> str:
    return (f"the index at {index} is held by another process that is not a serving shoplens app (it offers no "
            f"channel at {socket_path(index)}): another indexer, or another program. Wait for it to finish or stop "
            f"it, then run the same command again")


def app_serving_message(index: str | Path, pid: object = None) -> str:
    """Why a repair does not run beside a serving app, and what to do, in one line."""
    app = f"a running shoplens app (pid {pid})" if pid else "a running shoplens app"
    return (f"the index at {index} is served by {app}; a repair beside it could lose "
            f"products, so nothing was changed. Stop the app (Ctrl+C where it runs), run the repair, then start the "
            f"app again; a plain check (without --repair) works while it serves")


def refuse_if_held(index: str | Path | None, stderr=None) -> None:
    """Before a command that rewrites an Edge index's files (check --repair): StoreError, one line naming what
    holds the index and what to do, when a shoplens app serves it (its channel answers) or another process
    (an indexer, another program) has its shard open. Nothing is changed either way (a stale socket left by
    a dead app is removed, with a note, as the indexer does)."""
    from shoplens.store.edge import wal_locked

    where = Path(index or DEFAULT_INDEX)
    sock = _app(where, stderr or sys.stderr)
    if sock is not None:
        try:
            pid = (request(sock, "ping", {}, stderr, what="the ping") or {}).get("pid")
        except ChannelError:
            pid = None  # it took the connection: an app, even if it stopped since
        raise StoreError(app_serving_message(where, pid))
    if wal_locked(where):
        raise StoreError(index_locked_message(where))


def _app(index: Path, stderr) -> object | None:
    """A connection to the app serving `index`, or None (no app; a stale socket is removed with a note)."""
    try:
        return connect(index)
    except StaleChannel as exc:
        print(f"note: {exc}; removed it and working on the index directly", file=stderr)
        socket_path(index).unlink(missing_ok=True)
        return None


def hand_over_sync(index: str | Path | None, options: IndexOptions, stderr=None):
    """When an app serves `index`: have it run this sync and return its Summary; else None (sync directly)."""
    from shoplens.index.sync import Summary

    stderr = stderr or sys.stderr
    index = Path(index or DEFAULT_INDEX)
    sock = _app(index, stderr)
    if sock is None:
        return None
    if not options.quiet:
        print(f"shoplens: the app serving {index} runs this sync (searches go on meanwhile)", file=stderr)
    try:
        fields = request(sock, "sync", options.as_message(), stderr, what="the sync")
    except ChannelError as exc:
        if "stopped before" in str(exc):
            raise ChannelError(f"the app serving {index} stopped during the sync; what it wrote is kept: run the "
                               "same command again to finish") from None
        raise
    fields["failed"] = [tuple(pair) for pair in fields["failed"]]
    return Summary(**fields)


@contextlib.contextmanager
def readable_index(index: str | Path | None, stderr=None) -> Iterator[Path | None]:
    """The folder a read-only command opens: `index` itself, or, while an app serves it, a snapshot copy of it
    made by the app (removed afterwards)."""
    stderr = stderr or sys.stderr
    where = Path(index or DEFAULT_INDEX)
    sock = _app(where, stderr)
    if sock is None:
        yield index
        return
    copy = Path(request(sock, "snapshot", {}, stderr, what="the snapshot"))
    try:
        yield copy
    finally:
        shutil.rmtree(copy.parent, ignore_errors=True)


# Files of an optimized (non-appendable) Qdrant Edge segment that are written once, when the optimizer makes the
# segment, and never in place afterwards: its points' later updates go to the appendable segment (copy on write)
# and deletes to separate flag files (deleted.dat, id_tracker.deleted, id_tracker.versions: copied).
SNAPSHOT_LINKED = ("shard/segments/*/vector_storage-*/matrix.dat", "shard/segments/*/vector_storage-*/quantized.data",
                   "shard/segments/*/vector_index-*/graph.bin", "shard/segments/*/vector_index-*/links*.bin",
                   "shard/segments/*/id_tracker.mappings")
SNAPSHOT_SKIPPED = (SOCKET_NAME, "*.tmp", "thumbs")


def snapshot_folder(index: Path) -> Path:
    """A new private (0700) folder for a snapshot of `index`: beside it when that folder is writable (hard links
    need the same file system), else in the system's temp folder."""
    try:
        return Path(tempfile.mkdtemp(prefix="shoplens-snapshot-", dir=index.resolve().parent))
    except OSError:
        return Path(tempfile.mkdtemp(prefix="shoplens-snapshot-"))


def snapshot_tree(index: Path, target: Path, link: bool = True) -> dict[str, int]:
    """Copy `index` to `target`, hard-linking the SNAPSHOT_LINKED files (copying them where a link cannot be
    made: another file system); {"linked", "copied"}: bytes of each."""
    stats = {"linked": 0, "copied": 0}

    def place(src: str, dst: str) -> str:
        rel = Path(src).relative_to(index)
        size = os.stat(src).st_size
        if link and any(rel.match(pattern) for pattern in SNAPSHOT_LINKED):
            try:
                os.link(src, dst)
                stats["linked"] += size
                return dst
            except OSError:
                pass  # another file system, or links not allowed: copy it
        shutil.copy2(src, dst)
        stats["copied"] += size
        return dst

    shutil.copytree(index, target, ignore=shutil.ignore_patterns(*SNAPSHOT_SKIPPED), copy_function=place)
    return stats


class WriteLocked:
    """A store whose writes each hold a lock, so that a snapshot is taken between two writes, never in one."""

    def __init__(self, store: Store, lock: threading.Lock):
        self._store = store
        self._lock = lock

    def __getattr__(self, name):
        value = getattr(self._store, name)
        if name not in WRITES:
            return value

        def locked(*args, **kwargs):
            with self._lock:
                return value(*args, **kwargs)
        return locked

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass  # the app's store stays open


class LiveIndex:
    """The app's side: runs syncs on its own store (one at a time), makes snapshots, and refreshes what the app
    caches (allow-list, facets, metadata) after each sync through `refreshed`.

    `index` None: a server store (Qdrant, Milvus), which takes other processes' writes itself; there is no
    channel to open, and the app's own syncs (`--watch`) run on its store all the same."""

    def __init__(self, index: str | Path | None, store: Store, encoders: Callable | None = None,
                 refreshed: Callable[[], None] | None = None, fit_tuning: Callable | None = None):
        self.index = Path(index) if index is not None else None
        self.store = store
        self.encoders = encoders
        self.refreshed = refreshed or (lambda: None)
        self.fit_tuning = fit_tuning  # for --tune-label (shoplens.tune.fit.fit_for_index; see index_catalog)
        self.sync_lock = threading.Lock()
        self.write_lock = threading.Lock()
        self.syncs = 0
        self.channel: Channel | None = None
        self.snapshot_links = True  # hard-link immutable segment files (False: copy everything, as before)
        self.snapshot_stats: dict[str, int] = {}

    def start(self) -> "LiveIndex":
        """Open the channel (the index folder's socket); nothing to open for a server store."""
        if self.index is None:
            return self
        self.channel = Channel(self.index, {"sync": self.handle_sync, "snapshot": self.handle_snapshot}).start()
        return self

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    def sync(self, options: IndexOptions | dict, progress=None, waiting: Callable[[], None] | None = None):
        """Run the indexer's sync with `options` (or a sync message's) on the app's store; returns its Summary."""
        from shoplens.index.indexer import index_catalog
        from shoplens.usererrors import USER_ERRORS

        try:
            if not isinstance(options, IndexOptions):
                options = IndexOptions.from_message(options)
        except USER_ERRORS as exc:
            raise StoreError(str(exc)) from None
        if not self.sync_lock.acquire(blocking=False):
            if waiting is not None:
                waiting()
            self.sync_lock.acquire()
        try:
            summary = index_catalog(options, WriteLocked(self.store, self.write_lock), self.encoders, progress,
                                    self.fit_tuning)
        except USER_ERRORS as exc:
            raise StoreError(str(exc)) from None
        finally:
            try:
                self.refreshed()
            finally:
                self.syncs += 1
                self.sync_lock.release()
        return summary

    def handle_sync(self, options: dict, reply) -> dict:
        def waiting():
            reply.write("shoplens: another sync is running in the app; this one starts when it ends\n")

        started = time.perf_counter()
        summary = self.sync(options, progress=reply, waiting=waiting)
        log.info("sync of %s handed over by the indexer: %s (%.1f s)", options.get("catalog"),
                 summary.line().splitlines()[0], time.perf_counter() - started)
        return dataclasses.asdict(summary)

    def handle_snapshot(self, _options: dict, _reply) -> str:
        """Snapshot the index folder between two writes into a private folder; returns the snapshot's path.

        Files Qdrant Edge never rewrites in place (an optimized segment's vectors, quantized vectors, HNSW
        graph, id mappings: SNAPSHOT_LINKED) are hard-linked, so the write lock is held for the small files
        only; the rest (WAL, payloads, the appendable segment, delete flags) is copied. A later optimization
        deletes or replaces those files by name, which leaves the snapshot's links whole. The folder is made
        beside the index (links need the same file system), else in the system's temp folder (then copied)."""
        base = snapshot_folder(self.index)
        copy = base / "index"
        with self.write_lock:
            shard = getattr(self.store, "shard", None)
            if shard is not None:
                shard.flush()  # everything written so far is in the files snapshotted
            self.snapshot_stats = snapshot_tree(self.index, copy, link=self.snapshot_links)
        return str(copy)


class Watcher:
    """`app.py --catalog DIR --watch SECONDS`: the app syncs the catalog into its index on a timer.

    Withdrawn products are removed (prune), as a shop that deletes a photo expects. A catalog that cannot be
    read (the folder vanished, an unreadable manifest) is logged once, and once more when it is back; nothing
    is removed meanwhile and the app keeps serving."""

    def __init__(self, live: LiveIndex, catalog: str | Path, seconds: float, layout: str = "auto"):
        self.live = live
        self.seconds = seconds
        self.options = IndexOptions(Path(catalog).resolve(), layout=layout, prune=True, quiet=True)
        self.failing: str | None = None
        self.runs = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "Watcher":
        self._thread = threading.Thread(target=self._loop, name="shoplens-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _loop(self) -> None:
        while not self._stop.wait(self.seconds):
            self.tick()

    def tick(self):
        """One sync of the catalog; its Summary, or None when it could not run (logged once per outage)."""
        try:
            summary = self.live.sync(self.options)
        except StoreError as exc:
            if self.failing is None:
                log.warning("watch: cannot sync %s: %s; still serving the index as it is, trying again every %g s",
                            self.options.catalog, exc, self.seconds)
            self.failing = str(exc)
            return None
        except Exception:  # noqa: BLE001 - a bug must not stop the timer or the app
            log.exception("watch: the sync of %s failed", self.options.catalog)
            return None
        finally:
            self.runs += 1
        if self.failing is not None:
            log.info("watch: %s is readable again", self.options.catalog)
            self.failing = None
        if summary.added or summary.updated or summary.removed or summary.failed:
            log.info("watch: %s", summary.line().splitlines()[0])
        return summary
