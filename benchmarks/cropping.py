"""Cropping before encoding, for docs/quality.md: python -m benchmarks.cropping [--datasets DIR] [--no-write]

Query side: shoppers' phone photos (grocery) searched whole, or cut to the best saliency box first
(`--crop auto`), at three thresholds. Catalog side: product shots with plain margins trimmed
(`--fit trim`), or cut to their main object by the same localiser. Figures: grocery hit@1/@5 by
product and hit@1 by coarse class; fashion-images leave-one-out precision@10 by product type and
by type + colour. Encoder efficientnet-lite0 throughout; embeddings are cached, so a rerun is quick.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.quality import write_block
from benchmarks.report import machine
from shoplens.catalog import read_catalog
from shoplens.encoders import create_encoder
from shoplens.localise import CropEncoder, create_localiser
from shoplens.quality.evaluate import evaluate

ENCODER = "efficientnet-lite0"
THRESHOLDS = (0.3, 0.5, 0.8)


def grocery_rows(datasets: Path) -> list[list[str]]:
    """One row per configuration: what is cropped, and hit@1/@5 (product) and hit@1 (coarse class)."""
    root = datasets / "grocery-store"
    catalog, queries = read_catalog(root), read_catalog(root / "val.txt")
    default = create_localiser("saliency")
    configs = [("whole photo (`--crop off`)", "catalog as is", create_encoder(ENCODER), "off", default)]
    for t in THRESHOLDS:
        name = f"best saliency box, threshold {t}" + (" (`--crop auto`)" if t == default.threshold else "")
        configs.append((name, "catalog as is", create_encoder(ENCODER), "auto", create_localiser("saliency", threshold=t)))
    configs += [("whole photo", "plain margins trimmed (`--fit trim`)", create_encoder(ENCODER, fit="trim"), "off",
                 default),
                ("cut to its main object", "cut to its main object", CropEncoder(create_encoder(ENCODER), default),
                 "off", default)]
    rows = []
    for query_side, catalog_side, encoder, crop, localiser in configs:
        figures = [evaluate(catalog, label, queries=queries, encoder=encoder, crop=crop, localiser=localiser,
                            progress=True).summary for label in ("fine_id", "coarse_id")]
        rows.append([query_side, catalog_side, f"{figures[0]['hit@1']:.3f}", f"{figures[0]['hit@5']:.3f}",
                     f"{figures[1]['hit@1']:.3f}"])
        print(rows[-1], flush=True)
    return rows


def fashion_rows(datasets: Path) -> list[list[str]]:
    """Leave-one-out precision@10 by product type and by type + colour, per catalog-side preprocessing."""
    catalog = read_catalog(datasets / "fashion-images")
    configs = [("centre crop (default)", create_encoder(ENCODER)), ("padding (`--fit pad`)", create_encoder(ENCODER, fit="pad")),
               ("plain margins trimmed, then padded (`--fit trim`)", create_encoder(ENCODER, fit="trim")),
               ("cut to its main object (saliency box), then centre crop",
                CropEncoder(create_encoder(ENCODER), create_localiser("saliency")))]
    rows = []
    for name, encoder in configs:
        figures = [evaluate(catalog, label, encoder=encoder, progress=True).summary["precision@10"]
                   for label in (["product_type"], ["product_type", "colour"])]
        rows.append([name, f"{figures[0]:.3f}", f"{figures[1]:.3f}"])
        print(rows[-1], flush=True)
    return rows


def markdown(grocery: list[list[str]], fashion: list[list[str]]) -> str:
    def table(head, rows):
        return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                         + ["| " + " | ".join(r) + " |" for r in rows])

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (table(["shopper's photo", "catalog photo", "grocery hit@1 (product)", "grocery hit@5 (product)",
                   "grocery hit@1 (coarse)"], grocery)
            + "\n\n" + table(["catalog photo", "fashion-images P@10 product type", "fashion-images P@10 type+colour"],
                             fashion)
            + f"\n\n_{ENCODER}; boxes from the saliency localiser with a 10 % context margin. Measured {stamp} on "
              f"{machine()}; `python -m benchmarks.cropping`._\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "datasets")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/quality.md alone")
    args = parser.parse_args(argv)
    body = markdown(grocery_rows(args.datasets), fashion_rows(args.datasets))
    print(body)
    if not args.no_write:
        write_block(body, "crop")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
