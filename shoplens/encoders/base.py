"""The one interface every encoder implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
from PIL import Image

from shoplens.errors import UserError


class EncoderError(UserError, RuntimeError):
    """An encoder that cannot run here; the message says what to install or download."""


class Encoder(ABC):
    """Turns product photos into L2-normalised vectors of size `dim`.

    Subclasses set `name`, `version` and `dim` and implement `embed_batch`. Weights
    load on first use, never in `__init__`, so creating an encoder is cheap.
    """

    name: str = ""
    version: str = "1"
    dim: int = 0
    # Decode JPEGs at a reduced scale no smaller than this (see images.load_image).
    draft_size: int | None = None
    # Constructor options that change the vectors; recorded with the index to rebuild the same encoder.
    options: dict = {}

    @abstractmethod
    def embed_batch(self, images: list[Image.Image]) -> np.ndarray:
        """Return a float32 array of shape (len(images), dim), each row of unit length."""

    def embed(self, image: Image.Image) -> np.ndarray:
        """One image's vector."""
        return self.embed_batch([image])[0]

    @property
    def supports_text(self) -> bool:
        return False

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """Vectors for texts in the image space, for encoders that have a text tower."""
        raise EncoderError(f"encoder {self.name!r} cannot embed text")

    def describe(self) -> dict:
        """What the index records about this encoder."""
        return {"encoder": self.name, "encoder_version": self.version, "dim": self.dim,
                "encoder_options": dict(self.options)}


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
