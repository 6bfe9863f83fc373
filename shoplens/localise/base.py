"""The one interface every localiser implements, and the box it returns."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass

from PIL import Image

from shoplens.errors import UserError


class LocaliserError(UserError, RuntimeError):
    """A localiser that cannot run here, or a bad request to one; the message says what to do."""


@dataclass(frozen=True)
class Box:
    """A region of a photo in pixel coordinates (x0, y0 inclusive; x1, y1 exclusive), with its score and label."""

    x0: int
    y0: int
    x1: int
    y1: int
    score: float = 1.0
    label: str = "object"

    def __post_init__(self):
        if not (self.x1 > self.x0 and self.y1 > self.y0):
            raise LocaliserError(f"a box needs x1 > x0 and y1 > y0, got ({self.x0}, {self.y0}, {self.x1}, {self.y1})")

    @property
    def area(self) -> int:
        """Pixels inside the box."""
        return (self.x1 - self.x0) * (self.y1 - self.y0)

    def iou(self, other: "Box") -> float:
        """Intersection over union with another box (0 when they do not touch)."""
        w = min(self.x1, other.x1) - max(self.x0, other.x0)
        h = min(self.y1, other.y1) - max(self.y0, other.y0)
        inter = max(w, 0) * max(h, 0)
        return inter / (self.area + other.area - inter) if inter else 0.0

    def expand(self, margin: float, width: int, height: int) -> "Box":
        """The box grown by `margin` of its size on every side, clipped to a width x height photo."""
        dx, dy = round((self.x1 - self.x0) * margin), round((self.y1 - self.y0) * margin)
        return Box(max(0, self.x0 - dx), max(0, self.y0 - dy), min(width, self.x1 + dx), min(height, self.y1 + dy),
                   self.score, self.label)

    def crop(self, image: Image.Image) -> Image.Image:
        """The part of `image` inside the box (clipped to the photo)."""
        w, h = image.size
        box = (max(0, self.x0), max(0, self.y0), min(w, self.x1), min(h, self.y1))
        if box[2] <= box[0] or box[3] <= box[1]:
            raise LocaliserError(f"box {self.as_list()} lies outside the {w}x{h} photo")
        return image.crop(box)

    def as_list(self) -> list[int]:
        """[x0, y0, x1, y1]."""
        return [self.x0, self.y0, self.x1, self.y1]

    def as_dict(self) -> dict:
        """JSON-ready: the corners, the score rounded to 4 places and the label."""
        return {**asdict(self), "score": round(float(self.score), 4)}


class Localiser(ABC):
    """Finds the products in a shopper's photo.

    Subclasses set `name`, `version` and `licence` and implement `locate`. Weights load on
    first use, never in `__init__`, so creating a localiser is cheap.
    """

    name: str = ""
    version: str = "1"
    licence: str = ""

    @abstractmethod
    def locate(self, image: Image.Image) -> list[Box]:
        """Boxes around the products in an RGB photo, best first, in that photo's pixel coordinates."""

    def describe(self) -> dict:
        """What an evaluation records about this localiser."""
        return {"localiser": self.name, "localiser_version": self.version}
