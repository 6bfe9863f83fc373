"""The micro-batcher (shoplens.query.batcher) and how the app's Shop uses it: concurrent photos encoded in one
call, each upload decoded once, a full house answered "busy" in the page."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from shoplens.query.batcher import Busy, MicroBatcher
from shoplens.query.search import Searcher
from shoplens.web.handlers import Handlers
from shoplens.web.shop import Shop


def test_each_caller_gets_its_own_result_and_items_keep_their_order():
    seen: list[list[int]] = []
    batcher = MicroBatcher(lambda items: seen.append(list(items)) or [x * 10 for x in items], window=0.05)
    futures = [batcher.submit(i) for i in range(12)]  # submitted in order, from one thread
    assert [f.result(timeout=10) for f in futures] == [i * 10 for i in range(12)]
    assert [x for batch in seen for x in batch] == list(range(12))  # taken in the order submitted
    assert len(seen) < 12  # gathered: fewer calls than items
    batcher.close()


def test_many_threads_get_their_own_results():
    batcher = MicroBatcher(lambda items: [f"r{x}" for x in items], max_batch=8, window=0.01)
    out: dict[int, str] = {}

    def ask(i):
        out[i] = batcher(i, timeout=10)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == {i: f"r{i}" for i in range(40)}
    assert batcher.items == 40 and batcher.batches < 40
    batcher.close()


def test_a_failing_item_fails_only_its_own_call():
    calls: list[list[int]] = []

    def run(items):
        calls.append(list(items))
        if any(x < 0 for x in items):
            raise ValueError("negative")
        return [x + 1 for x in items]

    batcher = MicroBatcher(run, window=0.05)
    futures = [batcher.submit(x) for x in (1, -1, 2)]
    assert futures[0].result(timeout=10) == 2
    assert futures[2].result(timeout=10) == 3
    with pytest.raises(ValueError, match="negative"):
        futures[1].result(timeout=10)
    assert calls[0] == [1, -1, 2]  # one batch first, then each alone
    batcher.close()


def test_a_batch_that_returns_too_few_results_fails_its_items_not_others():
    batcher = MicroBatcher(lambda items: [] if 0 in items else list(items), window=0.05)
    futures = [batcher.submit(x) for x in (5, 0, 6)]
    assert futures[0].result(timeout=10) == 5 and futures[2].result(timeout=10) == 6
    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        futures[1].result(timeout=10)
    batcher.close()


def test_batches_are_bounded():
    sizes: list[int] = []
    batcher = MicroBatcher(lambda items: sizes.append(len(items)) or list(items), max_batch=4, window=0.05)
    futures = [batcher.submit(i) for i in range(10)]
    assert [f.result(timeout=10) for f in futures] == list(range(10))
    assert max(sizes) == 4 and sum(sizes) == 10
    batcher.close()


def test_a_full_queue_says_busy_at_once_and_the_queued_still_finish():
    gate = threading.Event()

    def run(items):
        gate.wait(10)
        return list(items)

    batcher = MicroBatcher(run, max_batch=1, window=0.0, max_pending=2)
    first = batcher.submit("a")  # taken by the worker, which then waits at the gate
    deadline = time.monotonic() + 5
    while batcher.pending() and time.monotonic() < deadline:
        time.sleep(0.005)
    queued = [batcher.submit("b"), batcher.submit("c")]
    started = time.monotonic()
    with pytest.raises(Busy, match="busy, try again in a moment"):
        batcher.submit("d")
    assert time.monotonic() - started < 0.5  # refused at once, no wait
    gate.set()
    assert [first.result(timeout=10)] + [f.result(timeout=10) for f in queued] == ["a", "b", "c"]
    batcher.close()


# --- the Shop: one decode per upload, batched encoding, busy ---

class KnownBoxes:
    """A localiser that finds exactly the products pasted into the photo, in a fixed order."""

    name = "known"

    def __init__(self, boxes):
        self.boxes = boxes

    def locate(self, image):
        return self.boxes


@pytest.fixture(scope="module")
def shelf(tmp_path_factory):
    """A Shop over the hand-made index with a localiser that knows the boxes; the shelf photo's path."""
    from handmade import MULTI, MULTI_SEED, build_index, shopper_photo

    base = tmp_path_factory.mktemp("handmade-batcher")
    image, truth = shopper_photo(MULTI, seed=MULTI_SEED)  # 640x480
    image.save(base / "shelf.jpg", quality=92)
    searcher = Searcher.open(build_index(base))
    searcher._localiser = KnownBoxes([truth["blue-box"], truth["red-bag"], truth["green-shoe"]])
    yield searcher, str(base / "shelf.jpg")
    searcher.close()


def counting_decodes(monkeypatch) -> list:
    import shoplens.web.shop as shop_module

    calls = []
    real = shop_module.load_image

    def counted(*args, **kwargs):
        calls.append(args[0] if args else kwargs.get("source"))
        return real(*args, **kwargs)

    monkeypatch.setattr(shop_module, "load_image", counted)
    return calls


def test_an_upload_is_decoded_once_for_its_search_its_products_and_its_preview(shelf, monkeypatch):
    searcher, image = shelf
    decodes = counting_decodes(monkeypatch)
    act = Handlers(Shop(searcher, thumbnails=False), [], crop="off")
    searched = act.search(image, 3, {}, [], "")
    out = act.find_items(image, 3, searched["picked"], [], "", searched["items"])
    assert len(out["items"]) == 4 and out["items_view"].changes["visible"]
    alone = act.find_items(image, 5, {}, [], "", None)  # called on its own (API): the whole photo again
    assert len(alone["items"]) == 4
    assert len(decodes) == 1  # before: 3 (search, the boxes' search, the preview), then 3 more


def test_the_whole_photo_is_encoded_once_and_the_boxes_in_one_batch(shelf):
    searcher, image = shelf
    shop = Shop(searcher, thumbnails=False)
    batches: list[int] = []
    real = shop._embed_batch
    shop.encoding.run_batch = lambda images: batches.append(len(images)) or real(images)
    shop.search_photo(image, 3, {})
    shop.search_photo(image, 7, {})  # another k: the same vector
    shop.search_boxes(image, 3, {})
    assert batches == [1, 3]


def test_batched_results_are_those_of_a_search_one_photo_at_a_time(shelf):
    searcher, image = shelf
    shop = Shop(searcher, thumbnails=False)
    decoded = shop.read_upload(image)
    alone = searcher.search_image(decoded, k=5, crop="off")  # the Searcher's own path: encode, colours, search
    batched = shop.search_photo(image, 5, {})
    assert [h.id for h in batched.hits] == [h.id for h in alone.hits]
    assert np.allclose([h.score for h in batched.hits], [h.score for h in alone.hits], atol=1e-5)
    boxes = searcher.locate(decoded)
    for box, results in zip(boxes, shop.search_boxes(image, 5, {})):
        one = searcher.search_image(decoded, k=5, crop=box)
        assert results.box == box and [h.id for h in results.hits] == [h.id for h in one.hits]


def test_a_full_house_answers_busy_in_the_page_not_an_error(shelf, monkeypatch):
    import shoplens.web.shop as shop_module

    searcher, image = shelf
    monkeypatch.setattr(shop_module, "MAX_PHOTO_SEARCHES", 2)
    shop = Shop(searcher, thumbnails=False)
    act = Handlers(shop, [], crop="off")
    for _ in range(2):  # two searches under way
        assert shop._admitted.acquire(blocking=False)
    out = act.search(image, 3, {}, [], "")
    assert out["gallery"] == [] and "Busy, try again in a moment" in out["status"]
    assert "sl-error" not in out["status"] and out["json"] == {"error": "busy, try again in a moment"}
    assert "Busy, try again" in act.find_items(image, 3, {}, [], "", None)["status"]
    shop._admitted.release()
    assert act.search(image, 3, {}, [], "")["json"]["results"]  # one slot free again: served


def test_thumbnails_are_made_ahead_off_the_request_path(tmp_path):
    from PIL import Image

    from shoplens.catalog import read_catalog
    from shoplens.encoders import create_encoder
    from shoplens.index.sync import sync_catalog
    from shoplens.store import open_store

    for n, colour in enumerate([(200, 30, 30), (30, 30, 200), (30, 180, 30)]):
        (tmp_path / "big").mkdir(exist_ok=True)
        Image.new("RGB", (900, 1200), colour).save(tmp_path / "big" / f"p{n}.jpg", quality=90)
    with open_store(tmp_path / "index") as store:
        sync_catalog(read_catalog(tmp_path / "big"), store, create_encoder("tiny"), progress=False, text=None)
    shop = Shop(Searcher.open(tmp_path / "index"))
    try:
        assert not (tmp_path / "index" / "thumbs").exists()
        shop.warm_thumbnails().join(timeout=60)
        made = sorted((tmp_path / "index" / "thumbs").rglob("*.jpg"))
        assert len(made) == 3
        stamps = [p.stat().st_mtime_ns for p in made]
        tiles = [Path(tile) for tile, _ in shop.gallery(shop.page(None, None, 0).hits)]
        assert sorted(tiles) == made  # the gallery shows them ...
        assert [p.stat().st_mtime_ns for p in made] == stamps  # ... as made ahead, not again
        with Image.open(tiles[0]) as im:
            assert im.size == (240, 320)  # 900x1200 with its longest side 320
    finally:
        shop.searcher.close()
