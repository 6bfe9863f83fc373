"""CPU cost of `--encoder onnx:DIR` models of CLIP ViT-B/32 and SigLIP 2 base shape, beside EfficientNet-Lite0.

python -m benchmarks.onnx_model [--images 64] [--batch 16] [--no-write]

The folders are exported offline by scripts/export_onnx_model.py --random-weights: the real architectures with
random weights (no download here), so their speed is the real models' and their vectors mean nothing. Written to
docs/onnx_model.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import OUT, ROOT, catalog_products, load_images, load_note, now, per_item_ms, table

MODELS = {"clip-vit-b32": "CLIP ViT-B/32 shape (random weights)",
          "siglip2-base-224": "SigLIP 2 base/16 224 shape (random weights)"}
DOC = ROOT / "docs" / "onnx_model.md"


def model_folder(name: str) -> Path:
    """The random-weight folder for `name`, exported on first use (a few minutes each)."""
    folder = OUT / "onnx-models" / name
    if not (folder / "shoplens-model.json").exists():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "export_onnx_model.py"), name, str(folder),
                        "--random-weights"], check=True)
    return folder


def time_encoder(encoder, images, batch: int, texts: bool) -> dict:
    """Medians over batches: embed_batch ms/img (wall and process CPU), one photo alone, one text query."""
    encoder.embed_batch(images[:batch])  # warm-up: session start, allocator
    wall, cpu = [], []
    for i in range(0, len(images) - batch + 1, batch):
        started, cpu_started = now(), time.process_time()
        encoder.embed_batch(images[i:i + batch])
        wall.append(per_item_ms(now() - started, batch))
        cpu.append(per_item_ms(time.process_time() - cpu_started, batch))
    single = []
    for img in images[:8]:
        started = now()
        encoder.embed_batch([img])
        single.append(per_item_ms(now() - started, 1))
    text = None
    if texts:
        encoder.embed_text(["warm up"])
        samples = []
        for words in ["red dress", "blue running shoes", "leather bag", "white shirt for men"] * 2:
            started = now()
            encoder.embed_text([words])
            samples.append(per_item_ms(now() - started, 1))
        text = float(np.median(samples))
    return {"wall": float(np.median(wall)), "cpu": float(np.median(cpu)), "single": float(np.median(single)),
            "text": text, "dim": encoder.dim, "images": batch * len(wall)}


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64, help="real photos encoded per model (multiple of --batch)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    args = ap.parse_args(argv)

    from shoplens.encoders import create_encoder

    images = load_images([p.path for p in catalog_products(args.images)], draft_size=None)
    rows, results = [], {}
    encoders = {"efficientnet-lite0": ("EfficientNet-Lite0 (built in)", create_encoder("efficientnet-lite0"))}
    for name, label in MODELS.items():
        encoders[name] = (label, create_encoder(f"onnx:{model_folder(name)}"))
    for name, (label, encoder) in encoders.items():
        r = time_encoder(encoder, images, args.batch, encoder.supports_text)
        print(name, r, flush=True)
        results[name] = r
    base = results["efficientnet-lite0"]["wall"]
    for name, (label, encoder) in encoders.items():
        r = results[name]
        rows.append([label, f"{encoder.size} px", f"{r['dim']}", f"{r['wall']:.1f}", f"{r['cpu']:.1f}",
                     f"{r['single']:.1f}", "-" if r["text"] is None else f"{r['text']:.1f}",
                     f"{r['wall'] / base:.1f}x"])
    body = "\n".join([
        f"### `--encoder onnx:DIR` on CPU (onnxruntime CPUExecutionProvider, default threads; batch {args.batch}, "
        f"{results['efficientnet-lite0']['images']} real fashion-images photos)", "",
        "The two ONNX folders were made offline by `scripts/export_onnx_model.py NAME DIR --random-weights`: the "
        "checkpoints' exact architectures (transformers' default CLIPConfig / SiglipConfig) with random weights. "
        "Speed depends on the shapes, not the weight values, so these are the figures to expect from the real "
        "checkpoints; their search quality is **not** measured here (no download on this machine).", "",
        table(["model", "input", "D", "embed_batch ms/photo", "CPU ms/photo", "one photo alone ms",
               "one text query ms", "vs Lite0"], rows), "",
        "embed_batch = square fit + normalise + model + L2, medians over batches; CPU ms is the process CPU time "
        "(all onnxruntime threads) per photo, which moves little when other jobs take cores.", "",
        f"Shared 2-core machine ({load_note()}): absolute figures are noisy; the ratios within one run are the "
        "reliable part. No GPU here: CUDA figures not measured.",
    ])
    if args.no_write:
        print(body)
    else:
        from benchmarks.report import write_section

        write_section("onnx_model", body, DOC)
        print(body)
    return body


if __name__ == "__main__":
    main()
