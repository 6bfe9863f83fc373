"""The page's actions (shoplens.web.handlers) on small tiny-encoder indexes, with no Gradio and no server.

The shop catalog (conftest.make_shop_catalog) has 24 products, ids <category><colour><gender> such as "trm"
(Tops, Red, Men), titles such as "Red top for men": 8 per category, 6 per colour, 12 per gender.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO
from shoplens.localise import Box
from shoplens.query.search import Searcher
from shoplens.store import StoreError
from shoplens.web.handlers import HIDDEN, OUTPUTS, Handlers, Update
from shoplens.web.shop import Refused, Shop

FIELDS = ["category", "colour", "gender"]  # the shop catalog's filter fields, in the page's order
SHOES = {"srm", "srw", "sbm", "sbw", "sgm", "sgw", "sym", "syw"}
REDS = {"trm", "trw", "srm", "srw", "brm", "brw"}
ALL = {f"{c}{k}{g}" for c in "tsb" for k in "rbgy" for g in "mw"}


def names_ok(out: dict) -> dict:
    """Every output a handler names is one the page shows."""
    unknown = {n for n in out if n not in OUTPUTS and not (n.startswith("filter_") and n[7:] in FIELDS)}
    assert not unknown, unknown
    return out


def ids(out: dict) -> list[str]:
    return [row["id"] for row in out["json"]["results"]]


@pytest.fixture(scope="module")
def searcher(shop_index):
    opened = Searcher.open(shop_index)
    yield opened
    opened.close()


@pytest.fixture
def act(searcher) -> Handlers:
    """Handlers over the shop index with pages of 5, crop off, and shuffles seeded with 7."""
    return Handlers(Shop(searcher, page_size=5, thumbnails=False), FIELDS, crop="off", seeds=lambda: 7)


def photo(searcher, pid: str) -> str:
    return os.path.realpath(searcher.catalog_root / searcher.product(pid).payload["image_path"])


def test_handlers_import_no_gradio():
    code = "import sys, shoplens.web.handlers; print(sorted(m for m in sys.modules if m.split('.')[0] == 'gradio'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_filter_values_become_store_filters(act):
    # One value as a plain string (an API caller), none for colour, two genders.
    assert act.filters_of(["Tops", [], ("Men", "Women")]) == {"category": ["Tops"], "gender": ["Men", "Women"]}
    assert act.filters_of([None, None, None]) == {}


def test_search_by_photo_shows_the_product_first(act, searcher):
    image = photo(searcher, "trm")
    out = names_ok(act.search(image, 4, {}, [None, None, None], ""))
    assert ids(out)[0] == "trm" and len(out["gallery"]) == 4 and [h[0] for h in out["hits"]] == ids(out)
    assert out["gallery"][0][1].startswith("Red top for men\nTops · score ")
    assert out["status"].endswith(" · similar to your photo") and out["details"] == HIDDEN
    assert out["picked"] == {"photo": image, "item": 0} and len(out["items"]) == 1
    assert out["json"]["searched"] == "Whole photo" and [i["name"] for i in out["json"]["items"]] == ["Whole photo"]


def test_search_by_photo_with_filters(act, searcher):
    out = act.search(photo(searcher, "trm"), 48, {}, [[], ["Blue"], "Women"], "")
    assert set(ids(out)) == {"tbw", "sbw", "bbw"}  # the only blue products for women, one per category


def test_search_with_nothing_asks_for_a_photo(act):
    out = names_ok(act.search(None, 12, {}, [None, None, None], "   "))
    assert out == {"gallery": [], "hits": [], "json": {"results": []}, "items": [],
                   "status": "Upload, paste or take a photo of a product, or type a few words "
                             "(e.g. “red running shoes”).", "details": HIDDEN}


def test_a_bad_upload_gets_a_friendly_escaped_message(act):
    out = names_ok(act.search(b"just some text, not a photo", 12, {}, [None, None, None], ""))
    message = ("That photo can't be used: the uploaded file: not an image file (unknown format). "
               "Try a JPEG, PNG or WebP photo of a product.")
    assert out["json"] == {"error": message}
    assert out["status"] == ("<p class='sl-error'>⚠️ That photo can't be used\\: the uploaded file\\: not an image "
                             "file \\(unknown format\\)\\. Try a JPEG, PNG or WebP photo of a product\\.</p>")
    assert out["gallery"] == [] and out["hits"] == [] and out["items"] == [] and out["details"] == HIDDEN


def test_an_upload_refused_at_the_door_says_its_size(act):
    out = act.search(Refused("the file is 12.0 MB; the limit is 10 MB"), 12, {}, [None, None, None], "")
    assert out["json"]["error"] == ("That photo can't be used: the file is 12.0 MB; the limit is 10 MB. "
                                    "Try a JPEG, PNG or WebP photo of a product.")


def test_search_by_words(act):
    out = names_ok(act.search(None, 4, {}, [None, None, None], "  yellow   bag "))
    assert set(ids(out)[:2]) == {"bym", "byw"}  # "Yellow bag for men", "Yellow bag for women"
    assert out["status"].endswith(" · matching “yellow bag”") and out["items"] == [] and out["picked"] == {}
    women = act.submit_words("yellow bag", None, 4, {}, [None, None, ["Women"]])
    assert ids(women)[0] == "byw"


def test_words_are_escaped_in_the_status(act):
    out = act.search_words("**yellow** bag", 4, [None, None, None])
    assert out["status"].endswith(" · matching “\\*\\*yellow\\*\\* bag”")
    assert act.search_words(" ", 4, [None, None, None])["json"] == {"results": []}


def test_photo_refined_by_words(act, searcher):
    out = act.search(photo(searcher, "trm"), 2, {}, [None, None, None], "blue top")
    assert set(ids(out)) == {"tbm", "tbw"}  # the blue tops: the colour word filters, "top" re-ranks
    assert out["status"].endswith(" · similar to your photo, refined by “blue top”")


def test_details_of_a_clicked_result(act, searcher):
    hits = [["trm", 0.91, 0.88], ["tgm", 0.5, None]]
    out = names_ok(act.select_result(hits, 0))
    assert out["selected"] == "trm" and out["details"] == Update(visible=True)
    assert "<h3>Red top for men</h3>" in out["detail_info"] and "score 0.910 · image 88% similar" in out["detail_info"]
    assert os.path.realpath(out["detail_photo"]) == photo(searcher, "trm")
    assert act.select_result(hits, 2) == {"details": HIDDEN, "selected": ""}  # past the end of the list
    assert act.select_result(hits, None) == {"details": HIDDEN, "selected": ""}


def test_more_like_this(act):
    out = names_ok(act.more_like("trm", 5, [None, None, None]))
    assert len(ids(out)) == 5 and "trm" not in ids(out)
    assert out["status"].endswith(" · more like “Red top for men”")
    bags = act.more_like("trm", 48, [["Bags"], None, None])
    assert set(ids(bags)) == {f"b{k}{g}" for k in "rbgy" for g in "mw"}  # every bag, and only bags


def test_more_like_an_unknown_product_says_so(act):
    out = act.more_like("no-such-product", 5, [None, None, None])
    assert out == {"status": "<p class='sl-error'>⚠️ The product index can't be used right now\\: product "
                             "'no\\-such\\-product' is not in the index</p>"}  # Markdown's - escaped


def test_browse_a_category_in_pages(act):
    first = names_ok(act.browse("category", "Shoes", False))
    assert first["page"] == "**Shoes**: page **1** of **2** (8 products)" and len(first["page_ids"]) == 5
    assert first["browse_state"] == {"field": "category", "value": "Shoes", "page": 0, "seed": None}
    assert first["browse_box"] == HIDDEN and first["similar_gallery"] == Update(value=[], visible=False)
    assert all("score" not in caption for _, caption in first["browse_gallery"])  # browsing has no scores
    second = act.next_page(first["browse_state"])
    assert second["page"] == "**Shoes**: page **2** of **2** (8 products)" and len(second["page_ids"]) == 3
    assert set(first["page_ids"]) | set(second["page_ids"]) == SHOES
    past = act.next_page(second["browse_state"])  # past the end stays on the last page
    assert past["page"].startswith("**Shoes**: page **2** of **2**") and past["page_ids"] == second["page_ids"]
    back = act.previous_page(past["browse_state"])
    assert back["page_ids"] == first["page_ids"] and back["browse_state"]["page"] == 0


def test_browse_every_product(act):
    out = act.browse(None, None, False)  # no field: all 24 products, in pages of 5 (4 on the last)
    assert out["page"] == "**All products**: page **1** of **5** (24 products)"
    last = act.turn(out["browse_state"], 4)
    assert last["browse_state"]["page"] == 4 and len(last["page_ids"]) == 4


def test_browse_shuffled_covers_the_category(act):
    first = act.browse("colour", "Red", True)
    assert first["browse_state"]["seed"] == 7 and first["page"] == "**Red**: page **1** of **2** (6 products, shuffled)"
    second = act.next_page(first["browse_state"])
    assert len(first["page_ids"]) == 5 and len(second["page_ids"]) == 1
    assert set(first["page_ids"]) | set(second["page_ids"]) == REDS


def test_browse_refusals(act):
    assert act.browse("category", None, False) == {"page": "Pick a category to see its products.",
                                                   "browse_gallery": [], "page_ids": [], "browse_state": {}}
    assert act.browse("price", "9", False) == {"page": "Pick one of the fields offered under “Browse by”."}
    assert act.browse("category", "<img src=x>", False)["page"] == \
        "No products in “&lt;img src=x&gt;”: pick a category from the list."
    assert act.next_page({}) == {"page": "Pick a category first."}
    assert act.previous_page(None) == {"page": "Pick a category first."}


def test_browse_values(act):
    assert act.browse_values("gender") == {"browse_value": Update(
        choices=[("Men (12)", "Men"), ("Women (12)", "Women")], value=None, label="Gender")}
    assert act.browse_values(None) == {"browse_value": Update(choices=[], value=None, label="Category")}


def test_select_product_then_find_similar(act, searcher):
    out = names_ok(act.select_product(["sbm", "sbw"], 1))
    assert out["browse_selected"] == "sbw" and os.path.realpath(out["browse_photo"]) == photo(searcher, "sbw")
    assert "<h3>Blue shoe for women</h3>" in out["browse_info"] and "score" not in out["browse_info"]
    assert act.select_product(["sbm"], 3) == {"browse_box": HIDDEN, "browse_selected": ""}
    similar = names_ok(act.find_similar("sbw"))
    tiles = similar["similar_gallery"].changes
    assert len(tiles["value"]) == 12 and tiles["visible"] is True
    assert not any(caption.startswith("Blue shoe for women") for _, caption in tiles["value"])
    assert similar["similar_status"].startswith("**12** look-alikes in ")
    assert act.find_similar("") == {
        "similar_status": "<p class='sl-error'>⚠️ The product index can't be used right now\\: pick a product first</p>",
        "similar_gallery": HIDDEN}


def test_product_details(act):
    details = act.product_details("bgw")
    assert (details["product_id"], details["category"], details["colour"], details["gender"]) == \
        ("bgw", "Bags", "Green", "Women")
    assert "content_hash" not in details
    assert act.product_details("nope") == {"error": "no product 'nope'"}


def test_refreshed_page(act):
    out = names_ok(act.refreshed())
    assert out["header"] == "# shoplens\nFind products by photo or by words in a catalog of **24** products."
    assert out["filter_gender"] == Update(choices=[("Men (12)", "Men"), ("Women (12)", "Women")])
    assert sorted(out["filter_category"].changes["choices"]) == [("Bags (8)", "Bags"), ("Shoes (8)", "Shoes"),
                                                                 ("Tops (8)", "Tops")]


class BrokenShop:
    """A shop whose index fails: every look-up raises `exc`."""

    has_text = True

    def __init__(self, exc: Exception):
        self.exc = exc

    def fail(self, *args, **kwargs):
        raise self.exc

    product = more_like = search_photo = search_text = page = fail


def test_failures_become_messages(caplog):
    gone = Handlers(BrokenShop(StoreError("cannot open /srv/shop/index/points.db")), FIELDS)
    assert gone.select_result([["trm", 0.9, 0.9]], 0) == {
        "detail_info": "<p class='sl-error'>⚠️ The product index can't be used right now\\: cannot open "
                       "…/points\\.db</p>",  # the server path cut to its last part
        "details": Update(visible=True)}
    bug = Handlers(BrokenShop(RuntimeError("boom")), FIELDS)
    out = bug.search("shop.jpg", 12, {}, [None, None, None], "")
    assert out["json"] == {"error": "Something went wrong on our side; the details are in the server log. "
                                    "Please try again."}
    assert "boom" in caplog.text  # the traceback went to the log, not to the page
    assert bug.turn({"field": "category", "value": "Tops", "page": 0}, 1)["page"].startswith("<p class='sl-error'>")
    assert bug.product_details("trm") == {"error": "Something went wrong on our side; the details are in the "
                                                   "server log. Please try again."}


# --- products found in a shopper's photo: a localiser that returns the true boxes ---

class KnownBoxes:
    """A localiser that finds exactly the products pasted into the photo, in a fixed order."""

    name = "known"

    def __init__(self, boxes: list[Box]):
        self.boxes = boxes

    def locate(self, image):
        return self.boxes


@pytest.fixture(scope="module")
def shelf(tmp_path_factory):
    """Handlers over the hand-made index with a localiser that knows the boxes; the shelf photo's path."""
    from handmade import MULTI, MULTI_SEED, build_index, shopper_photo

    base = tmp_path_factory.mktemp("handmade-handlers")
    image, truth = shopper_photo(MULTI, seed=MULTI_SEED)  # 640x480
    image.save(base / "shelf.jpg", quality=92)
    searcher = Searcher.open(build_index(base))
    searcher._localiser = KnownBoxes([truth["blue-box"], truth["red-bag"], truth["green-shoe"]])
    yield Shop(searcher, thumbnails=False), str(base / "shelf.jpg")
    searcher.close()


def best(results) -> str:
    return results.hits[0].product_id.split("/")[-1]


def test_items_follow_the_whole_photo(shelf):
    shop, image = shelf
    act = Handlers(shop, [], crop="off")
    searched = act.search(image, 3, {}, [], "")
    assert [i["name"] for i in searched["json"]["items"]] == ["Whole photo"]
    out = names_ok(act.find_items(image, 3, searched["picked"], [], "", searched["items"]))
    items = out["items"]
    assert [best(r) for r in items[1:]] == ["blue-box", "red-bag", "green-shoe"]
    assert out["items"][0] is searched["items"][0]  # the whole photo's search is not run again
    assert "gallery" not in out  # the whole photo's results are shown already
    assert out["picked"] == {"photo": image, "item": 0} and out["json"]["searched"] == "Whole photo"
    # Each true box grown by a tenth of its size on every side (the search's margin); the photo is 640 px
    # wide already, so the preview keeps its scale. blue-box (250, 280)+(150, 150), red-bag (40, 60)+(150, 170),
    # green-shoe (420, 80)+(190, 110).
    preview, boxes = out["items_view"].changes["value"]
    assert preview.size == (640, 480) and out["items_view"].changes["visible"] is True
    assert boxes == [((235, 265, 415, 445), "Item 1"), ((25, 43, 205, 247), "Item 2"),
                     ((401, 69, 629, 201), "Item 3")]
    assert out["item_pick"] == Update(choices=[("Item 1", 1), ("Item 2", 2), ("Item 3", 3), ("Whole photo", 0)],
                                      value=0, visible=True)

    picked = names_ok(act.pick_item(2, items, image))
    assert picked["status"].endswith(" · similar to item 2") and picked["picked"] == {"photo": image, "item": 2}
    assert picked["json"]["searched"] == "Item 2" and picked["json"]["results"][0]["id"].endswith("red-bag")
    clicked = act.select_item(items, image, 2)  # the third box: Item 3
    assert clicked["item_pick"] == 3 and clicked["hits"][0][0].endswith("green-shoe")
    # The same photo searched again with crop off (a new k, say): the whole photo answers first, and the step
    # that finds the boxes then shows the item the shopper had picked, not the whole photo.
    again = act.search(image, 2, picked["picked"], [], "")
    assert again["json"]["searched"] == "Whole photo" and again["picked"] == {"photo": image, "item": 2}
    follow = names_ok(act.find_items(image, 2, again["picked"], [], "", again["items"]))
    assert follow["json"]["searched"] == "Item 2" and follow["item_pick"].changes["value"] == 2
    assert [h[0].split("/")[-1] for h in follow["hits"]][:1] == ["red-bag"] and len(follow["gallery"]) == 2
    assert act.pick_item(9, items, image) == {"status": "Search with a photo first, then pick a product in it."}
    assert act.select_item([], image, 0) == {"status": "Search with a photo first, then pick a product in it.",
                                             "item_pick": None}


def test_items_on_their_own_and_with_crop_auto(shelf):
    shop, image = shelf
    alone = Handlers(shop, [], crop="off").find_items(image, 3, {}, [], "", [])  # the API's /show_items
    assert len(alone["items"]) == 4 and alone["status"].endswith(" · similar to your photo")
    assert Handlers(shop, []).find_items(None, 3, {}, [], "", []) == {
        "items_view": Update(value=None, visible=False), "item_pick": HIDDEN}
    act = Handlers(shop, [], crop="auto")
    auto = act.search(image, 3, {}, [], "")  # the best product's results first
    assert len(auto["items"]) == 4 and auto["json"]["searched"] == "Item 1"
    assert auto["json"]["results"][0]["id"].endswith("blue-box")
    # The same photo searched again (a new k, say) keeps the shopper's pick, and so does the step after.
    again = act.search(image, 2, {"photo": image, "item": 2}, [], "")
    assert again["json"]["searched"] == "Item 2" and len(again["gallery"]) == 2
    follow = act.find_items(image, 2, again["picked"], [], "", again["items"])
    assert follow["json"]["searched"] == "Item 2" and follow["item_pick"].changes["value"] == 2
    assert follow["items"] is again["items"]  # nothing searched twice
    other = act.search(image, 2, {"photo": "another.jpg", "item": 2}, [], "")  # a pick for another photo
    assert other["json"]["searched"] == "Item 1"
