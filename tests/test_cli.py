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
    assert results[0]["id"] == "greens/green" and results[0]["category"] == "greens"
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
])
def test_user_errors_are_one_line(argv, message, tiny_index, tmp_path, capsys):
    make_photo(tmp_path / "q.jpg", PALETTE["red"])
    (tmp_path / "notes.jpg").write_text("hello")
    code, out, err = run(capsys, *[a.format(tmp=tmp_path, index=tiny_index) for a in argv])
    assert code == 2 and message in err, err
    assert err.startswith("error: ") and "Traceback" not in err


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
    assert top["id"] == target["ProductId"] and top["score"] == pytest.approx(1.0, abs=1e-3)
