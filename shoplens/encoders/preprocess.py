"""Image preprocessing with PIL and NumPy only (torchvision does not load with CPU torch here)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from shoplens.errors import UserError

FIT_MODES = ("crop", "pad", "trim")
# How far (0-255, any channel) a pixel may stray from the backdrop colour and still count as margin:
# JPEG noise on a white studio backdrop stays under 10; a pale product edge is well above 24.
TRIM_TOLERANCE = 24
# Longest side (pixels) of the copy whose margins are measured: a margin needs no detail, and a 6000x4000
# photo's int16 arrays would cost ~150 MB each.
TRIM_WORK = 1024
# `crop` resizes the whole photo first only while that picture is at most this many output squares (4:1);
# a longer strip is cut first, so its cost stays that of the output.
CROP_FIRST = 4


def fit_square(img: Image.Image, size: int, fit: str = "crop", resample=Image.BICUBIC) -> Image.Image:
    """Make a size x size picture: `crop` resizes the short side and cuts the centre,
    `pad` resizes the long side and pads with the border colour (keeps the whole product),
    `trim` cuts plain margins off first, then pads (the product fills the picture).

    The work is bounded by the output size, not the photo's shape: `crop` resamples only the centre
    square's source region, so a 1x10000 strip costs a 224 x 224 picture, not a 224 x 2,240,000 one.
    """
    if fit not in FIT_MODES:
        raise UserError(f"fit must be one of {FIT_MODES}, not {fit!r}")
    if fit == "trim":
        img, fit = trim_margins(img), "pad"
    width, height = img.size
    if fit == "crop":
        # Integer arithmetic exactly as torchvision's Resize(size) + CenterCrop(size).
        if width <= height:
            new = (size, int(size * height / width))
        else:
            new = (int(size * width / height), size)
        left, top = int(round((new[0] - size) / 2.0)), int(round((new[1] - size) / 2.0))
        if new[0] * new[1] <= CROP_FIRST * size * size:
            # An ordinary shape: resize then crop, bit for bit the official transform (and the cached vectors).
            return img.resize(new, resample).crop((left, top, left + size, top + size))
        # A long strip: the crop of the resized picture, resampled straight from its source region (the same
        # pixel centres and filter, within one level of rounding), without ever making the resized picture.
        sx, sy = width / new[0], height / new[1]
        box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
        return img.resize((size, size), resample, box=box)
    scale = size / max(width, height)
    new = (max(1, round(width * scale)), max(1, round(height * scale)))
    img = img.resize(new, resample)
    canvas = Image.new("RGB", (size, size), _border_colour(img))
    canvas.paste(img, ((size - new[0]) // 2, (size - new[1]) // 2))
    return canvas


def trim_margins(img: Image.Image, tolerance: int = TRIM_TOLERANCE, keep: float = 0.02) -> Image.Image:
    """The photo without its plain margins (rows and columns of the backdrop colour), plus `keep` of its size.

    A photo with no plain border, or whose content would shrink to almost nothing, comes back unchanged.
    """
    factor = -(-max(img.size) // TRIM_WORK)
    work = img.reduce(factor) if factor > 1 else img
    arr = np.asarray(work.convert("RGB"), dtype=np.int16)
    backdrop = np.asarray(_border_colour(work), dtype=np.int16)
    content = np.abs(arr - backdrop).max(axis=2) > tolerance
    rows, cols = np.flatnonzero(content.any(axis=1)), np.flatnonzero(content.any(axis=0))
    if len(rows) < 2 or len(cols) < 2:
        return img
    height, width = content.shape
    pad_y, pad_x = round(height * keep), round(width * keep)
    box = (max(0, cols[0] - pad_x), max(0, rows[0] - pad_y), min(width, cols[-1] + 1 + pad_x),
           min(height, rows[-1] + 1 + pad_y))
    if (box[2] - box[0]) * (box[3] - box[1]) >= 0.98 * width * height:
        return img  # nothing worth trimming: keep the exact pixels (and vectors) of the untrimmed photo
    full_w, full_h = img.size
    return img.crop((box[0] * factor, box[1] * factor, min(full_w, box[2] * factor), min(full_h, box[3] * factor)))


def _border_colour(img: Image.Image) -> tuple[int, int, int]:
    # Product shots sit on a plain backdrop; padding in its colour hides the seam.
    arr = np.asarray(img.convert("RGB"))
    edge = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    return tuple(int(v) for v in np.median(edge, axis=0))


def to_tensor(img: Image.Image, mean, std) -> np.ndarray:
    """HWC uint8 RGB -> CHW float32, (pixel/255 - mean) / std."""
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return arr.transpose(2, 0, 1)
