"""Bring your own weights: an image model (and optionally its text tower) exported to ONNX, named `onnx:DIR`.

DIR holds `shoplens-model.json`, which says how to feed the model:

    {"name": "clip-vit-b32", "image": "image.onnx", "size": 224,
     "mean": [0.481, 0.458, 0.408], "std": [0.269, 0.261, 0.276], "fit": "crop",
     "text": "text.onnx", "tokenizer": "tokenizer.json", "max_length": 77, "licence": "MIT"}

`image.onnx` takes one float32 [N, 3, size, size] input (RGB / 255, then (x - mean) / std) and gives one
[N, D] output; `text.onnx` (optional, with a Hugging Face `tokenizers` file) takes int64 `input_ids` [N, L]
(and `attention_mask` when it has that input) and gives [N, D] in the same space. shoplens L2-normalises both.

The encoder's name is `onnx:` + the folder's absolute path, so an index records where the model is and
search rebuilds the same encoder; its version holds the model's name and a digest of the ONNX files, the
tokenizer and the preprocessing, so an index refuses a changed model and the embedding cache keys on it.
Creating one reads the JSON and hashes the files; the models load (and are checked) on first use.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from shoplens.cache import cache_dir
from shoplens.encoders.base import EncoderError, l2_normalise
from shoplens.encoders.onnx import OnnxEncoder
from shoplens.encoders.preprocess import FIT_MODES
from shoplens.encoders.registry import register

PREFIX = "onnx:"
MODEL_FILE = "shoplens-model.json"
# Field -> type; bool is refused where an int or a float is meant (JSON true is not a size).
REQUIRED = {"name": str, "image": str, "size": int, "mean": list, "std": list, "fit": str}
OPTIONAL = {"text": str, "tokenizer": str, "max_length": int, "licence": str}
FIELDS_LINE = ('shoplens-model.json: {"name": str, "image": "image.onnx", "size": int, "mean": [3 floats], '
               '"std": [3 floats], "fit": "crop"|"pad"|"trim"} + optional "text": "text.onnx", '
               '"tokenizer": "tokenizer.json", "max_length": int, "licence": str')
DEFAULT_MAX_LENGTH = 77  # CLIP's context; a model with a fixed input length uses its own
MAX_SIZE = 4096
PROBE_TEXT = "a photo of a product"
# Which (folder, digest, provider) this process has already said it runs: the line is said once, not per encoder.
_ANNOUNCED: set = set()
_ANNOUNCED_LOCK = threading.Lock()


class ModelFolderError(EncoderError):
    """A model folder shoplens cannot use; the message names the file and what is wrong with it."""


@dataclass(frozen=True)
class ModelSpec:
    """What shoplens-model.json says, with the files as absolute paths."""

    folder: Path
    name: str
    image: Path
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    fit: str
    text: Path | None = None
    tokenizer: Path | None = None
    max_length: int | None = None
    licence: str | None = None


def is_onnx_name(name: str | None) -> bool:
    """Whether an encoder name is `onnx:DIR`."""
    return bool(name) and name.startswith(PREFIX)


def canonical_name(name: str) -> str:
    """`onnx:DIR` with DIR made absolute (the name an index records); any other name unchanged."""
    if not is_onnx_name(name):
        return name
    folder = name[len(PREFIX):]
    if not folder.strip():
        raise ModelFolderError("--encoder onnx:DIR needs the folder that holds shoplens-model.json, e.g. "
                               "onnx:models/clip-vit-b32")
    return PREFIX + str(Path(folder).expanduser().resolve())


def read_spec(folder: str | Path) -> ModelSpec:
    """Read and check DIR/shoplens-model.json and that the files it names can be read."""
    folder = Path(folder).expanduser().resolve()
    path = folder / MODEL_FILE
    if not folder.is_dir():
        raise ModelFolderError(f"no model folder at {folder} (--encoder onnx:DIR: a folder with {MODEL_FILE})")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFolderError(f"{path} is missing; a model folder needs it ({FIELDS_LINE})") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelFolderError(f"cannot read {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise ModelFolderError(f"{path} must hold a JSON object ({FIELDS_LINE})")
    for field, kind in {**REQUIRED, **OPTIONAL}.items():
        if field not in raw:
            if field in REQUIRED:
                raise ModelFolderError(f"{path} has no {field!r} field ({FIELDS_LINE})")
            continue
        value = raw[field]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ModelFolderError(f"{path}: {field!r} must be {_kind_name(kind)}, not {json.dumps(value)}")
    name = raw["name"].strip()
    if not name:
        raise ModelFolderError(f"{path}: 'name' is empty")
    size = raw["size"]
    if not 1 <= size <= MAX_SIZE:
        raise ModelFolderError(f"{path}: 'size' must be between 1 and {MAX_SIZE} pixels, not {size}")
    mean, std = _triple(path, "mean", raw["mean"]), _triple(path, "std", raw["std"])
    if min(std) <= 0:
        raise ModelFolderError(f"{path}: every 'std' value must be above 0, not {list(std)}")
    if raw["fit"] not in FIT_MODES:
        raise ModelFolderError(f"{path}: 'fit' must be one of {', '.join(FIT_MODES)}, not {raw['fit']!r}")
    if ("text" in raw) != ("tokenizer" in raw):
        raise ModelFolderError(f"{path}: a text model needs both 'text' (the ONNX file) and 'tokenizer' "
                               "(its tokenizers file)")
    max_length = raw.get("max_length")
    if max_length is not None and max_length < 1:
        raise ModelFolderError(f"{path}: 'max_length' must be at least 1, not {max_length}")
    files = {field: _readable(folder, path, field, raw[field]) for field in ("image", "text", "tokenizer")
             if field in raw}
    return ModelSpec(folder, name, files["image"], size, mean, std, raw["fit"], files.get("text"),
                     files.get("tokenizer"), max_length, raw.get("licence"))


def _kind_name(kind) -> str:
    return {str: "a string", int: "an integer", list: "a list"}[kind]


def _triple(path: Path, field: str, value: list) -> tuple[float, float, float]:
    if (len(value) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            or not all(math.isfinite(v) for v in value)):
        raise ModelFolderError(f"{path}: {field!r} must be 3 numbers (R, G, B), not {json.dumps(value)}")
    return tuple(float(v) for v in value)


def _readable(folder: Path, path: Path, field: str, name: str) -> Path:
    target = (folder / name).resolve()
    if not target.is_file():
        raise ModelFolderError(f"{target} is missing (named by {field!r} in {path})")
    try:
        with open(target, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise ModelFolderError(f"cannot read {target}: {exc}") from None
    return target


def file_digest(path: Path) -> str:
    """sha256 of a file, remembered in the cache by path, size and modification time (a CLIP file is 350 MB)."""
    stat = path.stat()
    marker = cache_dir("onnx-digests") / hashlib.sha1(str(path).encode()).hexdigest()[:16]
    stamp = f"{stat.st_size}:{stat.st_mtime_ns}:"
    try:
        known = marker.read_text()
        if known.startswith(stamp):
            return known[len(stamp):]
    except OSError:
        pass
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    try:
        marker.write_text(stamp + digest.hexdigest())
    except OSError:
        pass  # a read-only cache only costs hashing again next time
    return digest.hexdigest()


def model_digest(spec: ModelSpec, fit: str) -> str:
    """What the vectors depend on: the files' bytes and the preprocessing."""
    parts = {"size": spec.size, "mean": spec.mean, "std": spec.std, "fit": fit, "max_length": spec.max_length,
             **{field: file_digest(p) for field, p in
                (("image", spec.image), ("text", spec.text), ("tokenizer", spec.tokenizer)) if p is not None}}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def session_providers() -> list[str]:
    """CUDA first when onnxruntime-gpu offers it (onnxruntime falls back to CPU without a GPU), else CPU."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def open_session(path: Path, threads: int | None = None):
    """An onnxruntime session over a model file, or ModelFolderError saying why it cannot be one."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), opts, providers=session_providers())
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own classes for a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFolderError(f"{path} is not an ONNX model onnxruntime can load: {first}") from None


def _fixed(dim) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


@dataclass
class Loaded:
    """The checked sessions and tokenizer of a model folder."""

    image: object
    dim: int
    batch: int | None  # a fixed batch size (1), or None when the model takes any
    provider: str
    text: object = None
    tokenizer: object = None
    text_inputs: tuple = ()
    text_length: int | None = None  # pad every text to this many tokens, or None: to the longest in the batch
    said: bool = False  # the provider line was printed


class OnnxModelEncoder(OnnxEncoder):
    """Any image model exported to ONNX (with its text tower when given), described by shoplens-model.json."""

    def __init__(self, folder: str | Path, fit: str | None = None, threads: int | None = None):
        super().__init__(threads)
        self.spec = read_spec(folder)
        if fit is not None and fit not in FIT_MODES:
            raise ModelFolderError(f"fit must be one of {FIT_MODES}, not {fit!r}")
        self.name = PREFIX + str(self.spec.folder)
        self.size, self.mean, self.std = self.spec.size, self.spec.mean, self.spec.std
        self.fit = fit or self.spec.fit
        self.draft_size = self.size
        # Only a --fit that overrides the JSON is an option: the JSON itself travels with the folder.
        self.options = {"fit": fit} if fit is not None and fit != self.spec.fit else {}
        self.digest = model_digest(self.spec, self.fit)
        self.version = f"{self.spec.name}-{self.digest[:16]}"
        self._loaded: Loaded | None = None
        self._load_lock = threading.Lock()

    @property
    def dim(self) -> int:
        """D, read from the model (loading and checking it on first use)."""
        return self.load().dim

    @property
    def supports_text(self) -> bool:
        return self.spec.text is not None

    def describe(self) -> dict:
        return {**super().describe(), "onnx_model": {
            "name": self.spec.name, "dim": self.dim, "digest": self.digest, "folder": str(self.spec.folder),
            "image": self.spec.image.name, "text": self.spec.text.name if self.spec.text else None,
            "size": self.size, "fit": self.fit, "mean": list(self.mean), "std": list(self.std),
            "licence": self.spec.licence}}

    def session(self):
        return self.load().image

    def load(self) -> Loaded:
        """Open the models once, check their inputs and outputs against the JSON and each other, and run one
        probe through each (a model that returns NaN is refused before any vector is written)."""
        with self._load_lock:
            if self._loaded is None:
                self._loaded = self._load()
            return self._loaded

    def _load(self) -> Loaded:
        spec = self.spec
        image = open_session(spec.image, self.threads)
        batch = self._check_image_input(image)
        output_dim = self._check_output(image, spec.image)
        loaded = Loaded(image, output_dim or 0, batch, image.get_providers()[0])
        probe = self._run_image(loaded, [Image.new("RGB", (self.size, self.size), (128, 128, 128))] * 2)
        loaded.dim = self._checked_rows(probe, 2, spec.image, output_dim)
        if spec.text is not None:
            self._load_text(loaded)
        return loaded

    def _say_provider(self, loaded: Loaded) -> None:
        # When the model first encodes something (a refused model says nothing but its error); once a process
        # per model and provider, however many encoders (a search, the app's syncs) are made of one folder.
        if loaded.said:
            return
        loaded.said = True
        key = (str(self.spec.folder), self.digest, loaded.provider)
        with _ANNOUNCED_LOCK:
            if key in _ANNOUNCED:
                return
            _ANNOUNCED.add(key)
        print(f"shoplens: {self.spec.name} ({PREFIX}{self.spec.folder}) runs on onnxruntime's {loaded.provider}",
              file=sys.stderr, flush=True)

    def _check_image_input(self, session) -> int | None:
        inputs = session.get_inputs()
        path = self.spec.image
        if len(inputs) != 1:
            raise ModelFolderError(f"{path} must take one input (float32 [N, 3, {self.size}, {self.size}]), "
                                   f"not {len(inputs)}: {', '.join(i.name for i in inputs)}")
        (node,) = inputs
        shape = list(node.shape)
        if node.type != "tensor(float)":
            raise ModelFolderError(f"{path}: its input {node.name!r} is {node.type}, not float32 (tensor(float))")
        want = [3, self.size, self.size]
        if len(shape) != 4 or any(_fixed(got) not in (None, w) for got, w in zip(shape[1:], want)):
            raise ModelFolderError(f"{path}: its input {node.name!r} has shape {shape}, but {MODEL_FILE} says "
                                   f"[N, 3, {self.size}, {self.size}] (size {self.size})")
        batch = _fixed(shape[0])
        if batch not in (None, 1):
            raise ModelFolderError(f"{path}: its input's batch dimension is fixed at {batch}; export it with a "
                                   "dynamic batch (or 1)")
        return batch

    @staticmethod
    def _check_output(session, path: Path) -> int | None:
        outputs = session.get_outputs()
        if len(outputs) != 1:
            raise ModelFolderError(f"{path} must give one output [N, D], not {len(outputs)}: "
                                   f"{', '.join(o.name for o in outputs)}")
        shape = list(outputs[0].shape)
        if len(shape) != 2:
            raise ModelFolderError(f"{path}: its output {outputs[0].name!r} has shape {shape}, not [N, D]")
        return _fixed(shape[1])

    @staticmethod
    def _checked_rows(out: np.ndarray, rows: int, path: Path, dim: int | None) -> int:
        if out.ndim != 2 or out.shape[0] != rows or out.shape[1] < 1 or (dim and out.shape[1] != dim):
            raise ModelFolderError(f"{path} gave an output of shape {list(out.shape)} for {rows} inputs, not "
                                   f"[{rows}, D]")
        if not np.isfinite(out).all():
            raise ModelFolderError(f"{path} returned NaN or infinite values; the model is broken (or was exported "
                                   "wrongly) and cannot be used")
        return int(out.shape[1])

    def _load_text(self, loaded: Loaded) -> None:
        spec = self.spec
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ModelFolderError("a text model needs the tokenizers package (pip install -r requirements.txt)"
                                   ) from None
        try:
            tokenizer = Tokenizer.from_file(str(spec.tokenizer))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception for a bad file
            raise ModelFolderError(f"{spec.tokenizer} does not load as a Hugging Face tokenizers file: "
                                   f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc}") from None
        session = open_session(spec.text, self.threads)
        inputs = {i.name: i for i in session.get_inputs()}
        if "input_ids" not in inputs or set(inputs) - {"input_ids", "attention_mask"}:
            raise ModelFolderError(f"{spec.text} must take int64 input_ids [N, L] (and attention_mask), not "
                                   f"{', '.join(inputs)}")
        length = None
        for node in inputs.values():
            if node.type != "tensor(int64)" or len(node.shape) != 2:
                raise ModelFolderError(f"{spec.text}: its input {node.name!r} is {node.type} {list(node.shape)}, "
                                       "not int64 [N, L]")
            length = length or _fixed(node.shape[1])
        if length is not None and spec.max_length is not None and spec.max_length != length:
            raise ModelFolderError(f"{spec.text} takes exactly {length} tokens, but {MODEL_FILE} says max_length "
                                   f"{spec.max_length}")
        text_dim = self._check_output(session, spec.text)
        if text_dim is not None and text_dim != loaded.dim:
            raise ModelFolderError(f"{spec.text} gives {text_dim}-d vectors but {spec.image} gives {loaded.dim}-d: "
                                   "the text and image models must share one space")
        max_length = length or spec.max_length or DEFAULT_MAX_LENGTH
        tokenizer.enable_truncation(max_length)
        # A model without attention_mask (SigLIP) was trained on texts padded to a fixed length: pad to it.
        fixed = length or (spec.max_length if "attention_mask" not in inputs else None)
        tokenizer.enable_padding(pad_id=_pad_id(tokenizer), length=fixed)
        loaded.text, loaded.tokenizer = session, tokenizer
        loaded.text_inputs, loaded.text_length = tuple(inputs), fixed
        out = self._run_text(loaded, [PROBE_TEXT, "shoe"])
        got = self._checked_rows(out, 2, spec.text, None)
        if got != loaded.dim:
            raise ModelFolderError(f"{spec.text} gives {got}-d vectors but {spec.image} gives {loaded.dim}-d: "
                                   "the text and image models must share one space")

    def _run_image(self, loaded: Loaded, images: list[Image.Image]) -> np.ndarray:
        batch = np.stack([self.preprocess(img) for img in images])
        name = loaded.image.get_inputs()[0].name
        if loaded.batch == 1:
            return np.concatenate([loaded.image.run(None, {name: batch[i:i + 1]})[0] for i in range(len(batch))])
        return np.asarray(loaded.image.run(None, {name: batch})[0])

    @staticmethod
    def _run_text(loaded: Loaded, texts: list[str]) -> np.ndarray:
        encoded = loaded.tokenizer.encode_batch(texts)
        feeds = {"input_ids": np.array([e.ids for e in encoded], np.int64)}
        if "attention_mask" in loaded.text_inputs:
            feeds["attention_mask"] = np.array([e.attention_mask for e in encoded], np.int64)
        return np.asarray(loaded.text.run(None, feeds)[0])

    def embed_batch(self, images: list[Image.Image]) -> np.ndarray:
        loaded = self.load()
        if not images:
            return np.zeros((0, loaded.dim), np.float32)
        self._say_provider(loaded)
        out = self._run_image(loaded, images)
        self._checked_rows(out, len(images), self.spec.image, loaded.dim)
        return l2_normalise(out)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """Texts in the image space, through the folder's text model."""
        if self.spec.text is None:
            return super().embed_text(texts)
        loaded = self.load()
        if not texts:
            return np.zeros((0, loaded.dim), np.float32)
        self._say_provider(loaded)
        out = self._run_text(loaded, list(texts))
        self._checked_rows(out, len(texts), self.spec.text, loaded.dim)
        return l2_normalise(out)


def _pad_id(tokenizer) -> int:
    # The file's own padding token when it sets one, else the usual names; CLIP pads with its end token,
    # which its pooling (the first end token) never reads past.
    padding = tokenizer.padding
    if padding and padding.get("pad_id") is not None:
        return int(padding["pad_id"])
    for token in ("<pad>", "[PAD]", "<|endoftext|>", "</s>"):
        found = tokenizer.token_to_id(token)
        if found is not None:
            return found
    return 0


def create(name: str, **options) -> OnnxModelEncoder:
    """The encoder for `onnx:DIR` (the factory's hook for names with the prefix)."""
    return OnnxModelEncoder(canonical_name(name)[len(PREFIX):], **options)


@register("onnx:DIR", "your own model exported to ONNX, from the folder DIR: " + FIELDS_LINE +
          "; image.onnx float32 [N,3,size,size] -> [N,D], text.onnx int64 input_ids [N,L] (+ attention_mask) -> "
          "[N,D]; onnxruntime on CPU, or CUDA with onnxruntime-gpu (README: Bring your own model)")
def _listed(**_options) -> OnnxModelEncoder:
    # Listed under its pattern for `python -m shoplens encoders`; the factory sends every onnx: name to create().
    raise ModelFolderError("name the model folder: --encoder onnx:DIR, where DIR holds shoplens-model.json")
