"""`check` tells "cannot write here" from damage, never moves readable data aside, and covers the tuning file
(issue 19).

Tests run as root, whom permission bits do not stop: a refused write is simulated by the errors Qdrant Edge
gives (its Rust io::Error text), by a read-only bind mount where the machine allows one, and the classification
is tested on real OSError objects.
"""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from conftest import REPO, make_shop_catalog
from shoplens.catalog import read_catalog
from shoplens.encoders import create_encoder
from shoplens.index.check import repair, verify
from shoplens.index.sync import sync_catalog
from shoplens.store import NotWritableError, open_store
from shoplens.store.base import not_writable


@pytest.fixture
def index(tmp_path) -> Path:
    catalog = make_shop_catalog(tmp_path / "catalog")
    with open_store(tmp_path / "index") as store:
        sync_catalog(read_catalog(catalog), store, create_encoder("tiny"), progress=False, text=None)
    return tmp_path / "index"


def files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def cli(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shoplens", *map(str, argv)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


# --- cannot write here is not damage ---

def test_refused_writes_are_told_from_other_failures():
    assert not_writable(OSError(errno.EROFS, "Read-only file system")) == "read-only file system"
    assert not_writable(PermissionError(errno.EACCES, "Permission denied", "/srv/index/shard")) == "permission denied"
    assert not_writable("Failed to open mmap payload storage: Read-only file system (os error 30)") \
        == "read-only file system"
    assert not_writable("failed to load segment x: Permission denied (os error 13)") == "permission denied"
    assert not_writable(OSError(errno.ENOSPC, "No space left on device")) is None
    assert not_writable("No space left on device (os error 28)") is None
    assert not_writable("Service runtime error: failed to load segment x: Bad magic number") is None


def _refusing_edge(monkeypatch, segment: str):
    """Qdrant Edge as a user without write permission sees it: loading the shard is refused (os error 13)."""
    import qdrant_edge

    from shoplens.store import edge, edgerepair

    reason = (f"Service runtime error: failed to load segment shard/segments/{segment}: Service runtime error: "
              "Failed to open mmap payload storage: Permission denied (os error 13)")

    class Shard:
        @staticmethod
        def load(*_args, **_kwargs):
            raise Exception(reason)

    fake = types.SimpleNamespace(**{k: getattr(qdrant_edge, k) for k in dir(qdrant_edge) if not k.startswith("__")})
    fake.EdgeShard = Shard
    monkeypatch.setattr(edge, "_edge", lambda: fake)
    monkeypatch.setattr(edgerepair, "probe_open", lambda _shard: reason)  # the repair's own probe sees the same


def test_an_index_it_may_not_write_is_not_damaged_and_repair_moves_nothing(index, monkeypatch):
    segment = next((index / "shard" / "segments").iterdir()).name
    before = files(index)
    _refusing_edge(monkeypatch, segment)
    with open_store(index) as store:
        with pytest.raises(NotWritableError, match=rf"cannot write in the index folder {index}: permission denied"):
            verify(store)
        with pytest.raises(NotWritableError, match="permission denied"):
            repair(store)
    monkeypatch.undo()
    assert files(index) == before and not list(index.glob("damaged-*"))
    with open_store(index) as store:
        assert verify(store).ok


def test_the_repairs_own_probe_never_moves_a_segment_it_may_not_write(index, monkeypatch):
    from shoplens.store import edgerepair

    segment = next((index / "shard" / "segments").iterdir()).name
    _refusing_edge(monkeypatch, segment)
    with open_store(index) as store:
        meta = store.read_meta()
    with pytest.raises(NotWritableError):
        edgerepair.repair_open(index, meta, lambda: index / "damaged-test")
    assert (index / "shard" / "segments" / segment).is_dir() and not (index / "damaged-test").exists()


def _read_only(folder: Path) -> bool:
    done = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
    if done.returncode != 0:
        return False
    if subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], capture_output=True).returncode != 0:
        subprocess.run(["umount", str(folder)], capture_output=True)
        return False
    return True


def test_check_on_a_read_only_disk_says_so_in_one_line(index):
    if shutil.which("mount") is None or not _read_only(index):
        pytest.skip("no read-only bind mount here (needs root and CAP_SYS_ADMIN); the tests above simulate it")
    before = files(index)
    try:
        for argv in (["check", "--index", index], ["check", "--index", index, "--repair"]):
            done = cli(*argv)
            lines = done.stderr.strip().splitlines()
            assert done.returncode == 2 and len(lines) == 1, (argv, done.stdout, done.stderr)
            assert lines[0].startswith(f"error: cannot write in the index folder {index}: read-only file system")
            assert "damaged" not in done.stdout
    finally:
        subprocess.run(["umount", str(index)], check=True)
    assert files(index) == before
    assert cli("check", "--index", index).returncode == 0


# --- the tuning file ---

def _record_tuning(index: Path, data: bytes | None) -> None:
    with open_store(index) as store:
        meta = store.read_meta()
        meta["tuning"] = {"kind": "lda", "label": ["category"], "hash": "cd" * 16, "file": "tuning-cdcd.npz"}
        store.write_meta(meta)
        if data is not None:
            store.write_file("tuning-cdcd.npz", data)


@pytest.mark.parametrize("data, what", [(None, "file is missing"), (b"not a tuning file", "is unusable")])
def test_check_covers_the_tuning_file_and_names_the_fix(index, data, what):
    _record_tuning(index, data)
    with open_store(index) as store:
        report = verify(store)
    assert report.kinds() == {"tuning"}
    [problem] = report.problems
    assert what in problem.text and "--no-tuning" in problem.fix and "--tune-label" in problem.fix
    done = cli("check", "--index", index)
    assert done.returncode == 1 and what in done.stdout and "--no-tuning" in done.stdout
