"""A tuning: a small learned projection of backbone vectors, saved as one numpy file.

A tuning is a list of branches, each a short pipeline of numpy operations on the backbone
vector (affine, relu, scale, l2, softmax); the branches' outputs are concatenated, L2-normalised and
zero-padded to the backbone's size, so an index's vector layout never changes and a tuning
can be applied to stored vectors (or removed) in place. Whatever method fitted it, applying
a tuning needs numpy only: no torch, no scikit-learn at query time.

The file is an .npz of plain arrays plus a JSON header stored as bytes (never pickle).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shoplens.atomic import atomic_write
from shoplens.errors import UserError

FORMAT = "shoplens-tuning/1"
OPS = {"affine", "relu", "scale", "l2", "softmax", "signed_power"}
# Header keys that describe the run rather than the transform: left out of the hash so that
# the same parameters always hash the same.
NOT_HASHED = {"figures", "created", "hash", "info"}


class TuningError(UserError, RuntimeError):
    """A tuning file that cannot be used here; the message says what to do."""


@dataclass
class Tuning:
    """A fitted projection of backbone vectors (see the module docstring)."""

    kind: str
    label: list[str]
    encoder: dict
    branches: list[list[dict]]
    arrays: dict[str, np.ndarray]
    figures: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    # Query expansion at search time ({"k", "alpha"}, shoplens.query.expansion), chosen on photos held out from
    # the fit; empty: none. Recorded in the header (and hash) only when set, so older tunings keep their hash.
    expansion: dict = field(default_factory=dict)

    def __post_init__(self):
        self.expansion = {k: v for k, v in dict(self.expansion or {}).items() if k in ("k", "alpha")}
        if self.expansion and int(self.expansion.get("k", 0)) <= 0:
            self.expansion = {}
        self.label = list(self.label)
        self.encoder = dict(self.encoder)
        self.arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in self.arrays.items()}
        _validate(self)

    @property
    def dim(self) -> int:
        """The backbone's vector size, which tuned vectors are padded to."""
        return int(self.encoder["dim"])

    @property
    def out_dim(self) -> int:
        """How many of the `dim` output numbers carry the tuned vector (the rest are zero)."""
        return sum(_branch_dim(self, b) for b in self.branches)

    @property
    def hash(self) -> str:
        """sha256 of the header (kind, label, encoder, operations) and every parameter array."""
        digest = hashlib.sha256(json.dumps(self._hashed_header(), sort_keys=True).encode())
        for name in sorted(self.arrays):
            arr = self.arrays[name]
            digest.update(f"{name}|{arr.shape}|".encode())
            digest.update(arr.astype("<f4").tobytes())
        return digest.hexdigest()

    def _hashed_header(self) -> dict:
        return {k: v for k, v in self._header().items() if k not in NOT_HASHED}

    def _header(self) -> dict:
        header = {"format": FORMAT, "kind": self.kind, "label": self.label, "encoder": self.encoder,
                  "branches": self.branches, "figures": self.figures, "info": self.info}
        if self.expansion:
            header["expansion"] = dict(self.expansion)
        return header

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """(n, dim) L2-normalised backbone vectors -> (n, dim) float32 L2-normalised tuned vectors.

        Row by row the same whatever the batch: every operation acts on each row alone.
        """
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim == 1:
            return self.apply(x[None, :])[0]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise TuningError(f"tuning expects vectors of size {self.dim} (encoder {self.encoder.get('encoder')}), "
                              f"got shape {tuple(x.shape)}")
        parts = [self._run(branch, x) for branch in self.branches]
        out = np.zeros((x.shape[0], self.dim), np.float32)
        joined = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
        norms = np.linalg.norm(joined, axis=1, keepdims=True)
        out[:, :joined.shape[1]] = joined / np.maximum(norms, 1e-12)
        return out

    def _run(self, branch: list[dict], x: np.ndarray) -> np.ndarray:
        for op in branch:
            kind = op["op"]
            if kind == "affine":
                x = x @ self.arrays[op["weight"]]
                if op.get("bias"):
                    x = x + self.arrays[op["bias"]]
            elif kind == "relu":
                x = np.maximum(x, 0)
            elif kind == "scale":
                x = x * np.float32(op["value"])
            elif kind == "signed_power":  # power normalisation: damps the few dominant activations
                mag = np.abs(x)
                mag = np.sqrt(mag) if op["value"] == 0.5 else mag ** np.float32(op["value"])  # sqrt: 10x faster
                x = np.copysign(mag, x)
            elif kind == "softmax":  # class posteriors as a vector: same predicted class -> high cosine
                x = x - x.max(axis=1, keepdims=True)
                x = np.exp(x)
                x = x / x.sum(axis=1, keepdims=True)
            elif kind == "l2":
                x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return x.astype(np.float32, copy=False)

    def describe(self) -> dict:
        """What an index records: {"kind", "hash", "label", "figures", "encoder"}."""
        out = {"kind": self.kind, "hash": self.hash, "label": list(self.label), "figures": self.figures,
               "encoder": dict(self.encoder)}
        if self.expansion:
            out["expansion"] = dict(self.expansion)
        return out

    def save(self, path) -> None:
        """Write one .npz file atomically: a reader sees the old file or the new one, never half of one."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {**self._header(), "hash": self.hash}
        payload = {f"a_{k}": v for k, v in self.arrays.items()}
        payload["header"] = np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:  # a file object: np.savez adds no .npz to it
                np.savez(fh, **payload)

        atomic_write(path, write, fsync=True)


def load_tuning(path) -> Tuning:
    """Read a tuning file; TuningError with a clear message when it is missing, damaged or of another format."""
    path = Path(path)
    remake = "make it again with: python -m shoplens tune CATALOG --label FIELD --out FILE"
    if not path.is_file():
        raise TuningError(f"no tuning file at {path}; {remake}")
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(bytes(data["header"].astype(np.uint8)).decode())
            arrays = {k[2:]: data[k] for k in data.files if k.startswith("a_")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise TuningError(f"{path} is not a readable tuning file (damaged or truncated: {exc}); {remake}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else None
        raise TuningError(f"{path} is a tuning of format {found!r}, this version reads {FORMAT!r}; {remake}")
    try:
        tuning = Tuning(header["kind"], header["label"], header["encoder"], header["branches"], arrays,
                        header.get("figures") or {}, header.get("info") or {}, header.get("expansion") or {})
    except (KeyError, TypeError, ValueError, TuningError) as exc:
        raise TuningError(f"{path} is not a usable tuning file ({exc}); {remake}") from None
    if header.get("hash") != tuning.hash:
        raise TuningError(f"{path} is damaged: its parameters do not match its recorded hash; {remake}")
    return tuning


def check_tuning(tuning: Tuning, encoder_meta: dict) -> None:
    """TuningError when the tuning was fitted on another encoder (name/version/dim/options) than `encoder_meta`."""
    mine = tuning.encoder
    for key in ("encoder", "encoder_version", "dim"):
        if str(mine.get(key)) != str(encoder_meta.get(key)):
            raise TuningError(
                f"this tuning was fitted on encoder {mine.get('encoder')} v{mine.get('encoder_version')} "
                f"({mine.get('dim')}-d), not {encoder_meta.get('encoder')} v{encoder_meta.get('encoder_version')} "
                f"({encoder_meta.get('dim')}-d); fit one for it with: python -m shoplens tune CATALOG "
                f"--label {','.join(tuning.label)} --encoder {encoder_meta.get('encoder')} --out FILE")
    if dict(mine.get("encoder_options") or {}) != dict(encoder_meta.get("encoder_options") or {}):
        raise TuningError(f"this tuning was fitted with encoder options {mine.get('encoder_options') or {}} "
                          f"({mine.get('encoder')}), not {encoder_meta.get('encoder_options') or {}}; fit "
                          f"one for these options with: python -m shoplens tune CATALOG --label "
                          f"{','.join(tuning.label)} --encoder {encoder_meta.get('encoder')} --out FILE")


def _branch_dim(tuning: Tuning, branch: list[dict]) -> int:
    size = tuning.dim
    for op in branch:
        if op["op"] == "affine":
            size = tuning.arrays[op["weight"]].shape[1]
    return size


def _validate(tuning: Tuning) -> None:
    """Shapes and operation names, checked once so apply() never fails halfway."""
    for key in ("encoder", "dim"):
        if key not in tuning.encoder:
            raise TuningError(f"tuning's encoder description lacks {key!r}")
    if not tuning.branches:
        raise TuningError("tuning has no branch")
    for branch in tuning.branches:
        size = tuning.dim
        for op in branch:
            if op.get("op") not in OPS:
                raise TuningError(f"unknown tuning operation {op.get('op')!r}")
            if op["op"] == "affine":
                w = tuning.arrays.get(op.get("weight"))
                if w is None or w.ndim != 2 or w.shape[0] != size:
                    raise TuningError(f"tuning weight {op.get('weight')!r} missing or of the wrong shape")
                size = w.shape[1]
                if op.get("bias"):
                    b = tuning.arrays.get(op["bias"])
                    if b is None or b.shape != (size,):
                        raise TuningError(f"tuning bias {op['bias']!r} missing or of the wrong shape")
    if tuning.out_dim > tuning.dim:
        raise TuningError(f"tuned vectors ({tuning.out_dim}-d) would not fit the backbone's {tuning.dim}-d")


def describe_tuning(tuning) -> str:
    """'lda on product_type (hash 1a2b3c4d)' for a Tuning or a metadata record."""
    if tuning is None:
        return "none"
    get = tuning.get if isinstance(tuning, dict) else (lambda key, default=None: getattr(tuning, key, default))
    label = get("label") or []
    return f"{get('kind', '?')} on {'+'.join(label) if isinstance(label, list) else label} (hash {str(get('hash', ''))[:8]})"


def tuning_line(record: dict | None) -> str:
    """One line for people: 'Tuned to product_type: held-out P@10 0.69 → 0.81' ('' for an untuned index)."""
    if not record:
        return ""
    label = "+".join(record.get("label") or []) or "its labels"
    figures = record.get("figures") or {}
    metric = figures.get("metric")
    before, after = (figures.get("before") or {}).get(metric), (figures.get("after") or {}).get(metric)
    if metric and isinstance(before, (int, float)) and isinstance(after, (int, float)):
        return f"Tuned to {label}: held-out {short_metric(metric)} {before:.2f} → {after:.2f}"
    return f"Tuned to {label}"


def short_metric(metric: str) -> str:
    """'precision@10' -> 'P@10', 'recall@1' or 'hit@1' -> 'R@1'; others unchanged."""
    name, sep, k = metric.partition("@")
    short = {"precision": "P", "recall": "R", "hit": "R", "map": "mAP", "ndcg": "nDCG"}.get(name.lower())
    return f"{short}{sep}{k}" if short and sep else metric
