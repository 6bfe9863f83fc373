"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of one.

Every writer goes through `atomic_write`: the content is written to a temporary file in the same folder (so
`os.replace` is a rename on one file system, which is atomic), then renamed over the target. The temporary
file is removed when writing fails, so a failed write leaves the old file and no litter.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable


def temp_path(path: Path, suffix: str = "") -> Path:
    """A temporary name next to `path`, unique per process and thread, ending in `.tmp` + `suffix`.

    The pid and thread id keep two writers of the same file (two processes, two web requests) apart; the
    `.tmp` lets a copy of an index skip half-written files. `suffix` is for writers that insist on an
    extension (np.savez appends `.npz` to any name that lacks it)."""
    return path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp{suffix}")


def atomic_write(path: str | Path, write: Callable[[Path], None], *, fsync: bool = False, suffix: str = "") -> Path:
    """Call `write(tmp)` to fill a temporary file next to `path`, then rename it over `path`.

    `fsync=True` flushes the file to disk before the rename, for files whose loss after a power cut would
    cost more than re-running the command (index metadata, tuning). Returns `path`."""
    path = Path(path)
    tmp = temp_path(path, suffix)
    try:
        write(tmp)
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone already after a successful rename
    return path


def atomic_write_bytes(path: str | Path, data: bytes, *, fsync: bool = False) -> Path:
    """Write `data` to `path` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), fsync=fsync)


def atomic_write_text(path: str | Path, text: str, *, fsync: bool = False) -> Path:
    """Write `text` to `path` atomically (in the locale's encoding, as `open(path, "w")` does)."""
    def write(tmp: Path) -> None:
        with open(tmp, "w") as fh:
            fh.write(text)
    return atomic_write(path, write, fsync=fsync)
