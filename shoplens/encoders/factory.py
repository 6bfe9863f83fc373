"""Encoders created by name, together with their preprocessing (as open_clip does)."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

from shoplens.encoders.base import Encoder
from shoplens.errors import UserError
from shoplens.encoders.registry import DEFAULT_ENCODER, DESCRIPTIONS, FACTORIES, UnknownEncoderError


def list_encoders() -> dict[str, str]:
    """Known encoder names and a line about each."""
    _load_builtin()
    return dict(DESCRIPTIONS)


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
    """Create the encoder registered as `name` (weights still load lazily)."""
    _load_builtin()
    try:
        factory = FACTORIES[name]
    except KeyError:
        raise UnknownEncoderError(
            f"unknown encoder {name!r}; known encoders: {', '.join(sorted(FACTORIES))}"
        ) from None
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
    # Importing registers them; the modules import no heavy library at top level.
    from shoplens.encoders import dinov2, efficientnet, ensemble, imagebind, tiny  # noqa: F401

    # Your own encoders: modules named in $SHOPLENS_PLUGINS that call register() when imported.
    for module in filter(None, os.environ.get("SHOPLENS_PLUGINS", "").split(",")):
        try:
            importlib.import_module(module.strip())
        except ImportError as exc:
            raise UnknownEncoderError(f"cannot import encoder plugin {module!r} from $SHOPLENS_PLUGINS: {exc}") from None
