"""What the web app may serve as files: the photos of the indexed products, one file at a time, nothing else.

Gradio serves any file under its `allowed_paths` folders. A catalog folder also holds the manifest, notes,
perhaps a `.env`; a manifest with absolute photo paths would make its own folder (a home folder, say) the
served root. So the index decides: `Photos` is the allow-list of the product photos the opened index names
(relative ones resolved against the catalog root, absolute ones as they are), and `PhotoGate` sits in front of
Gradio's file routes and answers 404 for every path that is neither such a photo nor a file Gradio itself
created (uploads and its copies of our photos, in its upload folder). Checks resolve symlinks first.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import re
from pathlib import Path
from typing import Iterable

from starlette.responses import FileResponse, PlainTextResponse

# Gradio's file routes: /gradio_api/file=<path> and the older /gradio_api/file/<path> (both still served).
FILE_ROUTE = re.compile(r"/gradio_api/file[=/]")
RELATIVE, ABSOLUTE = "relative", "absolute"
THUMB_NAME = re.compile(r"^[0-9a-f]{16,128}-\d+\.jpg$")  # shoplens.web.thumbs names: <photo hash>-<size>.jpg


def _normal(path: str) -> str:
    return os.path.normpath(os.path.abspath(path))


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def is_image_name(path: str) -> bool:
    """Whether a file name says it is a picture (a resolved link to `id_rsa` or `.env` does not)."""
    kind, _ = mimetypes.guess_type(path)
    return bool(kind and kind.startswith("image/"))


class Photos:
    """The product photos of an opened index, keyed by the absolute path the index names them by."""

    def __init__(self, root: str | Path | None, image_paths: Iterable[str],
                 content_hashes: Iterable[str] | None = None):
        """`content_hashes`: the products' photo hashes; a thumbnail of any other (a photo a sync removed or
        replaced) is no longer served once this list takes over (`update`). None: any thumbnail made here."""
        self.root = os.path.realpath(root) if root else None
        self.hashes = None if content_hashes is None else frozenset(h for h in content_hashes if h)
        # Hashes of photos a sync removed or replaced: Gradio's cached copies of them are refused too.
        self.retired: frozenset[str] = frozenset()
        self._copy_hashes: dict[tuple[str, int, int], str] = {}
        self._paths: dict[str, str] = {}
        for raw in image_paths:
            key = self._key(raw)
            if key is not None:
                self._paths[key] = ABSOLUTE if os.path.isabs(raw) else RELATIVE
        self._folders: list[str] = []
        self._thumbs: set[str] = set()  # thumbnails made of these photos (shoplens.web.thumbs)
        folders = {(os.path.realpath(os.path.dirname(k)), kind) for k, kind in self._paths.items()}
        for folder, kind in sorted(folders):
            if kind == ABSOLUTE or _inside(folder, self.root):  # `../` entries are never served
                self._cover(folder)

    @classmethod
    def from_store(cls, store, root: str | Path | None) -> "Photos":
        """Every product's `image_path` and photo hash in the store (one pass over the payloads: at app start and
        after each sync)."""
        paths, hashes = [], []
        for hit in store.iterate(page=1000):
            paths.append(str(hit.payload.get("image_path") or ""))
            hashes.append(str(hit.payload.get("content_hash") or ""))
        return cls(root, paths, hashes)

    def admit(self, image_path: str, content_hash: str = "") -> None:
        """Allow the photo of a product the index holds now (a hit read from the store during a sync in this
        process), before the allow-list is read again at the sync's end; same rules as at start."""
        key = self._key(str(image_path or ""))
        if content_hash and self.hashes is not None and content_hash not in self.hashes:
            self.hashes = self.hashes | {content_hash}  # a new set in one assignment: its thumbnail may be served
        if key is None or key in self._paths:
            return
        kind = ABSOLUTE if os.path.isabs(image_path) else RELATIVE
        folder = os.path.realpath(os.path.dirname(key))
        if kind == ABSOLUTE or _inside(folder, self.root):
            self._paths = {**self._paths, key: kind}  # a new dict in one assignment, as in update()
            self._cover(folder)

    def update(self, other: "Photos") -> None:
        """Take `other`'s photos (the index after a sync) in place: the gate and Gradio keep this object and list.
        Photos and thumbnails of products the sync removed or replaced are no longer served from here on."""
        self.root = other.root
        self._paths = other._paths  # one assignment: a request sees the old list or the new one
        if self.hashes is not None and other.hashes is not None:
            self.retired = (self.retired | (self.hashes - other.hashes)) - other.hashes
        self.hashes = other.hashes
        if other.hashes is not None:
            self._thumbs = {t for t in self._thumbs if thumbnail_hash(t) in other.hashes}
        for folder in other._folders:
            self._cover(folder)

    def __len__(self) -> int:
        return len(self._paths)

    def _key(self, raw: str) -> str | None:
        if not raw or "\0" in raw:
            return None
        if os.path.isabs(raw):
            return _normal(raw)
        return _normal(os.path.join(self.root, raw)) if self.root else None

    def _check(self, key: str) -> Path | None:
        # Resolved now, not at start: a photo swapped for a link to a secret after indexing is still refused.
        kind = self._paths.get(key)
        if kind is None:
            return None
        real = os.path.realpath(key)
        if kind == RELATIVE and not _inside(real, self.root):
            return None  # a link in the catalog pointing out of it
        if not is_image_name(real) or not os.path.isfile(real):
            return None
        self._cover(os.path.dirname(real))
        return Path(real)

    def find(self, image_path: str) -> Path | None:
        """The file to show for a product's `image_path`, or None (missing, or not a photo we may serve)."""
        key = self._key(str(image_path or ""))
        return self._check(key) if key else None

    def lookup(self, requested: str) -> Path | None:
        """The file behind a requested path, when it names an indexed product's photo or a thumbnail made of
        one; else None."""
        if not requested or "\0" in requested:
            return None
        key = _normal(requested)
        if key in self._thumbs:
            if self.hashes is not None and thumbnail_hash(key) not in self.hashes:
                return None
            return Path(key) if os.path.isfile(key) and not os.path.islink(key) else None
        return self._check(key)

    def retired_copy(self, path: str) -> bool:
        """Whether a file in Gradio's cache is its copy of a photo, or of a thumbnail, of a product a sync removed
        or replaced: thumbnails are named by their photo's hash, a photo's copy has the photo's own bytes."""
        retired = self.retired
        if not retired:
            return False
        if THUMB_NAME.match(os.path.basename(path)):
            return thumbnail_hash(path) in retired
        try:
            stat = os.stat(path)
        except OSError:
            return False
        key = (path, stat.st_size, stat.st_mtime_ns)
        digest = self._copy_hashes.get(key)
        if digest is None:
            sha = hashlib.sha256()
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    sha.update(chunk)
            digest = sha.hexdigest()
            if len(self._copy_hashes) > 10_000:
                self._copy_hashes = {}
            self._copy_hashes[key] = digest
        return digest in retired

    def allow_thumbnail(self, path: str | Path) -> None:
        """Let a thumbnail we made of an allowed photo be served (and copied by Gradio) like the photo."""
        key = _normal(str(path))
        self._thumbs.add(key)
        self._cover(os.path.dirname(os.path.dirname(key)))  # the thumbnails folder, above its hash prefixes

    def folders(self) -> list[str]:
        """The folders holding the photos (resolved; never the catalog root for its own sake): Gradio copies a
        handler's output files into its cache only from such `allowed_paths`. The list is live: `find` adds
        the folder of a photo that is a link into another folder. What is served is PhotoGate's decision."""
        return self._folders

    def _cover(self, folder: str) -> None:
        if folder and not any(_inside(folder, kept) for kept in self._folders):
            self._folders.append(folder)  # one atomic append: safe under concurrent requests

def thumbnail_hash(path: str) -> str:
    """The photo content hash a thumbnail is named by (`<hash>-<size>.jpg`, shoplens.web.thumbs)."""
    return os.path.basename(path).split("-", 1)[0]


class PhotoGate:
    """ASGI middleware: Gradio's file routes serve indexed photos and Gradio's own files only; the rest is 404."""

    def __init__(self, app, photos: Photos, uploads: str | Path):
        self.app = app
        self.photos = photos
        self.uploads = os.path.realpath(uploads)

    async def __call__(self, scope, receive, send):
        if scope.get("type") == "http":
            path = scope.get("path", "")
            match = FILE_ROUTE.search(path)
            if match:
                requested = path[match.end():]
                photo = self.photos.lookup(requested)
                if photo is not None:
                    response = FileResponse(photo, media_type=mimetypes.guess_type(photo.name)[0],
                                            content_disposition_type="inline", filename=photo.name)
                    return await response(scope, receive, send)
                if not self._gradio_file(requested) or self.photos.retired_copy(os.path.realpath(_normal(requested))):
                    return await PlainTextResponse("Not found", status_code=404)(scope, receive, send)
        await self.app(scope, receive, send)

    def _gradio_file(self, requested: str) -> bool:
        # Uploads and Gradio's copies of the photos we showed live in its upload folder; Gradio checks them
        # again itself. Anything else (URLs to fetch, other local files) never reaches Gradio.
        if not requested or "\0" in requested or "://" in requested:
            return False
        return _inside(os.path.realpath(_normal(requested)), self.uploads)
