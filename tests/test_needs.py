"""What a test needs and the machine lacks (the shared datasets, Chromium, the Milvus server) is a skip here and a
failure in CI, where scripts/test.sh sets SHOPLENS_REQUIRE_DATASETS, _BROWSER and _MILVUS."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import needs
from conftest import REPO

REQUIRE = ("SHOPLENS_REQUIRE_DATASETS", "SHOPLENS_REQUIRE_BROWSER", "SHOPLENS_REQUIRE_MILVUS")


def test_absent_skips_unless_required(monkeypatch):
    monkeypatch.delenv("SHOPLENS_REQUIRE_DATASETS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="^no datasets here$"):
        needs.absent("no datasets here", "SHOPLENS_REQUIRE_DATASETS")
    monkeypatch.setenv("SHOPLENS_REQUIRE_DATASETS", "1")
    with pytest.raises(pytest.fail.Exception, match=r"^no datasets here \(SHOPLENS_REQUIRE_DATASETS is set"):
        needs.absent("no datasets here", "SHOPLENS_REQUIRE_DATASETS")


def test_a_missing_browser_fails_where_required(tmp_path, monkeypatch):
    missing = tmp_path / "no-chromium"
    monkeypatch.delenv("SHOPLENS_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs Debian's Chromium at .*no-chromium"):
        needs.browser(missing)
    monkeypatch.setenv("SHOPLENS_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="needs Debian's Chromium at .*no-chromium.*REQUIRE_BROWSER"):
        needs.browser(missing)
    present = tmp_path / "chromium"
    present.touch()
    pytest.importorskip("playwright.sync_api")
    assert needs.browser(present) == present


def test_missing_datasets_fail_a_ci_run(tmp_path):
    """End to end through the datasets_dir fixture: with SHOPLENS_REQUIRE_DATASETS=1 (as scripts/test.sh runs
    pytest) a bogus --datasets path is a failure that names the path, not a skip."""
    bogus = tmp_path / "no-datasets-here"
    env = {**{k: v for k, v in os.environ.items() if k not in REQUIRE and k != "SHOPLENS_DATASETS"},
           "SHOPLENS_REQUIRE_DATASETS": "1"}
    # A dataset test of a light module, in this interpreter, without workers or the cache folder.
    cmd = [sys.executable, "-m", "pytest", "tests/test_catalog.py::test_shared_fashion_images", "--datasets",
           str(bogus), "-p", "no:cacheprovider", "-p", "no:xdist", "-q", "-rsfE"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 error" in done.stdout and "skipped" not in done.stdout, done.stdout
    assert f"shared datasets not found at {bogus}" in done.stdout, done.stdout
    assert "SHOPLENS_REQUIRE_DATASETS is set" in done.stdout, done.stdout
