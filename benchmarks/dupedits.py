"""The edits benchmarks/duplicates.py makes to catalog photos: what a re-listed product's photo goes through.

Each edit is mild, as a shop's feed or a second listing would make it: resized, re-compressed, lightly
cropped, watermarked, or re-coloured by a few percent. `edit(image, kind, rng)` is deterministic for a
given numpy Generator state.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

KINDS = ("resize", "recompress", "crop", "watermark", "recolour")


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def edit(image: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """`image` edited one way (`kind` from KINDS), with amounts drawn from `rng`."""
    image = image.convert("RGB")
    w, h = image.size
    if kind == "resize":  # to 40-80 % of the size
        scale = float(rng.uniform(0.4, 0.8))
        return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)
    if kind == "recompress":  # JPEG quality 20-60
        return _jpeg(image, int(rng.integers(20, 61)))
    if kind == "crop":  # 1-5 % off each side
        left, top, right, bottom = (float(v) for v in rng.uniform(0.01, 0.05, 4))
        return image.crop((round(w * left), round(h * top), w - round(w * right), h - round(h * bottom)))
    if kind == "watermark":  # a shop's name in a corner, half transparent
        layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        size = max(8, w // 10)
        x = int(rng.integers(2, max(3, w // 10)))
        y = int(rng.integers(h - 2 * size, h - size)) if rng.random() < 0.5 else int(rng.integers(2, size))
        draw.rectangle((x, y, x + 4 * size, y + size), fill=(255, 255, 255, 90))
        draw.text((x + 4, y + 2), "MYSHOP", fill=(40, 40, 40, 160), font_size=max(8, int(size * 0.8)))
        return Image.alpha_composite(image.convert("RGBA"), layer).convert("RGB")
    if kind == "recolour":  # each channel scaled by 1 +- 2-5 %, saturation by +- 5 %
        gains = 1 + rng.choice([-1, 1], 3) * rng.uniform(0.02, 0.05, 3)
        arr = np.clip(np.asarray(image, np.float32) * gains, 0, 255).astype(np.uint8)
        return ImageEnhance.Color(Image.fromarray(arr)).enhance(float(1 + rng.uniform(-0.05, 0.05)))
    raise ValueError(f"unknown edit {kind!r}; one of {', '.join(KINDS)}")
