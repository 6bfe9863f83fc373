"""Encoder comparison for docs/quality.md: python -m benchmarks.quality [--datasets DIR] [--only NAME ...]

Runs `shoplens.quality.evaluate.evaluate` for every encoder configuration on the shared datasets:
- fashion-images, leave-one-out, precision@10 by product_type and by product_type+colour;
- fashion-product-images-small, leave-one-out, precision@10 by article_type;
- grocery-store, shoppers' phone photos against the 81 web-shop images, hit@1/@5 by fine id;
plus ms per image (preprocess + inference, 32 already-decoded photos, after a warm-up).
Embeddings are cached, so a rerun only encodes what is new. Results accumulate in
cache_dir("quality")/results.json and the table between the markers in docs/quality.md is rewritten.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from benchmarks.report import machine, replace_block
from shoplens.atomic import atomic_write
from shoplens.cache import cache_dir
from shoplens.catalog import read_catalog
from shoplens.encoders import Encoder, create_encoder
from shoplens.images import load_image
from shoplens.quality.evaluate import evaluate, sample_products

DOC = Path(__file__).resolve().parent.parent / "docs" / "quality.md"
RESULTS = cache_dir("quality") / "results.json"

# (row name, encoder, options)
CONFIGS = [
    ("lite0-crop", "efficientnet-lite0", {"fit": "crop"}),
    ("lite0-pad", "efficientnet-lite0", {"fit": "pad"}),
    ("dinov2-crop", "dinov2-s", {"fit": "crop"}),
    ("dinov2-pad", "dinov2-s", {"fit": "pad"}),
    ("lite2-crop", "efficientnet-lite2", {"fit": "crop"}),
    ("lite2-pad", "efficientnet-lite2", {"fit": "pad"}),
    ("lite1-crop", "efficientnet-lite1", {"fit": "crop"}),
    ("lite1-pad", "efficientnet-lite1", {"fit": "pad"}),
    ("dinov2-pad-clsmean", "dinov2-s", {"fit": "pad", "pooling": "cls+mean"}),
    ("dinov2-crop-clsmean", "dinov2-s", {"fit": "crop", "pooling": "cls+mean"}),
    ("lite0-crop-260", "efficientnet-lite0", {"fit": "crop", "size": 260}),
    ("lite0-crop-300", "efficientnet-lite0", {"fit": "crop", "size": 300}),
]


def make_encoder(enc_name: str, options: dict) -> Encoder:
    """The registered encoder, or EfficientNet-Lite at a non-native input size (a benchmark-only variant)."""
    if enc_name.startswith("efficientnet") and "size" in options:
        return SizedLite(enc_name, options["fit"], options["size"])
    return create_encoder(enc_name, **options)


class SizedLite:
    """EfficientNet-Lite exported for another input size, to separate input size from model size."""

    def __new__(cls, variant: str, fit: str, size: int):
        from shoplens.encoders.efficientnet import EXPORT_VERSION, EfficientNetLiteEncoder

        class Sized(EfficientNetLiteEncoder):
            def __init__(self):
                super().__init__(variant, fit)
                self.size = self.draft_size = size
                self.options = {"fit": fit, "size": size}
                self.version = f"{EXPORT_VERSION}-{fit}{size}"

            def onnx_path(self) -> Path:
                path = cache_dir("onnx") / f"{variant}-{size}px-v{EXPORT_VERSION}.onnx"
                if not path.exists():
                    export_at(variant, size, path)
                return path

        return Sized()


def export_at(variant: str, size: int, path: Path) -> None:
    """efficientnet.export_onnx with a dummy input of `size` pixels (the graph is fully convolutional)."""
    import warnings

    import torch

    from shoplens.encoders.efficientnet import feature_module, load_torch_model

    module = feature_module(load_torch_model(variant))

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (torch.zeros(1, 3, size, size),), str(tmp), input_names=["pixels"],
                              output_names=["features"], opset_version=17, dynamo=False,
                              dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}})
    atomic_write(path, write)


def measure(config, datasets: Path, fi_sample: int | None, fs_sample: int | None, square_done: dict) -> dict:
    """All the figures of one configuration row."""
    name, enc_name, options = config
    out: dict = {"encoder": enc_name, "options": options, "fi_sample": fi_sample, "fs_sample": fs_sample}
    fi = read_catalog(datasets / "fashion-images")
    encoder = make_encoder(enc_name, options)
    for label in (["product_type"], ["product_type", "colour"]):
        r = evaluate(fi, label, encoder=encoder, sample=fi_sample, progress=True)
        out[f"fi_p10_{'+'.join(label)}"] = r.summary["precision@10"]
        out[f"fi_map10_{'+'.join(label)}"] = r.summary["map@10"]
        out[f"fi_ceiling_{'+'.join(label)}"] = ceiling(r)
        out["fi_catalog"] = r.info["catalog_size"]
    # The small set's photos are all 224x224 squares, where crop and pad give the same picture.
    square_key = (enc_name, options.get("pooling", ""), options.get("size", 0))
    fs_options = {**options, "fit": "crop"}
    if square_key in square_done and square_done[square_key].get("fs_sample") == fs_sample:
        out["fs_p10_article_type"] = square_done[square_key]["fs_p10_article_type"]
        out["fs_catalog"] = square_done[square_key]["fs_catalog"]
    else:
        r = evaluate(datasets / "fashion-product-images-small", "article_type",
                     encoder=make_encoder(enc_name, fs_options), sample=fs_sample, progress=True)
        out["fs_p10_article_type"] = r.summary["precision@10"]
        out["fs_catalog"] = r.info["catalog_size"]
    grocery = datasets / "grocery-store"
    for label in ("fine_id", "coarse_id"):
        r = evaluate(grocery, label, queries=grocery / "val.txt", encoder=encoder, progress=True)
        out[f"gr_r1_{label}"] = r.summary["hit@1"]
        out[f"gr_r5_{label}"] = r.summary["hit@5"]
    out["ms_per_image"] = speed(enc_name, options, fi)
    out["measured"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return out


def ceiling(result, k: int = 10) -> float:
    """The best precision@k any encoder could reach: queries with fewer than k relevant items cap it."""
    n = result.ranking.n_relevant
    return round(float(np.mean(np.minimum(n[n > 0], k) / k)), 3)


def speed(enc_name: str, options: dict, catalog, n: int = 32, repeats: int = 1) -> float:
    """Milliseconds per photo for preprocessing + inference in batches of 16 (decoding excluded), best of `repeats`."""
    encoder = make_encoder(enc_name, options)
    images = [load_image(p.path, draft_size=encoder.draft_size) for p in sample_products(catalog.products, n, seed=1)]
    encoder.embed_batch(images[:16])  # warm-up: session creation and first-run allocations
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, n, 16):
            encoder.embed_batch(images[start:start + 16])
        best = min(best, time.perf_counter() - started)
    return round(best / n * 1000, 1)


def fmt(value, digits=3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(results: dict) -> str:
    """The markdown table of every measured configuration, in CONFIGS order."""
    head = ("| encoder | preprocessing | fashion-images P@10 product type | fashion-images P@10 type+colour "
            "| 9.6k P@10 article type | grocery hit@1 (product) | grocery hit@5 (product) | grocery hit@1 (coarse) "
            "| ms/image |\n|---|---|---|---|---|---|---|---|---|\n")
    rows = []
    for name, enc, options in CONFIGS:
        r = results.get(name)
        if not r:
            continue
        size = options.get("size") or {"efficientnet-lite1": 240, "efficientnet-lite2": 260}.get(enc, 224)
        prep = f"{options['fit']} {size}" + (f", {options['pooling']}" if "pooling" in options else "")
        rows.append(f"| {enc} | {prep} | {fmt(r['fi_p10_product_type'])} | {fmt(r['fi_p10_product_type+colour'])} "
                    f"| {fmt(r['fs_p10_article_type'])} | {fmt(r['gr_r1_fine_id'])} | {fmt(r['gr_r5_fine_id'])} "
                    f"| {fmt(r['gr_r1_coarse_id'])} | {fmt(r['ms_per_image'], 0)} |")
    sizes = {(r["fi_catalog"], r["fs_catalog"]) for r in results.values()}
    note = "; ".join(f"fashion-images catalog {a:,} products, 9.6k set catalog {b:,} products"
                     for a, b in sorted(sizes))
    caps = {(r.get("fi_ceiling_product_type"), r.get("fi_ceiling_product_type+colour")) for r in results.values()}
    caps = "; ".join(f"{a} by product type, {b} by type+colour" for a, b in sorted(caps, key=str) if a is not None)
    cap_note = (f" Highest precision@10 possible on fashion-images (classes with fewer than 10 other items): {caps}."
                if caps else "")
    dates = sorted(r["measured"] for r in results.values())
    return (head + "\n".join(rows) + f"\n\n_Leave-one-out catalog sizes: {note}.{cap_note} "
            f"Measured {dates[0]} to {dates[-1]} on {machine()}._\n")


def write_doc(results: dict, marker: str = "full") -> None:
    """Replace the text between <!-- quality:MARKER --> markers in docs/quality.md."""
    write_block(table(results), marker)


def write_block(body: str, marker: str) -> None:
    """Replace (or append) the text between <!-- quality:MARKER --> markers in docs/quality.md with `body`."""
    replace_block(DOC, f"quality:{marker}", f"<!-- quality:{marker} -->\n{body}<!-- /quality:{marker} -->\n",
                  "# Result quality\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "datasets")
    parser.add_argument("--only", nargs="*", default=None, help="configuration names to run (default: all)")
    parser.add_argument("--fi-sample", type=int, default=None, help="fashion-images sample (default: all 2,906)")
    parser.add_argument("--fs-sample", type=int, default=None, help="9.6k set sample (default: all 9,583)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="results file (one per sample setting)")
    parser.add_argument("--marker", default="full", help="which table in docs/quality.md to rewrite (full, sample)")
    parser.add_argument("--speed-only", action="store_true", help="only re-measure ms/image (best of 3) of stored rows")
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text()) if args.results.exists() else {}
    if args.speed_only:
        fi = read_catalog(args.datasets / "fashion-images")
        for name, enc_name, options in CONFIGS:
            if name in results and (args.only is None or name in args.only):
                results[name]["ms_per_image"] = speed(enc_name, options, fi, repeats=3)
                print(name, results[name]["ms_per_image"], flush=True)
        args.results.write_text(json.dumps(results, indent=2))
        write_doc(results, args.marker)
        return 0
    for config in CONFIGS:
        if args.only is not None and config[0] not in args.only:
            continue
        square_done = {(r["encoder"], r["options"].get("pooling", ""), r["options"].get("size", 0)): r
                       for r in results.values()}
        print(f"== {config[0]}", flush=True)
        results[config[0]] = measure(config, args.datasets, args.fi_sample, args.fs_sample, square_done)
        print(json.dumps(results[config[0]]), flush=True)
        args.results.write_text(json.dumps(results, indent=2))
        write_doc(results, args.marker)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
