"""The embedding cache: append-only, keyed by content hash and encoder configuration, safe for concurrent writers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, ColourEncoder
from shoplens.vectors.embedcache import CacheError, EmbeddingCache, cache_file, legacy_cache_file


def _vec(i: int, dim: int = 8) -> np.ndarray:
    return np.arange(dim, dtype=np.float32) + 1000 * i


def test_put_then_get_many_and_keys_already_cached_are_kept(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite", 8)
    assert cache.get_many(["a"]) == {} and len(cache) == 0
    assert cache.put_many({"a": _vec(1), "b": _vec(2)}) == 2
    assert cache.put_many({"b": _vec(99), "c": _vec(3)}) == 1  # b stays as first written
    got = cache.get_many(["a", "b", "c", "missing"])
    assert sorted(got) == ["a", "b", "c"]
    np.testing.assert_array_equal(got["b"], _vec(2))
    assert "a" in cache and "missing" not in cache and len(cache) == 3 and sorted(cache) == ["a", "b", "c"]
    cache.close()
    again = EmbeddingCache(tmp_path / "c.sqlite", 8)  # another process's view: all on disk
    np.testing.assert_array_equal(again["c"], _vec(3))
    # 3 vectors of 8 float32, appended once each.
    assert (tmp_path / "c.f32").stat().st_size == 3 * 8 * 4


def test_a_vector_whose_bytes_were_lost_reads_as_missing(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite", 8)
    cache.put_many({"a": _vec(1), "b": _vec(2)})
    with open(tmp_path / "c.f32", "r+b") as fh:  # b's bytes damaged (a power cut before they reached the disk)
        fh.seek(8 * 4)
        fh.write(b"\0" * 8)
    assert sorted(cache.get_many(["a", "b"])) == ["a"]


def test_another_configuration_or_size_is_refused(tmp_path):
    EmbeddingCache(tmp_path / "c.sqlite", 8, {"encoder": "x"}).put_many({"a": _vec(1)})
    with pytest.raises(CacheError, match="another encoder configuration"):
        EmbeddingCache(tmp_path / "c.sqlite", 8, {"encoder": "y"}).get_many(["a"])
    with pytest.raises(CacheError):
        EmbeddingCache(tmp_path / "c.sqlite", 4, {"encoder": "x"}).put_many({"b": np.zeros(4)})
    with pytest.raises(CacheError, match="size 3"):
        EmbeddingCache(tmp_path / "d.sqlite", 8).put_many({"b": np.zeros(3)})


def test_the_file_is_per_encoder_configuration_and_the_old_npz_is_imported_once(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOPLENS_CACHE", str(tmp_path))
    encoder = ColourEncoder()
    assert cache_file(encoder).suffix == ".sqlite" and cache_file(encoder) != legacy_cache_file(encoder)
    old = {"h1": np.array([1.0, 0.0, 0.0], np.float32), "h2": np.array([0.0, 1.0, 0.0], np.float32)}
    np.savez(legacy_cache_file(encoder), hashes=np.array(list(old), dtype="U64"), vectors=np.stack(list(old.values())))
    with EmbeddingCache.for_encoder(encoder) as cache:
        got = cache.get_many(["h1", "h2"])
    assert sorted(got) == ["h1", "h2"]
    np.testing.assert_array_equal(got["h2"], old["h2"])
    legacy_cache_file(encoder).unlink()
    with EmbeddingCache.for_encoder(encoder) as cache:
        assert len(cache) == 2  # kept in the new file


WRITER = """
import sys
import numpy as np
sys.path.insert(0, {repo!r})
from shoplens.vectors.embedcache import EmbeddingCache

cache = EmbeddingCache({path!r}, 8)
start, step = int(sys.argv[1]), int(sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()  # both start writing together
for first in range(start, 3000, step * 25):
    keys = range(first, min(first + step * 25, 3000), step)
    cache.put_many({{f"k{{i}}": np.arange(8, dtype=np.float32) + 1000 * i for i in keys}})
"""


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    """Before: each process rewrote the whole .npz from its own copy, so the last writer dropped the other's."""
    path = tmp_path / "c.sqlite"
    script = WRITER.format(repo=str(REPO), path=str(path))
    # One writes the even keys, the other every key (half of them the same as the first's): 3000 in all.
    procs = [subprocess.Popen([sys.executable, "-c", script, str(start), str(step)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for start, step in ((0, 2), (0, 1))]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    cache = EmbeddingCache(path, 8)
    got = cache.get_many(f"k{i}" for i in range(3000))
    assert len(got) == 3000 == len(cache)
    for i in (0, 1, 1499, 2998, 2999):
        np.testing.assert_array_equal(got[f"k{i}"], _vec(i))
    assert all(np.array_equal(got[f"k{i}"], _vec(i)) for i in range(3000))
