"""The stores behind one interface (Qdrant Edge, qdrant-client, Milvus Lite, a Milvus server): the same operations
give the same answers. Edge is the reference every other store is compared with."""

from __future__ import annotations

import numpy as np
import pytest

from shoplens.store import IndexMismatchError, PointData, StoreError, check_encoder, point_id
from shoplens.store.edge import EdgeStore
from shoplens.store.remote import QdrantStore
from stores import MILVUS_GROUP, STORES, close_store, open_store

DIM = 16
COLOURS = ["Red", "Blue", "Green"]
TYPES = ["Shoes", "Tshirts"]


def _points(n: int = 300, seed: int = 0) -> list[PointData]:
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(n, DIM)).astype(np.float32)
    return [PointData(point_id(f"p{i}"), vecs[i], {"product_id": f"p{i}", "title": f"Product {i}",
                                                     "colour": COLOURS[i % 3], "product_type": TYPES[i % 2]})
            for i in range(n)]


def _fill(store, points):
    store.create({"encoder": "x", "encoder_version": "1", "dim": DIM})
    store.upsert(points)
    for field in ("colour", "product_type"):
        store.create_keyword_index(field)
    store.finish()
    return store


@pytest.fixture(params=STORES)
def store(request, make_store):
    """A store of each kind holding _points(), of this test's own (it may change it)."""
    return _fill(make_store(request.param), _points())


@pytest.fixture(scope="module")
def filled_stores(request, tmp_path_factory):
    """filled_stores(kind) -> a store of that kind holding _points(), made once in this module for the tests
    that only read it (making one on the Milvus server costs ~6 s, most of it loading its two collections)."""
    made: dict = {}
    folder = tmp_path_factory.mktemp("filled")

    def get(kind: str):
        if kind not in made:
            made[kind] = _fill(open_store(kind, folder, "idx", request), _points())
        return made[kind]

    yield get
    for filled in made.values():
        close_store(filled)


@pytest.fixture(params=STORES)
def read_only(request, filled_stores):
    """A store of each kind holding _points(), shared: the test must not change it."""
    return filled_stores(request.param)


@pytest.fixture(params=STORES[1:])
def both(request, filled_stores):
    """(Edge, another store) holding the same points; shared, read only."""
    return filled_stores("edge"), filled_stores(request.param)


QUERIES = [None, {"colour": "Red"}, {"colour": ["Red", "Blue"]}, {"colour": "Green", "product_type": "Shoes"},
           {"colour": "Purple"}]


def test_congruent_search_results(both):
    edge, remote = both
    rng = np.random.default_rng(42)
    for _ in range(10):
        query = rng.normal(size=DIM)
        for filters in QUERIES:
            a, b = edge.search(query, 10, filters), remote.search(query, 10, filters)
            assert [h.id for h in a] == [h.id for h in b], filters
            assert np.allclose([h.score for h in a], [h.score for h in b], atol=1e-5)
            assert [h.payload for h in a] == [h.payload for h in b]


def test_congruent_counts_facets_scroll(both):
    edge, remote = both
    for filters in QUERIES:
        assert edge.count(filters) == remote.count(filters)
    assert edge.facet("colour") == remote.facet("colour") == [("Blue", 100), ("Green", 100), ("Red", 100)]
    assert edge.facet("colour", {"product_type": "Shoes"}) == remote.facet("colour", {"product_type": "Shoes"})
    assert [h.id for h in edge.iterate(page=7)] == [h.id for h in remote.iterate(page=7)]


def test_exact_scores_and_filter(read_only):
    store = read_only
    points = _points()
    query = points[5].vector
    hits = store.search(query, 3)
    assert hits[0].id == points[5].id and hits[0].score == pytest.approx(1.0, abs=1e-5)
    vecs = np.stack([p.vector / np.linalg.norm(p.vector) for p in points])
    expected = np.argsort(-(vecs @ (query / np.linalg.norm(query))))[:3]
    assert [h.payload["product_id"] for h in hits] == [f"p{i}" for i in expected]
    red = store.search(query, 50, {"colour": "Red"})
    assert len(red) == 50 and {h.payload["colour"] for h in red} == {"Red"}
    assert store.search(query, 5, {"colour": "Purple"}) == []


def test_retrieve_with_vector_set_payload_delete(store):
    pid = point_id("p7")
    [hit] = store.retrieve([pid], with_vector=True)
    assert hit.product_id == "p7" and hit.vector.shape == (DIM,)
    store.set_payload(pid, {"product_id": "p7", "title": "Renamed", "colour": "Red"})
    assert store.retrieve([pid])[0].payload == {"product_id": "p7", "title": "Renamed", "colour": "Red"}
    store.delete([pid, point_id("p8")])
    assert store.count() == 298 and store.retrieve([pid]) == []


def test_upsert_same_id_replaces_not_duplicates(store):
    again = _points(5, seed=1)
    store.upsert(again)
    store.upsert(again)
    assert store.count() == 300
    assert np.allclose(store.retrieve([again[0].id], with_vector=True)[0].vector,
                       again[0].vector / np.linalg.norm(again[0].vector), atol=1e-5)


def test_meta_round_trip(store):
    meta = store.read_meta()
    assert meta["encoder"] == "x" and meta["dim"] == DIM
    store.write_meta({**meta, "filter_fields": ["colour"]})
    assert store.read_meta()["filter_fields"] == ["colour"]


def test_edge_index_survives_reopen(tmp_path):
    _fill(EdgeStore(tmp_path / "idx"), _points()).close()
    again = EdgeStore(tmp_path / "idx")
    assert again.count() == 300 and again.read_meta()["dim"] == DIM
    again.close()


def test_missing_and_foreign_folders(tmp_path):
    assert EdgeStore(tmp_path / "new").read_meta() is None
    with pytest.raises(StoreError, match="no index"):
        EdgeStore(tmp_path / "new").count()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a shoplens index"):
        EdgeStore(tmp_path / "docs").read_meta()


def test_no_index_names_the_command_and_a_refused_search_closes_its_store(tmp_path, monkeypatch):
    from shoplens.query.search import Searcher

    where = tmp_path / "new"
    with pytest.raises(StoreError) as err:
        EdgeStore(where).require_meta()
    assert str(err.value) == f"no index at {where}; build one with: python indexer.py CATALOG --index {where}"
    closed = []
    monkeypatch.setattr(EdgeStore, "close", lambda self: closed.append(self.location))
    with pytest.raises(StoreError, match="no index at"):
        Searcher.open(where)
    assert closed == [str(where)]


def test_unreachable_server_is_a_store_error():
    store = QdrantStore("http://127.0.0.1:9", timeout=2)
    with pytest.raises(StoreError, match="127.0.0.1:9"):
        store.read_meta()


def test_encoder_mismatch_names_both_and_the_fix():
    meta = {"encoder": "efficientnet-lite0", "encoder_version": "1-crop224", "dim": 1280}
    check_encoder(meta, "efficientnet-lite0", "1-crop224", 1280)
    with pytest.raises(IndexMismatchError) as err:
        check_encoder(meta, "tiny", "1", 48, "data/index")
    text = str(err.value)
    assert "efficientnet-lite0" in text and "'tiny'" in text and "python indexer.py" in text


def test_point_ids_are_deterministic():
    assert point_id("42419") == point_id("42419") != point_id("42420")
    assert point_id("42419") == "f7b72b07-6b53-576a-b6c5-34890c22a2b1"  # fixed forever: ids on disk depend on it


def _text_points() -> list[PointData]:
    """Five products with hand-picked text vectors and BM25 terms; one has no text at all."""
    words = {"red": 1, "shoe": 2, "blue": 3, "shirt": 4, "cap": 5}
    docs = ["red shoe", "blue shoe", "red shirt", "blue shirt shirt", "cap"]
    text = [[1, 0, 0], [0.8, 0.6, 0], [0, 1, 0], [0, 0.6, 0.8], [0, 0, 1]]
    points = []
    for i, doc in enumerate(docs):
        terms = doc.split()
        keywords = (sorted({words[t] for t in terms}), [float(terms.count(t)) for t in sorted(set(terms), key=words.get)])
        points.append(PointData(point_id(f"t{i}"), np.eye(DIM)[i], {"product_id": f"t{i}", "colour": COLOURS[i % 3]},
                                text=np.array(text[i], np.float32), keywords=keywords))
    points.append(PointData(point_id("plain"), np.ones(DIM), {"product_id": "plain", "colour": "Red"}))
    return points


@pytest.fixture(params=[s for s in STORES if s != "milvus-server"])  # a 2.3 server keeps no words: see below
def text_store(request, make_store):
    s = make_store(request.param)
    s.create({"encoder": "x", "encoder_version": "1", "dim": DIM, "text": {"model": "m", "dim": 3}})
    s.upsert(_text_points())
    s.create_keyword_index("colour")
    s.finish()
    return s


def _ids(hits):
    return [h.payload["product_id"] for h in hits]


def test_text_vectors_live_beside_the_image_vector(text_store):
    assert _ids(text_store.search(np.eye(DIM)[2], 1)) == ["t2"]
    assert _ids(text_store.search(np.array([1, 0.1, 0]), 3, using="text")) == ["t0", "t1", "t2"]
    assert _ids(text_store.search(np.array([1, 0.1, 0]), 3, using="text", filters={"colour": "Green"})) == ["t2"]
    # The product without text is invisible to text search but not to image search.
    assert "plain" not in _ids(text_store.search(np.array([0, 0, 1]), 10, using="text"))
    assert "plain" in _ids(text_store.search(np.ones(DIM), 1))


def test_bm25_scores_with_idf(text_store):
    # Query "blue shirt": terms 3 and 4 each once. IDF(t) = ln(1 + (N - n + 0.5) / (n + 0.5)) with N = 5 docs
    # that have the sparse vector: blue (n=2) and shirt (n=2) weigh the same, so a doc's score is the sum of
    # its weights for the two terms times that IDF.
    hits = text_store.search_keywords(([3, 4], [1.0, 1.0]), 5)
    idf = np.log(1 + (5 - 2 + 0.5) / (2 + 0.5))
    assert _ids(hits)[0] == "t3" and set(_ids(hits)[1:]) == {"t1", "t2"}  # "blue shoe" and "red shirt" tie
    assert hits[0].score == pytest.approx(idf * 3, rel=1e-5)  # blue once + shirt twice
    assert [h.score for h in hits[1:]] == pytest.approx([idf, idf], rel=1e-5)
    assert _ids(text_store.search_keywords(([3, 4], [1.0, 1.0]), 5, ids=[point_id("t1"), point_id("t0")])) == ["t1"]
    assert text_store.search_keywords(([], []), 5) == []


def test_update_text_keeps_the_image_vector(text_store):
    text_store.update_text([PointData(point_id("t4"), None, text=np.array([1, 0, 0], np.float32), keywords=([1], [1.0]))])
    assert _ids(text_store.search(np.array([1, 0, 0]), 1, using="text")) in (["t0"], ["t4"])
    assert set(_ids(text_store.search_keywords(([1], [1.0]), 5))) == {"t0", "t2", "t4"}
    assert _ids(text_store.search(np.eye(DIM)[4], 1)) == ["t4"]
    (hit,) = text_store.retrieve([point_id("t4")], with_vector=True)
    assert np.allclose(hit.vector, np.eye(DIM)[4])


@pytest.mark.xdist_group(MILVUS_GROUP)  # on the session's server (asked for by name, not by a parameter)
def test_old_milvus_server_keeps_the_image_side_and_names_what_is_missing(make_store):
    # The `milvus` package's 2.3 server has no sparse vectors and one vector field per collection.
    s = make_store("milvus-server")
    s.create({"encoder": "x", "encoder_version": "1", "dim": DIM, "text": {"model": "m", "dim": 3}})
    s.upsert(_text_points())
    s.update_text(_text_points()[:1])  # the indexer's text pass must not fail there either
    s.finish()
    assert "2.4" in s.read_meta()["words_unavailable"]
    assert _ids(s.search(np.eye(DIM)[2], 1)) == ["t2"]
    with pytest.raises(StoreError, match="keyword search is unavailable.*2.4"):
        s.search_keywords(([3, 4], [1.0, 1.0]), 5)
    with pytest.raises(StoreError, match="text search is unavailable"):
        s.search(np.array([1, 0, 0]), 3, using="text")


def test_unreachable_milvus_fails_fast_with_the_uri():
    import time

    from shoplens.store.milvus import MilvusStore

    started = time.monotonic()
    with pytest.raises(StoreError, match=r"127\.0\.0\.1:9\b"):
        MilvusStore("http://127.0.0.1:9", timeout=2).read_meta()
    assert time.monotonic() - started < 10


def test_milvus_lite_path_must_be_a_db_file(tmp_path):
    from shoplens.store.milvus import MilvusStore

    with pytest.raises(StoreError, match=r"ends in \.db"):
        MilvusStore(str(tmp_path / "index")).read_meta()


@pytest.mark.parametrize("kind", ["milvus-lite", "milvus-server"])
def test_milvus_files_and_metadata_travel_with_the_collection(kind, make_store):
    s = _fill(make_store(kind), _points(3))
    blob = bytes(range(256)) * 700  # 179 kB: several metadata rows
    s.write_file("tuning-x.npz", blob)
    s.write_file("small", b"v1")
    s.write_file("small", b"v2")
    assert s.read_file("tuning-x.npz") == blob and s.read_file("small") == b"v2"
    s.delete_file("small")
    assert s.read_file("small") is None and s.read_file("never") is None
    assert s.cli_args().startswith(f"--milvus-uri {s.uri}")


@pytest.mark.parametrize("kind", ["milvus-lite", "milvus-server"])
def test_closing_a_milvus_store_leaves_another_on_the_same_engine_working(kind, filled_stores):
    """pymilvus shares one connection between the clients of one URI, and a client's close() dropped it for all:
    a store closed in the same process left every other store on that server failing ("should create
    connection first")."""
    from shoplens.store.milvus import MilvusStore

    kept = filled_stores(kind)
    assert kept.count() == 300
    other = MilvusStore(kept.uri, kept.collection)
    assert other.count() == 300
    other.close()
    assert kept.count() == 300


def _edge_config(path) -> dict:
    import json

    return json.loads((path / "shard" / "edge_config.json").read_text())


@pytest.mark.parametrize("profile, size, large", [("auto", 499_999, False), ("auto", 500_000, True),
                                                  ("large", 10, True), ("default", 2_000_000, False)])
def test_edge_profile_is_chosen_by_catalog_size_or_option(tmp_path, profile, size, large):
    store = EdgeStore(tmp_path / "idx", profile=profile)
    store.create({"encoder": "x", "encoder_version": "1", "dim": DIM, "catalog_size": size})
    store.upsert(_points(20))
    store.close()
    config = _edge_config(tmp_path / "idx")
    if large:  # the values shipped for 1M products (docs/benchmarks.md)
        assert config["hnsw_config"]["m"] == 32 and config["hnsw_config"]["ef_construct"] == 128
        assert config["quantization_config"] == {"scalar": {"type": "int8", "quantile": 0.99, "always_ram": True}}
        assert config["vectors"]["image"]["on_disk"] is True
    else:
        assert config.get("quantization_config") is None and config.get("hnsw_config") is None
    reopened = EdgeStore(tmp_path / "idx")  # a searcher: the profile's search parameters come from the metadata
    assert reopened.read_meta().get("edge_profile") == ("large" if large else None)
    hits = reopened.search(_points(20)[3].vector, 1)
    assert hits[0].payload["product_id"] == "p3"
    assert (reopened._search_params is not None) == large
    reopened.close()


def test_unknown_profile_is_refused(tmp_path):
    with pytest.raises(StoreError, match="unknown index profile 'huge'"):
        EdgeStore(tmp_path / "idx", profile="huge")


def test_a_qdrant_server_given_by_url_is_the_store_the_suite_opens(monkeypatch, tmp_path, request):
    # No Qdrant server binary installs here: the congruence suite runs the server store against a real server
    # only when SHOPLENS_QDRANT_URL names one. That URL is what the "qdrant-server" kind opens.
    import stores

    monkeypatch.setattr(stores, "QDRANT_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    store = stores.open_store("qdrant-server", tmp_path, "idx", request)
    assert isinstance(store, QdrantStore) and store.url == "http://127.0.0.1:9" and store.collection.startswith("t_")
    with pytest.raises(StoreError, match="127.0.0.1:9"):  # connects on first use
        store.read_meta()
    store.close()
    monkeypatch.setattr(stores, "QDRANT_URL", "")
    with pytest.raises(pytest.skip.Exception, match="SHOPLENS_QDRANT_URL"):
        stores.open_store("qdrant-server", tmp_path, "idx", request)


@pytest.mark.skipif(not __import__("stores").QDRANT_URL,
                    reason="no Qdrant server here (set SHOPLENS_QDRANT_URL): the server store is tested on "
                           "qdrant-client's local mode only")
def test_qdrant_server_is_in_the_congruence_suite():
    assert "qdrant-server" in STORES
