"""Tuning methods on the shared datasets (docs/quality.md, "Tuning to the shop"):

    python -m benchmarks.tuning --method lda --seed 0 [--sets fi,fic,fp,g]

Prints one JSON line of (untuned, tuned, seconds per fit) per set, all from the embedding cache:
- fi:  fashion-images, precision@10 by product type, 5 folds over near-duplicate groups (title or photo);
- fic: the same by product type + colour, fitted on product type + colour;
- fp:  the 9.6k set by article type, a 20% held-out split of the groups (as `tune` reports it);
- g:   grocery val recall@1/@5, fitted on the 81 iconic images + the 2,640 train photos, catalog = iconic.
Hyper-parameters were chosen with --seed 1 on fashion-images; figures are reported with --seed 0.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from benchmarks.common import DATASETS
from shoplens.catalog import read_catalog
from shoplens.encoders import DEFAULT_ENCODER, create_encoder
from shoplens.vectors.embedcache import embed_products
from shoplens.tune.crossval import cross_validate, query_evaluation
from shoplens.tune.fit import fit_tuning, gather, score, split_groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="lda")
    parser.add_argument("--options", default="{}", help="method options as JSON")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sets", default="fi,fic,fp,g")
    args = parser.parse_args()
    options = json.loads(args.options)
    enc = create_encoder(DEFAULT_ENCODER)
    meta = enc.describe()
    out = {"method": args.method, "options": options, "seed": args.seed}
    sets = args.sets.split(",")
    for key, fields in (("fi", ["product_type"]), ("fic", ["product_type", "colour"])):
        if key in sets:
            data = gather(DATASETS / "fashion-images", fields, encoder=enc)
            started = time.perf_counter()
            before, after = cross_validate(data, fields, fields, meta, args.method, 5, args.seed, options)
            out[key] = {"before": before.summary["precision@10"], "after": after.summary["precision@10"],
                        "seconds_per_fold": round((time.perf_counter() - started) / 5, 1)}
    if "fp" in sets:
        data = gather(DATASETS / "fashion-product-images-small", ["article_type"], encoder=enc)
        held = split_groups(data.groups, 0.2, args.seed)
        rows = np.flatnonzero(data.labelled & ~held)
        started = time.perf_counter()
        tuning = fit_tuning(data.vectors[rows], [data.labels[i] for i in rows], ["article_type"], meta, args.method,
                            args.seed, options)
        seconds = time.perf_counter() - started
        queries = np.flatnonzero(data.labelled & held)
        out["fp"] = {"before": score(data, queries, ["article_type"], meta).summary["precision@10"],
                     "after": score(data, queries, ["article_type"], meta, tuning).summary["precision@10"],
                     "seconds_fit": round(seconds, 1)}
    if "g" in sets:
        grocery = DATASETS / "grocery-store"
        data = gather(grocery, ["fine_id"], [grocery / "train.txt"], enc, photos_layout="grocery-photos")
        val = embed_products(read_catalog(grocery / "val.txt", "grocery-photos").products, enc)
        started = time.perf_counter()
        before, after, _t, _left = query_evaluation(data, val.products, val.hashes, val.vectors, ["fine_id"],
                                                    ["fine_id"], meta, args.method, args.seed, options)
        out["g"] = {"before": [before.summary["hit@1"], before.summary["hit@5"]],
                    "after": [after.summary["hit@1"], after.summary["hit@5"]],
                    "seconds_fit": round(time.perf_counter() - started, 1)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
