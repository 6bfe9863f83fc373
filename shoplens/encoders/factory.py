"""Encoders created by name, together with their preprocessing (as open_clip does)."""

from __future__ import annotations

import json
from pathlib import Path

from shoplens.encoders.base import Encoder
from shoplens.encoders.registry import DEFAULT_ENCODER, ENCODERS
from shoplens.errors import UserError


def list_encoders() -> dict[str, str]:
    """Known encoder names (built in and plugins) and a line about each."""
    _load_builtin()
    return ENCODERS.describe()


COSTS = Path(__file__).resolve().parent / "costs.json"  # written by `python -m benchmarks.tuning --speed`


def encoder_costs() -> dict[str, dict]:
    """Measured encoding cost per photo by encoder name ({"ms_per_photo", "measured"}), as the benchmark recorded
    it; empty when it has not been run."""
    try:
        data = json.loads(COSTS.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def create_encoder(name: str = DEFAULT_ENCODER, **options) -> Encoder:
    """Create the encoder registered as `name` (weights still load lazily); UnknownEncoderError names the known.

    `onnx:DIR` is a model folder, not a registered name (shoplens/encoders/onnxmodel.py). An option the encoder
    does not take is a UserError."""
    if name.startswith("onnx:"):
        from shoplens.encoders.onnxmodel import create

        factory = lambda **kw: create(name, **kw)  # noqa: E731
    else:
        _load_builtin()
        factory = ENCODERS.get(name)
    try:
        return factory(**options)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        raise UserError(f"encoder {name!r} takes no option {str(exc).rsplit(' ', 1)[-1]} "
                        f"(given: {', '.join(sorted(options))})") from None


def profile_options(args) -> dict:
    """The encoder options a command line gives (--views, --members), without the ones left out."""
    return {key: getattr(args, key) for key in ("views", "members") if getattr(args, key, None)}


def _load_builtin() -> None:
    """The built-in encoders, the $SHOPLENS_PLUGINS modules and the `shoplens.encoders` entry points."""
    # Importing registers them; the modules import no heavy library at top level.
    from shoplens.encoders import dinov2, efficientnet, ensemble, imagebind, onnxmodel, tiny  # noqa: F401

    ENCODERS.load()
