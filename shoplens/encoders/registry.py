"""The table of encoders by name: `register` adds a factory to it (a shoplens.registry.Registry).

Encoder modules (built in or plugins) import this module to register themselves; creating one by
name is `shoplens.encoders.factory`. Keeping the table apart from the factory keeps the imports one-way:
encoder modules -> registry <- factory. Plugins: a module named in $SHOPLENS_PLUGINS, or an installed
distribution's entry point in the group `shoplens.encoders` (see shoplens.registry).
"""

from __future__ import annotations

from typing import Callable

from shoplens.encoders.base import Encoder
from shoplens.errors import UserError
from shoplens.registry import Registry

DEFAULT_ENCODER = "efficientnet-lite0"


class UnknownEncoderError(UserError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


# The built-in encoder modules are imported by shoplens.encoders.factory (they import this module to register
# themselves, so importing them here would make a circle).
ENCODERS: Registry[Encoder] = Registry("encoder", "shoplens.encoders", error=UnknownEncoderError)
FACTORIES: dict[str, Callable[..., Encoder]] = ENCODERS.factories  # the registry's own tables, by their old names
DESCRIPTIONS: dict[str, str] = ENCODERS.descriptions


def register(name: str, description: str = ""):
    """Decorator: make `factory(**options) -> Encoder` available as `name`."""
    return ENCODERS.register(name, description)
