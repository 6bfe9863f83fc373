"""A learned bridge from text vectors into the image encoder's space, fitted on the catalog's own products.

Ridge regression in closed form from each product's text vector to its image vector (or to the mean
image vector of its nearest image neighbours, a less noisy target): a 384x384 solve, well under a
second for 10k products on a CPU. A text query is projected and then searched against the image
vectors, so it can find products whose own text is poor or missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shoplens.atomic import atomic_write
from shoplens.encoders.base import l2_normalise
from shoplens.errors import UserError


FORMAT = 1
CHUNK = 2048  # rows per block when finding image neighbours: bounds memory at CHUNK x products floats


class BridgeMismatchError(UserError):
    """A saved bridge was fitted for another text model or image encoder than the one in use."""


@dataclass
class Bridge:
    """y = x @ weights + bias, then L2-normalised; x a text vector, y a vector in the image space."""

    weights: np.ndarray  # (text_dim, image_dim) float32
    bias: np.ndarray  # (image_dim,) float32
    alpha: float
    neighbours: int  # 1: fitted to each product's own image vector; k: to the mean of its k nearest
    fitted_on: int  # how many (text, image) pairs
    text_model: str  # e.g. "all-minilm-l6-v2@1"
    image_encoder: str  # e.g. "efficientnet-lite0@1-crop224"
    version: str = ""  # digest of the index content it was fitted on (shoplens.index.text.content_version)

    def project(self, text_vectors: np.ndarray) -> np.ndarray:
        """(n, text_dim) text vectors -> (n, image_dim) unit vectors to search the image vectors with."""
        x = np.asarray(text_vectors, np.float32).reshape(-1, self.weights.shape[0])
        return l2_normalise(x @ self.weights + self.bias)

    def check(self, text_model: str, image_encoder: str) -> None:
        """Refuse to use this bridge with models other than those it was fitted for."""
        if (text_model, image_encoder) != (self.text_model, self.image_encoder):
            raise BridgeMismatchError(
                f"this text-to-image bridge was fitted for text model {self.text_model!r} and image encoder "
                f"{self.image_encoder!r}, not {text_model!r} and {image_encoder!r}: fit it again after re-indexing")

    def save(self, path: str | Path) -> Path:
        """Write a small .npz (atomically, so a reader never sees half a file)."""
        # The temporary name ends in .npz: np.savez appends it to any name that lacks it.
        return atomic_write(path, lambda tmp: np.savez(
            tmp, format=FORMAT, weights=self.weights.astype(np.float32), bias=self.bias.astype(np.float32),
            alpha=self.alpha, neighbours=self.neighbours, fitted_on=self.fitted_on,
            text_model=self.text_model, image_encoder=self.image_encoder, version=self.version), suffix=".npz")


def load_bridge(path: str | Path, text_model: str | None = None, image_encoder: str | None = None) -> Bridge:
    """Read a bridge saved by `Bridge.save`; with the model names given, refuse a bridge fitted for others."""
    with np.load(Path(path), allow_pickle=False) as data:
        if int(data["format"]) != FORMAT:
            raise BridgeMismatchError(f"{path}: bridge format {int(data['format'])}, this version reads {FORMAT}")
        bridge = Bridge(weights=data["weights"], bias=data["bias"], alpha=float(data["alpha"]),
                        neighbours=int(data["neighbours"]), fitted_on=int(data["fitted_on"]),
                        text_model=str(data["text_model"]), image_encoder=str(data["image_encoder"]),
                        version=str(data["version"]) if "version" in data.files else "")
    if text_model is not None or image_encoder is not None:
        bridge.check(text_model or bridge.text_model, image_encoder or bridge.image_encoder)
    return bridge


def neighbour_means(image_vectors: np.ndarray, k: int) -> np.ndarray:
    """Each row replaced by the mean of its k nearest rows by cosine (itself included), re-normalised.

    k <= 1 returns the rows unchanged (image vectors are already unit length).
    """
    if k <= 1:
        return np.asarray(image_vectors, np.float32)
    y = l2_normalise(image_vectors)
    out = np.empty_like(y)
    for start in range(0, len(y), CHUNK):
        sims = y[start:start + CHUNK] @ y.T
        top = np.argpartition(-sims, min(k, len(y)) - 1, axis=1)[:, :k]
        out[start:start + CHUNK] = y[top].mean(axis=1)
    return l2_normalise(out)


def fit_bridge(text_vectors: np.ndarray, image_vectors: np.ndarray, *, alpha: float = 1.0, neighbours: int = 1,
               text_model: str = "", image_encoder: str = "", version: str = "") -> Bridge:
    """Fit the ridge map from paired rows of `text_vectors` (n, d) and `image_vectors` (n, e).

    Both sides are centred, so the bias is not shrunk: weights = (Xc'Xc + alpha I)^-1 Xc'Yc and
    bias = mean(Y) - mean(X) weights. `neighbours` > 1 fits to neighbourhood means instead.
    """
    x = np.asarray(text_vectors, np.float64)
    if len(x) != len(image_vectors) or len(x) == 0:
        raise ValueError(f"need the same positive number of text and image vectors, got {len(x)} and "
                         f"{len(image_vectors)}")
    y = neighbour_means(np.asarray(image_vectors, np.float32), neighbours).astype(np.float64)
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - x_mean, y - y_mean
    weights = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ yc)
    bias = y_mean - x_mean @ weights
    return Bridge(weights.astype(np.float32), bias.astype(np.float32), float(alpha), int(neighbours), len(x),
                  text_model, image_encoder, version)
