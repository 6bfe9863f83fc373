"""Every store implementation, for the parametrized store, sync and congruence tests.

- "edge": Qdrant Edge in a tmp folder;
- "qdrant-client": QdrantStore (the `--qdrant-url` store) on qdrant-client's local mode (in memory). This is
  NOT a Qdrant server: local mode is qdrant-client's own Python re-implementation of the engine, and no Qdrant
  server binary can be installed here (it is not on PyPI, and this machine reaches no other registry), so
  the server store's HTTP/gRPC path, its payload indexes and its consistency are not tested against Qdrant
  itself. Set SHOPLENS_QDRANT_URL (e.g. http://localhost:6333, key in $QDRANT_API_KEY) to add "qdrant-server":
  the same tests on that server, each on a fresh collection dropped afterwards;
- "milvus-lite": Milvus Lite (the Milvus engine, run by pymilvus in a child process) on a tmp .db file;
- "milvus-server": the Milvus 2.3 standalone server from the `milvus` PyPI package, started once per test
  session on free loopback ports (`milvus_server` fixture) and stopped at its end. Each test gets its own
  collection, dropped afterwards.

conftest.py imports the fixtures once, so every test module shares one server.
"""

from __future__ import annotations

import os
import random
import socket
import uuid
from pathlib import Path

import pytest

from needs import absent
from shoplens.store.edge import EdgeStore
from shoplens.store.remote import QdrantStore

# A real Qdrant server for the store and congruence tests, when one is given (see the module docstring).
QDRANT_URL = os.environ.get("SHOPLENS_QDRANT_URL", "").strip()
STORES = ["edge", "qdrant-client", "milvus-lite", "milvus-server"] + (["qdrant-server"] if QDRANT_URL else [])
# The pytest-xdist group of the tests on the session's server (conftest.py marks those it can tell by their
# fixtures and parameters): one worker runs them all, so one server starts, not one per worker.
MILVUS_GROUP = "milvus-server"

# The server's own components listen on fixed default ports (19529, 53100, 9091, ...) unless told otherwise.
COMPONENT_PORTS = ("proxy_internal_port", "root_coord_port", "query_coord_port", "query_node_port",
                   "index_coord_port", "index_node_port", "data_coord_port", "data_node_port")
# A Strong read (what MilvusStore does after writing) waits for the server's next time tick: 200 ms by default,
# so each count or search in a test cost ~0.35 s. Ticking every 50 ms makes them ~0.05 s, for an idle server
# taking ~10% of a core instead of ~4%; what is read is the same.
TIME_TICK_MS = 50
# Loading a new collection (every store a test makes has two) waits on the query coordinator's channel checker
# (every 1 s) and its pull of the query node's state (every 0.5 s): a new store took ~6 s, ~4 s with these (most
# of the rest is a fixed 1 s observer tick; see also quick_milvus_polls). Milvus reads them from the environment.
FAST_LOAD = {"QUERYCOORD_CHECKCHANNELINTERVAL": "100", "QUERYCOORD_DISTPULLINTERVAL": "50"}


def _free_ports(n: int) -> list[int]:
    """n distinct free loopback ports below the kernel's ephemeral range: one the kernel handed out (port 0) could
    be taken again, by an outgoing connection of the server itself, before the server listens on it."""
    try:
        lowest = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        lowest = 32768
    high = lowest if lowest >= 25000 else 65536  # an ephemeral range starting that low cannot be kept clear of
    rng = random.Random()
    held: list[socket.socket] = []
    try:
        while len(held) < n:
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", rng.randrange(20000, high)))
            except OSError:  # taken: try another
                sock.close()
                continue
            held.append(sock)  # held until all are picked: no port twice
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


def configure_server(server, base: Path, session_ttl_s: int | None = None) -> dict[str, str]:
    """Point a `milvus.MilvusServer` at `base` and at free ports only, with a fast time tick and collection load;
    the environment its process must start with (the embedded etcd takes its ports from a config file named there).

    Without this the server wants etcd's 2379 and 2380 and its components' defaults, so a Milvus or an etcd
    already running on the machine (another test worker's, another checkout's test run) keeps it from starting
    (it then waits out its 180 s start timeout). The ports are fixed here, so a stopped server starts again on
    the same ones.

    `session_ttl_s`: how long etcd keeps a killed server's component sessions (30 s by default); a server started
    again on the same data waits for its old sessions to expire, so a test that kills one wants this short."""
    server.set_base_dir(str(base))
    proxy, web, client, peer, *components = _free_ports(4 + len(COMPONENT_PORTS))
    server.listen_port = proxy
    for key, port in zip(COMPONENT_PORTS, components):
        server.config.set(key, port)
    server.webservice_port = web  # the health and metrics port (9091 by default)
    server.config.set("proxy.timeTickInterval", TIME_TICK_MS)
    if session_ttl_s is not None:
        server.config.set("common.session.ttl", session_ttl_s)
    server.config.set("etcd_port", client)
    etcd = base / "etcd.yaml"
    base.mkdir(parents=True, exist_ok=True)
    etcd.write_text(f"name: default\nlisten-client-urls: http://127.0.0.1:{client}\n"
                    f"advertise-client-urls: http://127.0.0.1:{client}\nlisten-peer-urls: http://127.0.0.1:{peer}\n"
                    f"initial-advertise-peer-urls: http://127.0.0.1:{peer}\n"
                    f"initial-cluster: default=http://127.0.0.1:{peer}\n")
    return {"ETCD_CONFIG_PATH": str(etcd), **FAST_LOAD}  # Milvus reads any setting from the environment too


class _ShortPolls:
    """pymilvus' `time` module, but sleeping at most POLL_S at a time."""

    POLL_S = 0.05

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def sleep(self, seconds: float) -> None:
        self._real.sleep(min(seconds, self.POLL_S))


@pytest.fixture(scope="session", autouse=True)
def quick_milvus_polls():
    """pymilvus polls the engine every 0.5 s while it builds a new collection's index or flushes (every 0.2 s while
    it loads one), waiting a first full interval even when the engine is done at once: each store a test makes
    (two collections) cost ~1 s more than the engine took, on Milvus Lite as on the server. In this process
    (not the indexers tests start) its status polls sleep at most 50 ms; what is asked and awaited is the same."""
    try:
        from pymilvus.client import grpc_handler
    except ImportError:  # no pymilvus: the Milvus tests skip
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(grpc_handler, "time", _ShortPolls(grpc_handler.time))  # its time.sleep()s are these polls
        yield


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """The URI of a Milvus standalone server this session started (skips with the reason when it cannot start)."""
    try:
        from milvus import default_server
    except ImportError as exc:
        absent(f"the milvus server package is not installed (pip install -r requirements-dev.txt): {exc}",
               "SHOPLENS_REQUIRE_MILVUS")
    env = configure_server(default_server, tmp_path_factory.mktemp("milvus-server"))
    try:
        with pytest.MonkeyPatch.context() as patch:  # the server process copies os.environ when it starts
            for key, value in env.items():
                patch.setenv(key, value)
            default_server.start()
    except Exception as exc:  # noqa: BLE001  (a missing library, no free port, ...: say which)
        if os.environ.get("SHOPLENS_REQUIRE_MILVUS"):  # CI: a server that does not start is a failure
            raise
        pytest.skip(f"the Milvus standalone server did not start: {exc}")
    yield f"http://127.0.0.1:{default_server.listen_port}"
    default_server.stop()


def open_store(kind: str, folder: Path, name: str, request):
    """A new empty store of `kind`: its files (if any) under `folder`, a fresh collection on the session's server."""
    if kind == "edge":
        return EdgeStore(folder / name)
    if kind == "qdrant-client":
        return QdrantStore(":memory:")
    if kind == "qdrant-server":
        if not QDRANT_URL:
            pytest.skip("no Qdrant server: set SHOPLENS_QDRANT_URL to test the server store against one")
        return QdrantStore(QDRANT_URL, f"t_{uuid.uuid4().hex[:12]}")
    from shoplens.store.milvus import MilvusStore

    if kind == "milvus-lite":
        return MilvusStore(str(folder / f"{name}.db"))
    return MilvusStore(request.getfixturevalue("milvus_server"), f"t_{uuid.uuid4().hex[:12]}")


def close_store(store) -> None:
    """Close a store from open_store, dropping its server collections."""
    if isinstance(store, QdrantStore) and store.url != ":memory:":
        try:
            store.client.delete_collection(store.collection)
        except Exception:  # noqa: BLE001  (already gone)
            pass
    if getattr(store, "uri", "").startswith("http"):
        for name in (store.collection, store.meta_collection):
            try:
                store.client.drop_collection(name)
            except Exception:  # noqa: BLE001  (already gone)
                pass
    store.close()


@pytest.fixture
def make_store(request, tmp_path):
    """make_store(kind) -> a fresh empty store of that kind; all are closed (and server collections dropped)."""
    made = []

    def make(kind: str, name: str = "idx"):
        made.append(open_store(kind, tmp_path, name, request))
        return made[-1]

    yield make
    for store in made:
        close_store(store)
