"""The indexer refuses a run that would wipe or duplicate a shop: a changed catalog layout, a prune too large."""

from __future__ import annotations

import pytest

from conftest import make_folder_catalog
from shoplens.cli import index_main
from shoplens.store import open_store, point_id


def _index(capsys, *args):
    code = index_main([str(a) for a in args] + ["--quiet"])
    out = capsys.readouterr()
    return code, out.out, [line for line in out.err.splitlines() if line.strip()]


def _ids(index):
    with open_store(index) as store:
        return set(store.states()), store.read_meta()


@pytest.fixture
def indexed(tmp_path, capsys):
    catalog = make_folder_catalog(tmp_path / "catalog")
    index = tmp_path / "index"
    code, _out, err = _index(capsys, catalog, "--index", index, "--encoder", "tiny")
    assert code == 0, err
    return catalog, index


def test_a_csv_dropped_into_a_folder_catalog_is_refused_until_the_layout_is_given(indexed, capsys):
    """Before: the folder now read as a CSV catalog, every product got another id and was added again (with
    --prune the index was wiped and re-added)."""
    catalog, index = indexed
    before, meta = _ids(index)
    assert meta["layout"] == "folders" and len(before) == 8
    (catalog / "notes.csv").write_text("path,title\nreds/red.jpg,Red\n")
    for extra in ([], ["--prune"]):
        code, _out, err = _index(capsys, catalog, "--index", index, *extra)
        assert code == 2 and len(err) == 1, err
        assert err[0].startswith("error:") and "--layout folders" in err[0] and "'csv'" in err[0], err
        assert _ids(index) == (before, meta)  # nothing changed
    code, out, err = _index(capsys, catalog, "--index", index, "--layout", "folders")
    assert code == 0 and out.startswith("added 0, updated 0, unchanged 8, removed 0"), (out, err)
    # Given on purpose, the other layout is taken (and recorded).
    code, out, err = _index(capsys, catalog, "--index", index, "--layout", "csv")
    assert code == 0 and out.startswith("added 1,"), (out, err)
    assert _ids(index)[1]["layout"] == "csv"


def test_an_index_that_records_no_layout_takes_the_catalogs_without_refusing(indexed, capsys):
    catalog, index = indexed
    with open_store(index) as store:
        meta = store.read_meta()
        del meta["layout"]
        store.write_meta(meta)
    code, out, err = _index(capsys, catalog, "--index", index)
    assert code == 0 and "unchanged 8" in out, (out, err)
    assert _ids(index)[1]["layout"] == "folders"


def test_a_prune_of_more_than_a_fifth_is_refused_unless_forced(indexed, capsys):
    """Before: `--prune` removed whatever photos were missing, all of them included (`mv photos x`)."""
    catalog, index = indexed
    before, meta = _ids(index)
    for name in ("red", "dark-red"):  # 2 of 8: 25 %
        (catalog / "reds" / f"{name}.jpg").unlink()
    code, _out, err = _index(capsys, catalog, "--index", index, "--prune")
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: this sync would remove 2 of the 8 products") and "--force" in err[0], err
    assert "--max-prune" in err[0] and _ids(index) == (before, meta)
    # Without --prune nothing is removed anyway: the run goes through.
    code, out, err = _index(capsys, catalog, "--index", index)
    assert code == 0 and "removed 0" in out, (out, err)
    code, out, err = _index(capsys, catalog, "--index", index, "--prune", "--max-prune", "0.25")
    assert code == 0 and "removed 2" in out, (out, err)
    ids, _meta = _ids(index)
    assert ids == before - {point_id("red"), point_id("dark-red")}


def test_force_prunes_even_an_emptied_catalog_folder(indexed, capsys):
    catalog, index = indexed
    for folder in ("reds", "greens", "blues"):  # 6 of 8 leave, and a prune of 100 % is refused at any limit
        for photo in (catalog / folder).iterdir():
            photo.unlink()
    code, _out, err = _index(capsys, catalog, "--index", index, "--prune", "--max-prune", "1")
    assert code == 0, err  # 75 % is within a limit of 100 %
    for photo in (catalog / "other").iterdir():
        photo.rename(photo.with_name("new-" + photo.name))  # new ids: both old points would go
    code, _out, err = _index(capsys, catalog, "--index", index, "--prune", "--max-prune", "1")
    assert code == 2 and "every product" in err[0], err
    code, out, err = _index(capsys, catalog, "--index", index, "--prune", "--force")
    assert code == 0 and "removed 2" in out, (out, err)


def test_max_prune_is_checked(tmp_path, capsys):
    for args, said in ((["--prune", "--max-prune", "1.5"], "from 0 to 1"), (["--max-prune", "0.5"], "--prune"),
                       (["--force"], "--prune")):
        code, _out, err = _index(capsys, tmp_path, "--index", tmp_path / "i", *args)
        assert code == 2 and said in err[0] and err[0].startswith("error:"), err
