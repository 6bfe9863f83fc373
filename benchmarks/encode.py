"""Encoding cost per image for EfficientNet-Lite0/1/2 at batch 32, and JPEG decoding with and without draft mode.

python -m benchmarks.encode [--images 256] [--big 24] [--variants efficientnet-lite0 ...] [--no-write]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import (NO_GPU, catalog_products, load_images, load_note, make_big_jpegs, met, now,
                               per_item_ms, table)

VARIANTS = ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"]
TARGET_LITE0_MS = 15.0


def time_encoder(name: str, images, batch: int) -> dict:
    """ms/img for preprocessing alone, the model alone and embed_batch (both), as medians over batches.

    The three are timed back to back on each batch, and the median taken, so that other people's jobs on
    this shared machine hit all three alike and a burst of contention does not skew one of them.
    """
    from shoplens.encoders import create_encoder

    encoder = create_encoder(name)
    encoder.embed_batch(images[:batch])  # warm-up: ONNX export on first use, session start, allocator
    session = encoder.session()
    pre, model, model_cpu, total = [], [], [], []
    for i in range(0, len(images) - batch + 1, batch):
        chunk = images[i:i + batch]
        started = now()
        tensor = np.stack([encoder.preprocess(img) for img in chunk])
        pre.append(per_item_ms(now() - started, batch))
        started, cpu = now(), time.process_time()
        session.run(["features"], {"pixels": tensor})
        model.append(per_item_ms(now() - started, batch))
        model_cpu.append(per_item_ms(time.process_time() - cpu, batch))
        started = now()
        encoder.embed_batch(chunk)
        total.append(per_item_ms(now() - started, batch))
    return {"name": name, "size": encoder.size, "images": batch * len(total), "pre": float(np.median(pre)),
            "model": float(np.median(model)), "model_cpu": float(np.median(model_cpu)),
            "total": float(np.median(total))}


def time_decode(paths: list[Path], draft_size: int | None, repeat: int = 2) -> float:
    """ms/img to load (decode, rotate, convert) with the product's loader, one thread, best of `repeat`."""
    from shoplens.images import load_image

    best = float("inf")
    for _ in range(repeat):
        started = now()
        for p in paths:
            load_image(p, draft_size=draft_size)
        best = min(best, now() - started)
    return per_item_ms(best, len(paths))


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=256, help="real photos encoded per variant (multiple of --batch)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--big", type=int, default=24, help="synthetic 1800x2400 JPEGs for the decode timing")
    ap.add_argument("--variants", nargs="+", default=VARIANTS)
    ap.add_argument("--no-write", action="store_true", help="print the section instead of writing docs/benchmarks.md")
    args = ap.parse_args(argv)

    products = catalog_products(args.images)
    raw = load_images([p.path for p in products], draft_size=None)  # full resolution: each variant resizes itself
    results = []
    for name in args.variants:
        r = time_encoder(name, raw, args.batch)
        print(r, flush=True)
        results.append(r)

    with tempfile.TemporaryDirectory(prefix="shoplens-bench-") as tmp:
        big = make_big_jpegs(Path(tmp), args.big)
        small = [p.path for p in products[:args.big * 4]]
        decode = {(kind, draft): time_decode(paths, draft)
                  for kind, paths in (("big", big), ("small", small)) for draft in (None, 224)}
    print(decode, flush=True)

    lite0 = next((r for r in results if r["name"] == "efficientnet-lite0"), None)
    rows = [[r["name"], f"{r['size']} px", f"{r['pre']:.1f}", f"{r['model']:.1f}", f"{r['model_cpu']:.1f}",
             f"{r['total']:.1f}",
             f"{r['total'] / lite0['total']:.2f}x" if lite0 else "-"] for r in results]
    speedup = decode[("big", None)] / decode[("big", 224)]
    body = [
        "### Summary", "",
        table(["target", "measured", "result"], [
            [f"Lite0 embed_batch ≤ {TARGET_LITE0_MS:.0f} ms/img (batch {args.batch}, preprocessing included)",
             f"{lite0['total']:.1f} ms/img" if lite0 else "not run",
             met(lite0["total"] <= TARGET_LITE0_MS) if lite0 else "n/a"],
        ]), "",
        f"### Encoders (batch {args.batch}, {results[0]['images'] if results else 0} real fashion-images photos, "
        "onnxruntime CPU, default threads)", "",
        "Photos are decoded at full size beforehand, so preprocessing includes the resize from up to 512 px. "
        "`embed_batch` = preprocessing + model + L2 normalisation. Medians over batches.", "",
        table(["encoder", "input", "preprocess ms/img", "model ms/img", "model CPU ms/img", "embed_batch ms/img",
               "vs Lite0"], rows), "",
        "Model CPU ms/img is the process CPU time (all onnxruntime threads) per image: it hardly moves when other "
        "jobs take cores, so it shows what an idle machine could reach (about CPU ms / cores in wall time).", "",
        "### JPEG decoding (`images.load_image`, one thread, best of 2)", "",
        table(["photos", "full decode ms/img", "draft_size=224 ms/img", "speed-up"], [
            [f"{args.big} synthetic 1800x2400 (q90)", f"{decode[('big', None)]:.1f}", f"{decode[('big', 224)]:.1f}",
             f"{speedup:.1f}x"],
            [f"{len(small)} fashion-images (≤512 px)", f"{decode[('small', None)]:.2f}", f"{decode[('small', 224)]:.2f}",
             f"{decode[('small', None)] / decode[('small', 224)]:.1f}x"],
        ]), "",
        f"Shared 2-core machine ({load_note()}): absolute figures are noisy; the ratios within one run are the "
        "reliable part.", "",
        NO_GPU,
    ]
    text = "\n".join(body)
    if args.no_write:
        print(text)
    else:
        from benchmarks.report import write_section

        write_section("encode", text)
        print(text)
    return text


if __name__ == "__main__":
    main()
