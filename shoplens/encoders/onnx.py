"""What the ONNX-served encoders share: a lazily built onnxruntime session and square-fit preprocessing."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from PIL import Image

from shoplens.encoders.base import Encoder
from shoplens.encoders.preprocess import fit_square, to_tensor


def cpu_session(path: Path, threads: int | None = None):
    """An onnxruntime CPU session over an ONNX file (`threads`: intra-op threads, None = onnxruntime's choice)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OnnxEncoder(Encoder):
    """Subclasses set size, fit, mean and std, and say where the ONNX file lives and how to make it."""

    size: int = 224
    fit: str = "crop"
    mean: tuple = (0.5, 0.5, 0.5)
    std: tuple = (0.5, 0.5, 0.5)

    def __init__(self, threads: int | None = None):
        self.threads = threads
        self._session = None
        self._lock = threading.Lock()

    def onnx_path(self) -> Path:
        """Where the model's ONNX file is cached."""
        raise NotImplementedError

    def build_onnx(self, path: Path) -> None:
        """Write the ONNX file to `path` (first use only)."""
        raise NotImplementedError

    def session(self):
        """The onnxruntime session, building the ONNX file on first use."""
        with self._lock:
            if self._session is None:
                path = self.onnx_path()
                if not path.exists():
                    self.build_onnx(path)
                self._session = cpu_session(path, self.threads)
            return self._session

    def preprocess(self, img: Image.Image) -> np.ndarray:
        """One photo -> CHW float32 input."""
        return to_tensor(fit_square(img, self.size, self.fit), self.mean, self.std)
