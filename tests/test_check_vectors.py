"""`check` compares stored image vectors with the embedding cache: a vector silently replaced is found and fixed."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import ColourEncoder, fresh_cache, make_folder_catalog
from shoplens.catalog import read_catalog
from shoplens.cli import main
from shoplens.index.check import verify
from shoplens.index.sync import sync_catalog
from shoplens.store import open_store, point_id


@pytest.fixture
def indexed(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOPLENS_CACHE", str(fresh_cache(tmp_path / "cache")))
    catalog = make_folder_catalog(tmp_path / "catalog")
    store = open_store(tmp_path / "index")
    sync_catalog(read_catalog(catalog), store, ColourEncoder(), progress=False)
    yield catalog, store
    store.close()


def _vector(store, product):
    return np.asarray(store.retrieve([point_id(product)], with_vector=True)[0].vector, np.float32)


def _swap_in_blue_for_red(store):
    store.set_vectors([point_id("red")], np.stack([_vector(store, "blue")]))


def test_a_stored_vector_replaced_by_another_products_is_reported_with_its_fix(indexed):
    """Before: the check read the vector as usable (finite, non-zero) and said the index was whole."""
    catalog, store = indexed
    assert verify(store).ok and verify(store).compared == 8  # all 8 photos' vectors are in the cache
    _swap_in_blue_for_red(store)
    for report in (verify(store), verify(store, full=True)):  # the sample (200) holds all 8 here
        assert [p.kind for p in report.problems] == ["vector"]
        problem = report.problems[0]
        assert "1 of 8 stored image vectors" in problem.text and ": red" in problem.text
        assert problem.fix.startswith("re-write them from the cache: python indexer.py") and "--index" in problem.fix
    # The fix named: the indexer re-writes it from the cache (no photo encoded), and the check is whole again.
    summary = sync_catalog(read_catalog(catalog), store, ColourEncoder(), progress=False)
    assert summary.encoded == 0 and summary.updated == 1 and any("damaged" in n for n in summary.notes)
    np.testing.assert_allclose(_vector(store, "red"), ColourEncoder().embed_batch([_photo(catalog, "red")])[0],
                               atol=1e-6)
    assert verify(store, full=True).ok


def _photo(catalog, name):
    from PIL import Image

    return Image.open(next(catalog.rglob(f"{name}.jpg")))


def test_the_sample_is_bounded_and_full_compares_all(indexed, monkeypatch):
    import shoplens.index.check as check

    _catalog, store = indexed
    monkeypatch.setattr(check, "VECTOR_SAMPLE", 3)
    assert verify(store).compared == 3 and verify(store, full=True).compared == 8


def test_points_the_cache_lacks_are_not_compared(indexed, tmp_path):
    _catalog, store = indexed
    for path in (tmp_path / "cache" / "embeddings").iterdir():
        path.unlink()
    _swap_in_blue_for_red(store)
    report = verify(store, full=True)
    assert report.ok and report.compared == 0  # nothing to compare with: not called damaged


def test_check_full_on_the_command_line(indexed, tmp_path, capsys):
    _catalog, store = indexed
    _swap_in_blue_for_red(store)
    store.close()
    assert main(["check", "--index", str(tmp_path / "index"), "--full"]) == 1
    out = capsys.readouterr().out
    assert "damaged: 1 of 8 stored image vectors compared with the embedding cache" in out, out
