"""The analysts' notebooks run headless on a small sample, and are committed without outputs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
# Small enough that all three run in well under 3 minutes, cold embedding cache included.
SMALL = {"SHOPLENS_NB_SAMPLE": "120", "SHOPLENS_NB_ENCODERS": "efficientnet-lite0,tiny",
         "SHOPLENS_NB_ENCODER": "efficientnet-lite0"}
# In the overview SAMPLE is the number of photos drawn in its grid, not a sample of products: its own default (24)
# draws the grid as well as 120 would, in 1.6 s instead of 8.
OWN = {"01_catalog_overview": {"SHOPLENS_NB_SAMPLE": "24"}}


def test_the_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == ["01_catalog_overview", "02_retrieval_quality", "03_embedding_map",
                                          "04_text_search", "05_tuning"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    clean = all(not c.outputs and c.execution_count is None for c in code)
    assert clean, f"{path.name}: clear the outputs before committing"
    assert "parameters" in code[1].metadata.get("tags", []), "the parameters cell comes right after the setup cell"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_headless(path, datasets_dir, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    for key, value in {**SMALL, **OWN.get(path.stem, {}), "SHOPLENS_DATASETS": str(datasets_dir)}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend is what records figures
    nb = nbformat.read(path, as_version=4)
    started = time.perf_counter()
    # A generous kernel start: a kernel that misses nbclient's 60 s default (a loaded machine, a fresh venv
    # compiling its bytecode) sends jupyter_client into a cleanup that can wait forever on its heartbeat thread.
    client = nbclient.NotebookClient(nb, timeout=120, startup_timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    elapsed = time.perf_counter() - started
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert images >= 1, f"{path.name} drew no figure"
    assert elapsed < 90, f"{path.name} took {elapsed:.0f} s with SHOPLENS_NB_SAMPLE={os.environ['SHOPLENS_NB_SAMPLE']}"
