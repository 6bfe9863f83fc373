"""Hand-made shoppers' photos: products pasted onto a busy background at known places.

The background is a dense clutter of small muted shapes (a shelf, a street); the products are
coloured cut-outs, so where each one lies is known exactly and a localiser can be checked against it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from shoplens.localise import Box

# name -> (colour, shape); each a different hue so a colour-only encoder still tells them apart.
PRODUCTS = {"red-bag": ((200, 30, 40), "round"), "blue-box": ((30, 70, 210), "square"),
            "green-shoe": ((30, 150, 60), "wide"), "yellow-bag": ((240, 200, 30), "round"),
            "purple-box": ((130, 50, 160), "square"), "orange-shoe": ((240, 120, 20), "wide")}
SIZES = {"round": (150, 170), "square": (150, 150), "wide": (190, 110)}


def draw_product(name: str) -> Image.Image:
    """The product as an RGBA cut-out: a coloured body with a darker trim and a handle, strap or label."""
    colour, shape = PRODUCTS[name]
    w, h = SIZES[shape]
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    dark = tuple(c // 2 for c in colour)
    if shape == "round":
        d.ellipse((0, 20, w - 1, h - 1), fill=colour, outline=dark, width=6)
        d.arc((w // 4, 0, 3 * w // 4, 60), 180, 360, fill=dark, width=8)
    elif shape == "square":
        d.rectangle((0, 0, w - 1, h - 1), fill=colour, outline=dark, width=6)
        d.rectangle((w // 4, h // 4, 3 * w // 4, h // 2), fill=tuple(min(255, c + 70) for c in colour))
    else:
        d.rounded_rectangle((0, h // 3, w - 1, h - 1), radius=25, fill=colour, outline=dark, width=6)
        d.rectangle((w // 8, 0, w // 2, h // 2), fill=colour, outline=dark, width=6)
    return img


def catalog_photo(name: str, path: Path) -> Path:
    """The shop's own photo of the product: the cut-out centred on white with a plain margin."""
    cut = draw_product(name)
    img = Image.new("RGB", (cut.width + 40, cut.height + 40), (255, 255, 255))
    img.paste(cut, (20, 20), cut)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG", quality=92)
    return path


def busy_background(size=(640, 480), seed: int = 0) -> Image.Image:
    """A dense clutter of 1,500 small muted rectangles and ellipses on grey-brown."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", size, (128, 120, 110))
    d = ImageDraw.Draw(img)
    for _ in range(1500):
        x, y = int(rng.integers(-30, size[0])), int(rng.integers(-30, size[1]))
        w, h = (int(v) for v in rng.integers(6, 36, 2))
        grey = int(rng.integers(70, 180))
        colour = tuple(int(np.clip(grey + rng.integers(-25, 25), 0, 255)) for _ in range(3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)((x, y, x + w, y + h), fill=colour)
    return img


def paste(background: Image.Image, cutout: Image.Image, at: tuple[int, int]) -> Box:
    """Paste a cut-out (RGBA) at `at`; the Box it now fills."""
    background.paste(cutout, at, cutout)
    return Box(at[0], at[1], at[0] + cutout.width, at[1] + cutout.height)


def shopper_photo(placed: dict[str, tuple[int, int]], seed: int = 0,
                  size=(640, 480)) -> tuple[Image.Image, dict[str, Box]]:
    """A busy background with each named product pasted at its place; the photo and the true boxes."""
    img = busy_background(size, seed)
    return img, {name: paste(img, draw_product(name), at) for name, at in placed.items()}


def white_cutout(photo: Path, tolerance: int = 30) -> Image.Image:
    """A catalog photo on white as an RGBA cut-out of its product (near-white pixels made transparent)."""
    rgb = Image.open(photo).convert("RGB")
    arr = np.asarray(rgb, dtype=np.int16)
    alpha = ((255 - arr).max(axis=2) > tolerance).astype(np.uint8) * 255
    ys, xs = np.nonzero(alpha)
    cut = Image.fromarray(np.dstack([np.asarray(rgb), alpha]), "RGBA")
    return cut.crop((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))


def build_index(base: Path) -> Path:
    """A tiny-encoder index of the hand-made products' catalog photos (folders bag/, box/, shoe/) under `base`."""
    from shoplens.catalog import read_catalog
    from shoplens.encoders import create_encoder
    from shoplens.index.sync import sync_catalog
    from shoplens.store import open_store

    for name in PRODUCTS:
        catalog_photo(name, base / "catalog" / name.split("-")[1] / f"{name}.jpg")
    with open_store(base / "index") as store:
        sync_catalog(read_catalog(base / "catalog"), store, create_encoder("tiny"), progress=False)
    return base / "index"


# Three products in one photo, for the multi-item tests of the search, the app and the browser.
MULTI = {"red-bag": (40, 60), "blue-box": (250, 280), "green-shoe": (420, 80)}
MULTI_SEED = 7
