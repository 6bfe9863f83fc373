"""`efficientnet-lite-ensemble`: the three offline EfficientNet-Lite backbones together, a quality profile.

Each member (Lite0, Lite1, Lite2 by default, at their native sizes) embeds the photo; its vector is
power-normalised (signed square root: pooled CNN features are bursty, a few activations dominate the cosine)
and L2-normalised, so every member weighs the same; the members' vectors are concatenated and L2-normalised.
On fashion-images this moves held-out precision@10 after tuning from Lite0's 0.785 to about 0.82
(docs/quality.md, "efficientnet-lite-ensemble"), for about three times Lite0's encoding cost.

Options move a shop along the quality/cost frontier (all recorded with the index, so the embedding cache and
the tuning key on them):
- `members`: comma list of efficientnet-lite0/1/2, each optionally with an input size (`efficientnet-lite0@320`);
- `views`: views averaged inside each member (crop, flip, zoom, zoomflip, or a count 1-4); each costs one more
  pass of every member.

The members run in parallel, one thread each (onnxruntime releases the GIL), with the cores shared among them.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from shoplens.encoders.base import Encoder, l2_normalise
from shoplens.encoders.efficientnet import VARIANTS, EfficientNetLiteEncoder, parse_views
from shoplens.encoders.preprocess import FIT_MODES
from shoplens.encoders.registry import register
from shoplens.errors import UserError

NAME = "efficientnet-lite-ensemble"
DEFAULT_MEMBERS = "efficientnet-lite0,efficientnet-lite1,efficientnet-lite2"
ENSEMBLE_VERSION = "1"


def parse_members(members) -> list[tuple[str, int | None]]:
    """'efficientnet-lite0,lite1@320' -> [('efficientnet-lite0', None), ('efficientnet-lite1', 320)]."""
    items = members.split(",") if isinstance(members, str) else list(members)
    out = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        name, _, size = item.partition("@")
        name = name if name.startswith("efficientnet-") else f"efficientnet-{name}"
        if name not in VARIANTS:
            raise UserError(f"ensemble member {item!r} is not one of {', '.join(VARIANTS)} (optionally @SIZE)")
        try:
            out.append((name, int(size) if size else None))
        except ValueError:
            raise UserError(f"ensemble member {item!r}: the size after @ must be a number of pixels") from None
    if not out:
        raise UserError("an ensemble needs at least one member")
    if len(set(out)) != len(out):
        raise UserError(f"ensemble members repeat: {members!r}")
    return out


def combine(member_vectors: list[np.ndarray]) -> np.ndarray:
    """Members' L2-normalised vectors (each (n, d_m)) -> the ensemble's (n, sum d_m) vectors.

    Each member's vector is power-normalised (signed square root) and L2-normalised, then they are
    concatenated and L2-normalised (each member contributes 1/len(members) of the squared norm).
    """
    parts = [l2_normalise(np.copysign(np.sqrt(np.abs(v)), v)) for v in member_vectors]
    return l2_normalise(np.concatenate(parts, axis=1))


class EnsembleEncoder(Encoder):
    """Concatenated, power-normalised EfficientNet-Lite member vectors (see the module docstring)."""

    name = NAME

    def __init__(self, members=DEFAULT_MEMBERS, views="crop", fit: str = "crop", threads: int | None = None):
        if fit not in FIT_MODES:
            raise UserError(f"fit must be one of {FIT_MODES}, not {fit!r}")
        specs = parse_members(members)
        self.views = parse_views(views)
        cores = os.cpu_count() or 1
        # One thread per member; the cores shared among them (2 cores, 3 members: one intra-op thread each).
        per_member = threads or max(1, cores // len(specs))
        self.members = [EfficientNetLiteEncoder(name, fit, per_member, size, self.views) for name, size in specs]
        self.dim = sum(m.dim for m in self.members)
        member_text = ",".join(m.name + (f"@{m.size}" if "size" in m.options else "") for m in self.members)
        self.options = {"members": member_text, "views": ",".join(self.views), "fit": fit}
        self.version = f"{ENSEMBLE_VERSION}-" + "+".join(m.version for m in self.members)
        self.draft_size = max(m.draft_size for m in self.members)
        self._pool = None
        self._lock = threading.Lock()  # the app embeds from several threads: one pool, created once

    def member_encoders(self) -> list[EfficientNetLiteEncoder]:
        """The members, each a plain EfficientNet-Lite encoder with its own embedding-cache key."""
        return list(self.members)

    def embed_batch(self, images: list[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        if len(self.members) == 1:
            return combine([self.members[0].embed_batch(images)])
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=len(self.members), thread_name_prefix="ensemble")
        vectors = list(self._pool.map(lambda m: m.embed_batch(images), self.members))
        return combine(vectors)


register(NAME, "EfficientNet-Lite0+1+2 at native sizes, power-normalised and concatenated, 3840-d (quality "
               "profile; options members=NAME[@PX],..., views=crop,flip,zoom,zoomflip)")(
    lambda **options: EnsembleEncoder(**options)
)
