"""The indexer: incremental, idempotent, tolerant of bad photos, and safe to kill."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from conftest import PALETTE, REPO, ColourEncoder, make_folder_catalog, make_photo
from shoplens.catalog import read_catalog
from shoplens.encoders import create_encoder
from shoplens.index.sync import filter_fields, sync_catalog
from shoplens.store import IndexMismatchError, StoreError, point_id
from shoplens.store.edge import EdgeStore
from stores import STORES, close_store, open_store


def _sync(root, store, encoder, **kw):
    return sync_catalog(read_catalog(root), store, encoder, progress=False, **kw)


@pytest.fixture(params=STORES)
def store(request, make_store):
    return make_store(request.param)


@pytest.fixture(scope="module")
def first_syncs(request, tmp_path_factory):
    """first_sync(kind) -> (catalog, store, summary): a new store of that kind after its first sync of the folder
    catalog, made once in this module for the tests that change neither (a second store on the Milvus server
    costs ~4 s)."""
    made: dict = {}
    base = tmp_path_factory.mktemp("first-sync")

    def get(kind: str):
        if kind not in made:
            catalog = make_folder_catalog(base / kind / "catalog")
            store = open_store(kind, base / kind, "idx", request)
            made[kind] = (catalog, store, _sync(catalog, store, ColourEncoder()))
        return made[kind]

    yield get
    for _catalog, store, _summary in made.values():
        close_store(store)


@pytest.fixture(params=STORES)
def first_sync(request, first_syncs):
    """(catalog, store, summary of its first sync) for each kind of store; shared: change neither."""
    return first_syncs(request.param)


def test_first_run_then_unchanged(first_sync, colour_encoder):
    catalog, store, first = first_sync
    assert (first.added, first.updated, first.unchanged, first.removed, first.failed) == (8, 0, 0, 0, [])
    assert first.encoded == 8 and store.count() == 8
    again = _sync(catalog, store, colour_encoder)
    assert (again.added, again.updated, again.unchanged, again.encoded) == (0, 0, 8, 0)
    assert store.count() == 8


def test_payload_holds_id_metadata_path_and_hash(first_sync):
    catalog, store, _first = first_sync
    [hit] = store.retrieve([point_id("green")])
    assert hit.payload["product_id"] == "green"
    assert hit.payload["category"] == "greens" and hit.payload["title"] == "green"
    assert hit.payload["image_path"] == "greens/green.jpg"
    assert re.fullmatch(r"[0-9a-f]{64}", hit.payload["content_hash"])
    meta = store.read_meta()
    assert meta["encoder"] == "fake-colour" and meta["dim"] == 3 and meta["layout"] == "folders"
    assert meta["catalog_root"] == str(catalog.resolve()) and meta["filter_fields"] == ["category"]


def test_changed_photo_is_reencoded_and_search_follows(folder_catalog, store, colour_encoder):
    _sync(folder_catalog, store, colour_encoder)
    make_photo(folder_catalog / "reds" / "red.jpg", PALETTE["blue"])  # same product, new photo
    summary = _sync(folder_catalog, store, colour_encoder)
    assert (summary.added, summary.updated, summary.unchanged, summary.encoded) == (0, 1, 7, 1)
    query = colour_encoder.embed(Image.new("RGB", (8, 8), PALETTE["blue"]))
    top = [h.product_id for h in store.search(query, 2)]
    assert set(top) == {"red", "blue"}


def test_new_metadata_same_photo_updates_without_encoding(tmp_path, store, colour_encoder):
    make_photo(tmp_path / "a.jpg", PALETTE["red"])
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,id,title\na.jpg,1,Old name\n")
    _sync(manifest, store, colour_encoder)
    manifest.write_text("path,id,title\na.jpg,1,New name\n")
    summary = _sync(manifest, store, colour_encoder)
    assert (summary.updated, summary.encoded) == (1, 0)
    assert store.retrieve([point_id("1")])[0].payload["title"] == "New name"


def test_prune_removes_only_products_that_left(folder_catalog, store, colour_encoder):
    _sync(folder_catalog, store, colour_encoder)
    (folder_catalog / "other" / "white.jpg").unlink()
    kept = _sync(folder_catalog, store, colour_encoder)
    assert kept.removed == 0 and store.count() == 8
    pruned = _sync(folder_catalog, store, colour_encoder, prune=True)
    assert pruned.removed == 1 and store.count() == 7
    assert store.retrieve([point_id("white")]) == [] and len(store.retrieve([point_id("yellow")])) == 1


def test_a_photo_moved_to_another_category_stays_one_product(folder_catalog, store, colour_encoder):
    _sync(folder_catalog, store, colour_encoder)
    (folder_catalog / "sale").mkdir()
    (folder_catalog / "reds" / "red.jpg").rename(folder_catalog / "sale" / "red.jpg")
    moved = _sync(folder_catalog, store, colour_encoder)
    # Same id ("red"), same photo: its category and path are updated in place, nothing is encoded or added.
    assert (moved.added, moved.updated, moved.unchanged, moved.encoded, moved.removed) == (0, 1, 7, 0, 0)
    assert store.count() == 8
    [hit] = store.retrieve([point_id("red")])
    assert (hit.payload["category"], hit.payload["image_path"]) == ("sale", "sale/red.jpg")
    assert [h.product_id for h in store.iterate({"category": "reds"})] == ["dark-red"]


def test_photos_sharing_a_name_get_path_ids_and_prune_drops_the_old_point(folder_catalog, store, colour_encoder):
    _sync(folder_catalog, store, colour_encoder)
    make_photo(folder_catalog / "sale" / "red.jpg", PALETTE["red"])  # a second "red": both are now known by path
    kept = _sync(folder_catalog, store, colour_encoder)
    assert (kept.added, kept.unchanged, kept.removed) == (2, 7, 0) and store.count() == 10  # "red" is stale
    assert len(kept.notes) == 1 and "2 photos share a file name with another (red)" in kept.notes[0]
    pruned = _sync(folder_catalog, store, colour_encoder, prune=True)
    assert (pruned.added, pruned.unchanged, pruned.removed) == (0, 9, 1) and store.count() == 9
    assert store.retrieve([point_id("red")]) == []
    assert {h.product_id for h in store.iterate({"category": "sale"})} == {"sale/red.jpg"}


def test_duplicate_product_ids_keep_the_first_and_name_the_others(tmp_path, store, colour_encoder):
    # Rows 2 and 3 of the manifest repeat id "A1" (another photo, another title): the first row is the product.
    make_photo(tmp_path / "a.jpg", PALETTE["red"])
    make_photo(tmp_path / "b.jpg", PALETTE["blue"])
    make_photo(tmp_path / "c.jpg", PALETTE["green"])
    make_photo(tmp_path / "d.jpg", PALETTE["yellow"])
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,sku,title\na.jpg,A1,First\nb.jpg,A1,Second\nc.jpg,A1,Third\nd.jpg,B2,Other\n")
    summary = _sync(manifest, store, colour_encoder)
    assert (summary.added, summary.encoded, store.count()) == (2, 2, 2)
    assert summary.failed == [("b.jpg", "duplicate product id 'A1'"), ("c.jpg", "duplicate product id 'A1'")]
    [hit] = store.retrieve([point_id("A1")])
    assert (hit.payload["title"], hit.payload["image_path"]) == ("First", "a.jpg")
    # Running again changes nothing and says the same.
    again = _sync(manifest, store, colour_encoder)
    assert (again.added, again.updated, again.unchanged, len(again.failed)) == (0, 0, 2, 2)


def test_bad_photos_are_skipped_named_and_never_delete_data(folder_catalog, store, colour_encoder):
    _sync(folder_catalog, store, colour_encoder)
    (folder_catalog / "reds" / "red.jpg").write_bytes(b"now corrupt")
    (folder_catalog / "reds" / "broken.jpg").write_bytes(b"")
    summary = _sync(folder_catalog, store, colour_encoder, prune=True)
    assert sorted(name for name, _ in summary.failed) == ["reds/broken.jpg", "reds/red.jpg"]
    assert "reds/red.jpg" in summary.line() and "failed 2" in summary.line()
    assert summary.removed == 0 and store.count() == 8  # the old red.jpg vector is kept


def test_another_encoder_is_refused(first_sync):
    catalog, store, _first = first_sync
    before = store.count()
    with pytest.raises(IndexMismatchError, match="fake-colour"):
        _sync(catalog, store, create_encoder("tiny"))
    assert store.count() == before == 8 and store.read_meta()["encoder"] == "fake-colour"  # refused: nothing written


def test_a_failed_write_closes_the_bar_so_the_error_starts_a_line(folder_catalog, make_store, colour_encoder,
                                                                   monkeypatch):
    store = make_store("edge")

    def lost(points):
        raise StoreError("lost the server")

    monkeypatch.setattr(store, "upsert", lost)
    drawn = io.StringIO()
    try:
        sync_catalog(read_catalog(folder_catalog), store, colour_encoder, progress=drawn, batch_size=4)
    except StoreError:
        # Read while the error is handled, where the CLI prints it: the run's frames, its bar among them, still
        # live (an unclosed bar is closed only when it is collected, after the error line).
        text = drawn.getvalue()
    else:
        pytest.fail("the write did not fail")
    # The bar counted the first batch's 4 products (of 8), whose write failed, and ended its line.
    assert text.endswith("\n"), repr(text)
    assert " 4/8 " in text.split("\r")[-1], repr(text)


def test_filter_fields_are_category_like(datasets_dir):
    fields = filter_fields(read_catalog(datasets_dir / "fashion-images"))
    assert fields == ["category", "colour", "gender", "product_type", "sub_category", "usage"]


def _catalog_of(n: int, root: Path) -> Path:
    colours = list(PALETTE.values())
    for i in range(n):
        make_photo(root / f"group{i % 4}" / f"item{i:04d}.jpg", colours[i % len(colours)], size=(16 + i % 7, 16))
    return root


@pytest.mark.parametrize("kind", ["edge", "milvus-lite", "milvus-server"])
def test_killed_midway_then_rerun_holds_exactly_the_catalog(tmp_path, kind, request):
    catalog = _catalog_of(240, tmp_path / "catalog")
    index = tmp_path / "index"
    env = {**os.environ, "SHOPLENS_PLUGINS": "slow_encoder",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    if kind == "edge":
        where = ["--index", str(index)]
    else:
        uri = str(tmp_path / "milvus.db") if kind == "milvus-lite" else request.getfixturevalue("milvus_server")
        where = ["--milvus-uri", uri, "--collection", f"killed_{os.getpid()}"]
    cmd = [sys.executable, str(REPO / "indexer.py"), str(catalog), *where, "--batch-size", "8"]
    proc = subprocess.Popen(cmd + ["--encoder", "slow-tiny"], env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    seen = {"n": 0}

    def watch():
        buf = b""
        while chunk := proc.stderr.read(64):
            buf = (buf + chunk)[-4096:]
            counts = re.findall(rb"(\d+)/240", buf)
            if counts:
                seen["n"] = int(counts[-1])

    threading.Thread(target=watch, daemon=True).start()
    deadline = time.time() + 60
    while seen["n"] < 60 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"the indexer ended before it could be killed: {proc.returncode}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    done = subprocess.run(cmd + ["--encoder", "tiny", "--json", "--quiet"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["failed"] == 0 and summary["added"] + summary["unchanged"] == 240
    assert summary["unchanged"] >= 8, "work done before the kill was lost"
    if kind == "edge":
        store = EdgeStore(index)
    else:
        from shoplens.store.milvus import MilvusStore

        store = MilvusStore(where[1], where[3], strong=True)  # everything the indexer wrote, not a bounded view
    try:
        ids = [h.product_id for h in store.iterate()]
        assert len(ids) == 240 and len(set(ids)) == 240
        assert set(ids) == {p.id for p in read_catalog(catalog).products}
    finally:
        store.close()


def _set_in_manifest(root: Path, pid: str, **values) -> None:
    import csv

    with open(root / "products.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        if row["id"] == pid:
            row.update(values)
    with open(root / "products.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _payload(store, pid: str) -> dict:
    return store.retrieve([point_id(pid)])[0].payload


def test_colours_follow_the_label_and_the_flag(tmp_path, store):
    from conftest import make_shop_catalog

    root = make_shop_catalog(tmp_path / "shop")
    tiny = create_encoder("tiny")
    _sync(root, store, tiny)
    assert _payload(store, "trm")["colours"] == ["red"]
    # A new colour label on the same photo: its colours are read again (the label is blended in), no encoding.
    _set_in_manifest(root, "trm", colour="Green")
    summary = _sync(root, store, tiny)
    assert (summary.updated, summary.encoded) == (1, 0)
    assert _payload(store, "trm")["colours"] == ["green", "red"]
    # --no-colours removes them and says so in the metadata; turning them back on restores them.
    _sync(root, store, tiny, colours=False)
    assert "colours" not in _payload(store, "tbm") and "colours" not in store.read_meta()
    summary = _sync(root, store, tiny)
    assert (summary.updated, summary.encoded) == (24, 0)
    assert _payload(store, "tbm")["colours"] == ["blue"] and store.read_meta()["colours"]["version"]


def test_an_index_with_text_keeps_it_in_step_without_being_asked(tmp_path):
    from conftest import make_shop_catalog
    from shoplens.index.text import TextIndexer
    from shoplens.query.search import Searcher

    root = make_shop_catalog(tmp_path / "shop")
    tiny = create_encoder("tiny")
    with EdgeStore(tmp_path / "idx") as store:
        _sync(root, store, tiny, text=TextIndexer())
        _set_in_manifest(root, "tbm", title="Zebra striped top")
        _sync(root, store, tiny)  # text=None, as `--text off` or a catalog that lost its titles would ask
        hits = Searcher(store, store.read_meta(), _encoder=tiny).search_text("zebra", k=1, mode="keyword").hits
        assert [h.product_id for h in hits] == ["tbm"]
