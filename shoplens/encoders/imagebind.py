"""Meta's ImageBind (imagebind_huge), vision and text towers, fp16 on CUDA. Opt-in.

Licence: the ImageBind code and weights are CC BY-NC-SA 4.0 (non-commercial), which is
why it is never the default. Install with `pip install -r requirements-gpu.txt`.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from shoplens.atomic import atomic_write
from shoplens.cache import cache_dir
from shoplens.encoders.base import Encoder, EncoderError, l2_normalise
from shoplens.encoders.preprocess import fit_square, to_tensor
from shoplens.encoders.registry import register

CHECKPOINT_URL = "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"
CHECKPOINT_BYTES = 4_803_584_173
CHECKPOINT_SHA256 = "d6f6c22bedcc90708448d5d2fbb7b2db9c73f505dc89bd0b2e09b23af1b62157"
# Exactly the official load_and_transform_vision_data: Resize(224, bicubic), CenterCrop(224), CLIP stats.
SIZE = 224
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
LICENCE_NOTE = "ImageBind is licensed CC BY-NC-SA 4.0: non-commercial use only."
INSTALL_HINT = "pip install -r requirements-gpu.txt (installs Meta's imagebind package on a CUDA machine)"


def preprocess(img: Image.Image) -> np.ndarray:
    """The official ImageBind vision transform, from a PIL image instead of a file path."""
    return to_tensor(fit_square(img, SIZE, "crop", Image.BICUBIC), MEAN, STD)


def checkpoint_path(path: str | Path | None = None, download: bool = True, timeout: float = 10.0) -> Path:
    """The verified checkpoint: `path`, `$SHOPLENS_IMAGEBIND_CHECKPOINT`, or the cache (downloaded once)."""
    explicit = path or os.environ.get("SHOPLENS_IMAGEBIND_CHECKPOINT")
    target = Path(explicit) if explicit else cache_dir("imagebind") / "imagebind_huge.pth"
    if not target.exists():
        if explicit or not download:
            raise EncoderError(f"ImageBind checkpoint not found at {target}; download {CHECKPOINT_URL} there")
        download_checkpoint(target, timeout=timeout)
    verify_checkpoint(target)
    return target


def download_checkpoint(target: Path, url: str = CHECKPOINT_URL, timeout: float = 10.0) -> Path:
    """Stream the checkpoint to `target` (atomically: an interrupted download leaves no half file), then verify
    it. Fails fast offline."""
    def fetch(tmp: Path) -> None:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            while chunk := response.read(1 << 22):
                out.write(chunk)

    print(f"Downloading the ImageBind checkpoint (4.8 GB) to {target} ...", file=sys.stderr)
    try:
        atomic_write(target, fetch)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise EncoderError(
            f"could not download the ImageBind checkpoint from {url} ({exc}). Without internet, copy the file "
            f"to {target} or pass its path (SHOPLENS_IMAGEBIND_CHECKPOINT)."
        ) from None
    verify_checkpoint(target)
    return target


def verify_checkpoint(path: Path, expected_bytes: int = CHECKPOINT_BYTES, expected_sha256: str = CHECKPOINT_SHA256) -> None:
    """Check size every time and the sha256 once per file version (remembered in the cache)."""
    stat = path.stat()
    if stat.st_size != expected_bytes:
        raise EncoderError(f"{path} is {stat.st_size:,} bytes, not {expected_bytes:,}: an incomplete or wrong "
                           f"ImageBind checkpoint; delete it and download {CHECKPOINT_URL} again")
    marker = cache_dir("imagebind") / f"verified-{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]}"
    stamp = f"{stat.st_size}:{stat.st_mtime_ns}:{expected_sha256}"
    if marker.exists() and marker.read_text() == stamp:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            digest.update(chunk)
    if digest.hexdigest() != expected_sha256:
        raise EncoderError(f"{path}: sha256 {digest.hexdigest()} does not match the official checkpoint")
    marker.write_text(stamp)


class ImageBindEncoder(Encoder):
    """imagebind_huge vision tower (1024-d); its text tower embeds queries into the same space."""

    name = "imagebind"
    version = "huge-1"
    dim = 1024
    draft_size = SIZE

    def __init__(self, checkpoint: str | None = None, device: str = "cuda", fp16: bool | None = None,
                 download: bool = True):
        self.checkpoint = checkpoint
        self.device = device
        self.fp16 = device.startswith("cuda") if fp16 is None else fp16
        self.download = download
        self._model = None
        self._lock = threading.Lock()

    @property
    def supports_text(self) -> bool:
        return True

    def model(self):
        """Build the model and load the checkpoint on first use."""
        with self._lock:
            if self._model is None:
                self._model = self._load()
            return self._model

    def _load(self):
        try:
            import torch
            from imagebind.models import imagebind_model
        except ImportError as exc:
            raise EncoderError(f"the imagebind encoder needs Meta's imagebind package ({exc}); {INSTALL_HINT}") from None
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise EncoderError("the imagebind encoder needs a CUDA GPU and none is visible here; "
                               "use the default efficientnet-lite0 encoder on this machine")
        path = checkpoint_path(self.checkpoint, download=self.download)
        print(LICENCE_NOTE, file=sys.stderr)
        model = imagebind_model.imagebind_huge(pretrained=False)
        model.load_state_dict(torch.load(path, map_location="cpu"))
        model = model.eval().to(self.device)
        return model.half() if self.fp16 else model

    def _run(self, modality: str, tensor):
        import torch

        model = self.model()
        with torch.inference_mode():
            tensor = tensor.to(self.device)
            if self.fp16 and tensor.is_floating_point():
                tensor = tensor.half()
            out = model({modality: tensor})[modality]
        return l2_normalise(out.float().cpu().numpy())

    def embed_batch(self, images: list[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        self.model()  # fail with the clear message before importing imagebind's modules
        import torch
        from imagebind.models.imagebind_model import ModalityType

        return self._run(ModalityType.VISION, torch.from_numpy(np.stack([preprocess(i) for i in images])))

    def embed_text(self, texts: list[str]) -> np.ndarray:
        from imagebind import data
        from imagebind.models.imagebind_model import ModalityType

        self.model()  # fail with the clear message before tokenising
        return self._run(ModalityType.TEXT, data.load_and_transform_text(texts, "cpu"))


@register("imagebind", "Meta ImageBind huge, 1024-d, CUDA fp16; CC BY-NC-SA 4.0, opt-in")
def imagebind(**options) -> ImageBindEncoder:
    return ImageBindEncoder(**options)
