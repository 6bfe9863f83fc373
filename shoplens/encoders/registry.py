"""Encoders registered by name, created together with their preprocessing (as open_clip does)."""

from __future__ import annotations

import importlib
import os
from typing import Callable

from shoplens.encoders.base import Encoder

_FACTORIES: dict[str, Callable[..., Encoder]] = {}
_DESCRIPTIONS: dict[str, str] = {}

DEFAULT_ENCODER = "efficientnet-lite0"


class UnknownEncoderError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def register(name: str, description: str = ""):
    """Decorator: make `factory(**options) -> Encoder` available as `name`."""

    def wrap(factory: Callable[..., Encoder]) -> Callable[..., Encoder]:
        _FACTORIES[name] = factory
        _DESCRIPTIONS[name] = description
        return factory

    return wrap


def list_encoders() -> dict[str, str]:
    """Known encoder names and a line about each."""
    _load_builtin()
    return dict(_DESCRIPTIONS)


def create_encoder(name: str = DEFAULT_ENCODER, **options) -> Encoder:
    """Create the encoder registered as `name` (weights still load lazily)."""
    _load_builtin()
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise UnknownEncoderError(
            f"unknown encoder {name!r}; known encoders: {', '.join(sorted(_FACTORIES))}"
        ) from None
    return factory(**options)


def _load_builtin() -> None:
    # Importing registers them; the modules import no heavy library at top level.
    from shoplens.encoders import dinov2, efficientnet, imagebind, tiny  # noqa: F401

    # Your own encoders: modules named in $SHOPLENS_PLUGINS that call register() when imported.
    for module in filter(None, os.environ.get("SHOPLENS_PLUGINS", "").split(",")):
        try:
            importlib.import_module(module.strip())
        except ImportError as exc:
            raise UnknownEncoderError(f"cannot import encoder plugin {module!r} from $SHOPLENS_PLUGINS: {exc}") from None
