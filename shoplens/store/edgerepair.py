"""Repairing a damaged Qdrant Edge index folder, file by file, without the catalog.

What qdrant-edge-py 0.9 keeps in `<index>/shard/` (probed by truncating or zeroing each file in turn,
see tests/test_integrity.py and docs/integrity.md):

- `edge_config.json`: vector sizes and tuning. Damaged: the shard does not open. Restored from our copy
  (`edge_config.backup.json`) or rebuilt from index.json.
- `wal/` (`first-index`, `open-N`): the write-ahead log. Damaged: the shard does not open. Everything is
  flushed into the segments at the end of a run, so the log is moved aside and Edge starts a new one.
- `segments/<uuid>/`: one folder per segment (appendable: `vector_storage-*/vectors/chunk_0.mmap`,
  `mutable_id_tracker.*`; optimised: `vector_storage-*/matrix.dat`, `id_tracker.*`, `vector_index-*`
  HNSW graphs; both: `payload_storage/`, `payload_index/`, `segment.json`, `version.info`). A damaged
  segment either stops the shard from opening (the folder is moved aside and its products are re-added by
  the indexer), opens with some points unreadable, vector-less or zero (the readable points are copied
  into a fresh shard), or silently loses points (only the point count recorded by the indexer shows it).

Nothing is deleted: whatever is moved aside goes to `<index>/damaged-<time>/`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from shoplens.store.base import (IMAGE_VECTOR, KEYWORD_VECTOR, TEXT_VECTOR, StoreError, not_writable,
                                 not_writable_error, text_dim)
from shoplens.store.edge import (CONFIG_BACKUP, CONFIG_FILE, META_BACKUP, META_FILE, SHARD_DIR, EdgeStore, _edge,
                                 first_line, read_json, write_atomically)

PROBE_TIMEOUT = 600
PAGE = 256

_PROBE = "import sys, qdrant_edge as q; q.EdgeShard.load(sys.argv[1]).close()"


def damaged_dir(index: Path) -> Path:
    """Where this repair moves damaged files (one folder per repair)."""
    folder = index / f"damaged-{time.strftime('%Y%m%dT%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def probe_open(shard_dir: Path) -> str | None:
    """Open the shard in a child process (a panic or a signal kills the child, not us): None when it opens,
    else the reason it does not."""
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE, str(shard_dir)], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return "opening it takes more than 10 minutes"
    if done.returncode == 0:
        return None
    if done.returncode < 0:
        return f"opening it kills the process with signal {-done.returncode}"
    lines = [x.strip() for x in done.stderr.splitlines() if x.strip()]
    errors = [x for x in lines if "Error" in x or "Exception" in x or "panicked" in x]
    return first_line((errors or lines or ["unknown error"])[-1], 400)


def restore_meta(index: Path) -> str | None:
    """index.json from its backup copy; a description of what was done, or None when nothing could be."""
    backup = read_json(index / META_BACKUP)
    if not backup or "dim" not in backup:
        return None
    write_atomically(index / META_FILE, json.dumps(backup, indent=2, sort_keys=True))
    return f"restored {META_FILE} from {META_BACKUP}"


def config_from_meta(meta: dict) -> dict:
    """Qdrant Edge's config file for this index, as edge-py 0.9 writes it (tuning options are not kept)."""
    vectors = {IMAGE_VECTOR: {"size": int(meta["dim"]), "distance": "Cosine"}}
    sparse = {}
    if text_dim(meta):
        vectors[TEXT_VECTOR] = {"size": text_dim(meta), "distance": "Cosine"}
        sparse[KEYWORD_VECTOR] = {"modifier": "idf"}
    return {"vectors": vectors, "sparse_vectors": sparse}


def repair_open(index: Path, meta: dict, aside: Callable[[], Path]) -> tuple[list[str], str | None]:
    """Make the shard open again: restore its config, move a damaged WAL or damaged segments aside.
    Returns what was done and the reason it still does not open (None when it opens)."""
    shard_dir = index / SHARD_DIR
    done: list[str] = []
    tried_config = False
    for _ in range(64):
        reason = probe_open(shard_dir)
        if reason is None:
            return done, None
        if "WouldBlock" in reason:  # another process opened it meanwhile: its files are not ours to move
            raise StoreError(f"the index at {index} was opened by another process (an app or an indexer) during "
                             f"the repair{'; done so far: ' + '; '.join(done) if done else ''}. Stop it, then run "
                             f"the repair again")
        refused = not_writable(reason)
        if refused:  # the files may be whole: never move aside what only this process may not write
            raise not_writable_error(index, refused, first_line(reason, 160))
        if CONFIG_FILE in reason and not tried_config:
            tried_config = True
            backup = read_json(index / CONFIG_BACKUP)
            config = backup if backup and backup.get("vectors") else config_from_meta(meta)
            write_atomically(shard_dir / CONFIG_FILE, json.dumps(config))
            done.append(f"restored {SHARD_DIR}/{CONFIG_FILE} from "
                        f"{CONFIG_BACKUP if config is backup else META_FILE}")
            continue
        if ("WAL" in reason or "/wal" in reason) and (shard_dir / "wal").exists():
            shutil.move(str(shard_dir / "wal"), str(aside() / "wal"))
            done.append("moved the damaged write-ahead log aside (everything was flushed at the end of the last run)")
            continue
        match = re.search(r"segments/([0-9a-fA-F-]{36})", reason)
        segment = shard_dir / "segments" / match.group(1) if match else None
        if segment is not None and segment.exists():
            shutil.move(str(segment), str(aside() / segment.name))
            done.append(f"moved damaged segment {segment.name} aside ({first_line(reason, 160)})")
            continue
        # No file named (a Rust panic): find the segment whose absence lets the shard open.
        culprit = _bisect_segments(shard_dir, aside)
        if culprit is None:
            return done, reason
        done.append(f"moved damaged segment {culprit} aside ({first_line(reason, 160)})")
    return done, probe_open(shard_dir)


def _bisect_segments(shard_dir: Path, aside: Callable[[], Path]) -> str | None:
    segments = sorted(p for p in (shard_dir / "segments").glob("*") if p.is_dir())
    for segment in segments:
        parked = aside() / segment.name
        shutil.move(str(segment), str(parked))
        if probe_open(shard_dir) is None:
            return segment.name
        shutil.move(str(parked), str(segment))
    return None


def rebuild_shard(store: EdgeStore, meta: dict, keep: Callable[[str, dict, dict], dict | None],
                  aside: Callable[[], Path]) -> tuple[int, int]:
    """Copy every readable point that `keep(id, payload, vectors)` accepts (it returns the vectors to write,
    or None to drop the point) into a fresh shard, and swap it in; the old shard goes aside. The fresh shard
    gets the original's Edge config (shard_config) and payload indexes (payload_indexes): the repaired index
    searches and filters as before.
    Returns (points copied, points dropped)."""
    qe = _edge()
    index = store.path
    old = store.shard
    work = index / "shard.rebuild"
    shutil.rmtree(work, ignore_errors=True)
    # The original's profile, whatever its size says now (used only when no copy of its config is left).
    fresh = EdgeStore(work, profile="large" if meta.get("edge_profile") == "large" else "default")
    config = shard_config(index)
    if config is None:
        fresh.create(meta)  # vectors and sparse IDF as the indexer sets them; tuning options are not recorded
    else:
        fresh.create_from_config(config)
    schemas = payload_indexes(old, meta)
    copied = dropped = 0
    offset = None
    while True:
        try:
            records, offset = old.scroll(qe.ScrollRequest(offset=offset, limit=PAGE, with_payload=False,
                                                          with_vector=False))
        except BaseException as exc:  # noqa: BLE001 - Rust panics too: the ids themselves are unreadable
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            fresh.close()
            shutil.rmtree(work, ignore_errors=True)
            raise RuntimeError(f"the list of products cannot be read ({first_line(str(exc))})") from None
        points = []
        for point_id in [str(r.id) for r in records]:
            try:
                record = old.retrieve([point_id], with_payload=True, with_vector=True)[0]
                payload, vectors = dict(record.payload or {}), dict(record.vector or {})
            except BaseException as exc:  # noqa: BLE001
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                dropped += 1
                continue
            vectors = keep(point_id, payload, vectors)
            if vectors is None:
                dropped += 1
                continue
            points.append(qe.Point(point_id, vectors, payload))
        if points:
            fresh.shard.update(qe.UpdateOperation.upsert_points(points))
            copied += len(points)
        if offset is None:
            break
    for name, schema in schemas.items():
        fresh.shard.update(qe.UpdateOperation.create_field_index(name, schema))
    fresh.finish()
    fresh.close()
    store.close()
    shutil.move(str(index / SHARD_DIR), str(aside() / SHARD_DIR))
    shutil.move(str(work / SHARD_DIR), str(index / SHARD_DIR))
    shutil.rmtree(work, ignore_errors=True)
    store.backup_config()
    return copied, dropped


def shard_config(index: Path) -> dict | None:
    """The shard's own Qdrant Edge config (vectors, on-disk storage, sparse vectors, HNSW, quantization,
    optimizers), or our copy of it; None when neither is usable. A fresh shard made from it is configured as
    the original was, whatever tuning or profile the index was created with."""
    for path in (index / SHARD_DIR / CONFIG_FILE, index / CONFIG_BACKUP):
        config = read_json(path)
        if config and isinstance(config.get("vectors"), dict) and IMAGE_VECTOR in config["vectors"]:
            return config
    return None


def payload_indexes(shard, meta: dict) -> dict:
    """field -> payload index schema of the shard (as Edge reports them), plus the keyword fields the metadata
    names (those the indexer makes), so the fresh shard filters as fast as the original."""
    qe = _edge()
    schemas: dict = {name: qe.PayloadSchemaType.Keyword for name in meta.get("keyword_fields", [])}
    try:
        found = shard.info().payload_schema
    except BaseException as exc:  # noqa: BLE001 - a damaged shard: the metadata's list is what is left
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return schemas
    for name, info in found.items():
        schemas[name] = info.params if info.params is not None else info.data_type
    return schemas


def usable_vector(value, dim: int) -> np.ndarray | None:
    """A stored dense vector as float32, or None when it is missing, the wrong size, non-finite or zero."""
    if value is None:
        return None
    vec = np.asarray(value, np.float32).reshape(-1)
    if vec.shape[0] != dim or not np.isfinite(vec).all() or not np.any(vec):
        return None
    return vec
