"""A tuning applied to an index: re-projection in place, kept with the index, used by search, safe to kill.

Expected vectors are worked out here with numpy (mean colour of each photo, a hand-made matrix, zero padding),
never with the code under test.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import PALETTE, REPO, ColourEncoder, fresh_cache, make_photo
from shoplens.catalog import read_catalog
from shoplens.cli import main
from shoplens.encoders import create_encoder
from shoplens.index.sync import sync_catalog
from shoplens.index.tuning import TUNING_FIELD, TuningIndexError
from shoplens.quality.evaluate import evaluate
from shoplens.query.search import Searcher
from shoplens.store import StoreError, point_id
from shoplens.store.edge import EdgeStore
from shoplens.store.remote import QdrantStore
from shoplens.tune import Tuning

# product id -> (colour, kind); 'kind' is the label a tuning is "fitted" on.
PRODUCTS = {"r1": ("red", "warm"), "r2": ("dark-red", "warm"), "y1": ("yellow", "warm"),
            "g1": ("green", "cool"), "g2": ("dark-green", "cool"), "b1": ("blue", "cool"),
            "b2": ("navy", "cool"), "w1": ("white", "plain")}
FIGURES = {"metric": "precision@10", "before": {"precision@10": 0.5}, "after": {"precision@10": 0.75},
           "protocol": "hand-made"}
# A hand-made 3 -> 2 projection: (r, g, b) -> (r - b, g + 0.5 b).
W_HAND = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.5]], np.float32)
W_OTHER = np.array([[0.0, 1.0], [1.0, 0.0], [0.3, 0.3]], np.float32)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """An embedding cache of this test's own (the raw vectors it holds are part of what is tested)."""
    cache = fresh_cache(tmp_path / "cache")  # exported ONNX models (MiniLM): shared, not exported again
    monkeypatch.setenv("SHOPLENS_CACHE", str(cache))
    return cache


def make_catalog(root: Path) -> Path:
    rows = []
    for pid, (colour, kind) in PRODUCTS.items():
        make_photo(root / "photos" / f"{pid}.jpg", PALETTE[colour])
        rows.append({"id": pid, "path": f"photos/{pid}.jpg", "title": f"{colour} thing", "kind": kind})
    with open(root / "products.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture
def catalog(tmp_path) -> Path:
    return make_catalog(tmp_path / "catalog")


class CountingColour(ColourEncoder):
    """The fake colour encoder, counting the photos it encodes."""

    def __init__(self):
        self.encoded = 0

    def embed_batch(self, images):
        self.encoded += len(images)
        return super().embed_batch(images)


def hand_tuning(weights=W_HAND, encoder=None, kind="hand") -> Tuning:
    enc = (encoder or ColourEncoder()).describe()
    return Tuning(kind, ["kind"], enc, [[{"op": "affine", "weight": "w"}]], {"w": weights}, dict(FIGURES))


def raw_by_hand(catalog: Path) -> dict[str, np.ndarray]:
    """Each product's backbone vector, computed here: the photo's mean colour + 1, unit length."""
    out = {}
    for pid in PRODUCTS:
        rgb = np.asarray(Image.open(catalog / "photos" / f"{pid}.jpg").convert("RGB"), np.float64).mean(axis=(0, 1))
        v = rgb + 1.0
        out[pid] = v / np.linalg.norm(v)
    return out


def tuned_by_hand(raw: np.ndarray, weights: np.ndarray, dim: int = 3) -> np.ndarray:
    y = raw @ weights.astype(np.float64)
    y = y / np.linalg.norm(y)
    return np.concatenate([y, np.zeros(dim - len(y))])


def snapshot(store) -> dict[str, tuple[str, dict, np.ndarray]]:
    """point id -> (product id, payload, vector)."""
    return {h.id: (h.product_id, h.payload, h.vector) for h in store.iterate(with_vector=True)}


def sync(catalog, store, encoder, **kw):
    return sync_catalog(read_catalog(catalog), store, encoder, progress=False, **kw)


@pytest.fixture(params=["edge", "qdrant-client"])
def store(request, tmp_path):
    s = EdgeStore(tmp_path / "idx") if request.param == "edge" else QdrantStore(":memory:")
    yield s
    s.close()


def test_apply_then_remove_a_tuning_reprojects_in_place(catalog, store):
    enc = CountingColour()
    first = sync(catalog, store, enc)
    assert first.encoded == 8 and first.reprojected == 0
    raw = raw_by_hand(catalog)
    before = snapshot(store)
    for pid, (product, payload, vector) in before.items():
        np.testing.assert_allclose(vector, raw[product], atol=1e-5)
        assert TUNING_FIELD not in payload

    tuning = hand_tuning()
    applied = sync(catalog, store, enc, tuning=tuning)
    assert (applied.reprojected, applied.encoded, applied.unchanged, applied.updated) == (8, 0, 8, 0)
    assert enc.encoded == 8, "re-projection encoded a photo again"
    after = snapshot(store)
    assert set(after) == set(before)
    for pid, (product, payload, vector) in after.items():
        assert product == before[pid][0]
        assert {k: v for k, v in payload.items() if k != TUNING_FIELD} == before[pid][1]
        assert payload[TUNING_FIELD] == tuning.hash
        np.testing.assert_allclose(vector, tuned_by_hand(raw[product], W_HAND), atol=1e-5)
    meta = store.read_meta()
    assert meta["tuning"]["hash"] == tuning.hash and meta["tuning"]["kind"] == "hand"
    assert meta["tuning"]["label"] == ["kind"] and meta["tuning"]["figures"] == FIGURES
    assert meta["encoder"] == "fake-colour" and "tuning_pending" not in meta

    again = sync(catalog, store, enc)  # the index keeps its tuning; nothing to do
    assert (again.reprojected, again.unchanged, enc.encoded) == (0, 8, 8)

    removed = sync(catalog, store, enc, tuning=None)
    assert (removed.reprojected, enc.encoded) == (8, 8)
    back = snapshot(store)
    for pid, (product, payload, vector) in back.items():
        assert payload == before[pid][1]  # the bookkeeping field is gone too
        np.testing.assert_allclose(vector, raw[product], atol=1e-5)
    assert "tuning" not in store.read_meta()


def test_a_tuned_index_tunes_new_photos_and_search_queries(catalog, store):
    enc = ColourEncoder()
    tuning = hand_tuning()
    sync(catalog, store, enc, tuning=tuning)  # tuned from the first run
    make_photo(catalog / "photos" / "y2.jpg", (240, 200, 40))
    with open(catalog / "products.csv", "a", newline="") as fh:
        fh.write("y2,photos/y2.jpg,gold thing,warm\n")
    added = sync(catalog, store, enc)
    assert (added.added, added.reprojected) == (1, 0)
    [hit] = store.retrieve([point_id("y2")], with_vector=True)
    rgb = np.asarray(Image.open(catalog / "photos" / "y2.jpg").convert("RGB"), np.float64).mean(axis=(0, 1)) + 1
    np.testing.assert_allclose(hit.vector, tuned_by_hand(rgb / np.linalg.norm(rgb), W_HAND), atol=1e-5)
    assert hit.payload[TUNING_FIELD] == tuning.hash

    searcher = Searcher(store, store.read_meta(), _encoder=enc)
    assert searcher.tuning.hash == tuning.hash
    query = Image.open(catalog / "photos" / "g2.jpg").convert("RGB")
    np.testing.assert_allclose(searcher.embed(query), tuned_by_hand(raw_by_hand(catalog)["g2"], W_HAND), atol=1e-5)
    top = searcher.search_image(query, k=3, crop="off").hits
    assert top[0].product_id == "g2" and top[0].similarity == pytest.approx(1.0, abs=1e-4)
    similar = searcher.more_like("g2", k=2).hits
    assert "g2" not in [h.product_id for h in similar] and len(similar) == 2

    # Re-projected by another run while this searcher was open: caught on its next search, not used silently.
    sync(catalog, store, enc, tuning=hand_tuning(W_OTHER, kind="other"))
    with pytest.raises(TuningIndexError, match="changed its tuning since it was opened"):
        searcher.search_image(query, k=3, crop="off")
    fresh = Searcher(store, store.read_meta(), _encoder=enc)
    assert fresh.search_image(query, k=1, crop="off").hits[0].product_id == "g2"


def test_photos_missing_from_the_cache_are_encoded_again_or_refused(catalog, store, own_cache):
    enc = CountingColour()
    sync(catalog, store, enc, tuning=hand_tuning())
    for path in (own_cache / "embeddings").glob("*"):
        path.unlink()  # the raw vectors are gone: only the photos can give them back
    other = hand_tuning(W_OTHER, kind="other")
    changed = sync(catalog, store, enc, tuning=other)
    assert changed.reprojected == 8 and enc.encoded == 16
    raw = raw_by_hand(catalog)
    for product, _payload, vector in snapshot(store).values():
        np.testing.assert_allclose(vector, tuned_by_hand(raw[product], W_OTHER), atol=1e-5)

    for path in (own_cache / "embeddings").glob("*"):
        path.unlink()
    (catalog / "photos" / "w1.jpg").unlink()  # and one photo is gone: that vector cannot be re-projected
    before, meta = snapshot(store), store.read_meta()
    with pytest.raises(TuningIndexError, match=r"1 products \(w1\).*Nothing was changed"):
        sync(catalog, store, enc, tuning=None)
    assert store.read_meta() == meta
    for pid, (product, payload, vector) in snapshot(store).items():
        assert payload == before[pid][1]
        np.testing.assert_array_equal(vector, before[pid][2])


def test_a_tuning_for_another_encoder_is_refused_and_changes_nothing(catalog, store):
    enc = ColourEncoder()
    sync(catalog, store, enc)
    before, meta = snapshot(store), store.read_meta()
    tiny = create_encoder("tiny")
    foreign = hand_tuning(np.ones((48, 2), np.float32), encoder=tiny)
    with pytest.raises(TuningIndexError, match="fake-colour"):
        sync(catalog, store, enc, tuning=foreign)
    assert store.read_meta() == meta
    assert {pid: p for pid, (_i, p, _v) in snapshot(store).items()} == {pid: p for pid, (_i, p, _v) in before.items()}


def test_the_tuning_file_travels_with_a_qdrant_collection(catalog):
    store = QdrantStore(":memory:")
    try:
        tuning = hand_tuning()
        sync(catalog, store, ColourEncoder(), tuning=tuning)
        raw_meta = store.client.get_collection(store.collection).config.metadata
        kept = [k for k in raw_meta if k.startswith("file:tuning-")]
        assert len(kept) == 1 and kept[0] not in store.read_meta()
        # Nothing on this machine is needed: no local artifact folder holds it.
        assert store._artifacts is None or not list(store._artifacts.glob("tuning*"))
        assert Searcher(store, store.read_meta(), _encoder=ColourEncoder()).tuning.hash == tuning.hash
        sync(catalog, store, ColourEncoder(), tuning=None)
        assert not [k for k, v in store.client.get_collection(store.collection).config.metadata.items()
                    if k.startswith("file:") and v is not None]
    finally:
        store.close()


def test_the_bookkeeping_field_is_no_filter_facet_or_metadata(catalog, tmp_path):
    index = tmp_path / "idx"
    with EdgeStore(index) as store:
        tiny = create_encoder("tiny")
        sync(catalog, store, tiny, tuning=hand_tuning(np.eye(48, 5, dtype=np.float32), encoder=tiny))
        assert TUNING_FIELD not in store.read_meta()["filter_fields"]
    result = evaluate(None, "kind", index=index)
    assert all(TUNING_FIELD not in p.metadata for p in result.catalog)
    from shoplens.web.views import details_html, result_row

    with EdgeStore(index) as store:
        hit = store.retrieve([point_id("r1")])[0]
    assert TUNING_FIELD in hit.payload
    assert TUNING_FIELD not in result_row(hit, 1)["metadata"] and "tuning" not in details_html(hit).lower()


# --- command line: indexer flags, info, evaluate ---


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_tuning_info_evaluate_and_refusals(catalog, tmp_path, capsys):
    index = tmp_path / "idx"
    tiny = create_encoder("tiny")
    rng = np.random.default_rng(0)
    mine = hand_tuning(rng.normal(size=(48, 4)).astype(np.float32), encoder=tiny)
    mine.save(tmp_path / "mine.npz")
    other = hand_tuning(rng.normal(size=(48, 4)).astype(np.float32), encoder=tiny, kind="other")
    other.save(tmp_path / "other.npz")

    code, out, err = run(capsys, "index", catalog, "--index", index, "--tuning", tmp_path / "mine.npz", "--quiet")
    assert code == 0, err  # a new index follows the tuning's encoder (tiny)
    assert "added 8" in out
    code, out, _ = run(capsys, "info", "--index", index)
    [line] = [l for l in out.splitlines() if l.startswith("tuning:")]
    assert line == f"tuning:   hand on kind (hash {mine.hash[:8]}); held-out P@10 0.50 → 0.75"
    code, out, _ = run(capsys, "info", "--index", index, "--json")
    assert json.loads(out)["tuning"]["hash"] == mine.hash

    # evaluate --index tunes its query photos with the index's tuning: each photo finds itself first, at ~1.0.
    result = evaluate(None, "kind", index=index, queries=catalog, crop="off")
    assert result.ranking.scores[:, 0] == pytest.approx(1.0, abs=1e-4)
    assert [result.catalog[i].id for i in result.ranking.top[:, 0]] == [p.id for p in result.queries]
    code, _, err = run(capsys, "evaluate", "--index", index, "--label", "kind", "--tuning", tmp_path / "mine.npz",
                       "--quiet")
    assert code == 0, err
    code, _, err = run(capsys, "evaluate", "--index", index, "--label", "kind", "--tuning", tmp_path / "other.npz",
                       "--quiet")
    assert code == 2 and err.count("\n") == 1
    assert f"is tuned with hand on kind (hash {mine.hash[:8]})" in err and "--tuning FILE" in err
    assert f"python indexer.py {catalog.resolve()} --index {index}" in err

    # Bad tuning input: one line, exit 2, the index untouched.
    before = (index / "index.json").read_text()
    (tmp_path / "broken.npz").write_bytes((tmp_path / "mine.npz").read_bytes()[:200])
    colour = hand_tuning()
    colour.save(tmp_path / "colour.npz")
    for bad, needle in ((tmp_path / "broken.npz", "damaged or truncated"), (tmp_path / "none.npz", "no tuning file"),
                        (tmp_path / "colour.npz", "fitted on encoder fake-colour")):
        code, _, err = run(capsys, "index", catalog, "--index", index, "--tuning", bad, "--quiet")
        assert code == 2 and needle in err and err.count("\n") == 1, err
    assert (index / "index.json").read_text() == before

    code, out, err = run(capsys, "index", catalog, "--index", index, "--no-tuning", "--quiet")
    assert code == 0 and "re-projected 8 stored vectors back to untuned vectors" in out, err
    code, out, _ = run(capsys, "info", "--index", index)
    assert "tuning:   none" in out
    assert not list(index.glob("tuning-*"))  # the old tuning's file went with it


def test_tune_label_fits_and_applies_in_one_run(catalog, tmp_path, capsys):
    index = tmp_path / "idx"
    code, out, err = run(capsys, "index", catalog, "--index", index, "--encoder", "tiny", "--tune-label", "kind",
                         "--force", "--json", "--quiet")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["added"] == 8 and summary["encoded"] == 0  # tune encoded them once; indexing reused them
    assert re.search(r"Tuned to kind: held-out (P@10|R@1) \d\.\d\d → \d\.\d\d", err)
    with EdgeStore(index) as store:
        meta = store.read_meta()
        assert meta["tuning"]["label"] == ["kind"] and meta["tuning"]["kind"]
        assert {h.payload[TUNING_FIELD] for h in store.iterate()} == {meta["tuning"]["hash"]}
    code, _, err = run(capsys, "index", catalog, "--index", index, "--photos", catalog, "--quiet")
    assert code == 2 and "--tune-label" in err

    # Shoppers' photos of the same products (their labels match the catalog's) join the fit; the index follows.
    shots = tmp_path / "shots"
    make_photo(shots / "a.jpg", PALETTE["red"], size=(50, 50))
    make_photo(shots / "b.jpg", PALETTE["blue"], size=(50, 50))
    (shots / "products.csv").write_text("id,path,kind\ns1,a.jpg,warm\ns2,b.jpg,cool\n")
    code, out, err = run(capsys, "index", catalog, "--index", index, "--tune-label", "kind", "--photos", shots,
                         "--force", "--json", "--quiet")
    assert code == 0, err
    with EdgeStore(index) as store:
        record = store.read_meta()["tuning"]
    assert record["hash"] != meta["tuning"]["hash"] and json.loads(out)["reprojected"] == 8



def test_a_sync_handed_to_an_app_says_everything_on_the_indexers_stream(catalog, tmp_path, capsys):
    """An app running an indexer's sync writes the indexer's bars and notes to the stream it was handed (the
    indexer's terminal), never to its own console: the tuning line, the re-projection."""
    from io import StringIO

    from shoplens.index.live import LiveIndex
    from shoplens.tune.fit import fit_for_index

    index = tmp_path / "idx"
    assert run(capsys, "index", catalog, "--index", index, "--encoder", "tiny", "--quiet")[0] == 0
    store = EdgeStore(index)
    live = LiveIndex(index, store, fit_tuning=fit_for_index)
    try:
        terminal = StringIO()
        summary = live.sync({"catalog": catalog.resolve(), "layout": "auto", "encoder": "tiny", "batch_size": 4,
                             "text": "auto", "tune_label": "kind",
                             "force": True}, progress=terminal)
        said = terminal.getvalue()
        console = capsys.readouterr()
        assert summary.reprojected == 8  # the 8 stored vectors, re-projected to the new tuning
        assert re.search(r"Tuned to kind: held-out (P@10|R@1) \d\.\d\d → \d\.\d\d", said), said
        assert "re-projecting" in said
        assert console.out == "" and console.err == ""
    finally:
        live.close()
        store.close()

# --- killed midway ---

KILLED_RUN = """
import sys, time
sys.path[:0] = [{repo!r}, {tests!r}]
import shoplens.index.tuning as tuneindex
from shoplens.store.edge import EdgeStore

tuneindex.BATCH = 4
set_vectors = EdgeStore.set_vectors

def slow(self, ids, vectors):  # the vectors of a batch are written, their bookkeeping field not yet
    set_vectors(self, ids, vectors)
    print("batch", flush=True)
    time.sleep(0.25)

EdgeStore.set_vectors = slow
from shoplens.cli import index_main
index_main(sys.argv[1:])
"""


def many_products(root: Path, n: int = 120) -> Path:
    colours = list(PALETTE.values())
    rows = []
    for i in range(n):
        rel = f"photos/p{i:03d}.jpg"
        make_photo(root / rel, tuple(min(255, c + 3 * (i // 8)) for c in colours[i % 8]), size=(16 + i % 9, 16))
        rows.append(f"p{i:03d},{rel},kind{i % 3}")
    (root / "products.csv").write_text("id,path,kind\n" + "\n".join(rows) + "\n")
    return root


def test_killed_midway_search_refuses_then_the_next_run_completes(tmp_path, capsys):
    catalog = many_products(tmp_path / "catalog")
    index = tmp_path / "idx"
    assert run(capsys, "index", catalog, "--index", index, "--encoder", "tiny", "--quiet")[0] == 0
    with EdgeStore(index) as store:
        before = snapshot(store)
    tuning = hand_tuning(np.random.default_rng(1).normal(size=(48, 6)).astype(np.float32),
                         encoder=create_encoder("tiny"))
    tuning.save(tmp_path / "t.npz")

    script = tmp_path / "killed.py"
    script.write_text(KILLED_RUN.format(repo=str(REPO), tests=str(REPO / "tests")))
    proc = subprocess.Popen([sys.executable, str(script), str(catalog), "--index", str(index), "--tuning",
                             str(tmp_path / "t.npz"), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=os.environ.copy())
    batches = {"n": 0}

    def watch():
        for line in proc.stdout:
            batches["n"] += line.startswith(b"batch")

    threading.Thread(target=watch, daemon=True).start()
    deadline = time.time() + 60
    while batches["n"] < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"the re-projection ended before it could be killed: {proc.returncode}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    with EdgeStore(index) as store:
        meta = store.read_meta()
        marks = [h.payload.get(TUNING_FIELD) for h in store.iterate()]
    assert meta["tuning_pending"]["to"]["hash"] == tuning.hash
    assert 0 < marks.count(tuning.hash) < len(marks), "the kill did not land midway"
    fix = f"python indexer.py {catalog.resolve()} --index {index}"
    with pytest.raises(StoreError, match=re.escape(f"finish it with: {fix}")):
        Searcher.open(index)
    code, _, err = run(capsys, "search", catalog / "photos" / "p000.jpg", "--index", index)
    assert code == 2 and "half-way through re-projecting" in err
    code, out, _ = run(capsys, "info", "--index", index)
    assert "tuning:   half-way through re-projecting" in out
    with pytest.raises(StoreError, match="half-way"):
        evaluate(None, "kind", index=index)
    from shoplens.web.serve import create

    page = create(index)  # the app serves a page that says what to run, and searches nothing
    try:
        assert page.searcher is None
        # Visitors read the command with placeholders for the server's folders (issue 19), the log has the real one.
        shown = "python indexer.py CATALOG_DIR --index INDEX_DIR"
        assert any(shown in str(c.get("props", {}).get("value", "")) for c in page.demo.config["components"])
        assert str(index) not in json.dumps(page.demo.config)
    finally:
        page.close()

    code, out, err = run(capsys, "index", catalog, "--index", index, "--quiet")  # no flag: finishes the change
    assert code == 0, err
    assert "added 0" in out and "unchanged 120" in out
    with EdgeStore(index) as store:
        after = snapshot(store)
        meta = store.read_meta()
    assert "tuning_pending" not in meta and meta["tuning"]["hash"] == tuning.hash
    assert set(after) == set(before)
    w = tuning.arrays["w"].astype(np.float64)
    for pid, (product, payload, vector) in after.items():
        assert product == before[pid][0] and payload == {**before[pid][1], TUNING_FIELD: tuning.hash}
        np.testing.assert_allclose(vector, tuned_by_hand(before[pid][2].astype(np.float64), w, 48), atol=1e-5)
    hits = Searcher.open(index).search_image(catalog / "photos" / "p005.jpg", k=1, crop="off").hits
    assert hits[0].product_id == "p005"


def test_killed_midway_then_rolled_back(tmp_path, capsys):
    """A pending change can also be undone: --no-tuning brings every vector back to its raw one."""
    catalog = many_products(tmp_path / "catalog", 40)
    index = tmp_path / "idx"
    assert run(capsys, "index", catalog, "--index", index, "--encoder", "tiny", "--quiet")[0] == 0
    with EdgeStore(index) as store:
        before = snapshot(store)
        tuning = hand_tuning(np.random.default_rng(2).normal(size=(48, 6)).astype(np.float32),
                             encoder=create_encoder("tiny"))
        interrupted_change(store, tuning, 3)  # half a change, as a kill leaves it
        assert store.read_meta()["tuning_pending"]["to"]["hash"] == tuning.hash
    code, out, err = run(capsys, "index", catalog, "--index", index, "--no-tuning", "--quiet")
    assert code == 0, err
    with EdgeStore(index) as store:
        after = snapshot(store)
        meta = store.read_meta()
    assert "tuning_pending" not in meta and "tuning" not in meta and not list(index.glob("tuning-*"))
    for pid, (product, payload, vector) in after.items():
        assert payload == before[pid][1]
        np.testing.assert_allclose(vector, before[pid][2], atol=1e-6)


# --- the app ---


def test_the_app_says_which_tuning_is_in_use(catalog, tmp_path, capsys):
    from gradio_client import Client

    from shoplens.web.serve import create, launch
    from test_app import free_port

    index = tmp_path / "idx"
    tuning = hand_tuning(np.random.default_rng(3).normal(size=(48, 4)).astype(np.float32),
                         encoder=create_encoder("tiny"))
    tuning.save(tmp_path / "t.npz")
    assert run(capsys, "index", catalog, "--index", index, "--tuning", tmp_path / "t.npz", "--quiet")[0] == 0
    app = create(index)
    try:
        url = launch(app, host="127.0.0.1", port=free_port(), block=False, quiet=True)
        client = Client(url, download_files=False, verbose=False, analytics_enabled=False)
        texts = [c.get("props", {}).get("value") for c in client.config["components"]
                 if c.get("props", {}).get("elem_id") == "tuning"]
        assert texts == ["Tuned to kind: held-out P@10 0.50 → 0.75"]
        from gradio_client import handle_file

        results = client.predict(photo=handle_file(str(catalog / "photos" / "b2.jpg")), k=3, api_name="/search")[2]
        assert results["results"][0]["id"] == "b2" and TUNING_FIELD not in results["results"][0]["metadata"]
    finally:
        app.close()


# --- the text bridge follows the image vectors ---


def test_the_text_bridge_is_fitted_again_on_the_reprojected_vectors(tmp_path):
    from shoplens.index.text import BRIDGE_ALPHA, BRIDGE_FILE, TextIndexer
    from shoplens.text.bridge import fit_bridge, load_bridge

    root = tmp_path / "catalog"
    colours = list(PALETTE.items())
    rows = []
    for i in range(60):  # above MIN_BRIDGE_PAIRS, so a bridge is fitted
        name, rgb = colours[i % len(colours)]
        make_photo(root / f"photos/p{i}.jpg", tuple(min(255, c + i) for c in rgb))
        rows.append(f"p{i},photos/p{i}.jpg,{name} item number {i},kind{i % 3}")
    (root / "products.csv").write_text("id,path,title,kind\n" + "\n".join(rows) + "\n")
    tiny = create_encoder("tiny")
    with EdgeStore(tmp_path / "idx") as store:
        sync(root, store, tiny, text=TextIndexer())
        first = load_bridge(store.artifact_path(BRIDGE_FILE))
        tuning = hand_tuning(np.random.default_rng(4).normal(size=(48, 6)).astype(np.float32), encoder=tiny)
        sync(root, store, tiny, tuning=tuning)
        hits = list(store.iterate(with_vector=True))
        bridge = load_bridge(store.artifact_path(BRIDGE_FILE))
        meta = store.read_meta()
    expected = fit_bridge(np.stack([h.text_vector for h in hits]), np.stack([h.vector for h in hits]),
                          alpha=BRIDGE_ALPHA)
    assert meta["text"]["bridge"]["pairs"] == 60 and bridge.fitted_on == 60
    np.testing.assert_allclose(bridge.weights, expected.weights, atol=1e-4)
    assert not np.allclose(bridge.weights, first.weights, atol=1e-3)  # the old one mapped into the raw space


def test_the_page_names_the_tuning_on_either_store(catalog, store):
    from shoplens.web.shop import Shop
    from shoplens.web.ui import build

    sync(catalog, store, ColourEncoder())
    untuned = build(Shop(Searcher(store, store.read_meta(), _encoder=ColourEncoder())))
    assert not [c for c in untuned.config["components"] if c.get("props", {}).get("elem_id") == "tuning"]
    sync(catalog, store, ColourEncoder(), tuning=hand_tuning())
    page = build(Shop(Searcher(store, store.read_meta(), _encoder=ColourEncoder())))
    assert [c["props"]["value"] for c in page.config["components"] if c.get("props", {}).get("elem_id") == "tuning"] \
        == ["Tuned to kind: held-out P@10 0.50 → 0.75"]


def test_the_indexer_leaves_every_backbone_vector_in_the_cache_for_tune(catalog, tmp_path):
    from shoplens.tune import tune_catalog

    enc = CountingColour()
    with EdgeStore(tmp_path / "idx") as store:
        sync(catalog, store, enc, tuning=hand_tuning())  # stored vectors are tuned; the cache keeps the raw ones
    assert enc.encoded == 8
    tune_catalog(read_catalog(catalog), "kind", encoder=enc)
    assert enc.encoded == 8, "tune encoded photos the indexer had already encoded"


def interrupted_change(store, tuning, after_batches: int) -> None:
    """A change of tuning stopped as a kill would stop it: after some batches, between a batch's vectors and
    its marks."""
    from shoplens.index.tuning import change_tuning

    calls = {"n": 0}
    real = store.set_field

    def stop(ids, key, value):
        if len(ids) == 4:  # a batch's marks (clearing marks goes in bigger steps)
            calls["n"] += 1
            if calls["n"] > after_batches:
                raise KeyboardInterrupt
        real(ids, key, value)

    store.set_field = stop
    try:
        with pytest.raises(KeyboardInterrupt):
            change_tuning(store, store.read_meta(), create_encoder("tiny"), tuning, batch=4)
    finally:
        del store.set_field


def test_two_interrupted_changes_then_a_resume_leave_no_stale_vector(tmp_path, capsys):
    catalog = many_products(tmp_path / "catalog", 40)
    index = tmp_path / "idx"
    assert run(capsys, "index", catalog, "--index", index, "--encoder", "tiny", "--quiet")[0] == 0
    rng = np.random.default_rng(5)
    tiny = create_encoder("tiny")
    t1, t2 = (hand_tuning(rng.normal(size=(48, 6)).astype(np.float32), encoder=tiny, kind=k) for k in ("one", "two"))
    with EdgeStore(index) as store:
        raw = {h.id: h.vector.astype(np.float64) for h in store.iterate(with_vector=True)}
        sync(catalog, store, tiny, tuning=t1)  # complete
        interrupted_change(store, t2, 3)  # towards t2: 12 points done, 4 with t2 vectors but t1 marks
        interrupted_change(store, t1, 2)  # back towards t1, interrupted too
        assert store.read_meta()["tuning_pending"]["to"]["hash"] == t1.hash
        sync(catalog, store, tiny)  # resumes the change under way (to t1)
        meta = store.read_meta()
        after = {h.id: (h.payload, h.vector) for h in store.iterate(with_vector=True)}
    assert "tuning_pending" not in meta and meta["tuning"]["hash"] == t1.hash
    w = t1.arrays["w"].astype(np.float64)
    for pid, (payload, vector) in after.items():
        assert payload[TUNING_FIELD] == t1.hash
        np.testing.assert_allclose(vector, tuned_by_hand(raw[pid], w, 48), atol=1e-5)
