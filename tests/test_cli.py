"""The command line, end to end: index, search, info; errors are one clear line and exit 2."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time

import pytest

from conftest import PALETTE, REPO, make_photo
from shoplens.cli import main, parse_filters


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def tiny_index(folder_catalog, tmp_path, capsys):
    index = tmp_path / "index"
    code, out, _ = run(capsys, "index", folder_catalog, "--index", index, "--encoder", "tiny", "--json", "--quiet")
    assert code == 0 and json.loads(out)["added"] == 8
    return index


def test_index_summary_line_and_json(folder_catalog, tmp_path, capsys):
    index = tmp_path / "i"
    code, out, _ = run(capsys, "index", folder_catalog, "--index", index, "--encoder", "tiny", "--quiet")
    assert code == 0 and out.startswith("added 8, updated 0, unchanged 0, removed 0, failed 0, ")
    code, out, _ = run(capsys, "index", folder_catalog, "--index", index, "--json", "--quiet")
    summary = json.loads(out)
    assert (summary["added"], summary["unchanged"], summary["failed"]) == (0, 8, 0)  # encoder taken from the index


def test_search_ranks_the_same_colour_first(tiny_index, tmp_path, capsys):
    query = make_photo(tmp_path / "q.png", PALETTE["green"], size=(100, 80), fmt="PNG")
    code, out, _ = run(capsys, "search", query, "--index", tiny_index, "-k", "3", "--json")
    assert code == 0
    results = json.loads(out)["results"]
    assert [r["rank"] for r in results] == [1, 2, 3]
    assert results[0]["id"] == "green" and results[0]["category"] == "greens"
    assert results[0]["score"] > results[1]["score"]
    code, out, _ = run(capsys, "search", query, "--index", tiny_index, "--filter", "category=blues", "--json")
    assert {r["category"] for r in json.loads(out)["results"]} == {"blues"}


def test_info_json(tiny_index, folder_catalog, capsys):
    code, out, _ = run(capsys, "info", "--index", tiny_index, "--json")
    info = json.loads(out)
    assert code == 0 and info["count"] == 8 and info["encoder"] == "tiny" and info["dim"] == 48
    assert info["filter_fields"] == ["category"]
    assert info["filter_values"]["category"] == {"blues": 2, "greens": 2, "other": 2, "reds": 2}
    assert info["catalog_root"] == str(folder_catalog.resolve())


@pytest.mark.parametrize("argv, message", [
    (["search", "{tmp}/missing.jpg", "--index", "{index}"], "no such file"),
    (["search", "{tmp}/notes.jpg", "--index", "{index}"], "not an image"),
    (["search", "{tmp}/q.jpg", "--index", "{tmp}/empty"], "no index at"),
    (["search", "{tmp}/q.jpg", "--index", "{index}", "--encoder", "efficientnet-lite0"], "was built with encoder 'tiny'"),
    (["search", "{tmp}/q.jpg", "--index", "{index}", "--filter", "category"], "FIELD=VALUE"),
    (["index", "{tmp}/nowhere", "--index", "{index}"], "no such catalog"),
    (["index", "{tmp}", "--index", "{index}", "--encoder", "nope"], "known encoders"),
    (["info", "--index", "{tmp}/empty"], "no index at"),
    (["info", "--qdrant-url", "http://127.0.0.1:9"], "127.0.0.1:9"),
    (["search", "--index", "{index}"], "give a query photo, --text WORDS, or both"),
    (["search", "--text", "red", "--index", "{index}", "--mode", "bridge"], "no text-to-image bridge"),
    (["search", "--text", " ", "--index", "{index}"], "the text query is empty"),
    (["search", "{tmp}/q.jpg", "--index", "{index}", "-k", "0"], "-k must be at least 1"),
    (["search", "--text", "not red", "--index", "{index}"], "only says what to leave out"),
    (["evaluate", "{tmp}/cat", "--label", ",", "--encoder", "tiny"], "--label names no field"),
    (["evaluate", "{tmp}/cat", "--label", "category", "--text-queries", "nosuchfield", "--encoder", "tiny"],
     "no held-out product has a value for nosuchfield"),
])
def test_user_errors_are_one_line(argv, message, tiny_index, tmp_path, capsys):
    make_photo(tmp_path / "q.jpg", PALETTE["red"])
    for i, name in enumerate(PALETTE):  # a small labelled catalog for evaluate
        make_photo(tmp_path / "cat" / ("warm" if i % 2 else "cool") / f"{name}.jpg", PALETTE[name])
    (tmp_path / "notes.jpg").write_text("hello")
    code, out, err = run(capsys, *[a.format(tmp=tmp_path, index=tiny_index) for a in argv])
    assert code == 2 and message in err, err
    assert err.startswith("error: ") and "Traceback" not in err


def test_internal_errors_show_their_traceback(tmp_path):
    # A ValueError that no one raised for the user is a bug: it must not pass for a user error (one line, exit 2).
    code = ("import sys\nfrom shoplens import cli\n"
            "def broken():\n    raise ValueError('an internal bug')\n"
            "cli.list_encoders = broken\nsys.exit(cli.main(['encoders']))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 1 and "Traceback" in done.stderr and "ValueError: an internal bug" in done.stderr
    # The same mistake raised on purpose for the user is one line and exit 2.
    code = code.replace("raise ValueError('an internal bug')",
                        "from shoplens.errors import UserError\n    raise UserError('a user mistake')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2 and done.stderr == "error: a user mistake\n"


def test_parse_filters():
    assert parse_filters(["colour=Red", "colour=Blue", "gender = Men"]) == {"colour": ["Red", "Blue"], "gender": ["Men"]}
    assert parse_filters(None) == {}


def test_download_fails_fast_offline(tmp_path):
    started = time.time()
    done = subprocess.run([sys.executable, str(REPO / "indexer.py"), str(tmp_path / "fashion-images"), "--download",
                           "--index", str(tmp_path / "i")], capture_output=True, text=True, timeout=60, cwd=REPO)
    if done.returncode == 0:
        pytest.skip("this machine reaches Kaggle")
    assert time.time() - started < 30
    assert done.returncode == 2 and "www.kaggle.com" in done.stderr and "Traceback" not in done.stderr


def test_default_encoder_end_to_end_on_real_photos(datasets_dir, tmp_path, capsys):
    data = datasets_dir / "fashion-images" / "data"
    rows = list(csv.DictReader(open(data / "fashion.csv")))[:40:2]
    manifest = tmp_path / "sample.csv"
    with open(manifest, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["path", "ProductId", "ProductTitle", "ProductType"])
        for r in rows:
            folder = f"{r['Category']}_{r['Gender']}"
            out.writerow([data / folder / "Images" / "images_with_product_ids" / r["Image"], r["ProductId"],
                          r["ProductTitle"], r["ProductType"]])
    index = tmp_path / "index"
    code, out, err = run(capsys, "index", manifest, "--index", index, "--json", "--quiet")
    assert code == 0 and json.loads(out)["added"] == 20, err
    target = rows[7]
    photo = data / f"{target['Category']}_{target['Gender']}" / "Images" / "images_with_product_ids" / target["Image"]
    code, out, _ = run(capsys, "search", photo, "--index", index, "-k", "3", "--json")
    top = json.loads(out)["results"][0]
    assert top["id"] == target["ProductId"] and top["similarity"] == pytest.approx(1.0, abs=1e-3)
    assert top["score"] >= top["similarity"]  # + 0.2 x the colour similarity of the photo to itself


# --- --crop: search with the product found in the photo ---

@pytest.fixture(scope="module")
def handmade(tmp_path_factory):
    """A tiny-encoder index of the hand-made products, and a shopper's photo with three of them."""
    from handmade import MULTI, MULTI_SEED, build_index, shopper_photo

    base = tmp_path_factory.mktemp("cli-crop")
    photo, truth = shopper_photo({"purple-box": (240, 60)}, seed=13)
    photo.save(base / "one.jpg", quality=92)
    multi, _ = shopper_photo(MULTI, seed=MULTI_SEED)
    multi.save(base / "shelf.jpg", quality=92)
    return build_index(base), base, truth["purple-box"]


def test_search_crop_auto_off_and_all(handmade, capsys):
    from shoplens.localise import Box

    index, base, truth = handmade
    code, out, _ = run(capsys, "search", base / "one.jpg", "--index", index, "-k", "3", "--crop", "auto", "--json")
    found = json.loads(out)
    assert code == 0 and found["crop"] == "auto" and found["results"][0]["id"] == "purple-box"
    assert Box(**found["box"]).iou(truth) >= 0.5
    code, out, _ = run(capsys, "search", base / "one.jpg", "--index", index, "-k", "3", "--crop", "off", "--json")
    assert json.loads(out)["box"] is None
    code, out, _ = run(capsys, "search", base / "shelf.jpg", "--index", index, "-k", "2", "--crop", "all", "--json")
    items = json.loads(out)["items"]
    assert items[0]["box"] is None and len(items) >= 4  # the whole photo, then each product found
    assert {"red-bag", "blue-box", "green-shoe"} <= {i["results"][0]["id"] for i in items[1:]}
    code, out, _ = run(capsys, "search", base / "shelf.jpg", "--index", index, "-k", "1", "--crop", "all")
    assert out.startswith("searched: whole photo\n") and "item 1: box " in out and "item 3: box " in out


def test_crop_errors_are_one_line(handmade, tmp_path, capsys):
    index, base, _ = handmade
    with pytest.raises(SystemExit) as stop:
        main(["search", str(base / "one.jpg"), "--index", str(index), "--crop", "best"])
    assert stop.value.code == 2 and "invalid choice: 'best'" in capsys.readouterr().err
    code, _, err = run(capsys, "evaluate", base / "catalog", "--label", "category", "--encoder", "tiny", "--crop", "auto")
    assert code == 2 and err.startswith("error: --crop auto crops query photos")


def test_evaluate_crop_auto_scores_cropped_queries(handmade, tmp_path, capsys):
    from handmade import PRODUCTS, shopper_photo

    index, base, _ = handmade
    for i, name in enumerate(PRODUCTS):  # one shopper's photo per product, in folders named like the catalog's
        photo, _ = shopper_photo({name: (60 + 50 * i, 40 + 40 * i)}, seed=30 + i)
        (tmp_path / "shoppers" / name.split("-")[1]).mkdir(parents=True, exist_ok=True)
        photo.save(tmp_path / "shoppers" / name.split("-")[1] / f"{name}.jpg", quality=92)
    figures = {}
    for crop in ("off", "auto"):
        code, out, _ = run(capsys, "evaluate", base / "catalog", "--queries", tmp_path / "shoppers", "--label", "title",
                           "--encoder", "tiny", "--crop", crop, "--no-cache", "--quiet", "--json", tmp_path / f"{crop}.json")
        figures[crop] = json.loads((tmp_path / f"{crop}.json").read_text())
        assert code == 0 and figures[crop]["crop"] == crop
    assert figures["auto"]["encoder_options"]["crop"] == "auto"
    assert figures["auto"]["recall@1"] == 1.0 > figures["off"]["recall@1"]


def test_search_by_words_and_photo_plus_words(tmp_path, capsys):
    from conftest import make_shop_catalog

    catalog = make_shop_catalog(tmp_path / "shop")
    index = tmp_path / "index"
    assert run(capsys, "index", catalog, "--index", index, "--encoder", "tiny", "--quiet")[0] == 0
    code, out, _ = run(capsys, "info", "--index", index)
    assert code == 0 and "text:     BM25 + all-minilm-l6-v2 (384-d)" in out and "colours:  seen in each photo" in out
    code, out, _ = run(capsys, "search", "--text", "yellow bag", "--index", index, "-k", "2", "--json")
    body = json.loads(out)
    assert code == 0 and body["query_text"] == "yellow bag" and body["mode"] == "fused"
    assert [r["category"] for r in body["results"]] == ["Bags", "Bags"]
    # Words alone: a fused rank score, and no image similarity.
    assert [r["similarity"] for r in body["results"]] == [None, None]
    assert body["results"][0]["score"] >= body["results"][1]["score"] > 0
    assert {r["title"] for r in body["results"]} == {"Yellow bag for men", "Yellow bag for women"}
    code, out, _ = run(capsys, "search", "--text", "shoe", "--mode", "keyword", "--index", index, "-k", "3", "--json")
    assert code == 0 and {r["category"] for r in json.loads(out)["results"]} == {"Shoes"}
    photo = catalog / "photos" / "tops" / "trm.jpg"
    code, out, _ = run(capsys, "search", photo, "--text", "green", "--index", index, "-k", "2", "--json")
    body = json.loads(out)
    assert code == 0 and body["words"] == "green" and all(r["title"].startswith("Green") for r in body["results"])
    # A photo refined by a colour: matches score their image similarity + 2 (COLOUR_MATCH), which is also given.
    assert all(r["score"] == pytest.approx(r["similarity"] + 2.0, abs=1e-3) for r in body["results"])


def test_index_options_are_checked_and_travel_as_plain_values(tmp_path, monkeypatch):
    from pathlib import Path

    from shoplens.errors import UserError
    from shoplens.index.indexer import IndexOptions

    with pytest.raises(UserError, match="--batch-size must be at least 1"):
        IndexOptions("shop", batch_size=0)
    with pytest.raises(UserError, match="give --tune-label FIELD too"):
        IndexOptions("shop", photos=["shots"])
    monkeypatch.chdir(tmp_path)
    options = IndexOptions("shop", tune_label="kind", photos=["shots"], tuning=None, prune=True)
    message = options.as_message()
    # Paths made absolute against the indexer's working directory, so an app elsewhere reads the same folders.
    assert message["catalog"] == str(tmp_path / "shop") and message["photos"] == [str(tmp_path / "shots")]
    assert message["tuning"] is None and message["prune"] is True and message["batch_size"] == 32
    assert IndexOptions.from_message(message) == IndexOptions(tmp_path / "shop", tune_label="kind",
                                                              photos=[tmp_path / "shots"], prune=True)
    assert IndexOptions.from_message({"catalog": "/c"}).catalog == Path("/c")  # the rest default
    with pytest.raises(UserError, match="unknown indexing options colour"):
        IndexOptions.from_message({"catalog": "/c", "colour": "red"})
