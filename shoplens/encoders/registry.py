"""The table of encoders by name: `register` adds a factory to it.

Encoder modules (built in or plugins) import this module to register themselves; creating one by
name is `shoplens.encoders.factory`, which imports the built-in modules. Keeping the table apart
from the factory keeps the imports one-way: encoder modules -> registry <- factory.
"""

from __future__ import annotations

from typing import Callable

from shoplens.encoders.base import Encoder
from shoplens.errors import UserError


FACTORIES: dict[str, Callable[..., Encoder]] = {}
DESCRIPTIONS: dict[str, str] = {}

DEFAULT_ENCODER = "efficientnet-lite0"


class UnknownEncoderError(UserError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def register(name: str, description: str = ""):
    """Decorator: make `factory(**options) -> Encoder` available as `name`."""

    def wrap(factory: Callable[..., Encoder]) -> Callable[..., Encoder]:
        FACTORIES[name] = factory
        DESCRIPTIONS[name] = description
        return factory

    return wrap
