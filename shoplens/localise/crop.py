"""Cropping a shopper's photo to the product before it is encoded: the crop modes and a query-side encoder wrapper."""

from __future__ import annotations

import numpy as np
from PIL import Image

from shoplens.encoders.base import Encoder
from shoplens.localise.base import Box, Localiser, LocaliserError

CROP_MODES = ("auto", "off")
DEFAULT_CROP = "off"  # measured in docs/quality.md ("Cropping shoppers' photos"): see there before changing it
# Context kept around a box, as a fraction of its size: a tight saliency box cuts the product's edges.
MARGIN = 0.1
# Decode JPEGs at this size at least when cropping, so a small box still has pixels to encode.
CROP_DRAFT = 1024


def check_crop(crop: str) -> str:
    """`crop` if it is a known mode, else a clear error."""
    if crop not in CROP_MODES:
        raise LocaliserError(f"crop must be one of {', '.join(CROP_MODES)}, not {crop!r}")
    return crop


def best_crop(image: Image.Image, localiser: Localiser, margin: float = MARGIN) -> tuple[Image.Image, Box | None]:
    """The photo cut to its best box (with `margin`), and that box; the whole photo and None when none is found."""
    boxes = localiser.locate(image)
    if not boxes:
        return image, None
    box = boxes[0].expand(margin, *image.size)
    return box.crop(image), box


class CropEncoder(Encoder):
    """Wraps an encoder: each photo is cut to its best box first. For queries (shoppers' photos), never the catalog.

    It keeps the wrapped encoder's name, version and size, so its vectors search the same index;
    its options add the localiser, so cached embeddings of cropped and whole photos never mix.
    """

    def __init__(self, encoder: Encoder, localiser: Localiser, margin: float = MARGIN):
        self.inner = encoder
        self.localiser = localiser
        self.margin = margin
        self.name, self.version, self.dim = encoder.name, encoder.version, encoder.dim
        self.draft_size = max(encoder.draft_size or 0, CROP_DRAFT)
        self.options = {**encoder.options, "crop": "auto", "localiser": localiser.name,
                        "localiser_version": localiser.version, "margin": margin}

    def embed_batch(self, images: list[Image.Image]) -> np.ndarray:
        """The wrapped encoder's vectors of each photo's best crop (the whole photo where nothing is found)."""
        return self.inner.embed_batch([best_crop(img, self.localiser, self.margin)[0] for img in images])
