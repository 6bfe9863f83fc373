"""The start-up check of the app and the indexer reads what is cheap (counts, metadata, a sample of points); the
full scan of every vector stays in `shoplens check` (issue 19)."""

from __future__ import annotations

import numpy as np

from shoplens.index.check import SAMPLE, startup_check, verify
from shoplens.store import PointData, point_id
from shoplens.store.edge import EdgeStore

N = SAMPLE + 344  # 600 points: more than a sample


def _index(path, n: int = N) -> EdgeStore:
    store = EdgeStore(path)
    store.create({"encoder": "tiny", "encoder_version": "1", "dim": 48})
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(n, 48)).astype(np.float32)
    store.upsert([PointData(point_id(f"p{i}"), vecs[i], {"product_id": f"p{i}", "content_hash": f"h{i}"})
                  for i in range(n)])
    store.finish()
    meta = store.read_meta()
    meta["points"] = n
    store.write_meta(meta)
    return store


class Counting:
    """A store that counts the points it hands out with their vectors."""

    def __init__(self, store):
        self._store = store
        self.vectors_read = 0

    def __getattr__(self, name):
        return getattr(self._store, name)

    def iterate(self, *args, with_vector: bool = False, **kwargs):
        for hit in self._store.iterate(*args, with_vector=with_vector, **kwargs):
            self.vectors_read += with_vector
            yield hit


def test_startup_check_reads_a_sample_and_check_reads_every_vector(tmp_path):
    store = _index(tmp_path / "index")
    try:
        counting = Counting(store)
        report = startup_check(counting)
        assert report.ok and report.points == N and report.scanned == SAMPLE
        assert counting.vectors_read <= SAMPLE
        counting = Counting(store)
        full = verify(counting)
        assert full.ok and full.scanned == N and counting.vectors_read == N
    finally:
        store.close()


def test_startup_check_still_finds_a_lost_product_and_a_damaged_sampled_point(tmp_path):
    store = _index(tmp_path / "index")
    try:
        store.delete([point_id("p7")])  # the count no longer matches the recorded one: found without a scan
        assert [p.kind for p in startup_check(store).problems] == ["count"]
        first = next(store.iterate(page=1)).id  # the first point in id order is always in the sample
        store.set_payload(first, {"product_id": "", "content_hash": ""})
        kinds = {p.kind for p in startup_check(store).problems}
        assert kinds == {"count", "payload"}
    finally:
        store.close()


def test_app_start_does_not_read_every_vector(tmp_path, monkeypatch):
    from shoplens.web.serve import create

    _index(tmp_path / "index").close()
    read = {"vectors": 0}
    real = EdgeStore.iterate

    def counting(self, *args, with_vector: bool = False, **kwargs):
        for hit in real(self, *args, with_vector=with_vector, **kwargs):
            read["vectors"] += with_vector
            yield hit

    monkeypatch.setattr(EdgeStore, "iterate", counting)
    app = create(tmp_path / "index")
    try:
        assert app.searcher is not None, "the app did not serve the index"
        assert read["vectors"] <= SAMPLE, f"the app read {read['vectors']} of {N} vectors to start"
    finally:
        app.close()
