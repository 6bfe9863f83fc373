"""Every store implementation on a real engine, for the parametrized store, sync and congruence tests.

- "edge": Qdrant Edge in a tmp folder; "qdrant-client": qdrant-client's local mode (in memory);
- "milvus-lite": Milvus Lite (the Milvus engine, run by pymilvus in a child process) on a tmp .db file;
- "milvus-server": the Milvus 2.3 standalone server from the `milvus` PyPI package, started once per test
  session on free loopback ports (`milvus_server` fixture) and stopped at its end. Each test gets its own
  collection, dropped afterwards.

conftest.py imports the fixtures once, so every test module shares one server.
"""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from shoplens.store.edge import EdgeStore
from shoplens.store.remote import QdrantStore

STORES = ["edge", "qdrant-client", "milvus-lite", "milvus-server"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """The URI of a Milvus standalone server this session started (skips with the reason when it cannot start)."""
    try:
        from milvus import default_server
    except ImportError as exc:
        pytest.skip(f"the milvus server package is not installed (pip install -r requirements-dev.txt): {exc}")
    default_server.set_base_dir(str(tmp_path_factory.mktemp("milvus-server")))
    default_server.listen_port = _free_port()
    try:
        default_server.start()
    except Exception as exc:  # noqa: BLE001  (a missing library, no free port, ...: say which)
        if os.environ.get("SHOPLENS_REQUIRE_MILVUS"):  # CI: a server that does not start is a failure
            raise
        pytest.skip(f"the Milvus standalone server did not start: {exc}")
    yield f"http://127.0.0.1:{default_server.listen_port}"
    default_server.stop()


@pytest.fixture
def make_store(request, tmp_path):
    """make_store(kind) -> a fresh empty store of that kind; all are closed (and server collections dropped)."""
    made = []

    def make(kind: str, name: str = "idx"):
        if kind == "edge":
            store = EdgeStore(tmp_path / name)
        elif kind == "qdrant-client":
            store = QdrantStore(":memory:")
        else:
            from shoplens.store.milvus import MilvusStore

            if kind == "milvus-lite":
                store = MilvusStore(str(tmp_path / f"{name}.db"))
            else:
                uri = request.getfixturevalue("milvus_server")
                store = MilvusStore(uri, f"t_{uuid.uuid4().hex[:12]}")
        made.append(store)
        return store

    yield make
    for store in made:
        if getattr(store, "uri", "").startswith("http"):
            for name in (store.collection, store.meta_collection):
                try:
                    store.client.drop_collection(name)
                except Exception:  # noqa: BLE001  (already gone)
                    pass
        store.close()
