"""Duplicate listings: groups at indexing, one result per group in every search path, the report, a sync that
removes one listing of a group. Expected groups are written by hand from how each photo was made."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from shoplens import cli
from shoplens.catalog import read_catalog
from shoplens.encoders import create_encoder
from shoplens.index import duplicates
from shoplens.index.sync import sync_catalog
from shoplens.quality import duplicatereport
from shoplens.query.collapse import LISTINGS
from shoplens.query.search import Searcher
from shoplens.store import point_id
from stores import STORES


def product_photo(colour, pattern: int, size=(240, 300)) -> Image.Image:
    """A patterned garment on a white backdrop: `pattern` picks the print, `colour` the cloth."""
    img = Image.new("RGB", size, (255, 255, 255))
    d = ImageDraw.Draw(img)
    w, h = size
    rng = np.random.default_rng(pattern)
    d.rectangle((50, 60, w - 50, h - 30), fill=colour)  # body
    d.rectangle((20, 60, 60, 140), fill=colour)  # sleeves
    d.rectangle((w - 60, 60, w - 20, 140), fill=colour)
    dark = tuple(c // 3 for c in colour)
    for _ in range(14):  # the print
        x, y = int(rng.integers(60, w - 90)), int(rng.integers(70, h - 70))
        s = int(rng.integers(10, 40))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)((x, y, x + s, y + s), fill=dark)
    return img


def save(img: Image.Image, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG", quality=92)
    return path.name


# id -> (how the photo is made, title, colour label); ids chosen so that "9" < "10" shows numeric order.
HAND = {
    "9": ("original", "Blue striped shirt", "Blue"),
    "10": ("identical copy", "Blue striped shirt", "Blue"),
    "11": ("resized copy", "Blue striped shirt", "Blue"),
    "12": ("recoloured copy", "Blue shirt with print", "Navy"),  # same photo, another title and colour label
    "13": ("another product", "Green dotted dress", "Green"),
    "14": ("same model in red", "Red striped shirt", "Red"),
}
# Worked out by hand: the copies join the original; the other product and the red one stay alone.
EXPECTED = {"9": "9", "10": "9", "11": "9", "12": "9", "13": "13", "14": "14"}


def make_catalog(root: Path) -> Path:
    blue = product_photo((40, 70, 190), pattern=1)
    save(blue, root / "photos" / "9.jpg")
    shutil.copyfile(root / "photos" / "9.jpg", root / "photos" / "10.jpg")
    save(blue.resize((168, 210), Image.LANCZOS), root / "photos" / "11.jpg")
    recoloured = np.clip(np.asarray(blue, np.float32) * np.array([1.04, 0.97, 1.03]), 0, 255).astype(np.uint8)
    save(Image.fromarray(recoloured), root / "photos" / "12.jpg")
    save(product_photo((60, 160, 70), pattern=2), root / "photos" / "13.jpg")
    save(product_photo((200, 40, 40), pattern=1), root / "photos" / "14.jpg")
    with open(root / "products.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "path", "title", "colour", "category", "price"])
        for pid, (_how, title, colour) in HAND.items():
            writer.writerow([pid, f"photos/{pid}.jpg", title, colour, "Shirts" if "shirt" in title else "Dresses",
                             "19.99"])
    return root


def groups_of(store) -> dict[str, str]:
    return {p["product_id"]: p[duplicates.GROUP_FIELD] for p in store.states().values()}


@pytest.fixture(params=STORES)
def kind(request):
    return request.param


def test_hand_made_catalog_groups_exactly_and_a_rerun_changes_nothing(tmp_path, make_store, kind):
    catalog = read_catalog(make_catalog(tmp_path / "shop"))
    store = make_store(kind)
    sync_catalog(catalog, store, create_encoder("tiny"), progress=False)
    assert groups_of(store) == EXPECTED
    sizes = {p["product_id"]: p[duplicates.SIZE_FIELD] for p in store.states().values()}
    assert sizes == {"9": 4, "10": 4, "11": 4, "12": 4, "13": 1, "14": 1}
    leads = sorted(p["product_id"] for p in store.states().values() if p[duplicates.LEAD_FIELD] == "yes")
    assert leads == ["13", "14", "9"]
    assert duplicates.has_groups(store.read_meta())

    before = store.states()
    summary = sync_catalog(catalog, store, create_encoder("tiny"), progress=False)
    assert (summary.added, summary.updated, summary.unchanged) == (0, 0, 6)
    assert store.states() == before


def test_a_sync_that_removes_one_listing_regroups_the_rest(tmp_path, make_store, kind):
    root = make_catalog(tmp_path / "shop")
    store = make_store(kind)
    sync_catalog(read_catalog(root), store, create_encoder("tiny"), progress=False)
    # The lead listing leaves the catalog: the group keeps its other three, under the next smallest id.
    rows = list(csv.reader(open(root / "products.csv")))
    with open(root / "products.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([r for r in rows if r[0] != "9"])
    (root / "photos" / "9.jpg").unlink()
    summary = sync_catalog(read_catalog(root), store, create_encoder("tiny"), progress=False, prune=True)
    assert summary.removed == 1
    assert groups_of(store) == {"10": "10", "11": "10", "12": "10", "13": "13", "14": "14"}
    assert {p["product_id"]: p[duplicates.SIZE_FIELD] for p in store.states().values()}["11"] == 3


def test_a_changed_photo_leaves_its_group(tmp_path, make_store):
    root = make_catalog(tmp_path / "shop")
    store = make_store("edge")
    sync_catalog(read_catalog(root), store, create_encoder("tiny"), progress=False)
    save(product_photo((230, 200, 40), pattern=7), root / "photos" / "11.jpg")
    sync_catalog(read_catalog(root), store, create_encoder("tiny"), progress=False)
    assert groups_of(store) == {**EXPECTED, "11": "11"}


def test_the_verifier_tells_copies_from_another_colour_and_another_print():
    blue = product_photo((40, 70, 190), pattern=1)
    sig = lambda img, h: duplicates.Sig.parse(duplicates.signature(img, h))  # noqa: E731
    original = sig(blue, "a" * 64)
    verifier = duplicates.Verifier()
    # Same cosine for all: only the photo comparison decides.
    assert verifier.same(original, sig(blue.resize((120, 150)), "b" * 64), 0.99)
    assert verifier.same(original, sig(blue.crop((6, 8, 236, 293)), "c" * 64), 0.99)  # 2-3 % off each side
    assert not verifier.same(original, sig(product_photo((200, 40, 40), pattern=1), "d" * 64), 0.99)
    assert not verifier.same(original, sig(product_photo((40, 70, 190), pattern=5), "e" * 64), 0.99)
    assert not verifier.same(original, sig(blue, "f" * 64), 0.5)  # far apart in the image space


@pytest.fixture
def hand_index(tmp_path):
    from shoplens.index.text import TextIndexer
    from shoplens.store import open_store

    catalog = read_catalog(make_catalog(tmp_path / "shop"))
    with open_store(tmp_path / "index") as store:
        sync_catalog(catalog, store, create_encoder("tiny"), text=TextIndexer(), progress=False)
    return tmp_path / "index"


def ids(results) -> list[str]:
    return [h.product_id for h in results.hits]


def test_every_search_path_collapses_a_group_and_the_switch_shows_every_listing(hand_index):
    photo = read_catalog(hand_index.parent / "shop").products[0].path
    searcher = Searcher.open(hand_index)
    try:
        found = searcher.search_image(photo, k=6, crop="off")
        assert sorted(ids(found)) == ["13", "14", "9"]  # one result for the four listings of the blue shirt
        shown = found.hits[0]
        assert shown.product_id == "9"
        assert [m["id"] for m in shown.payload[LISTINGS]] == ["9", "10", "11", "12"]
        assert [m["title"] for m in shown.payload[LISTINGS]][3] == "Blue shirt with print"
        scores = [h.score for h in found.hits]
        assert scores == sorted(scores, reverse=True)
        assert len(searcher.search_image(photo, k=6, crop="off", all_listings=True).hits) == 6

        assert sorted(ids(searcher.search_vector(shown.vector if shown.vector is not None else
                                                 searcher.embed(photo), k=6))) == ["13", "14", "9"]
        # The best-ranked listing stands for its group; More like this leaves the product's own listings out.
        assert sorted(EXPECTED[i] for i in ids(searcher.more_like("13", k=6))) == ["14", "9"]
        assert sorted(ids(searcher.more_like("10", k=6))) == ["13", "14"]
        assert len(searcher.more_like("13", k=6, all_listings=True).hits) == 5

        words = searcher.search_text("shirt", k=6)
        assert ids(words).count("9") + ids(words).count("10") + ids(words).count("11") + ids(words).count("12") == 1
        every = searcher.search_text("shirt", k=6, all_listings=True)
        assert len(set(ids(every)) & {"9", "10", "11", "12"}) > 1
    finally:
        searcher.close()


def test_browse_shows_one_tile_a_group_and_every_listing_when_asked(hand_index):
    from shoplens.web.shop import Shop

    searcher = Searcher.open(hand_index)
    try:
        shop = Shop(searcher, page_size=24, thumbnails=False)
        page = shop.page("category", "Shirts", 0)
        assert sorted(h.product_id for h in page.hits) == ["14", "9"]
        assert [m["id"] for m in page.hits[sorted(range(2), key=lambda i: page.hits[i].product_id)[1]]
                .payload[LISTINGS]] == ["9", "10", "11", "12"]
        every = shop.page("category", "Shirts", 0, all_listings=True)
        assert sorted(h.product_id for h in every.hits) == ["10", "11", "12", "14", "9"]
    finally:
        searcher.close()


def test_cli_search_json_gives_the_group_and_all_listings_flag(hand_index, capsys):
    photo = str(read_catalog(hand_index.parent / "shop").products[0].path)
    assert cli.main(["search", photo, "--index", str(hand_index), "--crop", "off", "-k", "6", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    assert [r["id"] for r in rows][0] == "9" and len(rows) == 3
    assert rows[0]["group"] == "9" and [m["id"] for m in rows[0]["listings"]] == ["9", "10", "11", "12"]
    assert cli.main(["search", photo, "--index", str(hand_index), "--crop", "off", "-k", "6", "--json",
                     "--all-listings"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 6
    assert cli.main(["search", photo, "--index", str(hand_index), "--crop", "off", "-k", "6"]) == 0
    assert "4 listings: 9 Blue striped shirt, 10 Blue striped shirt" in capsys.readouterr().out


def test_report_lists_groups_largest_first_and_flags_disagreements(hand_index, tmp_path, capsys):
    out = tmp_path / "dups.json"
    assert cli.main(["duplicates", "--index", str(hand_index), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["groups"] == 1 and data["listings"] == 4
    group = data["duplicate_groups"][0]
    assert group["group"] == "9" and [r["id"] for r in group["listings"]] == ["9", "10", "11", "12"]
    # 12 shows the same photo under another title and colour label; the price agrees.
    assert group["disagree"] == ["title", "colour"]
    assert group["listings"][0]["image_path"] == "photos/9.jpg"

    table = tmp_path / "dups.csv"
    assert cli.main(["duplicates", "--index", str(hand_index), "--csv", str(table)]) == 0
    rows = list(csv.DictReader(open(table)))
    assert [r["id"] for r in rows] == ["9", "10", "11", "12"] and rows[0]["disagree"] == "title;colour"
    capsys.readouterr()
    assert cli.main(["duplicates", "--index", str(hand_index)]) == 0
    assert "group 9 (4 listings)  DISAGREE: title, colour" in capsys.readouterr().out


def test_disagreements_by_hand():
    same = {"title": "Red Top", "colour": "Red", "product_type": "Tops", "price": "10"}
    assert duplicatereport.disagreements([same, dict(same)]) == []
    assert duplicatereport.disagreements([same, {**same, "title": "red  top"}]) == []  # spaces and case
    assert duplicatereport.disagreements([same, {**same, "product_type": "Shirts", "price": "12"}]) == \
        ["product_type", "price"]


@pytest.mark.parametrize("bad", ["0", "1.5", "-0.2", "nan"])
def test_a_threshold_outside_0_1_is_one_error_line(hand_index, bad, capsys):
    assert cli.main(["duplicates", "--index", str(hand_index), "--threshold", bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --threshold must be in (0, 1]")


def test_an_index_built_before_groups_says_the_next_run_adds_them_and_search_works(hand_index, capsys):
    from shoplens.store import open_store

    with open_store(hand_index) as store:  # as an index written before groups existed
        meta = store.read_meta()
        meta.pop(duplicates.META_KEY)
        store.write_meta(meta)
        for name in duplicates.FIELDS:
            store.set_field(list(store.states()), name, None)
    assert cli.main(["duplicates", "--index", str(hand_index)]) == 2
    assert "the next indexer run adds them" in capsys.readouterr().err
    photo = str(read_catalog(hand_index.parent / "shop").products[0].path)
    assert cli.main(["search", photo, "--index", str(hand_index), "--crop", "off", "-k", "6", "--json"]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)["results"]) == 6
    assert "the next indexer run adds them" in captured.err


def test_the_app_labels_a_group_lists_its_listings_and_pages_through_the_groups(hand_index):
    from shoplens.web.handlers import OUTPUTS, Handlers
    from shoplens.web.shop import Shop

    photo = str(read_catalog(hand_index.parent / "shop").products[0].path)
    searcher = Searcher.open(hand_index)
    try:
        act = Handlers(Shop(searcher, thumbnails=False), ["category"], crop="off")
        out = act.search(photo, 6, None, [[]], None)
        assert set(out) <= set(OUTPUTS) | {"items"}
        rows = out["json"]["results"]
        assert len(rows) == 3 and rows[0]["group"] == "9"
        assert [m["id"] for m in rows[0]["listings"]] == ["9", "10", "11", "12"]
        assert out["gallery"][0][1].endswith("4 listings")  # the tile's caption
        assert "dup_sig" not in rows[0]["metadata"]
        assert len(act.search(photo, 6, None, [[]], None, True)["json"]["results"]) == 6  # the switch

        details = act.select_result(out["hits"], 0)["detail_info"]
        assert "4 listings" in details and "12: Blue shirt with print" in details

        page = act.duplicates_page(0)
        assert "**4 listings** of the same photo" in page["dup_page"]
        assert "disagree on title, colour" in page["dup_page"]
        assert len(page["dup_gallery"]) == 4
        assert "Blue shirt with print" in page["dup_info"]
        assert act.next_group(0)["dup_state"] == 0  # one group: paging stays on it

        browse = act.browse("category", "Shirts", False)
        assert sorted(browse["page_ids"]) == ["14", "9"]
        assert "(2 products + 3 more listings of the same photos)" in browse["page"]
        assert sorted(act.browse("category", "Shirts", False, True)["page_ids"]) == ["10", "11", "12", "14", "9"]
    finally:
        searcher.close()
