"""Load any image a shop or shopper throws at us as a plain RGB picture, or fail clearly."""

from __future__ import annotations

import io
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from shoplens.errors import UserError

# A 16k x 8k photo is fine; anything past this is a decompression bomb or a mistake.
MAX_PIXELS = 128_000_000
MAX_BYTES = 64 * 1024 * 1024

# Pixels being decoded at once in this process, over all threads (the indexer's decode threads, thumbnails,
# uploads): two 6000x4000 photos. Each photo is shrunk right after decoding, so what stays in memory (the
# indexer's look-ahead, a batch) is small; only the decodes in flight are full size, and this bounds them.
DECODE_PIXELS = 48_000_000

# White, because catalog shots with transparency are cut-outs meant for a white page.
BACKGROUND = (255, 255, 255)


class ImageError(UserError):
    """An image that cannot be used; the message names the file and says why."""


class PixelBudget:
    """A budget of pixels decoded at once across threads: a decode waits until its pixels fit.

    A photo bigger than the whole budget still decodes, alone, so nothing is refused here (MAX_PIXELS does that).
    """

    def __init__(self, total: int):
        self.total = total
        self.used = 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, pixels: int):
        """Reserve `pixels` for the duration of the block (blocks while others hold too much)."""
        pixels = max(0, min(int(pixels), self.total))
        with self._cond:
            self._cond.wait_for(lambda: self.used + pixels <= self.total)
            self.used += pixels
        try:
            yield
        finally:
            with self._cond:
                self.used -= pixels
                self._cond.notify_all()


DECODING = PixelBudget(DECODE_PIXELS)


def read_bytes(path: str | Path, max_bytes: int = MAX_BYTES) -> bytes:
    """Read a file's bytes, refusing missing, empty and oversized files with a clear message."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not an image")
    if size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    if size > max_bytes:
        raise ImageError(f"{path}: file is {size / 2**20:.0f} MB, over the {max_bytes / 2**20:.0f} MB limit")
    return path.read_bytes()


def load_image(
    source: str | Path | bytes | Image.Image,
    *,
    name: str | None = None,
    draft_size: int | None = None,
    max_pixels: int = MAX_PIXELS,
    budget: int | None = None,
    reduce: bool = True,
) -> Image.Image:
    """Decode `source` into an upright 8-bit RGB image.

    `draft_size` lets JPEGs decode at a reduced scale (never below that size on the
    short side), which makes big catalog photos several times faster to read.
    `budget` bounds the pixels actually decoded (memory and time per photo): a JPEG may be
    bigger on paper when its draft scale brings it under, other formats are refused from
    their header, before any pixel is decoded. `reduce` (the default) then shrinks any photo by a
    whole factor while its short side stays >= `draft_size`, so what is kept in memory is small
    whatever the photo's size; decodes in flight share the process's DECODING pixel budget.
    Raises ImageError, naming `name` (or the path), for anything unusable.
    """
    if isinstance(source, Image.Image):
        label = name or "image"
        img = source
        # Already decoded by the caller (an upload decoded once and shared): its pixels are the photo searched,
        # so they are not shrunk again; only what is decoded here is reduced.
        reduce = False
    else:
        label = name or (str(source) if not isinstance(source, bytes) else "uploaded image")
        data = source if isinstance(source, bytes) else read_bytes(source)
        if not data:
            raise ImageError(f"{label}: empty file (0 bytes)")
        img = _open(data, label, max_pixels)
    try:
        width, height = img.size
        if width * height > max_pixels:
            raise ImageError(f"{label}: {width}x{height} pixels is over the limit of {max_pixels:,}")
        if getattr(img, "is_animated", False):
            img.seek(0)
        if draft_size and img.format == "JPEG":
            # Request a square so the short side stays >= draft_size whatever the EXIF rotation.
            img.draft("RGB", (draft_size, draft_size))
        if budget is not None:
            check_budget(img, label, budget)
        with DECODING.hold(img.size[0] * img.size[1]):
            img.load()
            img = ImageOps.exif_transpose(img)
            img = _to_rgb(img)
            if reduce and draft_size:
                factor = min(img.size) // draft_size
                if factor >= 2:
                    img = img.reduce(factor)  # a box filter: cheap, and the big decode is freed right here
            return img
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{label}: refused as a decompression bomb ({exc})") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, KeyError) as exc:
        raise ImageError(f"{label}: corrupt or truncated image ({exc})") from None


def megapixels(width: int, height: int) -> str:
    return f"{width * height / 1e6:.1f} megapixels"


def check_budget(img: Image.Image, label: str, budget: int) -> None:
    """Refuse, before decoding, an image whose decoded size (a JPEG's draft size) is over `budget` pixels."""
    width, height = img.size
    if width * height > budget:
        raise ImageError(f"{label}: {width}x{height} pixels ({megapixels(width, height)}) is too large; "
                         f"photos up to {budget / 1e6:.0f} megapixels can be searched, please send a smaller one")


def _open(data: bytes, label: str, max_pixels: int) -> Image.Image:
    with warnings.catch_warnings():
        # Our own pixel limit below decides; PIL's warning would only add noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise ImageError(f"{label}: not an image file (unknown format)") from None
        except Image.DecompressionBombError:
            raise ImageError(f"{label}: refused as a decompression bomb (too many pixels)") from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise ImageError(f"{label}: corrupt image header ({exc})") from None
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageError(f"{label}: image has no pixels")
    if width * height > max_pixels:
        raise ImageError(f"{label}: {width}x{height} pixels is over the limit of {max_pixels:,}")
    return img


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # PIL's own conversion clips 16-bit values to 255 (a white picture); rescale instead.
        arr = np.asarray(img, dtype=np.float64)
        low, high = float(arr.min()), float(arr.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        grey = ((arr - low) * scale).clip(0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, BACKGROUND)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")
