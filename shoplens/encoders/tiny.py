"""A tiny deterministic encoder: fast, exact, no weights. For tests and smoke runs."""

from __future__ import annotations

import numpy as np
from PIL import Image

from shoplens.encoders.base import Encoder, l2_normalise
from shoplens.encoders.registry import register


class TinyEncoder(Encoder):
    """Downscales the photo to 4x4 RGB and centres it: similar pictures give similar vectors."""

    name = "tiny"
    version = "1"
    dim = 48
    draft_size = 32

    def embed_batch(self, images: list[Image.Image]) -> np.ndarray:
        rows = []
        for img in images:
            small = img.convert("RGB").resize((4, 4), Image.BILINEAR)
            vec = np.asarray(small, dtype=np.float32).reshape(-1) / 255.0
            rows.append(vec - 0.5)
        return l2_normalise(np.stack(rows)) if rows else np.zeros((0, self.dim), np.float32)


@register("tiny", "4x4 colour thumbnail, 48-d; for tests only")
def tiny(**_options) -> TinyEncoder:
    return TinyEncoder()
