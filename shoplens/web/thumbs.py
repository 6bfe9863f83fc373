"""Small copies of the product photos for galleries, made once and kept beside the index.

A results page of 24 phone-sized originals (1800x2400, ~1 MB each) costs a visitor tens of megabytes; the
gallery tiles are ~200 px wide. Each thumbnail is named by the photo's content hash (recorded at indexing),
so a replaced photo gets a new thumbnail after its next sync and never shows a stale one; the full photo is
only sent when a product is opened.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from shoplens.atomic import atomic_write
from shoplens.images import ImageError, load_image

log = logging.getLogger("shoplens.web")

THUMB_SIZE = 320  # longest side, pixels: sharp on a 2x screen for tiles of ~160 CSS pixels
THUMB_DIR = "thumbs"
QUALITY = 82
_HASH = re.compile(r"^[0-9a-f]{16,128}$")


class Thumbnails:
    """Thumbnails in `folder`, one per content hash and size."""

    def __init__(self, folder: str | Path, size: int = THUMB_SIZE):
        self.folder = Path(folder)
        self.size = size

    def path(self, content_hash: str) -> Path | None:
        """Where the thumbnail of the photo with this content hash lives (None for a malformed hash)."""
        if not isinstance(content_hash, str) or not _HASH.match(content_hash):
            return None
        return self.folder / content_hash[:2] / f"{content_hash}-{self.size}.jpg"

    def get(self, photo: str | Path, content_hash: str) -> Path | None:
        """The thumbnail of `photo` (made now when missing), or None: the photo is small already, or no thumbnail
        can be made of it (show the photo)."""
        target = self.path(content_hash)
        if target is None:
            return None
        if target.is_file():
            return target
        try:
            with Image.open(photo) as header:  # reads the header only
                if max(header.size) <= self.size:
                    return None  # already small: the photo itself is the thumbnail
            # The draft decode reads a 1800x2400 JPEG at 1/4 scale or so: a few ms, not a full decode.
            image = load_image(Path(photo), draft_size=self.size)
            image.thumbnail((self.size, self.size))
            target.parent.mkdir(parents=True, exist_ok=True)
            # Two requests making the same one: each writes its own temporary file, either result is whole.
            atomic_write(target, lambda tmp: image.save(tmp, "JPEG", quality=QUALITY, optimize=True))
        except (ImageError, OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
            log.warning("no thumbnail for %s: %s", photo, exc)
            return None
        return target
