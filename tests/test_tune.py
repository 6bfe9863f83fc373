"""Tuning: fitting on hand-made sets, the file format, and refusing what cannot be used."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from shoplens.catalog import Product
from shoplens.encoders import l2_normalise
from shoplens.tune import TuningError, check_tuning, list_methods, load_tuning, tune_catalog
from shoplens.tune.fit import fit_tuning, near_duplicate_groups, normalise_title

META = {"encoder": "toy", "encoder_version": "1", "dim": 8, "encoder_options": {}}


def toy_set(n_per_class=60, seed=0):
    """Two classes told apart only by a small offset on axis 0; axes 1..7 carry large shared noise.

    Raw cosine neighbours are dominated by the noise, so classes mix; a discriminant projection
    keeps axis 0 and drops the noise, so each class should collapse onto its own side.
    """
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 1.0, size=(2 * n_per_class, 8))
    noise[:, 0] = rng.normal(0, 0.02, size=2 * n_per_class)
    labels = ["a"] * n_per_class + ["b"] * n_per_class
    noise[:n_per_class, 0] += 0.5
    noise[n_per_class:, 0] -= 0.5
    return l2_normalise(noise), labels


def nearest_other(vectors):
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    return sims.argmax(axis=1)


def test_separable_toy_set_becomes_perfectly_separated():
    x, labels = toy_set()
    y = np.array(labels)
    # The raw vectors are not separated by cosine (else the test would prove nothing).
    assert (y[nearest_other(x)] != y).sum() > 0
    tuning = fit_tuning(x, labels, ["kind"], META, "lda")
    t = tuning.apply(x)
    assert t.shape == (120, 8) and t.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    # Two classes -> one discriminant direction: every tuned vector is +e0 or -e0, padded with zeros.
    assert tuning.out_dim == 1
    assert np.all(t[:, 1:] == 0)
    sims = t @ t.T
    same = y[:, None] == y[None, :]
    assert sims[same].min() > sims[~same].max()
    assert sims[~same].max() == pytest.approx(-1.0, abs=1e-5)


def test_apply_is_batch_independent_and_pure():
    x, labels = toy_set()
    tuning = fit_tuning(x, labels, ["kind"], META, "lda")
    whole = tuning.apply(x)
    one_by_one = np.stack([tuning.apply(row[None, :])[0] for row in x])
    np.testing.assert_array_equal(whole, one_by_one)
    np.testing.assert_array_equal(tuning.apply(x[0]), whole[0])


def test_round_trip_same_hash_same_outputs(tmp_path):
    x, labels = toy_set()
    tuning = fit_tuning(x, labels, ["kind"], META, "lda")
    tuning.figures = {"metric": "precision@10", "before": {"precision@10": 0.5}, "after": {"precision@10": 1.0}}
    path = tmp_path / "t.npz"
    tuning.save(path)
    again = load_tuning(path)
    assert again.hash == tuning.hash and len(again.hash) == 64
    assert again.kind == "lda" and again.label == ["kind"] and again.dim == 8
    assert again.figures == tuning.figures
    np.testing.assert_array_equal(again.apply(x), tuning.apply(x))
    assert again.describe() == {"kind": "lda", "hash": tuning.hash, "label": ["kind"], "figures": tuning.figures,
                                "encoder": META}
    # The file holds plain arrays only: readable without pickle.
    with np.load(path, allow_pickle=False) as data:
        assert json.loads(bytes(data["header"]).decode())["format"] == "shoplens-tuning/1"
    assert [p.name for p in tmp_path.iterdir()] == ["t.npz"]  # no temporary file left behind


def test_hash_changes_with_parameters_not_with_figures():
    x, labels = toy_set()
    a = fit_tuning(x, labels, ["kind"], META, "lda")
    b = fit_tuning(x, labels, ["kind"], META, "lda")
    assert a.hash == b.hash
    b.figures = {"metric": "precision@10"}
    assert a.hash == b.hash
    d = fit_tuning(x[10:], labels[10:], ["kind"], META, "lda")
    assert d.hash != a.hash


def test_missing_and_damaged_files_are_clear_errors(tmp_path):
    x, labels = toy_set()
    tuning = fit_tuning(x, labels, ["kind"], META, "lda")
    with pytest.raises(TuningError, match="no tuning file at"):
        load_tuning(tmp_path / "nope.npz")
    path = tmp_path / "t.npz"
    tuning.save(path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(TuningError, match="damaged or truncated"):
        load_tuning(truncated)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip at all")
    with pytest.raises(TuningError, match="damaged or truncated"):
        load_tuning(garbage)
    # Valid zip, tampered weights: the recorded hash no longer matches.
    tampered = tmp_path / "tampered.npz"
    with np.load(path, allow_pickle=False) as d:
        arrays = {k: d[k] for k in d.files}
    arrays["a_w"] = arrays["a_w"] * 2
    np.savez(tampered, **arrays)
    with pytest.raises(TuningError, match="do not match its recorded hash"):
        load_tuning(tampered)
    other = tmp_path / "other.npz"
    header = json.loads(bytes(arrays["header"]).decode()) | {"format": "shoplens-tuning/99"}
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez(other, **arrays)
    with pytest.raises(TuningError, match="format 'shoplens-tuning/99'"):
        load_tuning(other)
    npy = tmp_path / "plain.npz"
    np.savez(npy, x=np.zeros(3))
    with pytest.raises(TuningError):
        load_tuning(npy)


def test_another_encoder_is_refused():
    x, labels = toy_set()
    tuning = fit_tuning(x, labels, ["kind"], META, "lda")
    check_tuning(tuning, dict(META))  # the same encoder passes
    with pytest.raises(TuningError, match="fitted on encoder toy"):
        check_tuning(tuning, META | {"encoder": "dinov2-small", "dim": 384})
    with pytest.raises(TuningError, match="fitted on encoder toy"):
        check_tuning(tuning, META | {"encoder_version": "2"})
    with pytest.raises(TuningError, match="encoder options"):
        check_tuning(tuning, META | {"encoder_options": {"fit": "pad"}})
    with pytest.raises(TuningError, match="vectors of size 8"):
        tuning.apply(np.zeros((2, 5), np.float32))


def test_unknown_method_lists_known_ones():
    x, labels = toy_set()
    with pytest.raises(TuningError, match="unknown tuning method 'nope'; known: .*lda"):
        fit_tuning(x, labels, ["kind"], META, "nope")
    assert "lda" in list_methods()


def test_near_duplicate_groups_join_titles_hashes_and_photos_of_one_product():
    def p(title, label=""):
        return Product(title or "x", None, "", {"title": title})

    products = [p("Nike Blue  T-Shirt"), p("nike blue t shirt"), p("Other"), p(""), p("Lone"), p("")]
    hashes = ["h1", "h2", "h3", "h3", "h5", "h6"]
    labels = ["a", "a", "b", "c", "d", "d"]
    # rows 0-4 catalog, row 5 an extra photo labelled d: the one catalog product with d is row 4.
    groups = near_duplicate_groups(products, hashes, labels, n_catalog=5)
    assert groups[0] == groups[1]  # same normalised title
    assert groups[2] == groups[3]  # same photo hash
    assert groups[5] == groups[4]  # the extra photo joins its product
    assert len({groups[0], groups[2], groups[4]}) == 3
    assert normalise_title(" Nike  Blue T-Shirt ") == "nike blue t shirt"


def make_toy_catalog(root, n_per_class=12, seed=0):
    """Photos whose label is a small corner patch (red or green) on a large random background."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(2 * n_per_class):
        label = "red" if i < n_per_class else "green"
        img = np.zeros((16, 16, 3), np.uint8)
        img[:] = rng.integers(0, 256, size=3)
        img[8:, 8:] = rng.integers(0, 256, size=3)
        img[:4, :4] = (255, 0, 0) if label == "red" else (0, 255, 0)
        name = f"p{i:02d}.png"
        Image.fromarray(img).save(root / name)
        rows.append({"path": name, "title": f"item {i}", "patch": label})
    with open(root / "catalog.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["path", "title", "patch"])
        writer.writeheader()
        writer.writerows(rows)
    return root / "catalog.csv"


def test_tune_catalog_on_a_handmade_catalog(tmp_path):
    manifest = make_toy_catalog(tmp_path / "shop")
    result = tune_catalog(manifest, "patch", encoder="tiny", use_cache=False, holdout=0.5, seed=1)
    t = result.tuning
    assert t.kind == "lda-sqrt" and t.label == ["patch"] and t.encoder["encoder"] == "tiny" and t.dim == 48
    assert result.figures["metric"] == "precision@10"
    assert result.figures["after"]["precision@1"] == 1.0
    assert result.improved
    assert result.info["catalog_products"] == 24 and result.info["labelled"] == 24


def test_tune_catalog_rejects_bad_labels_and_photos(tmp_path):
    manifest = make_toy_catalog(tmp_path / "shop")
    with pytest.raises(TuningError, match="no product .* has a colour label; fields there: patch, title"):
        tune_catalog(manifest, "colour", encoder="tiny", use_cache=False)
    (tmp_path / "shop" / "one.csv").write_text("path,patch\np00.png,red\np01.png,red\n")
    with pytest.raises(TuningError, match="every labelled product has the same patch"):
        tune_catalog(tmp_path / "shop" / "one.csv", "patch", encoder="tiny", use_cache=False)
    # Photos whose label values are not the catalog's: one clear error.
    other = tmp_path / "photos"
    other.mkdir()
    Image.new("RGB", (16, 16), (9, 9, 9)).save(other / "x.png")
    (other / "photos.csv").write_text("path,patch\nx.png,blue\n")
    with pytest.raises(TuningError, match="no photo in .* has a patch value the catalog has"):
        tune_catalog(manifest, "patch", photos=[other / "photos.csv"], encoder="tiny", use_cache=False)


# --- the command line -------------------------------------------------------------------------------------


def run_cli(argv, capsys):
    from shoplens.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_tune_command_writes_a_tuning_that_evaluate_applies(tmp_path, capsys):
    manifest = make_toy_catalog(tmp_path / "shop")
    out = tmp_path / "t" / "shop.npz"
    code, stdout, err = run_cli(["tune", manifest, "--label", "patch", "--encoder", "tiny", "--out", out,
                                 "--json", tmp_path / "t.json", "--no-cache", "--quiet", "--holdout", "0.5"], capsys)
    assert code == 0, err
    assert "tuning lda-sqrt on patch: 24 catalog products, 24 labelled, 2 values" in stdout
    assert "held-out (" in stdout and f"wrote {out}" in stdout
    tuning = load_tuning(out)
    report = json.loads((tmp_path / "t.json").read_text())
    assert report["written"] is True and report["hash"] == tuning.hash and report["kind"] == "lda-sqrt"
    assert report["figures"]["after"]["precision@1"] == 1.0

    code, stdout, err = run_cli(["evaluate", manifest, "--label", "patch", "--encoder", "tiny", "--tuning", out,
                                 "--no-cache", "--quiet", "--json", tmp_path / "e.json"], capsys)
    assert code == 0, err
    figures = json.loads((tmp_path / "e.json").read_text())
    # Fitted on these very products, so every one finds its own kind first (a plumbing check, not a figure).
    assert figures["precision@1"] == 1.0 and figures["tuning"]["hash"] == tuning.hash

    code, _out, err = run_cli(["evaluate", manifest, "--label", "patch", "--encoder", "efficientnet-lite0",
                               "--tuning", out, "--quiet"], capsys)
    assert code == 2 and err.startswith("error: this tuning was fitted on encoder tiny") and err.count("\n") == 1


def test_tune_guard_writes_nothing_when_untuned_is_as_good(tmp_path, capsys):
    # Red photos (full red, no blue) and blue ones (the mirror), each half of a photo with its own green level
    # from a 4 x 3 grid. On tiny's centred 4x4 thumbnails any two photos of one class have cosine >= 1/3 and
    # any two of different classes <= -1/3, so every held-out photo's 10 nearest of the 11 others of its class
    # are all of its class: untuned precision@10 is already 1.0 and a tuning cannot beat it. No two photos
    # are near-duplicates (largest cosine 0.968 < 0.99), so none is left out of the ranking.
    root = tmp_path / "flat"
    root.mkdir()
    lines = ["path,kind"]
    for i in range(24):
        a, b, red = (0, 85, 170, 255)[i % 4], (0, 128, 255)[(i // 4) % 3], i < 12
        img = Image.new("RGB", (16, 16), (255, a, 0) if red else (0, a, 255))
        img.paste((255, b, 0) if red else (0, b, 255), (0, 8, 16, 16))
        img.save(root / f"{i}.png")
        lines.append(f"{i}.png,{'red' if red else 'blue'}")
    (root / "c.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "t.npz"
    code, stdout, err = run_cli(["tune", root / "c.csv", "--label", "kind", "--encoder", "tiny", "--out", out,
                                 "--no-cache", "--quiet", "--holdout", "0.5"], capsys)
    assert code == 1 and not out.exists()
    assert "not written: the tuned held-out precision@10 (1.000) is not better than the untuned (1.000)" in err
    code, stdout, err = run_cli(["tune", root / "c.csv", "--label", "kind", "--encoder", "tiny", "--out", out,
                                 "--no-cache", "--quiet", "--holdout", "0.5", "--force"], capsys)
    assert code == 0 and out.exists() and "written because of --force" in err


def test_tune_command_bad_input_is_one_line(tmp_path, capsys):
    manifest = make_toy_catalog(tmp_path / "shop")
    out = tmp_path / "t.npz"
    for extra, message in [(["--label", "nope"], "error: no product in"),
                           (["--label", "patch", "--method", "magic"], "error: unknown tuning method 'magic'; known:")]:
        code, _out, err = run_cli(["tune", manifest, *extra, "--encoder", "tiny", "--out", out, "--no-cache",
                                   "--quiet"], capsys)
        assert code == 2 and err.startswith(message) and err.count("\n") == 1, err
        assert not out.exists()
    code, _out, err = run_cli(["evaluate", manifest, "--label", "patch", "--tuning", tmp_path / "missing.npz",
                               "--encoder", "tiny", "--quiet"], capsys)
    assert code == 2 and err.startswith("error: no tuning file at")


def test_evaluate_tune_folds_keeps_plain_keys_and_never_queries_a_fitted_photo(tmp_path, capsys):
    manifest = make_toy_catalog(tmp_path / "shop", n_per_class=15)
    code, stdout, err = run_cli(["evaluate", manifest, "--label", "patch", "--encoder", "tiny", "--tune-folds", "3",
                                 "--no-cache", "--quiet", "--json", tmp_path / "cv.json"], capsys)
    assert code == 0, err
    figures = json.loads((tmp_path / "cv.json").read_text())
    for key in ("precision@1", "precision@5", "precision@10", "recall@1", "recall@5", "recall@10"):
        assert isinstance(figures[key], float)
    assert figures["queries"] == 30  # every product scored exactly once, by a tuning fitted without it
    assert figures["tuning"]["folds"] == 3 and figures["untuned"]["queries"] == 30
    assert figures["precision@1"] == 1.0 and figures["untuned"]["precision@1"] < 1.0
    assert "untuned precision@10" in stdout


def test_folds_keep_groups_together_and_identity_labels_hold_out_photos_only():
    from shoplens.tune.crossval import assign_folds
    from shoplens.tune.fit import LabelledSet, holdout_groups

    groups = np.array([0, 0, 1, 2, 2, 2, 3, 4, 5, 5])
    folds = assign_folds(groups, 3, seed=4)
    for g in np.unique(groups):
        assert len(set(folds[groups == g])) == 1
    assert set(folds.tolist()) == {0, 1, 2}
    with pytest.raises(TuningError, match="cannot make 7 folds"):
        assign_folds(groups, 7)
    # One catalog product per label (a product id), plus photos of them: products always fitted (-1),
    # photos held out by their own hash, duplicates together.
    prods = [Product(str(i), None, "", {"title": f"p{i}"}) for i in range(5)]
    data = LabelledSet(prods, ["a", "b", "x", "y", "x"], np.zeros((5, 4), np.float32), ["A", "B", "A", "B", "A"],
                       2, np.zeros(5, np.int64))
    held = holdout_groups(data)
    assert held[0] == held[1] == -1
    assert held[2] == held[4] != held[3] and held[2] >= 0


@pytest.mark.parametrize("method", ["lda", "lda-sqrt", "lda+untuned"])
def test_numpy_methods_separate_the_toy_set_and_round_trip(method, tmp_path):
    x, labels = toy_set()
    y = np.array(labels)
    tuning = fit_tuning(x, labels, ["kind"], META, method)
    t = tuning.apply(x)
    assert (y[nearest_other(t)] == y).all()
    tuning.save(tmp_path / "t.npz")
    again = load_tuning(tmp_path / "t.npz")
    assert again.hash == tuning.hash and again.kind == method
    np.testing.assert_array_equal(again.apply(x), t)


def test_torch_head_is_seeded_and_deterministic():
    pytest.importorskip("torch")
    x, labels = toy_set()
    y = np.array(labels)
    options = {"epochs": 20, "dim": 4, "dropout": 0.0, "batch_size": 16, "lr": 1e-2}
    a = fit_tuning(x, labels, ["kind"], META, "proxy-linear", seed=3, options=options)
    b = fit_tuning(x, labels, ["kind"], META, "proxy-linear", seed=3, options=options)
    assert a.hash == b.hash
    c = fit_tuning(x, labels, ["kind"], META, "proxy-linear", seed=4, options=options)
    assert c.hash != a.hash
    t = a.apply(x)
    assert a.out_dim == 4 and np.all(t[:, 4:] == 0)
    assert (y[nearest_other(t)] == y).mean() > (y[nearest_other(x)] == y).mean()
