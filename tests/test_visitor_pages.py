"""The pages an app shows instead of search (damaged, tuning, empty, busy index) never show the server's folders,
catalog path or store address: visitors get the commands with placeholders, the server's log the full ones
(issue 19)."""

from __future__ import annotations

import json

from shoplens.web.serve import create
from conftest import make_shop_catalog


def _tiny_index(catalog, index):
    from shoplens.catalog import read_catalog
    from shoplens.encoders import create_encoder
    from shoplens.index.sync import ensure_index, sync_catalog
    from shoplens.store import open_store

    with open_store(index) as store:
        if catalog is None:
            ensure_index(store, create_encoder("tiny"))
        else:
            sync_catalog(read_catalog(catalog), store, create_encoder("tiny"), progress=False)
    return index


def _page(app) -> str:
    try:
        assert app.searcher is None
        return json.dumps(app.demo.config)
    finally:
        app.demo.close()


def test_a_tuning_page_names_no_server_folder(tmp_path, caplog):
    catalog = make_shop_catalog(tmp_path / "srv-shop" / "catalog")
    index = _tiny_index(catalog / "products.csv", tmp_path / "srv-shop" / "index")
    from shoplens.store import open_store

    with open_store(index) as store:  # an index that records a tuning whose file is gone
        meta = store.read_meta()
        meta["tuning"] = {"kind": "lda", "label": ["category"], "hash": "ab" * 16, "file": "tuning-gone.npz"}
        store.write_meta(meta)
    with caplog.at_level("WARNING", logger="shoplens.web"):
        page = _page(create(index))
    assert "tuning" in page and "INDEX_DIR" in page
    assert str(tmp_path) not in page and "srv-shop" not in page
    assert str(index) in caplog.text  # the full command, for whoever runs the server


def test_an_empty_index_page_names_no_server_folder(tmp_path, caplog):
    index = _tiny_index(None, tmp_path / "private-folder" / "index")
    with caplog.at_level("WARNING", logger="shoplens.web"):
        page = _page(create(index))
    assert "is empty" in page and "python indexer.py CATALOG_DIR --index INDEX_DIR" in page
    assert str(tmp_path) not in page and "private-folder" not in page
    assert f"--index {index}" in caplog.text


def test_a_missing_index_and_a_server_address_are_not_shown(tmp_path):
    page = _page(create(tmp_path / "private-folder" / "nothing-here"))
    assert "No products to search yet" in page and "private-folder" not in page and str(tmp_path) not in page
    page = _page(create(qdrant_url="http://10.1.2.3:1/"))
    assert "10.1.2.3" not in page and "--qdrant-url SERVER_URL" in page
