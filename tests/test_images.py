"""The bad-image corpus: every awkward file a catalog or an upload can hold, generated here."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shoplens.images import ImageError, load_image


def _jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kw)
    return buf.getvalue()


def _png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG header that claims a huge picture (the classic decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _exif_rotated(orientation: int) -> bytes:
    # 40 wide, 20 tall, left half red: upright it becomes 20 wide, 40 tall.
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _jpeg_bytes(img, exif=exif.tobytes(), quality=95)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """name -> file. Names ending in '!' must be refused; the others must load."""
    root = tmp_path_factory.mktemp("bad-images")
    good = Image.new("RGB", (32, 24), (200, 30, 30))
    jpeg = _jpeg_bytes(good)
    files: dict[str, bytes] = {
        "zero-bytes!.jpg": b"",
        "truncated!.jpg": jpeg[: len(jpeg) // 3],
        "header-only!.jpg": jpeg[:20],
        "garbage!.jpg": bytes(range(256)) * 8,
        "text-file!.jpg": b"this is not a picture\n" * 10,
        "html-page!.png": b"<html><body>404 not found</body></html>",
        "pdf-document!.jpg": b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF",
        "png-bomb!.png": _png_bomb(50_000, 50_000),
        "corrupt-png-body!.png": _png_bomb(64, 64)[:-30] + b"\x00" * 30,
        "wrong-extension.png": jpeg,  # a JPEG named .png: content decides
        "no-extension": jpeg,
        "exif-rotated.jpg": _exif_rotated(6),
        "exif-rotated-8.jpg": _exif_rotated(8),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)

    def save(name: str, img: Image.Image, **kw) -> None:
        img.save(root / name, **kw)

    save("cmyk.jpg", Image.new("CMYK", (20, 20), (0, 255, 255, 0)))
    save("grey.png", Image.new("L", (20, 20), 128))
    save("one-bit.png", Image.new("1", (20, 20), 1))
    save("sixteen-bit.png", Image.fromarray((np.arange(400, dtype=np.uint16).reshape(20, 20) * 150), "I;16"))
    palette = Image.new("P", (20, 20), 3)
    palette.putpalette([0, 0, 0, 255, 255, 255, 10, 200, 10, 250, 0, 0] + [0] * 756)
    save("palette.png", palette)
    transparent = palette.copy()
    save("palette-transparent.png", transparent, transparency=3)
    save("rgba-cutout.png", Image.new("RGBA", (20, 20), (255, 0, 0, 0)))
    save("la.png", Image.new("LA", (20, 20), (100, 255)))
    frames = [Image.new("RGB", (20, 20), c) for c in [(255, 0, 0), (0, 255, 0)]]
    frames[0].save(root / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    save("webp.webp", good, format="WEBP")
    save("tiny-1x1.png", Image.new("RGB", (1, 1), (5, 5, 5)))
    save("float.tif", Image.fromarray(np.linspace(0, 1, 400, dtype=np.float32).reshape(20, 20), "F"))
    (root / "a-folder!.jpg").mkdir()
    return {p.name: p for p in sorted(root.iterdir())}


def test_corpus_is_big_enough(corpus):
    assert len(corpus) >= 20


def test_bad_files_are_refused_with_a_message_naming_them(corpus):
    for name, path in corpus.items():
        if "!" not in name:
            continue
        with pytest.raises(ImageError) as err:
            load_image(path)
        assert name in str(err.value), f"{name}: message does not name the file: {err.value}"


def test_awkward_but_valid_files_load_as_rgb(corpus):
    for name, path in corpus.items():
        if "!" in name:
            continue
        img = load_image(path)
        assert img.mode == "RGB", name
        assert img.size[0] >= 1 and img.size[1] >= 1


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.jpg")


def test_exif_orientation_is_applied(corpus):
    img = load_image(corpus["exif-rotated.jpg"])
    assert img.size == (20, 40)  # rotated upright
    top = np.asarray(img)[2, 10]
    assert top[0] > 200 and top[2] < 60  # orientation 6 puts the red half on top


def test_sixteen_bit_keeps_its_contrast(corpus):
    arr = np.asarray(load_image(corpus["sixteen-bit.png"]))
    assert arr.min() == 0 and arr.max() == 255  # rescaled, not clipped to white


def test_transparent_pixels_become_white(corpus):
    assert tuple(np.asarray(load_image(corpus["rgba-cutout.png"]))[0, 0]) == (255, 255, 255)
    assert tuple(np.asarray(load_image(corpus["palette-transparent.png"]))[0, 0]) == (255, 255, 255)


def test_animated_gif_uses_its_first_frame(corpus):
    r, g, _ = np.asarray(load_image(corpus["animated.gif"]))[5, 5]
    assert r > 200 and g < 50


def test_pixel_limit_and_byte_limit(tmp_path):
    big = tmp_path / "big.png"
    Image.new("RGB", (300, 300)).save(big)
    with pytest.raises(ImageError, match="over the limit"):
        load_image(big, max_pixels=10_000)
    from shoplens.images import read_bytes

    with pytest.raises(ImageError, match="over the"):
        read_bytes(big, max_bytes=10)


def test_draft_mode_decodes_big_jpegs_small_but_not_below_the_request(tmp_path):
    path = tmp_path / "large.jpg"
    Image.new("RGB", (1800, 2400), (10, 120, 200)).save(path, quality=90)
    img = load_image(path, draft_size=224)
    assert min(img.size) >= 224 and max(img.size) < 2400


def test_bytes_and_pil_inputs(tmp_path):
    data = _jpeg_bytes(Image.new("RGB", (10, 10), (1, 2, 3)))
    assert load_image(data).size == (10, 10)
    assert load_image(Image.new("L", (7, 5))).mode == "RGB"
    with pytest.raises(ImageError, match="upload"):
        load_image(b"not an image")
