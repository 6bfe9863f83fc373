"""`check` and `app.py --watch` on a server store (issue 19), against the real Milvus engines of tests/stores.py:
Milvus Lite (a .db file) and the session's Milvus standalone server."""

from __future__ import annotations

import uuid

import pytest

from conftest import make_folder_catalog, make_photo
from shoplens.catalog import read_catalog
from shoplens.cli import main as cli_main
from shoplens.encoders import create_encoder
from shoplens.index.sync import sync_catalog

MILVUS = ["milvus-lite", "milvus-server"]


def _uri(kind: str, tmp_path, request) -> str:
    return str(tmp_path / "milvus.db") if kind == "milvus-lite" else request.getfixturevalue("milvus_server")


def _drop(uri: str, collection: str) -> None:
    from stores import close_store

    from shoplens.store.milvus import MilvusStore

    close_store(MilvusStore(uri, collection))  # drops a server's collections; a Lite file goes with tmp_path


@pytest.mark.parametrize("kind", MILVUS)
def test_check_milvus_uri_checks_the_collection_not_data_index(kind, tmp_path, request, monkeypatch, capsys):
    from shoplens.store.milvus import MilvusStore

    monkeypatch.chdir(tmp_path)  # a data/index here would be what the check read before the fix: there is none
    uri, collection = _uri(kind, tmp_path, request), f"check_{uuid.uuid4().hex[:8]}"
    catalog = make_folder_catalog(tmp_path / "catalog")
    store = MilvusStore(uri, collection)
    try:
        sync_catalog(read_catalog(catalog), store, create_encoder("tiny"), progress=False)
        store.close()
        assert cli_main(["check", "--milvus-uri", uri, "--collection", collection]) == 0
        out = capsys.readouterr().out
        assert out.strip() == f"ok: the index at {uri} (collection {collection}) is whole (8 products)"

        store = MilvusStore(uri, collection)
        from shoplens.store import point_id

        store.delete([point_id("red")])  # a product lost behind the indexer's back
        store.close()
        assert cli_main(["check", "--milvus-uri", uri, "--collection", collection]) == 1
        out = capsys.readouterr().out
        assert "1 of the 8 products indexed by the last run are missing (the store holds 7)" in out
        # The fix names this store, not a Qdrant URL or an --index folder.
        assert f"--milvus-uri {uri} --collection {collection}" in out and "--qdrant-url" not in out
    finally:
        _drop(uri, collection)


@pytest.mark.parametrize("kind", MILVUS)
def test_app_watch_syncs_a_catalog_into_milvus(kind, tmp_path, request, monkeypatch):
    from shoplens.store.milvus import MilvusStore
    from shoplens.web import serve

    uri, collection = _uri(kind, tmp_path, request), f"watch_{uuid.uuid4().hex[:8]}"
    catalog = make_folder_catalog(tmp_path / "catalog")
    seen = {}

    def fake_launch(app, *args, **kwargs):  # instead of serving: what --watch set up, and one of its syncs
        seen["watching"] = app.watcher is not None
        if app.watcher is not None:
            make_photo(catalog / "reds" / "crimson.jpg", (200, 10, 40))
            (catalog / "greens" / "green.jpg").unlink()
            summary = app.watcher.tick()
            seen["summary"] = summary
        app.close()
        return "http://test"

    monkeypatch.setattr(serve, "launch", fake_launch)
    try:
        rc = serve.main(["--milvus-uri", uri, "--collection", collection, "--catalog", str(catalog), "--encoder",
                         "tiny", "--watch", "3600", "--port", str(_free_port())])
        assert rc == 0
        assert seen["watching"], "--watch on a Milvus store started no watcher"
        summary = seen["summary"]
        assert summary is not None and (summary.added, summary.removed) == (1, 1)
        store = MilvusStore(uri, collection, strong=True)
        try:
            ids = sorted(h.product_id for h in store.iterate())
        finally:
            store.close()
        assert ids == ["blue", "crimson", "dark-green", "dark-red", "navy", "red", "white", "yellow"]
    finally:
        _drop(uri, collection)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_first_sync_on_a_server_without_words_keeps_saying_so(tmp_path, request):
    # The Milvus 2.3 server has no sparse vectors: create() records `words_unavailable`; the sync's last
    # write_meta (of the metadata it started with) dropped it, and every later reader then asked for a `text`
    # field the collection lacks ("field text not exist": the app called the index damaged).
    from shoplens.cli import index_main
    from shoplens.index.check import verify
    from shoplens.store.milvus import MilvusStore

    uri, collection = request.getfixturevalue("milvus_server"), f"words_{uuid.uuid4().hex[:8]}"
    catalog = make_folder_catalog(tmp_path / "catalog")  # titles: the indexer adds the words side (text auto)
    try:
        assert index_main([str(catalog), "--milvus-uri", uri, "--collection", collection, "--encoder", "tiny",
                           "--quiet"]) == 0
        reader = MilvusStore(uri, collection, strong=True)
        try:
            assert reader.read_meta().get("words_unavailable")
            report = verify(reader)
            assert report.ok, report.lines()
        finally:
            reader.close()
    finally:
        _drop(uri, collection)
