"""Serving while the catalog changes: concurrent first queries, syncs handed to a running app, read-only use
beside it, thumbnails."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import make_shop_catalog
from shoplens.catalog import read_catalog
from shoplens.encoders import create_encoder
from shoplens.search import Searcher
from shoplens.store import open_store
from shoplens.sync import sync_catalog


@pytest.fixture
def small_index(tmp_path) -> Path:
    """A tiny-encoder index of the 24-product shop catalog (no text: fast), in a fresh folder per test."""
    catalog = make_shop_catalog(tmp_path / "catalog")
    with open_store(tmp_path / "index") as store:
        sync_catalog(read_catalog(catalog), store, create_encoder("tiny"), progress=False, text=None)
    return tmp_path / "index"


def test_first_queries_arriving_together_all_succeed(small_index):
    # 16 threads hit a freshly opened Searcher at the same instant, several times over: before the fix some
    # of them loaded the shard a second time and failed on the first load's WAL lock (WouldBlock).
    for _ in range(4):
        searcher = Searcher.open(small_index)
        searcher.store._shard = None  # as a fresh process: nothing loaded yet (open() may have read the tuning)
        start = threading.Barrier(16)
        errors, counts = [], []

        def query():
            start.wait()
            try:
                counts.append(searcher.store.count())
            except Exception as exc:  # noqa: BLE001 - collected and asserted on below
                errors.append(str(exc))

        threads = [threading.Thread(target=query) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        searcher.close()
        assert errors == []
        assert counts == [24] * 16  # make_shop_catalog: 3 categories x 4 colours x 2 genders


def test_a_searcher_sees_writes_made_through_the_same_store(small_index):
    # The app's Searcher and its in-process sync share one shard object: what is written is found at once.
    searcher = Searcher.open(small_index)
    vec = np.zeros(48, np.float32)
    vec[0] = 1.0
    from shoplens.store import PointData, point_id

    searcher.store.upsert([PointData(point_id("new-one"), vec, {"product_id": "new-one"})])
    assert searcher.store.count() == 25
    assert searcher.store.search(vec, 1)[0].payload["product_id"] == "new-one"
    searcher.close()
