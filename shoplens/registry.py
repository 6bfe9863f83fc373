"""A table of named factories with plugins: the one helper behind encoders, localisers and tuning methods.

Built-in entries register themselves with the `register(name, description)` decorator when their module is
imported (`builtins` imports those modules, on first use). Plugins come two ways:

- an installed distribution's entry point in the registry's group (e.g. `shoplens.encoders`), in its
  pyproject.toml: `[project.entry-points."shoplens.encoders"] my-encoder = "my_pkg.encoder:make"`. The object
  named is loaded on first use; a callable not registered by then is registered under the entry point's name
  (its docstring's first line the description), and a module that calls `register` itself needs nothing more;
- a module named in `$SHOPLENS_PLUGINS` (comma-separated), imported on first use, which calls `register`.

A plugin that cannot be loaded is an error that names it (raised by the registry's error class), never skipped.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from importlib import metadata
from typing import Callable, Generic, TypeVar

from shoplens.errors import UserError

T = TypeVar("T")
PLUGINS_ENV = "SHOPLENS_PLUGINS"


class Registry(Generic[T]):
    """Named factories of one kind (`kind`: "encoder"); `group`: the entry point group of its plugins."""

    def __init__(self, kind: str, group: str, *, error: Callable[[str], Exception] = UserError,
                 builtins: Callable[[], None] | None = None, plural: str | None = None, sort: bool = True,
                 known: str | None = None):
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self.known = known or f"known {self.plural}"  # what the list of names in an unknown name's message says
        self.group = group
        self.error = error
        self.factories: dict[str, Callable[..., T]] = {}
        self.descriptions: dict[str, str] = {}
        self._builtins = builtins
        self._sort = sort  # the known names in messages sorted, or in the order they were registered
        self._builtins_loaded = False
        self._entry_points_seen: tuple | None = None  # sys.path when the entry points were last read

    def register(self, name: str, description: str = ""):
        """Decorator: make `factory(**options)` available as `name`."""
        def wrap(factory: Callable[..., T]) -> Callable[..., T]:
            self.add(name, factory, description)
            return factory
        return wrap

    def add(self, name: str, factory: Callable[..., T], description: str = "") -> None:
        """Register `factory` as `name` (a later registration of the same name replaces it)."""
        self.factories[name] = factory
        self.descriptions[name] = description

    def names(self) -> list[str]:
        """Every known name (built in and plugins)."""
        self.load()
        return sorted(self.factories) if self._sort else list(self.factories)

    def describe(self) -> dict[str, str]:
        """name -> one-line description, for every known name."""
        self.load()
        return {name: self.descriptions[name] for name in self.names()}

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered as `name`; the registry's error, listing the known names, otherwise."""
        self.load()
        try:
            return self.factories[name]
        except KeyError:
            raise self.error(self.unknown(name)) from None

    def unknown(self, name: str) -> str:
        return f"unknown {self.kind} {name!r}; {self.known}: {', '.join(self.names())}"

    def create(self, name: str, **options) -> T:
        """`name`'s factory called with `options`."""
        return self.get(name)(**options)

    def load(self) -> None:
        """Import the built-ins (once), the $SHOPLENS_PLUGINS modules and the group's entry points (again when
        sys.path has changed since: a distribution installed or added meanwhile)."""
        if not self._builtins_loaded and self._builtins is not None:
            self._builtins_loaded = True
            self._builtins()
        for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise self.error(f"cannot import {self.kind} plugin {module!r} from ${PLUGINS_ENV}: {exc}") from None
        seen = tuple(sys.path)
        if self._entry_points_seen != seen:
            self._entry_points_seen = seen
            self._load_entry_points()

    def _load_entry_points(self) -> None:
        for entry in sorted(metadata.entry_points(group=self.group), key=lambda e: e.name):
            try:
                loaded = entry.load()
            except Exception as exc:  # noqa: BLE001 - any failure of third-party code: name the plugin
                raise self.error(f"cannot load {self.kind} plugin {entry.name!r} ({entry.value}, entry point "
                                 f"group {self.group}): {exc}") from None
            if entry.name not in self.factories and callable(loaded) and not inspect.ismodule(loaded):
                doc = (inspect.getdoc(loaded) or "").strip().splitlines()
                self.add(entry.name, loaded, doc[0] if doc else f"plugin {entry.value}")
