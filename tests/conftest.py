"""Shared fixtures: a tiny exact encoder, synthetic catalogs, and the shared datasets when present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import needs
from needs import absent
from shoplens.encoders import Encoder, l2_normalise
# Fixtures: every store on a real engine, one Milvus server per session, pymilvus' status polls kept short.
from stores import MILVUS_GROUP, make_store, milvus_server, quick_milvus_polls  # noqa: F401

REPO = Path(__file__).resolve().parent.parent

# The exported ONNX models (MiniLM, EfficientNet) of the cache this session started with ($SHOPLENS_CACHE or
# ~/.cache/shoplens). Exporting MiniLM imports PyTorch and traces BERT (about 10 s), so a test that wants a fresh
# cache for its *vectors* links these in rather than exporting again (see fresh_cache).
MODELS = Path(os.environ.get("SHOPLENS_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
              / "shoplens") / "onnx"


def fresh_cache(path: Path) -> Path:
    """An empty shoplens cache at `path` (no embeddings, nothing derived) whose exported models are the shared
    ones (MODELS, exported on first use); for SHOPLENS_CACHE."""
    MODELS.mkdir(parents=True, exist_ok=True)
    path.mkdir(parents=True, exist_ok=True)
    if not (path / "onnx").exists():
        (path / "onnx").symlink_to(MODELS, target_is_directory=True)
    return path


# Debian's Chromium, which the browser tests drive through Playwright (never a downloaded browser).
CHROMIUM = Path("/usr/bin/chromium")


def pytest_addoption(parser):
    parser.addoption("--datasets", default=None, help="folder holding fashion-images/ etc. (default ../shared/datasets)")


# scripts/test.sh runs the tests in parallel workers (pytest-xdist, `--dist loadgroup`; see tests/README.md). A
# worker takes a group of tests at a time: every test on the session's Milvus server is in one group (one server
# starts, not one per worker), and the tests of a module that share a module-scoped fixture are in one group (the
# fixture is made once, not once per worker). The other tests are handed out one at a time.
def _uses_milvus_server(item) -> bool:
    if "milvus_server" in getattr(item, "fixturenames", ()):
        return True
    params = getattr(getattr(item, "callspec", None), "params", {})
    return any(isinstance(value, str) and value == "milvus-server" for value in params.values())


def _uses_module_fixture(item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    return info is not None and any(d.scope == "module" for defs in info.name2fixturedefs.values() for d in defs)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    """Group the tests for the parallel workers (see above); a test with its own xdist_group mark keeps it."""
    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        if _uses_milvus_server(item):
            item.add_marker(pytest.mark.xdist_group(MILVUS_GROUP))
        elif _uses_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


@pytest.fixture(scope="session")
def datasets_dir(request) -> Path:
    """../shared/datasets (or --datasets / $SHOPLENS_DATASETS); skips the test when absent (fails under
    SHOPLENS_REQUIRE_DATASETS)."""
    raw = request.config.getoption("--datasets") or os.environ.get("SHOPLENS_DATASETS")
    path = Path(raw) if raw else REPO.parent / "shared" / "datasets"
    if not path.is_dir():
        absent(f"shared datasets not found at {path}; pass --datasets or set SHOPLENS_DATASETS",
               "SHOPLENS_REQUIRE_DATASETS")
    return path


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium, with Playwright to drive it; skips the test when either is missing (fails under
    SHOPLENS_REQUIRE_BROWSER)."""
    return needs.browser(CHROMIUM)


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


def make_folder_catalog(root: Path) -> Path:
    """A folder-per-category catalog at `root`: reds/, greens/, blues/ and a few extras (8 photos)."""
    groups = {"reds": ["red", "dark-red"], "greens": ["green", "dark-green"], "blues": ["blue", "navy"],
              "other": ["yellow", "white"]}
    for folder, names in groups.items():
        for name in names:
            make_photo(root / folder / f"{name}.jpg", PALETTE[name])
    return root


@pytest.fixture
def folder_catalog(tmp_path) -> Path:
    """A folder-per-category catalog: reds/, greens/, blues/ and a few extras."""
    return make_folder_catalog(tmp_path / "catalog")


# --- web app: a small shop catalog (CSV manifest with metadata) and its tiny-encoder index ---

SHOP_COLOURS = {"Red": (214, 40, 40), "Blue": (40, 80, 200), "Green": (40, 160, 80), "Yellow": (235, 200, 40)}
SHOP_CATEGORIES = {"Tops": "square", "Shoes": "wide", "Bags": "round"}


def make_product_photo(path: Path, colour, shape: str, size=(160, 200)) -> Path:
    """A product-like photo: a coloured shape on a white background (the tiny encoder tells them apart)."""
    from PIL import ImageDraw

    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, (250, 250, 250))
    draw = ImageDraw.Draw(img)
    w, h = size
    box = {"square": (30, 40, w - 30, h - 30), "wide": (10, h // 2, w - 10, h - 30),
           "round": (30, 50, w - 30, h - 40)}[shape]
    (draw.ellipse if shape == "round" else draw.rectangle)(box, fill=colour)
    img.save(path, "JPEG", quality=90)
    return path


def make_shop_catalog(root: Path) -> Path:
    """24 products (3 categories x 4 colours x 2 genders) in a CSV manifest, plus a secret file beside it."""
    import csv

    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for category, shape in SHOP_CATEGORIES.items():
        for colour, rgb in SHOP_COLOURS.items():
            for gender in ("Men", "Women"):
                pid = f"{category[0]}{colour[0]}{gender[0]}".lower()
                tint = rgb if gender == "Men" else tuple(min(255, c + 25) for c in rgb)
                rel = f"photos/{category.lower()}/{pid}.jpg"
                make_product_photo(root / rel, tint, shape)
                rows.append({"id": pid, "path": rel, "title": f"{colour} {category[:-1].lower()} for {gender.lower()}",
                             "category": category, "colour": colour, "gender": gender})
    with open(root / "products.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (root.parent / "secret.txt").write_text("not for the web")
    return root


@pytest.fixture(scope="session")
def shop_index(tmp_path_factory) -> Path:
    """A tiny-encoder Edge index of make_shop_catalog; its catalog is the index's catalog_root."""
    from shoplens.catalog import read_catalog
    from shoplens.encoders import create_encoder
    from shoplens.index.sync import sync_catalog
    from shoplens.index.text import TextIndexer
    from shoplens.store import open_store

    base = tmp_path_factory.mktemp("shop")
    catalog = read_catalog(make_shop_catalog(base / "catalog"))
    with open_store(base / "index") as store:
        sync_catalog(catalog, store, create_encoder("tiny"), text=TextIndexer(), progress=False)
    return base / "index"
