"""Snapshots for read-only commands beside a serving app (issue 19): the immutable files of optimized segments are
hard-linked, not copied under the write lock, and the snapshot stays the index as it was while the app writes on."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from shoplens.index.check import verify
from shoplens.index.live import LiveIndex, snapshot_tree
from shoplens.store import PointData, point_id
from shoplens.store.edge import EdgeStore

N, DIM = 3000, 64


def _optimized_index(path: Path) -> EdgeStore:
    import qdrant_edge as qe

    # A low indexing threshold: the optimizer makes non-appendable (HNSW) segments, as on a real catalog.
    store = EdgeStore(path, optimizers_config=qe.EdgeOptimizersConfig(indexing_threshold=100,
                                                                       default_segment_number=2))
    store.create({"encoder": "tiny", "encoder_version": "1", "dim": DIM})
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(N, DIM)).astype(np.float32)
    store.upsert([PointData(point_id(f"p{i}"), vecs[i], {"product_id": f"p{i}", "content_hash": f"h{i}"})
                  for i in range(N)])
    store.finish()
    meta = store.read_meta()
    meta["points"] = N
    store.write_meta(meta)
    return store


def test_snapshot_links_the_big_immutable_files_and_stays_as_it_was(tmp_path):
    index = tmp_path / "index"
    store = _optimized_index(index)
    live = LiveIndex(index, store)
    snap = Path(live.handle_snapshot({}, None))
    try:
        matrices = sorted(snap.glob("shard/segments/*/vector_storage-image/matrix.dat"))
        assert matrices, "no optimized segment in the snapshot"
        for matrix in matrices:
            original = index / matrix.relative_to(snap)
            assert os.stat(matrix).st_ino == os.stat(original).st_ino  # a link, not a copy
        assert live.snapshot_stats["linked"] >= N * DIM * 4  # every optimized vector
        # The app writes on: deletes, new metadata, new points, an optimization that rewrites segments.
        store.delete([point_id(f"p{i}") for i in range(0, N, 3)])
        store.set_payload(point_id("p1"), {"product_id": "p1", "content_hash": "changed"})
        rng = np.random.default_rng(1)
        store.upsert([PointData(point_id(f"new{i}"), rng.normal(size=DIM).astype(np.float32),
                                {"product_id": f"new{i}", "content_hash": "n"}) for i in range(500)])
        store.finish()
        served = store.count()
        assert served == N - N // 3 + 500
        with EdgeStore(snap) as copy:  # the index as it was when snapshotted, whole
            report = verify(copy)
            assert report.ok and report.points == N and report.scanned == N, report.lines()
            [hit] = copy.retrieve([point_id("p1")])
            assert hit.payload["content_hash"] == "h1"
        assert store.count() == served and verify(store).scanned == served  # reading the copy left the app's alone
    finally:
        shutil.rmtree(snap.parent)
        store.close()


def test_where_links_cannot_be_made_the_snapshot_is_copied(tmp_path, monkeypatch):
    index = tmp_path / "index"
    _optimized_index(index).close()

    def no_links(src, dst):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    stats = snapshot_tree(index, tmp_path / "copy")
    assert stats["linked"] == 0 and stats["copied"] == sum(p.stat().st_size for p in index.rglob("*") if p.is_file())
    with EdgeStore(tmp_path / "copy") as copy:
        assert copy.count() == N
