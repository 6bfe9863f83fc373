"""shoplens.atomic: a write replaces the file whole, a failed write leaves the old file and no temporary file."""

import pytest

from shoplens.atomic import atomic_write, atomic_write_bytes, atomic_write_text


def test_write_replaces_the_file(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    atomic_write_text(target, "new", fsync=True)
    assert target.read_text() == "new"
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.npz"
    target.write_text("old")

    def half_then_fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(target, half_then_fail, suffix=".npz")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz"]


def test_temporary_file_is_next_to_the_target_with_the_suffix(tmp_path):
    seen = []
    atomic_write(tmp_path / "b.npz", lambda tmp: (seen.append(tmp), tmp.write_bytes(b"x")), suffix=".npz")
    assert seen[0].parent == tmp_path
    assert seen[0].name.startswith("b.npz.") and seen[0].name.endswith(".tmp.npz")
    assert (tmp_path / "b.npz").read_bytes() == b"x"
