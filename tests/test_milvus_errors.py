"""MilvusStore's per-call timeouts and its one-line error for a lost server, on a fake pymilvus client (no server).

The errors are built as pymilvus 2.5 raises them: after its retries, MilvusException(grpc_error.code, message)
re-raised `from` itself; a deadline exceeded, the gRPC error itself (see pymilvus/decorators.py).
"""

from __future__ import annotations

import pytest

grpc = pytest.importorskip("grpc")
exceptions = pytest.importorskip("pymilvus.exceptions")

from shoplens.store import StoreError  # noqa: E402
from shoplens.store.milvus import MilvusStore, ServerLostError  # noqa: E402

URI = "http://127.0.0.1:19530"
REFUSED = ("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:19530: Failed to connect to "
           "remote host: Connection refused")


class RpcError(grpc.RpcError):
    def __init__(self, code, details):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details

    def __str__(self):  # as grpc's _InactiveRpcError prints itself
        return (f"<_InactiveRpcError of RPC that terminated with:\n\tstatus = {self._code}\n"
                f"\tdetails = \"{self._details}\"")


def retried_out(fn: str, timeout: int, details: str = REFUSED) -> Exception:
    """What pymilvus raises once its retries of an unavailable server have run out."""
    rpc = RpcError(grpc.StatusCode.UNAVAILABLE, details)
    exc = exceptions.MilvusException(rpc.code, f"[{fn}] Retry timeout: {timeout}s, message={details}")
    exc.__cause__ = exc  # `raise e from e`: the gRPC error is not in the chain
    return exc


class FakeClient:
    """Answers query/upsert/... and records each call's timeout; `fail` (name -> exception) makes one fail."""

    def __init__(self):
        self.calls: list[tuple[str, object]] = []
        self.fail: dict[str, Exception] = {}

    def __getattr__(self, name):
        def call(*args, timeout=None, **kwargs):
            self.calls.append((name, timeout))
            if name in self.fail:
                raise self.fail.pop(name)
            return [{"count(*)": 0}] if name == "query" else True
        return call


@pytest.fixture
def store():
    store = MilvusStore(URI, "products")
    store._client = FakeClient()
    return store


def test_timeouts_generous_until_a_read_answers_then_short(store):
    store._call("has_collection", "products")
    store._call("query", "products", filter="")
    store._call("upsert", "products", [{"id": "a"}])
    store._call("delete", "products", filter="")
    store._call("query", "products", filter="")
    store._call("search", "products", data=[[1.0]])
    store._call("create_collection", "x")
    store._call("flush", "products")
    assert store._client.calls == [("has_collection", 120), ("query", 120), ("upsert", 20), ("delete", 20),
                                   ("query", 30), ("search", 30), ("create_collection", 120), ("flush", 120)]
    # pymilvus bounds its retries by `timeout` only when it is an int (a float retries 75 times).
    assert all(type(t) is int for _, t in store._client.calls)


def test_lost_server_while_writing_says_what_was_kept_and_what_to_do(store):
    store._call("query", "products", filter="")
    store._call("upsert", "products", [{"id": "a"}, {"id": "b"}, {"id": "c"}, {"id": "d"}])
    store._call("upsert", "products_shoplens", [{"key": "meta"}])  # metadata: not a product
    store._call("upsert", "products", [{"id": "e"}, {"id": "f"}, {"id": "g"}, {"id": "h"}])
    store._client.fail["upsert"] = retried_out("upsert_rows", 20)
    with pytest.raises(ServerLostError) as caught:
        store._call("upsert", "products", [{"id": "i"}])
    assert isinstance(caught.value, StoreError)  # the CLI prints it in one line, exit status 2
    assert str(caught.value) == (
        "lost the Milvus server at http://127.0.0.1:19530 (upsert: connection refused for 20 s); the 8 products "
        "written before are kept: start the server and run the same command again, it resumes where it stopped")
    # A server that comes back has just started: the next calls get the generous timeout again.
    store._call("query", "products", filter="")
    assert store._client.calls[-1] == ("query", 120)


def test_lost_server_while_reading(store):
    store._call("query", "products", filter="")
    store._client.fail["search"] = RpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    with pytest.raises(ServerLostError, match=r"^lost the Milvus server at http://127\.0\.0\.1:19530 \(search: no "
                                              r"answer within 30 s\): start it, or check --milvus-uri, and try "
                                              r"again$"):
        store._call("search", "products", data=[[1.0]])


def test_other_grpc_errors_are_told_by_code_and_details(store):
    store._client.fail["query"] = RpcError(grpc.StatusCode.INVALID_ARGUMENT, "cannot parse expression: x ==")
    with pytest.raises(StoreError) as caught:
        store._call("query", "products", filter="x ==")
    assert not isinstance(caught.value, ServerLostError)
    assert str(caught.value) == ("Milvus at http://127.0.0.1:19530 (collection products) failed (query): "
                                 "invalid_argument: cannot parse expression: x ==")


def test_collection_not_loaded_after_a_restart_is_loaded_once_and_read_again(store):
    not_loaded = exceptions.MilvusException(101, "failed to query: collection not loaded[collection=4708]")
    store._client.fail["query"] = not_loaded
    assert store._call("query", "products", filter="") == [{"count(*)": 0}]
    assert store._client.calls == [("query", 120), ("load_collection", 120), ("query", 120)]
    # Only once: a collection that stays unloaded is an error, not a loop.
    store._client.fail["query"] = exceptions.MilvusException(101, "collection not loaded")
    with pytest.raises(StoreError, match="collection not loaded"):
        store._call("query", "products", filter="")


def test_check_says_the_server_is_lost_not_that_the_index_is_damaged(store, monkeypatch):
    """A server that stops answering during `check` is not a damaged index: the lost-server error goes up (the
    CLI prints it in one line) instead of a report telling the user to repair a healthy index."""
    from shoplens.index.check import verify

    monkeypatch.setattr(store, "read_meta", lambda: {"dim": 4, "points": 2, "encoder": "tiny"})
    store._client.fail["query"] = retried_out("query", 30)  # count(*) is a query
    with pytest.raises(ServerLostError, match="lost the Milvus server"):
        verify(store)
