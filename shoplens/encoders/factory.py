"""Encoders created by name, together with their preprocessing (as open_clip does)."""

from __future__ import annotations

from shoplens.encoders.base import Encoder
from shoplens.encoders.registry import DEFAULT_ENCODER, ENCODERS


def list_encoders() -> dict[str, str]:
    """Known encoder names (built in and plugins) and a line about each."""
    _load_builtin()
    return ENCODERS.describe()


def create_encoder(name: str = DEFAULT_ENCODER, **options) -> Encoder:
    """Create the encoder registered as `name` (weights still load lazily); UnknownEncoderError names the known.

    `onnx:DIR` is a model folder, not a registered name (shoplens/encoders/onnxmodel.py)."""
    if name.startswith("onnx:"):
        from shoplens.encoders.onnxmodel import create

        return create(name, **options)
    _load_builtin()
    return ENCODERS.create(name, **options)


def _load_builtin() -> None:
    """The built-in encoders, the $SHOPLENS_PLUGINS modules and the `shoplens.encoders` entry points."""
    # Importing registers them; the modules import no heavy library at top level.
    from shoplens.encoders import dinov2, efficientnet, imagebind, onnxmodel, tiny  # noqa: F401

    ENCODERS.load()
