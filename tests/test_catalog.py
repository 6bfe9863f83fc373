"""Catalog readers: every layout, on made-up folders and on the shared datasets."""

from __future__ import annotations

import pytest

from conftest import PALETTE, make_photo
from shoplens.catalog import CatalogError, clean_row, detect_layout, read_catalog, snake


def test_snake_case_and_canonical_names():
    assert snake("ProductTitle") == "product_title"
    assert snake("baseColour") == "base_colour"
    assert snake("Sub Category") == "sub_category"
    assert clean_row({"ProductTitle": " Red Shoe ", "baseColour": "Red", "masterCategory": "Footwear", "": "x"}) == {
        "title": "Red Shoe", "colour": "Red", "category": "Footwear"}


def test_folder_per_category(folder_catalog):
    cat = read_catalog(folder_catalog)
    assert cat.layout == "folders"
    assert len(cat) == 8
    by_id = {p.id: p for p in cat.products}
    # The id is the file name without suffix: it does not change when the photo moves to another folder.
    assert sorted(by_id) == ["blue", "dark-green", "dark-red", "green", "navy", "red", "white", "yellow"]
    assert by_id["red"].category == "reds"
    assert by_id["red"].rel_path == "reds/red.jpg"
    assert by_id["red"].title == "red"
    assert cat.notes == []


def test_folder_ids_that_share_a_file_name_fall_back_to_paths(folder_catalog):
    # Another "red" (in sale/) and a second suffix of "navy" beside it: those four photos cannot be "red" and
    # "navy", so each is its path with suffix; every other product keeps its file name.
    make_photo(folder_catalog / "sale" / "red.jpg", PALETTE["red"])
    make_photo(folder_catalog / "blues" / "navy.png", PALETTE["navy"])
    cat = read_catalog(folder_catalog)
    ids = sorted(p.id for p in cat.products)
    assert ids == ["blue", "blues/navy.jpg", "blues/navy.png", "dark-green", "dark-red", "green", "reds/red.jpg",
                   "sale/red.jpg", "white", "yellow"]
    assert len(cat.notes) == 1 and "4 photos share a file name" in cat.notes[0] and "navy, red" in cat.notes[0]


def test_csv_manifest_relative_and_absolute_paths(tmp_path):
    make_photo(tmp_path / "shop" / "img" / "a.jpg", PALETTE["red"])
    outside = make_photo(tmp_path / "elsewhere" / "b.jpg", PALETTE["blue"])
    manifest = tmp_path / "shop" / "products.csv"
    manifest.write_text(f"path,SKU,Title,Colour\nimg/a.jpg,A1,Red thing,Red\n{outside},B2,Blue thing,Blue\n"
                        "img/missing.jpg,C3,Ghost,Grey\n")
    for source in (manifest, manifest.parent):
        cat = read_catalog(source)
        assert cat.layout == "csv"
        assert [p.id for p in cat.products] == ["A1", "B2"]
        assert cat.products[0].metadata == {"sku": "A1", "title": "Red thing", "colour": "Red"}
        assert cat.products[0].rel_path == "img/a.jpg"
        assert len(cat.missing) == 1 and "missing.jpg" in cat.missing[0]


def test_manifest_without_path_column_is_a_clear_error(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_text("file,title\na.jpg,x\n")
    with pytest.raises(CatalogError, match="'path' column"):
        read_catalog(bad, layout="csv")


def test_wrong_path_and_unknown_layout(tmp_path):
    with pytest.raises(CatalogError, match="no such catalog"):
        read_catalog(tmp_path / "nowhere")
    with pytest.raises(CatalogError, match="unknown layout"):
        read_catalog(tmp_path, layout="magic")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CatalogError, match="no product photos"):
        read_catalog(tmp_path / "empty")


def test_fashion_images_layout_made_up(tmp_path):
    data = tmp_path / "fashion-images" / "data"
    make_photo(data / "Footwear_Men" / "Images" / "images_with_product_ids" / "7.jpg", PALETTE["navy"])
    (data / "fashion.csv").write_text(
        "ProductId,Gender,Category,SubCategory,ProductType,Colour,Usage,ProductTitle,Image,ImageURL\n"
        "7,Men,Footwear,Shoes,Casual Shoes,Navy Blue,Casual,Navy shoe,7.jpg,http://x/7.jpg\n"
        "8,Men,Footwear,Shoes,Casual Shoes,Black,Casual,Lost shoe,8.jpg,http://x/8.jpg\n")
    cat = read_catalog(tmp_path / "fashion-images")
    assert cat.layout == "fashion-images"
    [p] = cat.products
    assert p.id == "7" and p.rel_path == "data/Footwear_Men/Images/images_with_product_ids/7.jpg"
    assert p.metadata["product_type"] == "Casual Shoes" and p.metadata["sub_category"] == "Shoes"
    assert p.metadata["title"] == "Navy shoe" and p.metadata["gender"] == "Men"
    assert cat.missing == ["product 8: no image under " + str(data)]


def test_shared_fashion_images(datasets_dir):
    cat = read_catalog(datasets_dir / "fashion-images")
    assert cat.layout == "fashion-images"
    assert len(cat) == 2906 and not cat.missing
    assert {p.metadata["gender"] for p in cat.products} == {"Boys", "Girls", "Men", "Women"}
    assert len({p.metadata["product_type"] for p in cat.products}) == 31
    assert len({p.id for p in cat.products}) == 2906
    assert all(p.path.is_file() for p in cat.products[:50])


def test_shared_fashion_product_images(datasets_dir):
    root = datasets_dir / "fashion-product-images-small"
    assert detect_layout(root) == "fashion-product-images"
    cat = read_catalog(root)
    assert len(cat) == 9583 and not cat.missing
    first = cat.products[0]
    assert first.rel_path == f"images/{first.id}.jpg"
    assert {"title", "article_type", "colour", "category", "gender"} <= set(first.metadata)


def test_shared_grocery_as_folders(datasets_dir):
    cat = read_catalog(datasets_dir / "grocery-store" / "val", layout="folders")
    assert len(cat) == 296
    assert {p.category for p in cat.products} == {"Fruit", "Packages", "Vegetables"}


# --- bad input that used to abort a run or lose data silently (issue 14) ---


def test_a_file_name_that_is_not_utf8_is_skipped_and_named_the_rest_indexed(folder_catalog, tmp_path):
    import os

    from shoplens.encoders import create_encoder
    from shoplens.index.sync import sync_catalog
    from shoplens.store.edge import EdgeStore

    bad = os.path.join(os.fsencode(folder_catalog / "reds"), b"caf\xe9.jpg")
    with open(bad, "wb") as fh:
        fh.write((folder_catalog / "reds" / "red.jpg").read_bytes())
    cat = read_catalog(folder_catalog)
    assert len(cat) == 8  # the 8 good photos; the odd one is listed, not indexed
    assert cat.missing == ["reds/caf\\xe9.jpg: file name is not valid UTF-8; rename it to index it"]
    with EdgeStore(tmp_path / "index") as store:
        summary = sync_catalog(cat, store, create_encoder("tiny"), progress=False)
        assert summary.added == 8 and store.count() == 8
    assert summary.failed == [("reds/caf\\xe9.jpg", "file name is not valid UTF-8; rename it to index it")]


def test_manifest_columns_meaning_the_same_field_keep_the_first_and_say_so(tmp_path):
    make_photo(tmp_path / "a.jpg", PALETTE["red"])
    (tmp_path / "m.csv").write_text("path,name,title,Color,colour\na.jpg,The name,The title,Red,Blue\n")
    cat = read_catalog(tmp_path / "m.csv")
    assert cat.products[0].metadata == {"title": "The name", "colour": "Red"}
    assert cat.notes == ["m.csv: columns 'name', 'title' all mean 'title'; 'name' is used, the others are ignored",
                         "m.csv: columns 'Color', 'colour' all mean 'colour'; 'Color' is used, the others are "
                         "ignored"]


def test_utf16_manifest_is_read_and_utf16_without_bom_refused(tmp_path):
    make_photo(tmp_path / "a.jpg", PALETTE["red"])
    text = "path,title,colour\na.jpg,Grüne Jacke,Grün\n"
    (tmp_path / "m.csv").write_bytes(text.encode("utf-16"))  # Python writes a BOM first
    cat = read_catalog(tmp_path / "m.csv")
    assert cat.products[0].metadata == {"title": "Grüne Jacke", "colour": "Grün"}
    (tmp_path / "m.csv").write_bytes(text.encode("utf-16-le"))  # no BOM
    with pytest.raises(CatalogError, match="UTF-16 without a byte-order mark; save it as UTF-8"):
        read_catalog(tmp_path / "m.csv")


# --- encodings and delimiters (issue 19) ---


def test_cp1252_manifest_is_read_in_its_encoding_and_the_run_says_so(tmp_path):
    # Excel on Windows saves "Crème Brûlée" as cp1252 bytes (0xE8, 0xFB, 0xE9): the titles must come out as
    # written, not as U+FFFD replacement characters, and the notes name the encoding that was detected.
    make_photo(tmp_path / "a.jpg", PALETTE["red"])
    make_photo(tmp_path / "b.jpg", PALETTE["blue"])
    raw = "path,title,colour\na.jpg,Crème Brûlée,Crème\nb.jpg,Café au lait,Brun\n".encode("cp1252")
    assert raw.count(b"\xe8") == 2 and b"\xc3" not in raw  # really cp1252, not UTF-8
    (tmp_path / "m.csv").write_bytes(raw)
    for source in (tmp_path / "m.csv", tmp_path):
        cat = read_catalog(source)
        assert cat.layout == "csv"
        assert [p.title for p in cat.products] == ["Crème Brûlée", "Café au lait"]
        assert cat.products[0].metadata["colour"] == "Crème"
        assert cat.notes == ["m.csv: not UTF-8; read as cp1252 (detected). Save it as UTF-8 to be sure of accented "
                             "titles"]


def test_other_legacy_encodings_are_detected(tmp_path):
    make_photo(tmp_path / "a.jpg", PALETTE["red"])
    make_photo(tmp_path / "b.jpg", PALETTE["blue"])
    text = "path,title\na.jpg,Свитер красный шерстяной\nb.jpg,Платье синее летнее\n"
    (tmp_path / "m.csv").write_bytes(text.encode("cp1251"))
    cat = read_catalog(tmp_path / "m.csv")
    assert [p.title for p in cat.products] == ["Свитер красный шерстяной", "Платье синее летнее"]
    assert "read as cp1251" in cat.notes[0]


def test_a_manifest_whose_encoding_cannot_be_told_is_refused_in_one_line(tmp_path):
    make_photo(tmp_path / "a.jpg", PALETTE["red"])
    (tmp_path / "m.csv").write_bytes(b"path,title\na.jpg," + bytes(range(128, 256)) + b"\x00\x01\x02\n")
    with pytest.raises(CatalogError) as info:
        read_catalog(tmp_path)  # recognised as the folder's manifest all the same, then refused
    assert "m.csv: not UTF-8" in str(info.value) and "save it as UTF-8" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_manifest_with_another_delimiter_in_a_folder_is_recognised(tmp_path, delimiter):
    make_photo(tmp_path / "img" / "a.jpg", PALETTE["red"])
    make_photo(tmp_path / "img" / "b.jpg", PALETTE["blue"])
    d = delimiter
    # The first title holds a comma and the second a semicolon (quoted): the sniffer must not take them for
    # delimiters.
    (tmp_path / "products.csv").write_text(f'path{d}sku{d}title{d}price\nimg/a.jpg{d}A1{d}"Red, bright"{d}12,50\n'
                                           f'img/b.jpg{d}B2{d}"Blue; dark"{d}9,99\n')
    assert detect_layout(tmp_path) == "csv"  # not "folders" (ids from file names)
    cat = read_catalog(tmp_path)
    assert [(p.id, p.title, p.metadata["price"], p.rel_path) for p in cat.products] == [
        ("A1", "Red, bright", "12,50", "img/a.jpg"), ("B2", "Blue; dark", "9,99", "img/b.jpg")]


def test_comma_manifest_with_semicolons_in_its_values_stays_comma_separated(tmp_path):
    make_photo(tmp_path / "a.jpg", PALETTE["red"])
    make_photo(tmp_path / "b.jpg", PALETTE["blue"])
    (tmp_path / "m.csv").write_text("path,title,tags\na.jpg,Red;shirt,a;b;c\nb.jpg,Blue;shirt,d;e;f\n")
    cat = read_catalog(tmp_path)
    assert [(p.id, p.title, p.metadata["tags"]) for p in cat.products] == [("a", "Red;shirt", "a;b;c"),
                                                                         ("b", "Blue;shirt", "d;e;f")]
