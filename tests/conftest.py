"""Shared fixtures: a tiny exact encoder, synthetic catalogs, and the shared datasets when present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shoplens.encoders import Encoder, l2_normalise

REPO = Path(__file__).resolve().parent.parent


def pytest_addoption(parser):
    parser.addoption("--datasets", default=None, help="folder holding fashion-images/ etc. (default ../shared/datasets)")


@pytest.fixture(scope="session")
def datasets_dir(request) -> Path:
    """../shared/datasets (or --datasets / $SHOPLENS_DATASETS); skips the test when absent."""
    raw = request.config.getoption("--datasets") or os.environ.get("SHOPLENS_DATASETS")
    path = Path(raw) if raw else REPO.parent / "shared" / "datasets"
    if not path.is_dir():
        pytest.skip(f"shared datasets not found at {path}; pass --datasets or set SHOPLENS_DATASETS")
    return path


class ColourEncoder(Encoder):
    """Fake model: the vector is the image's mean colour, exactly. Fast and predictable."""

    name = "fake-colour"
    version = "1"
    dim = 3

    def embed_batch(self, images):
        if not images:
            return np.zeros((0, 3), np.float32)
        return l2_normalise(np.stack([np.asarray(im.convert("RGB"), np.float32).mean(axis=(0, 1)) + 1.0
                                      for im in images]))


@pytest.fixture
def colour_encoder() -> ColourEncoder:
    return ColourEncoder()


# Distinct colours so the fake encoder ranks them predictably.
PALETTE = {
    "red": (220, 20, 20), "dark-red": (150, 10, 10), "green": (20, 200, 20), "dark-green": (10, 120, 10),
    "blue": (20, 20, 220), "navy": (10, 10, 110), "yellow": (230, 220, 20), "white": (250, 250, 250),
}


def make_photo(path: Path, colour, size=(64, 48), fmt="JPEG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, colour)
    # A small mark so images are not all identical files for the same colour.
    img.putpixel((1, 1), (colour[0] // 2, colour[1] // 2, colour[2] // 2))
    img.save(path, fmt, quality=95)
    return path


@pytest.fixture
def folder_catalog(tmp_path) -> Path:
    """A folder-per-category catalog: reds/, greens/, blues/ and a few extras."""
    root = tmp_path / "catalog"
    groups = {"reds": ["red", "dark-red"], "greens": ["green", "dark-green"], "blues": ["blue", "navy"],
              "other": ["yellow", "white"]}
    for folder, names in groups.items():
        for name in names:
            make_photo(root / folder / f"{name}.jpg", PALETTE[name])
    return root
