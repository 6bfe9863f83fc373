"""An optional YOLO detector from `ultralytics` (AGPL-3.0): used only when installed and its weights are here.

Licence: ultralytics and its YOLO weights are AGPL-3.0 (or an Ultralytics enterprise licence). A shop
that serves it over a network must offer its source under the AGPL; that is why it is never a
requirement and never picked unless both the package and a weights file are present.

It never downloads: ultralytics fetches missing weights by name from GitHub, so we only ever hand it
the path of a file that exists. Put a detection checkpoint (e.g. yolo11n.pt) at
~/.cache/shoplens/yolo/yolo.pt, or point $SHOPLENS_YOLO_WEIGHTS at one.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path

from PIL import Image

from shoplens.cache import cache_dir
from shoplens.localise.base import Box, Localiser, LocaliserError

LICENCE = "AGPL-3.0 (ultralytics)"
WEIGHTS_ENV = "SHOPLENS_YOLO_WEIGHTS"


def weights_path(weights: str | Path | None = None) -> Path:
    """The checkpoint to load: the argument, else $SHOPLENS_YOLO_WEIGHTS, else the cache's yolo/yolo.pt."""
    raw = weights or os.environ.get(WEIGHTS_ENV)
    return Path(raw).expanduser() if raw else cache_dir("yolo") / "yolo.pt"


def installed() -> bool:
    """Whether the ultralytics package is importable, found without importing it (it pulls torch)."""
    return importlib.util.find_spec("ultralytics") is not None


def available(weights: str | Path | None = None) -> bool:
    """True when ultralytics is installed and the weights file exists."""
    return installed() and weights_path(weights).is_file()


class YoloLocaliser(Localiser):
    """Boxes of the objects a YOLO detection model finds, labelled with its class names, best score first."""

    name = "yolo"
    licence = LICENCE

    def __init__(self, weights: str | Path | None = None, confidence: float = 0.25, max_boxes: int = 4):
        if not 0.0 <= confidence < 1.0:
            raise LocaliserError(f"confidence must be between 0 and 1, not {confidence}")
        if max_boxes < 1:
            raise LocaliserError(f"max_boxes must be at least 1, not {max_boxes}")
        self.weights = weights_path(weights)
        self.confidence = confidence
        self.max_boxes = max_boxes
        self.version = f"1-{self.weights.stem}-c{confidence}"
        self._model = None
        self._lock = threading.Lock()

    def model(self):
        """The ultralytics model, loaded on first use; a clear error when the package or weights are missing."""
        with self._lock:
            if self._model is None:
                if not installed():
                    raise LocaliserError(f"the yolo localiser needs the ultralytics package ({LICENCE}): "
                                         "pip install ultralytics; the default saliency localiser needs nothing more")
                if not self.weights.is_file():
                    raise LocaliserError(f"the yolo localiser needs a weights file at {self.weights} "
                                         f"(or set ${WEIGHTS_ENV}); it never downloads one")
                from ultralytics import YOLO

                self._model = YOLO(str(self.weights))
            return self._model

    def locate(self, image: Image.Image) -> list[Box]:
        """The detector's boxes above `confidence`, clipped to the photo, labelled with class names."""
        model = self.model()
        (result,) = model.predict(image.convert("RGB"), conf=self.confidence, max_det=self.max_boxes, verbose=False)
        names = getattr(result, "names", {}) or {}
        rows = zip(result.boxes.xyxy.tolist(), result.boxes.conf.tolist(), result.boxes.cls.tolist())
        w, h = image.size
        boxes = []
        for (x0, y0, x1, y1), score, cls in rows:
            x0, y0, x1, y1 = max(0, int(x0)), max(0, int(y0)), min(w, round(x1)), min(h, round(y1))
            if x1 > x0 and y1 > y0:
                boxes.append(Box(x0, y0, x1, y1, float(score), str(names.get(int(cls), int(cls)))))
        return sorted(boxes, key=lambda b: -b.score)[:self.max_boxes]
