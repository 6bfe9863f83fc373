"""Duplicate listings: which products show the same photo (byte-identical, or resized, re-compressed, lightly
cropped, watermarked or re-coloured by a few percent), as groups kept in the payload.

Every product carries (written at the end of each sync, `refresh_groups`):

- `dup_sig`: "<content hash prefix>:<64-bit DCT perceptual hash>:<4x4 colour thumbnail>" of its photo, read
  once per photo (a JPEG decoded at 1/8 scale; about 1 ms);
- `duplicate_group`: the group's id, the smallest product id in it (a product alone is its own group), so the
  same catalog always gets the same ids;
- `duplicate_size`: how many listings the group has; `duplicate_lead`: "yes" on the product whose id is the
  group's id (browse shows those when it collapses groups), else "no".

Two products are duplicates when all three agree (`Verifier`): the image vectors are near (cosine at least
COSINE_FLOOR; candidates come from the store's own nearest-neighbour search, so there is no all-pairs loop),
the perceptual hashes are within the threshold, and the colour thumbnails match. The perceptual hash
tells a re-shot product (another angle, another model on the same plain backdrop) from the same photo; the
colour thumbnail tells the same model in another colour (ImageNet features and a luminance hash barely see
colour) from a copy re-coloured by a few percent. Groups are connected components of that relation.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
from PIL import Image

from scipy import ndimage

from shoplens.colour.pixels import product_mask, srgb_to_lab
from shoplens.errors import UserError
from shoplens.images import ImageError, load_image

SIG_FIELD = "dup_sig"
GROUP_FIELD = "duplicate_group"
SIZE_FIELD = "duplicate_size"
LEAD_FIELD = "duplicate_lead"
FIELDS = (SIG_FIELD, GROUP_FIELD, SIZE_FIELD, LEAD_FIELD)
META_KEY = "duplicates"
VERSION = "1"

HASH_BITS = 64
DEFAULT_THRESHOLD = 0.875  # perceptual-hash similarity (1 - Hamming distance / 64): at most 8 of 64 bits differ
COSINE_FLOOR = 0.90  # image-vector cosine a candidate must reach before its photo is compared at all
COLOUR_TOLERANCE = 22.0  # largest colour difference (Verifier.distances) of two duplicates, RGB 0..255
NEIGHBOURS = 16  # candidates read per product from the store's nearest-neighbour search
BOX_WORK = 128  # longest side, in pixels, of the copy the product box is found on
SIG_DRAFT = 128  # JPEGs decode at the smallest scale with a short side of at least this many pixels


class DuplicatesError(UserError):
    """A bad duplicates option (a threshold outside (0, 1]); the message says what is allowed."""


def check_threshold(threshold: float) -> float:
    """`threshold` when it lies in (0, 1]; a DuplicatesError otherwise."""
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise DuplicatesError(f"--threshold takes a number in (0, 1], got {threshold!r}") from None
    if not (0.0 < value <= 1.0) or math.isnan(value):
        raise DuplicatesError(f"--threshold must be in (0, 1] (a perceptual-hash similarity; default "
                              f"{DEFAULT_THRESHOLD}), got {threshold}")
    return value


# --- the photo's signature ------------------------------------------------------------------------------------

def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    m = np.cos(np.pi * (2 * np.arange(n)[None, :] + 1) * k / (2 * n)) * math.sqrt(2 / n)
    m[0] /= math.sqrt(2)
    return m


_DCT32 = _dct_matrix(32)


def perceptual_hash(image: Image.Image) -> int:
    """The 64-bit DCT perceptual hash of a photo: the 8x8 lowest frequencies of its 32x32 grey copy, each bit
    set where a coefficient is above their median (the pHash construction)."""
    grey = np.asarray(image.convert("L").resize((32, 32), Image.BOX), np.float64)
    low = (_DCT32 @ grey @ _DCT32.T)[:8, :8]
    bits = (low > np.median(low)).ravel()
    return int("".join("1" if b else "0" for b in bits), 2)


def product_box(image: Image.Image) -> Image.Image:
    """The product cut out of a plain backdrop (the photo itself when the backdrop is not plain).

    A light crop of a catalog photo only trims its margin, so photos compared by their product box agree
    where the whole photos do not. Small specks apart from the product (a watermark's letters) are left out:
    the box holds the parts at least a tenth the size of the largest."""
    scale = BOX_WORK / max(image.size)
    small = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BOX) \
        if scale < 1 else image
    pixels = np.asarray(small)
    mask = product_mask(pixels, srgb_to_lab(pixels))
    if mask.all():
        return image
    labels, count = ndimage.label(mask)
    if count == 0:
        return image
    sizes = ndimage.sum(mask, labels, range(1, count + 1))
    keep = np.isin(labels, 1 + np.flatnonzero(sizes >= 0.1 * sizes.max()))
    rows, cols = np.flatnonzero(keep.any(axis=1)), np.flatnonzero(keep.any(axis=0))
    sy, sx = image.height / pixels.shape[0], image.width / pixels.shape[1]
    return image.crop((int(cols[0] * sx), int(rows[0] * sy), int(math.ceil((cols[-1] + 1) * sx)),
                       int(math.ceil((rows[-1] + 1) * sy))))


def colour_thumbnail(image: Image.Image) -> bytes:
    """The 8x8 mean colours (192 bytes, RGB) of a product box: what a luminance hash does not see."""
    return image.convert("RGB").resize((8, 8), Image.BOX).tobytes()


def signature(image: Image.Image, content_hash: str) -> str:
    """The `dup_sig` payload value of a photo with this content hash: content hash prefix, the whole photo's
    perceptual hash, its product box's, and the box's colours."""
    image = image.convert("RGB")
    box = product_box(image)
    return (f"{content_hash[:16]}:{perceptual_hash(image):016x}:{perceptual_hash(box):016x}:"
            f"{colour_thumbnail(box).hex()}:{colour_thumbnail(image).hex()}")


def photo_signature(path: str | Path, content_hash: str) -> str | None:
    """`signature` of the photo at `path`, or None when it cannot be read (the product then stays alone)."""
    try:
        return signature(load_image(path, draft_size=SIG_DRAFT), content_hash)
    except (ImageError, OSError):
        return None


@dataclass(frozen=True)
class Sig:
    """A parsed `dup_sig`."""

    of: str
    whole: int
    box: int
    colours: np.ndarray
    whole_colours: np.ndarray

    @classmethod
    def parse(cls, text) -> "Sig | None":
        try:
            of, whole, box, colours, whole_colours = str(text).split(":")
            return cls(of, int(whole, 16), int(box, 16),
                       np.frombuffer(bytes.fromhex(colours), np.uint8).reshape(64, 3),
                       np.frombuffer(bytes.fromhex(whole_colours), np.uint8).reshape(64, 3))
        except (ValueError, TypeError):
            return None


def is_current(payload: Mapping) -> bool:
    """Whether a payload's signature was read from its current photo."""
    sig = Sig.parse(payload.get(SIG_FIELD))
    return sig is not None and str(payload.get("content_hash", "")).startswith(sig.of)


def _cell_difference(a: np.ndarray, b: np.ndarray, percentile: float) -> float:
    return float(np.percentile(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean(axis=1), percentile))


@dataclass(frozen=True)
class Verifier:
    """Decides whether two products are duplicates: near image vectors, near perceptual hashes, same colours."""

    threshold: float = DEFAULT_THRESHOLD
    cosine_floor: float = COSINE_FLOOR
    colour_tolerance: float = COLOUR_TOLERANCE

    def distances(self, a: Sig, b: Sig) -> tuple[int, float]:
        """(Hamming distance of the perceptual hashes, colour difference) of the regions that agree best: the
        product boxes when their hashes are near, else the whole photos.

        The colour difference is the mean RGB difference (0..255) of the cells of the 8x8 thumbnails: at the
        90th percentile of the cells for boxes (an edge cell a crop shifted does not decide), at the largest
        cell for whole photos (a small product on a wide backdrop fills few cells)."""
        box, whole = bin(a.box ^ b.box).count("1"), bin(a.whole ^ b.whole).count("1")
        limit = (1.0 - self.threshold) * HASH_BITS
        if box <= limit or box <= whole:
            return box, _cell_difference(a.colours, b.colours, 90)
        return whole, _cell_difference(a.whole_colours, b.whole_colours, 100)

    def similarity(self, a: Sig, b: Sig) -> float:
        """Perceptual-hash similarity (1 - Hamming distance / 64) of the product boxes or the whole photos."""
        return 1.0 - self.distances(a, b)[0] / HASH_BITS

    def same(self, a: Sig | None, b: Sig | None, cosine: float) -> bool:
        if a is None or b is None:
            return False
        if a.of == b.of:  # byte-identical photos
            return True
        if cosine < self.cosine_floor:
            return False
        bits, colours = self.distances(a, b)
        return 1.0 - bits / HASH_BITS >= self.threshold and colours <= self.colour_tolerance


def order_key(product_id: str):
    """Product ids in a fixed order, numbers by value ("9" before "10"): the group id is the first of them."""
    text = str(product_id)
    return (0, int(text), text) if text.isdigit() else (1, 0, text)


# --- groups ---------------------------------------------------------------------------------------------------

class _Union:
    def __init__(self):
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def join(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass
class GroupRun:
    """What `refresh_groups` did."""

    signed: int = 0  # photos whose signature was read
    explored: int = 0  # products whose neighbours were searched
    changed: int = 0  # products whose group fields were written
    groups: int = 0  # groups of two or more listings after the run
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def find_components(store, payloads: Mapping[str, dict], seeds: Iterable[str], verifier: Verifier,
                    neighbours: int = NEIGHBOURS) -> dict[str, list[str]]:
    """Duplicate groups (point id -> its group's point ids) of every product connected to `seeds`: each
    product reached has its nearest neighbours searched in the store and verified, until no new one joins."""
    sigs = {pid: Sig.parse(p.get(SIG_FIELD)) for pid, p in payloads.items()}
    union = _Union()
    queue = [pid for pid in dict.fromkeys(seeds) if pid in payloads]
    seen = set(queue)
    while queue:
        batch, queue = queue[:256], queue[256:]
        vectors = {h.id: h.vector for h in store.retrieve(batch, with_vector=True) if h.vector is not None}
        for pid in batch:
            union.find(pid)
            if pid not in vectors or sigs.get(pid) is None:
                continue
            for hit in store.search(vectors[pid], neighbours):
                other = hit.id
                if other == pid or other not in payloads:
                    continue
                if hit.score < verifier.cosine_floor and (sigs.get(other) is None or sigs[other].of != sigs[pid].of):
                    continue
                if verifier.same(sigs[pid], sigs.get(other), hit.score):
                    union.join(pid, other)
                    if other not in seen:
                        seen.add(other)
                        queue.append(other)
    members: dict[str, list[str]] = defaultdict(list)
    for pid in seen:
        members[union.find(pid)].append(pid)
    return {pid: group for group in members.values() for pid in group}


def group_fields(group: list[str], payloads: Mapping[str, dict]) -> dict[str, dict]:
    """The group fields of each member of one group."""
    ids = {pid: str(payloads[pid].get("product_id", "")) for pid in group}
    lead = min(ids.values(), key=order_key)
    return {pid: {GROUP_FIELD: lead, SIZE_FIELD: len(group), LEAD_FIELD: "yes" if ids[pid] == lead else "no"}
            for pid in group}


def stale(payloads: Mapping[str, dict]) -> set[str]:
    """Products whose group must be worked out again: no current signature or group, or a group whose members
    changed (one removed, one added, one's photo replaced) since it was written."""
    out = {pid for pid, p in payloads.items() if not is_current(p) or p.get(GROUP_FIELD) in (None, "")}
    members: dict[str, list[str]] = defaultdict(list)
    for pid, p in payloads.items():
        if p.get(GROUP_FIELD) not in (None, ""):
            members[str(p[GROUP_FIELD])].append(pid)
    for group, pids in members.items():
        sizes = {payloads[pid].get(SIZE_FIELD) for pid in pids}
        leads = [pid for pid in pids if str(payloads[pid].get("product_id")) == group]
        if sizes != {len(pids)} or len(leads) != 1 or out.intersection(pids):
            out.update(pids)
    return out


def refresh_groups(store, paths: Mapping[str, Path] | None = None, verifier: Verifier | None = None,
                   progress=None) -> GroupRun:
    """Bring every product's duplicate group up to date (the last step of a sync).

    `paths`: point id -> photo file, for the products whose signature must be read (those with a new or changed
    photo); a product without one keeps no signature and stays alone. Only the products whose group may have
    changed are searched again, and only fields that changed are written, so a run that changes nothing writes
    nothing."""
    import time

    started = time.perf_counter()
    verifier = verifier or Verifier()
    run = GroupRun()
    payloads = store.states()
    writes: dict[str, dict] = {}
    for pid, payload in payloads.items():
        if is_current(payload):
            continue
        path = (paths or {}).get(pid)
        sig = photo_signature(path, str(payload.get("content_hash", ""))) if path is not None else None
        run.signed += path is not None
        if sig is not None:
            payload[SIG_FIELD] = sig
            writes.setdefault(pid, {})[SIG_FIELD] = sig
    seeds = stale(payloads)
    old_groups = {str(p.get(GROUP_FIELD)) for pid, p in payloads.items() if pid in seeds and p.get(GROUP_FIELD)}
    by_group = defaultdict(list)
    for pid, p in payloads.items():
        if p.get(GROUP_FIELD):
            by_group[str(p[GROUP_FIELD])].append(pid)
    seeds |= {pid for g in old_groups for pid in by_group.get(g, [])}  # a group that lost or changed a member
    components = find_components(store, payloads, sorted(seeds), verifier) if seeds else {}
    run.explored = len(components)
    done: set[str] = set()
    for pid, group in components.items():
        if pid in done:
            continue
        done.update(group)
        for member, fields in group_fields(group, payloads).items():
            old = payloads[member]
            delta = {k: v for k, v in fields.items() if old.get(k) != v}
            if delta:
                writes.setdefault(member, {}).update(delta)
                old.update(delta)
    set_fields(store, writes)
    run.changed = sum(1 for w in writes.values() if set(w) - {SIG_FIELD})
    run.groups = len({str(p[GROUP_FIELD]) for p in payloads.values() if (p.get(SIZE_FIELD) or 1) > 1})
    run.seconds = time.perf_counter() - started
    return run


def set_fields(store, writes: Mapping[str, dict]) -> None:
    """Write payload fields, one store call per distinct (field, value) and one per point for the rest."""
    if hasattr(store, "set_fields"):
        store.set_fields(dict(writes))
        return
    shared: dict[tuple, list[str]] = defaultdict(list)
    for pid, fields in writes.items():
        for key, value in fields.items():
            shared[(key, value)].append(pid)
    for (key, value), pids in sorted(shared.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        store.set_field(sorted(pids), key, value)


def has_groups(meta: Mapping | None) -> bool:
    """Whether the index's products carry duplicate groups (an index built before them does not)."""
    return bool(meta) and (meta.get(META_KEY) or {}).get("version") == VERSION


def carried(existing: Mapping | None, payload: Mapping) -> dict:
    """The duplicate fields a product keeps through a sync that re-writes its payload: all of them while its
    photo is the same; none when it changed (the end of the sync works them out again)."""
    if not existing or existing.get("content_hash") != payload.get("content_hash"):
        return {}
    return {k: existing[k] for k in FIELDS if k in existing}


def finalise(store, catalog, meta: dict, progress=None) -> GroupRun:
    """The sync's last stage for duplicates: signatures of new photos, groups of the products touched; records
    the grouping in `meta`."""
    from shoplens.store import point_id

    paths = {point_id(p.id): p.path for p in catalog.products}
    run = refresh_groups(store, paths)
    if not has_groups(meta):  # filters on the group (its members, browse's leads) read these fast
        for name in (GROUP_FIELD, LEAD_FIELD):
            store.create_keyword_index(name)
    meta[META_KEY] = {"version": VERSION, "threshold": DEFAULT_THRESHOLD, "groups": run.groups}
    return run


# --- groups of a catalog held in memory (evaluate) ------------------------------------------------------------

def signatures(paths: list[Path], hashes: list[str], workers: int = 2) -> list[Sig | None]:
    """The signature of each photo (None where unreadable), kept by content hash in the cache folder so a
    second evaluation reads no photo again."""
    import json
    from concurrent.futures import ThreadPoolExecutor

    from shoplens.atomic import atomic_write_text
    from shoplens.cache import cache_dir

    file = cache_dir("duplicates") / f"signatures-v{VERSION}.json"
    try:
        known = json.loads(file.read_text())
    except (OSError, ValueError):
        known = {}
    todo = [(p, h) for p, h in zip(paths, hashes) if h not in known]
    if todo:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for (_path, digest), sig in zip(todo, pool.map(lambda ph: photo_signature(*ph), todo)):
                known[digest] = sig
        try:
            atomic_write_text(file, json.dumps(known))
        except OSError:
            pass  # a cache: a read-only folder only costs the next run the decoding
    return [Sig.parse(known.get(h)) for h in hashes]


def group_rows(vectors: np.ndarray, sigs: list[Sig | None], verifier: Verifier | None = None,
               chunk: int = 1024) -> np.ndarray:
    """The duplicate group of each row (the smallest row index in it), by the rule the indexer groups with:
    candidates at image cosine >= COSINE_FLOOR (here from exact matrix products, as evaluate ranks), then
    verified by their signatures."""
    verifier = verifier or Verifier()
    union = _Union()
    names = [f"{i:09d}" for i in range(len(sigs))]
    of = {}
    for i, sig in enumerate(sigs):  # byte-identical photos, whatever their vectors
        if sig is not None:
            union.join(names[i], names[of.setdefault(sig.of, i)])
    vectors = np.asarray(vectors, np.float32)
    for start in range(0, len(vectors), chunk):
        sims = vectors[start:start + chunk] @ vectors.T
        for a, b in zip(*np.nonzero(sims >= verifier.cosine_floor)):
            i = start + int(a)
            if i < b and verifier.same(sigs[i], sigs[b], float(sims[a, b])):
                union.join(names[i], names[b])
    return np.array([int(union.find(n)) for n in names], np.int64)
