"""Helpers shared by the benchmarks: paths, timing, percentiles, memory, tables and the embedding cache."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out"  # git-ignored scratch space (embedding cache, temp indexes)
DATASETS = Path(os.environ.get("SHOPLENS_DATASETS", ROOT.parent / "shared" / "datasets"))
FASHION_IMAGES = DATASETS / "fashion-images"
FASHION_SMALL = DATASETS / "fashion-product-images-small"

NO_GPU = ("ImageBind GPU figures: not measured — no GPU was lent to the session that ran these benchmarks "
          "(CPU-only machine).")


def now() -> float:
    return time.perf_counter()


def per_item_ms(seconds: float, items: int) -> float:
    return 1000.0 * seconds / max(items, 1)


def percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def rss_mb() -> float:
    """Resident memory of this process in MiB."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def dir_mb(path: Path) -> float:
    """Bytes actually allocated on disk under `path`, in MiB (sparse mmap files count only what is used)."""
    total = 0
    for p in Path(path).rglob("*"):
        if p.is_file():
            total += p.stat().st_blocks * 512
    return total / 2**20


def met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**not met**")


def table(headers: list[str], rows: list[list]) -> str:
    """A Markdown table; floats are printed as given, so format them before."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def load_images(paths, draft_size: int | None, workers: int = 2):
    """Decode photos with the product's loader, in threads as the indexer does."""
    from shoplens.images import load_image

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: load_image(p, draft_size=draft_size), paths))


def catalog_products(limit: int | None = None):
    """Products of both shared fashion catalogs (fashion-images first), at most `limit`."""
    from shoplens.catalog import read_catalog

    products = []
    for root in (FASHION_IMAGES, FASHION_SMALL):
        if root.exists():
            products += read_catalog(root).products
    if not products:
        raise SystemExit(f"no shared datasets under {DATASETS} (set SHOPLENS_DATASETS)")
    return products[:limit] if limit else products


def real_embeddings(encoder_name: str = "efficientnet-lite0", limit: int | None = None,
                    batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, categories) of the shared catalogs, cached in benchmarks/out/ since encoding takes minutes."""
    cache = OUT / f"embeddings-{encoder_name}-{limit or 'all'}.npz"
    if cache.exists():
        data = np.load(cache)
        return data["vectors"], data["categories"]
    from shoplens.encoders import create_encoder
    from shoplens.vectors.embedcache import embed_products

    encoder = create_encoder(encoder_name)
    # Through the shared embedding cache (~/.cache/shoplens): photos the indexer or an evaluation already
    # encoded are not decoded again.
    embedded = embed_products(catalog_products(limit), encoder, batch_size=batch, progress=True)
    vectors = np.asarray(embedded.vectors, np.float32)
    categories = np.array([p.category or "none" for p in embedded.products])
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez(cache, vectors=vectors, categories=categories)
    return vectors, categories


def perturb(vectors: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Near-duplicates of `vectors`: add Gaussian noise of norm about `noise` and re-normalise."""
    out = vectors + rng.normal(0.0, noise / np.sqrt(vectors.shape[1]), vectors.shape).astype(np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out.astype(np.float32)


def make_big_jpegs(folder: Path, count: int, size=(1800, 2400), seed: int = 0) -> list[Path]:
    """Catalog-sized photos like the fashion-images originals: real 512 px photos upscaled, plus
    sensor-like noise so they do not compress (or decode) unrealistically fast; JPEG quality 90."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    sources = sorted(FASHION_IMAGES.glob("data/*/Images/images_with_product_ids/*.jpg"))
    if not sources:
        raise SystemExit(f"no photos under {FASHION_IMAGES} (set SHOPLENS_DATASETS)")
    folder.mkdir(parents=True, exist_ok=True)
    noise = rng.normal(0, 4, (size[1], size[0], 3)).astype(np.int16)  # one field, shifted per photo: fast
    paths = []
    for i in range(count):
        src = sources[int(rng.integers(len(sources)))]
        big = np.asarray(Image.open(src).convert("RGB").resize(size, Image.BICUBIC), dtype=np.int16)
        shift = int(rng.integers(size[1]))
        pixels = np.clip(big + np.roll(noise, shift, axis=0), 0, 255).astype(np.uint8)
        path = folder / f"big-{i:04d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def load_note() -> str:
    """The machine's load, to read timings against: other people's jobs share these cores."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min) on {os.cpu_count()} cores when it finished"
