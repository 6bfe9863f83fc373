"""Alpha query expansion (shoplens.query.expansion) and its record in a tuning (issue 18)."""

from __future__ import annotations

import numpy as np
import pytest

from shoplens.query.expansion import expand, expand_matrix, expand_on_store
from shoplens.store import Hit
from shoplens.vectors.tuning import Tuning, load_tuning


def unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def test_expand_by_hand():
    # q (1, 0), one neighbour (0, 1) at cosine 0.5, alpha 2: q + 0.25 * (0, 1) = (1, 0.25), then normalised.
    out = expand(np.array([1, 0], np.float32), np.array([[0, 1]], np.float32), np.array([0.5]), 2.0)
    assert np.allclose(out, unit([1, 0.25]))
    # A negative cosine weighs nothing.
    assert np.allclose(expand(np.array([1, 0], np.float32), np.array([[0, 1]], np.float32), np.array([-0.5]), 1.0),
                       [1, 0])


def test_expand_matrix_leaves_out_copies_and_excluded_rows():
    catalog = np.stack([unit([1, 0, 0]), unit([0.8, 0.6, 0]), unit([0.6, 0, 0.8]), unit([0, 0, 1])])
    q = unit([1, 0.001, 0])[None, :]  # row 0 is a copy of it (cosine > 0.99)
    # k 1: row 0 is skipped as a copy, so the top neighbour is row 1 (cosine ~0.8).
    sim1 = float(q[0] @ catalog[1])
    assert np.allclose(expand_matrix(q, catalog, 1, 1.0), unit(q[0] + sim1 * catalog[1]), atol=1e-6)
    # Row 1 excluded as well: the next is row 2 (cosine 0.6).
    excluded = np.array([[False, True, False, False]])
    sim2 = float(q[0] @ catalog[2])
    assert np.allclose(expand_matrix(q, catalog, 1, 1.0, excluded), unit(q[0] + sim2 * catalog[2]), atol=1e-6)
    assert np.allclose(expand_matrix(q, catalog, 0, 3.0), q)


def test_expand_on_store_uses_search_and_stored_vectors():
    vectors = {"a": unit([1, 0]), "b": unit([0.6, 0.8]), "c": unit([0, 1])}
    q = unit([1, 0.0001])

    def search(vector, n, filters=None):
        scores = sorted(((float(vector @ v), pid) for pid, v in vectors.items()), reverse=True)
        return [Hit(pid, s, {}) for s, pid in scores[:n]]

    def retrieve(ids, with_vector=False):
        return [Hit(pid, 0.0, {}, vectors[pid]) for pid in ids]

    # "a" is the query's copy (cosine > 0.99): left out; k 1 takes "b" at cosine 0.6, alpha 3.
    got = expand_on_store(search, retrieve, q, {"k": 1, "alpha": 3.0})
    assert np.allclose(got, unit(q + 0.6 ** 3 * vectors["b"]), atol=1e-4)
    # The query product itself excluded by id, no setting: unchanged.
    assert np.allclose(expand_on_store(search, retrieve, q, {}), q)
    got = expand_on_store(search, retrieve, q, {"k": 1, "alpha": 1.0}, exclude="b")
    assert np.allclose(got, unit(q + float(q @ vectors["c"]) * vectors["c"]), atol=1e-4)


def test_tuning_records_its_expansion(tmp_path):
    enc = {"encoder": "x", "encoder_version": "1", "dim": 2}
    plain = Tuning("lda", ["t"], enc, [[{"op": "l2"}]], {})
    assert "expansion" not in plain._header()  # tunings without it keep the header, so the hash, they had
    tuned = Tuning("lda", ["t"], enc, [[{"op": "l2"}]], {}, expansion={"k": 5, "alpha": 3.0})
    assert tuned.hash != plain.hash and tuned.describe()["expansion"] == {"k": 5, "alpha": 3.0}
    tuned.save(tmp_path / "t.npz")
    again = load_tuning(tmp_path / "t.npz")
    assert again.expansion == {"k": 5, "alpha": 3.0} and again.hash == tuned.hash
    assert Tuning("lda", ["t"], enc, [[{"op": "l2"}]], {}, expansion={"k": 0, "alpha": 1}).expansion == {}


@pytest.mark.parametrize("kind", ["edge", "qdrant-client"])
def test_search_applies_the_tunings_expansion_on_every_store(tmp_path, monkeypatch, kind):
    """An index whose tuning records an expansion: the Searcher moves the query photo's vector towards its top k
    stored neighbours (the photo's own copy left out), worked out here from the hand-made vectors."""
    from conftest import ColourEncoder, fresh_cache
    from PIL import Image
    from test_tuning_index import PRODUCTS, W_HAND, hand_tuning, make_catalog, raw_by_hand, sync, tuned_by_hand

    from shoplens.query.search import Searcher
    from shoplens.store.edge import EdgeStore
    from shoplens.store.remote import QdrantStore

    monkeypatch.setenv("SHOPLENS_CACHE", str(fresh_cache(tmp_path / "cache")))
    catalog = make_catalog(tmp_path / "catalog")
    tuning = hand_tuning()
    tuning.expansion = {"k": 2, "alpha": 1.0}
    store = EdgeStore(tmp_path / "idx") if kind == "edge" else QdrantStore(":memory:")
    try:
        enc = ColourEncoder()
        sync(catalog, store, enc, tuning=tuning)
        searcher = Searcher(store, store.read_meta(), _encoder=enc)
        assert searcher.tuning.expansion == {"k": 2, "alpha": 1.0}
        raw = raw_by_hand(catalog)
        stored = {pid: tuned_by_hand(raw[pid], W_HAND) for pid in PRODUCTS}
        q = stored["y1"]  # the query photo is y1's own photo: y1 (cosine 1) is its copy and is left out
        sims = sorted(((float(q @ v), pid) for pid, v in stored.items() if float(q @ v) <= 0.99), reverse=True)[:2]
        assert [pid for _s, pid in sims] == ["r1", "r2"]  # cosines 0.78 and 0.75 with the hand-made projection
        want = q + sum(s * stored[pid] for s, pid in sims)
        want = want / np.linalg.norm(want)
        np.testing.assert_allclose(searcher.expanded(q.astype(np.float32)), want, atol=1e-5)
        query = Image.open(catalog / "photos" / "y1.jpg").convert("RGB")
        top = searcher.search_image(query, k=3, crop="off").hits
        # The hits were found with the expanded vector: their cosine to it, not to the photo's own vector (1.0).
        assert top[0].similarity == pytest.approx(float(want @ stored[top[0].product_id]), abs=1e-4)
        assert top[0].similarity < 0.999
    finally:
        store.close()
