"""Decoding and preprocessing cost what the output needs, not what the photo's shape claims (issue 19).

A 121-byte PNG of 1x10000 pixels is tiny on every budget, but crop-mode preprocessing scaled its short side
to 224 first: a 224 x 2,240,000 picture (1.5 GB). Every step here runs under a guard that refuses to make
any picture over a million pixels, so a step that scales by the input's shape fails at once, without
allocating the memory.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PIL import Image

from shoplens.colour.pixels import colour_profile
from shoplens.encoders.preprocess import fit_square, trim_margins
from shoplens.images import PixelBudget, load_image

LIMIT = 1_000_000  # pixels: far above anything a 224 px model input or a 320 px thumbnail needs


@pytest.fixture
def guard(monkeypatch):
    """Refuse any resize to, or new picture of, more than LIMIT pixels (raising before PIL allocates it)."""
    real_resize, real_new = Image.Image.resize, Image.new

    def resize(self, size, *args, **kwargs):
        assert size[0] * size[1] <= LIMIT, f"resize of {self.size} to {size}"
        return real_resize(self, size, *args, **kwargs)

    def new(mode, size, *args, **kwargs):
        assert size[0] * size[1] <= LIMIT, f"new picture of {size}"
        return real_new(mode, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", resize)
    monkeypatch.setattr(Image, "new", new)


def strip(path, size) -> Image.Image:
    Image.fromarray(np.full((size[1], size[0], 3), (200, 30, 30), np.uint8)).save(path, optimize=True)
    return path


@pytest.mark.parametrize("size", [(1, 10000), (20000, 1), (3, 40000)])
def test_a_strip_costs_the_output_size_in_every_step(tmp_path, guard, size):
    path = strip(tmp_path / "strip.png", size)
    assert path.stat().st_size < 1024
    image = load_image(path, draft_size=224)
    for fit in ("crop", "pad", "trim"):
        square = fit_square(image, 224, fit)
        assert square.size == (224, 224)
        if fit == "crop":  # the centre of a one-colour strip, resampled: the strip's colour everywhere
            assert np.abs(np.asarray(square, int) - (200, 30, 30)).max() <= 1
    assert colour_profile(image)["colours"][0] == "red"

    from shoplens.web.thumbs import Thumbnails

    thumb = Thumbnails(tmp_path / "thumbs").get(path, "ab" * 32)
    assert thumb is not None and max(Image.open(thumb).size) == 320


def test_the_real_encoders_preprocessing_is_bounded_and_quick(tmp_path, guard):
    from shoplens.encoders import create_encoder

    encoder = create_encoder("efficientnet-lite0")  # preprocessing only: no weights are loaded
    image = load_image(strip(tmp_path / "strip.png", (1, 10000)), draft_size=encoder.draft_size)
    started = time.perf_counter()
    tensor = encoder.preprocess(image)
    assert tensor.shape == (3, encoder.size, encoder.size)
    assert time.perf_counter() - started < 0.5


def test_crop_first_matches_resize_then_crop():
    # Expected by the torchvision recipe itself (resize the short side, cut the centre), computed here by hand.
    rng = np.random.default_rng(3)
    img = Image.fromarray(rng.integers(0, 255, (1500, 200, 3), dtype=np.uint8))  # 7.5:1, so cut first
    resized = img.resize((224, int(224 * 1500 / 200)), Image.BICUBIC)
    top = int(round((resized.height - 224) / 2.0))
    expected = np.asarray(resized.crop((0, top, 224, top + 224)), int)
    assert np.abs(np.asarray(fit_square(img, 224, "crop"), int) - expected).max() <= 1


def test_trim_finds_the_product_on_a_big_photo_from_a_small_copy():
    photo = Image.new("RGB", (6000, 4000), (255, 255, 255))
    photo.paste((10, 10, 200), (2000, 1000, 4000, 3000))
    trimmed = trim_margins(photo)
    # The product box plus 2 % of the photo's size each side, within the reduction factor's rounding.
    assert abs(trimmed.width - (2000 + 2 * 120)) <= 12 and abs(trimmed.height - (2000 + 2 * 80)) <= 12


def test_catalog_photos_are_kept_small_after_decoding(tmp_path):
    # A PNG has no draft scale: it is decoded whole, then shrunk by a whole factor (short side still >= 224),
    # so the indexer's look-ahead and batch hold small pictures, not 2400x1800 ones.
    Image.new("RGB", (2400, 1800), (20, 120, 60)).save(tmp_path / "big.png")
    assert load_image(tmp_path / "big.png", draft_size=224).size == (300, 225)
    assert load_image(tmp_path / "big.png", draft_size=224, reduce=False).size == (2400, 1800)


def test_the_pixel_budget_bounds_decodes_in_flight():
    budget = PixelBudget(100)
    running, seen, lock = [], [], threading.Lock()

    def decode(pixels):
        with budget.hold(pixels):
            with lock:
                running.append(pixels)
                seen.append(list(running))
            time.sleep(0.02)
            with lock:
                running.remove(pixels)

    threads = [threading.Thread(target=decode, args=(n,)) for n in (60, 60, 30, 30, 500, 10, 40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Together the decodes never pass the budget; one photo bigger than the whole budget still decodes, alone.
    assert all(sum(s) <= 100 or s == [500] for s in seen), seen
    assert any(len(s) > 1 for s in seen) and budget.used == 0
