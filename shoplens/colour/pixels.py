"""A product's colours from its own pixels: named dominant colours and a colour descriptor.

ImageNet features barely see colour, so a photo of a red shoe finds shoes of every colour. At index
time `colour_profile` finds the product (everything but a plain backdrop), names its dominant
colours and builds `colour_vector`, a soft histogram over PALETTE; both go into the payload:

    {"colours": ["navy", "white"], "colour_vector": [0.0, 0.02, ...]}

- `colours`: PALETTE names whose share of the product is at least NAME_SHARE, most dominant first
  (a keyword list: a store filter `colours = red` matches any product with red among them);
- `colour_vector`: len(PALETTE) shares in PALETTE order, summing to 1, rounded to 3 decimals.
  The layout is fixed by COLOUR_VERSION: compare vectors only from the same version.

NumPy, SciPy (the backdrop's flood fill) and PIL; about 1 ms a photo.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image
from scipy import ndimage

from shoplens.colour.palette import PALETTE, named_colour_vector
from shoplens.colour.words import colour_words

# Reference colours in CIE Lab (L 0..100, a green..red, b blue..yellow) as product photos show
# them, several per name because a name covers a region of colours (light and dark blue are both
# "blue"). Set from the median product colour per catalog label on fashion-images and the 9.6k set:
# fabric in studio light is far duller than textbook colours (a "navy" product is near L 25, b -8).
ANCHORS: dict[str, list[tuple[float, float, float]]] = {
    "black": [(12, 0, 0), (26, 0, 0)],
    "grey": [(45, 0, 0), (60, 0, 0), (74, 0, 0)],
    "white": [(88, 0, 0), (97, 0, 0)],
    "beige": [(85, 2, 11), (74, 4, 17), (64, 6, 20)],
    "brown": [(30, 6, 8), (40, 9, 14), (50, 12, 22), (56, 6, 12)],
    "red": [(46, 50, 26), (38, 40, 20), (54, 62, 38)],
    "maroon": [(28, 24, 8), (35, 35, 12)],
    "pink": [(72, 25, 2), (60, 48, 2), (82, 14, 3), (55, 60, -8)],
    "orange": [(66, 35, 50), (72, 22, 38), (58, 45, 55)],
    "yellow": [(83, 0, 50), (80, -3, 32), (88, -6, 72)],
    "olive": [(46, -4, 16), (56, -6, 26), (36, -3, 11)],
    "green": [(60, -40, 25), (72, -25, 30), (45, -28, 12), (82, -18, 10)],
    "teal": [(55, -25, -10), (70, -25, -12), (40, -18, -8)],
    "blue": [(55, 0, -25), (45, 10, -42), (68, -4, -16), (78, -4, -10)],
    "navy": [(26, 3, -12), (32, 5, -20), (22, 2, -9)],
    "purple": [(40, 25, -25), (30, 16, -15), (60, 18, -16), (50, 32, -32)],
}

WORK_SIZE = 64  # longest side, in pixels, of the copy we analyse: colour needs no detail
NAME_SHARE = 0.2  # a colour is named when it covers at least this share of the product
SOFTNESS = 5.0  # Lab distance scale of the soft assignment: near-ties split a pixel between names
L_WEIGHT = 0.6  # shading changes lightness much more than hue, so lightness counts for less
BG_TOLERANCE = 5.0  # Lab distance to the backdrop colour; tight, so an off-white product on white stays product
PLAIN_BORDER = 0.6  # share of border pixels that must match the backdrop for it to count as plain
MIN_PRODUCT = 0.03  # below this share of the picture, "product" is only a print on a product like the backdrop
LABEL_BLEND = 0.5  # share of a catalog colour label in a product's colour_vector (benchmarks/colour.py)


_LINEAR = np.where(np.arange(256) / 255 > 0.04045, ((np.arange(256) / 255 + 0.055) / 1.055) ** 2.4,
                   np.arange(256) / 255 / 12.92)  # sRGB byte -> linear light
_TO_XYZ = (np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
           / np.array([[0.95047], [1.0], [1.08883]])).T  # linear RGB -> XYZ relative to the D65 white


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIE Lab (D65) of uint8 sRGB values, any leading shape."""
    xyz = _LINEAR[np.asarray(rgb, np.uint8)] @ _TO_XYZ
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


@lru_cache(maxsize=1)
def _anchors() -> tuple[np.ndarray, np.ndarray]:
    """(anchor Lab with lightness weighted, anchor-to-PALETTE membership matrix)."""
    lab = np.array([a for n in PALETTE for a in ANCHORS[n]], np.float64) * np.array([L_WEIGHT, 1.0, 1.0])
    member = np.array([[n == p for p in PALETTE] for n in PALETTE for _ in ANCHORS[n]], np.float64)
    return lab, member


def soft_names(lab: np.ndarray) -> np.ndarray:
    """(pixels, len(PALETTE)) soft shares of each Lab pixel: near-ties split a pixel between names."""
    anchors, member = _anchors()
    x = lab * np.array([L_WEIGHT, 1.0, 1.0])
    d2 = (x * x).sum(1)[:, None] - 2 * x @ anchors.T + (anchors * anchors).sum(1)[None, :]
    # Relative to the nearest anchor, so a pixel far from every anchor still counts fully.
    w = np.exp(-(d2 - d2.min(axis=1, keepdims=True)) / (2 * SOFTNESS ** 2)) @ member
    return w / w.sum(axis=1, keepdims=True)


_FOUR = ndimage.generate_binary_structure(2, 1)  # 4-connected: a diagonal gap keeps two regions apart


def _flood(allowed: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Pixels of `allowed` connected to `seeds` (4-connected), however winding the path.

    scipy's binary propagation runs until nothing changes, so a backdrop that snakes between parts
    of a product (straps, a spiral) is reached whole, not only as far as a fixed number of passes goes.
    """
    return ndimage.binary_propagation(seeds & allowed, structure=_FOUR, mask=allowed)


def small_pixels(img: Image.Image) -> np.ndarray:
    """The photo as an RGB uint8 array at most WORK_SIZE pixels on its longest side (area-averaged)."""
    img = img if img.mode == "RGB" else img.convert("RGB")
    scale = WORK_SIZE / max(img.size)
    if scale < 1:
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.BOX)
    return np.asarray(img)


def product_mask(pixels: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """True on product pixels: everything except a plain backdrop reached from the picture's border.

    A backdrop is plain when most border pixels share one colour. Growing it from the border only
    through pixels of that colour keeps a white product on white whole as long as any outline or
    shading separates it; when almost nothing is left (a white tee on white with a small print),
    the product is the backdrop colour itself and the whole picture is used.
    """
    h, w = lab.shape[:2]
    border = np.zeros((h, w), bool)
    border[:2, :] = border[-2:, :] = border[:, :2] = border[:, -2:] = True
    backdrop = np.median(lab[border], axis=0)
    near = np.sqrt(((lab - backdrop) ** 2).sum(-1)) <= BG_TOLERANCE
    if near[border].mean() < PLAIN_BORDER:
        return np.ones((h, w), bool)
    mask = ~_flood(near, border)
    if mask.mean() < MIN_PRODUCT:
        return np.ones((h, w), bool)
    # Edge pixels are blends of product and backdrop (a black shoe gets a grey rim): drop them
    # unless the product is so thin that little would be left.
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return inner if inner.sum() >= 0.5 * mask.sum() else mask


def colour_shares(img: Image.Image) -> np.ndarray:
    """Share of the product covered by each PALETTE colour (sums to 1), product pixels only."""
    return pixel_shares(small_pixels(img))


def pixel_shares(pixels: np.ndarray) -> np.ndarray:
    """colour_shares of an (h, w, 3) uint8 array already reduced by `small_pixels`."""
    lab = srgb_to_lab(pixels)
    product = pixels[product_mask(pixels, lab)].astype(np.int32) >> 2
    # Name each distinct colour once (6 bits a channel: a step of 4 is below what an eye sees).
    codes, counts = np.unique((product[:, 0] << 12) | (product[:, 1] << 6) | product[:, 2], return_counts=True)
    rgb = np.stack([codes >> 12, (codes >> 6) & 63, codes & 63], -1) * 4 + 2
    shares = counts @ soft_names(srgb_to_lab(rgb))
    return shares / max(float(shares.sum()), 1e-12)


def names_from_shares(shares: np.ndarray, min_share: float = NAME_SHARE) -> list[str]:
    """PALETTE names with at least `min_share`, most dominant first (always at least the top one)."""
    order = np.argsort(-np.asarray(shares), kind="stable")
    names = [PALETTE[i] for i in order if shares[i] >= min_share]
    return names or [PALETTE[int(order[0])]]


def colour_profile(img: Image.Image, label: str | None = None) -> dict:
    """The payload fields for a product photo: {"colours": [names], "colour_vector": [shares]}.

    `label` is the catalog's own colour for the product ("Navy Blue"), when it has one: it is blended
    half and half into the vector and its names come first, since a shop's label is right more often
    than pixels (measured in docs/quality.md: type + colour P@10 0.365 -> 0.399 for photo queries).
    A query photo has no label: its vector is the pixels' alone.
    """
    shares = colour_shares(img)
    names = names_from_shares(shares)
    labelled = colour_words(label or "")[0]
    if labelled:
        shares = (1 - LABEL_BLEND) * shares + LABEL_BLEND * named_colour_vector(labelled)
        names = labelled + [n for n in names if n not in labelled]
    return {"colours": names, "colour_vector": [round(float(s), 3) for s in shares]}
