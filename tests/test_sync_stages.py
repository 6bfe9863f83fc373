"""The sync's stages one by one: plan (the prune guard), read/prepare and route, embed, write, finalise."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import PALETTE, ColourEncoder, make_photo
from shoplens.catalog import Product, read_catalog
from shoplens.index.sync import (DUPLICATE, ENCODE, FAILED, FINALISE_STEPS, METADATA, UNCHANGED, Embedder, Finish,
                                 Plan, Prepared, PruneRefusedError, Summary, Writer, check_prune, finalise,
                                 plan_sync, prepare, read_products, route, sync_catalog)
from shoplens.store import point_id


def _products(*ids):
    return [Product(i, None, f"{i}.jpg", {}) for i in ids]


# --- plan: the prune guard ---

def test_check_prune_lists_what_left_and_allows_up_to_the_share():
    existing = {point_id(str(i)): {} for i in range(10)}
    # 2 of 10 left: exactly 20 % is allowed.
    assert check_prune(existing, _products(*map(str, range(2, 10))), 0.2) == sorted([point_id("0"), point_id("1")])


def test_check_prune_refuses_more_than_the_share_in_one_line():
    existing = {point_id(str(i)): {} for i in range(10)}
    with pytest.raises(PruneRefusedError) as exc:
        check_prune(existing, _products(*map(str, range(3, 10))), 0.2)  # 3 of 10 = 30 %
    message = str(exc.value)
    assert "\n" not in message and "3 of the 10" in message and "--force" in message and "--max-prune" in message
    # A larger limit, or none, lets it through.
    assert len(check_prune(existing, _products(*map(str, range(3, 10))), 0.5)) == 3
    assert len(check_prune(existing, _products(), None)) == 10


def test_check_prune_refuses_an_emptied_index_whatever_the_share():
    existing = {point_id("a"): {}}
    with pytest.raises(PruneRefusedError, match="every product"):
        check_prune(existing, _products("b"), 1.0)


def test_plan_refuses_a_large_prune_before_writing_anything(folder_catalog, make_store):
    store = make_store("edge")
    sync_catalog(read_catalog(folder_catalog), store, ColourEncoder(), progress=False)
    meta_before = store.read_meta()
    for name in ("reds", "greens"):  # 4 of 8 products leave
        for photo in (folder_catalog / name).iterdir():
            photo.unlink()
        (folder_catalog / name).rmdir()
    with pytest.raises(PruneRefusedError):
        plan_sync(read_catalog(folder_catalog), store, ColourEncoder(), Summary(), text=None, tuning="keep",
                  known_vectors=None, prune=True, max_prune=0.2, progress=False)
    assert store.count() == 8 and store.read_meta() == meta_before


# --- read/prepare and route ---

def test_prepare_decodes_only_a_photo_to_encode(tmp_path):
    path = make_photo(tmp_path / "red.jpg", PALETTE["red"])
    product = Product("red", path, "red.jpg", {})
    new = prepare(product, None, None)
    assert new.image is not None and new.error is None and len(new.payload["content_hash"]) == 64
    same = prepare(product, {"content_hash": new.payload["content_hash"]}, None)
    assert same.image is None and same.payload == new.payload


def test_prepare_names_an_unreadable_photo(tmp_path):
    path = tmp_path / "bad.jpg"
    path.write_bytes(b"not a photo")
    item = prepare(Product("bad", path, "bad.jpg", {}), None, None)
    assert item.error and item.image is None


def test_read_products_keeps_catalog_order(folder_catalog):
    products = read_catalog(folder_catalog).products
    items = list(read_products(products, {}, None, workers=2, lookahead=2, colours=False, stored_colours_ok=True))
    assert [i.product.id for i in items] == [p.id for p in products]


def test_route_sorts_each_case():
    image = Image.new("RGB", (2, 2))
    existing = {point_id("a"): {"x": 1}, point_id("b"): {"x": 1}, point_id("c"): {"x": 1}}
    seen: set[str] = set()
    assert route(Prepared(None, point_id("a"), {"x": 1}), existing, seen) == UNCHANGED
    assert route(Prepared(None, point_id("a"), {"x": 1}), existing, seen) == DUPLICATE
    assert route(Prepared(None, point_id("b"), {"x": 2}), existing, seen) == METADATA
    assert route(Prepared(None, point_id("c"), {"x": 1}), existing, seen, {point_id("c")}) == METADATA
    assert route(Prepared(None, point_id("d"), {"x": 1}, image=image), existing, seen) == ENCODE
    assert route(Prepared(None, point_id("e"), error="unreadable"), existing, seen) == FAILED
    assert seen == {point_id(i) for i in "abcde"}


# --- embed ---

class CountingEncoder(ColourEncoder):
    def __init__(self):
        self.calls = 0

    def embed_batch(self, images):
        self.calls += len(images)
        return super().embed_batch(images)


def _item(name, colour, content_hash):
    return Prepared(None, point_id(name), {"content_hash": content_hash}, Image.new("RGB", (4, 4), colour))


def test_embedder_encodes_only_unknown_photos_and_applies_the_tuning(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOPLENS_CACHE", str(tmp_path / "cache"))

    class Double:  # a stand-in tuning: doubles each vector
        hash = "d"

        def apply(self, vectors):
            return vectors * 2

    encoder = CountingEncoder()
    known = {"h-red": np.array([1.0, 0.0, 0.0], np.float32)}
    embedder = Embedder(encoder, known, Double(), cache=False)
    vectors = embedder.embed([_item("a", (255, 0, 0), "h-red"), _item("b", (0, 0, 255), "h-blue")])
    assert encoder.calls == 1 and embedder.encoded == 1
    np.testing.assert_allclose(vectors[0], [2.0, 0.0, 0.0])
    # Blue (0, 0, 255) + 1 per channel, unit length, doubled: worked out by hand.
    blue = np.array([1.0, 1.0, 256.0]) / np.linalg.norm([1.0, 1.0, 256.0])
    np.testing.assert_allclose(vectors[1], 2 * blue, rtol=1e-5)


# --- write ---

def test_writer_counts_added_and_updated(make_store):
    store = make_store("edge")
    store.create({"schema": 1, **ColourEncoder().describe()})
    summary = Summary()
    existing = {point_id("old"): {}}
    writer = Writer(store, summary, existing, None)
    vec = np.array([1.0, 0.0, 0.0], np.float32)
    writer.write_points([Prepared(None, point_id("new"), {"product_id": "new", "content_hash": "1"}),
                         Prepared(None, point_id("old"), {"product_id": "old", "content_hash": "2"})], [vec, vec])
    assert (summary.added, summary.updated) == (1, 1) and store.count() == 2
    writer.write_payload(Prepared(None, point_id("new"), {"product_id": "new", "content_hash": "1", "title": "T"}))
    assert summary.updated == 2 and store.retrieve([point_id("new")])[0].payload["title"] == "T"


# --- finalise ---

def test_finalise_runs_added_steps_before_the_metadata_is_written(folder_catalog, make_store):
    store = make_store("edge")
    catalog = read_catalog(folder_catalog)
    sync_catalog(catalog, store, ColourEncoder(), progress=False)
    summary = Summary()
    plan = plan_sync(catalog, store, ColourEncoder(), summary, text=None, tuning="keep", known_vectors=None,
                     prune=False, max_prune=0.2, progress=False)
    order = []

    def extra(run: Finish) -> None:  # what a later step (duplicate groups) does: add to the metadata
        order.append("extra")
        run.plan.meta["extra"] = {"count": run.store.count()}

    seen = {point_id(p.id) for p in catalog.products}
    finalise(Finish(catalog, store, plan, summary, seen, prune=False, colours=True), (*FINALISE_STEPS, extra))
    assert order == ["extra"]
    meta = store.read_meta()
    assert meta["extra"] == {"count": 8} and meta["points"] == 8 and meta["layout"] == "folders"


def test_finalise_prunes_only_what_left(folder_catalog, make_store):
    store = make_store("edge")
    catalog = read_catalog(folder_catalog)
    sync_catalog(catalog, store, ColourEncoder(), progress=False)
    summary = Summary()
    plan = plan_sync(catalog, store, ColourEncoder(), summary, text=None, tuning="keep", known_vectors=None,
                     prune=True, max_prune=0.2, progress=False)
    seen = {point_id(p.id) for p in catalog.products} - {point_id("white")}
    finalise(Finish(catalog, store, plan, summary, seen, prune=True, colours=True))
    assert summary.removed == 1 and store.count() == 7 and store.read_meta()["points"] == 7
    assert store.retrieve([point_id("white")]) == []


def test_plan_is_what_the_stages_share(folder_catalog, make_store):
    store = make_store("edge")
    plan = plan_sync(read_catalog(folder_catalog), store, ColourEncoder(), Summary(), text=None, tuning="keep",
                     known_vectors={"h": np.zeros(3)}, prune=False, max_prune=0.2, progress=False)
    assert isinstance(plan, Plan) and plan.existing == {} and plan.target is None and plan.tuned == {}
    assert set(plan.known) == {"h"} and plan.rewrite == set()
