"""Colour words in text queries when the catalog's text names no colours: should the photo's colours count?

On the 9.6k set the titles and the colour field already name colours, and re-ranking by the colours seen
in the photos only cost precision (docs/quality.md). Many shops' titles do not name colours. This probe
strips every colour word from the titles and drops the colour field (kept as a label the text never
sees), indexes the catalog for real, and measures "<colour> <article type>" queries with the colour-word
boost at several weights. Usage: python -m benchmarks.text_colour [--sample 400]
"""

from __future__ import annotations

import argparse
import random
import tempfile
from dataclasses import replace
from pathlib import Path

from benchmarks.report import write_section
import shoplens.hybrid as hybrid
from shoplens.catalog import Catalog, read_catalog
from shoplens.colour import colour_words
from shoplens.embedcache import embed_products
from shoplens.encoders import create_encoder
from shoplens.search import Searcher
from shoplens.store.edge import EdgeStore
from shoplens.sync import sync_catalog
from shoplens.textevaluate import _precision, hold_out, query_text
from shoplens.textindex import TextIndexer

CATALOG = Path("../shared/datasets/fashion-product-images-small")
QUALITY = Path(__file__).resolve().parent.parent / "docs" / "quality.md"
LABEL = "colour_id"  # ends in _id: shoplens.text.document never indexes it, so only the label knows the colour
WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0)


def colourless(product):
    """The product as a shop without colour words would list it; its colour kept as a hidden label."""
    meta = dict(product.metadata)
    meta[LABEL] = meta.pop("colour", "")
    meta["title"] = colour_words(meta.get("title", ""))[1]
    return replace(product, metadata=meta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=400, help="held-out queries (default 400)")
    args = parser.parse_args()
    cat = read_catalog(CATALOG)
    products = [colourless(p) for p in cat.products if p.metadata.get("colour") and p.metadata.get("article_type")]
    indexed, held = hold_out(products, 0.1, 0)
    held = random.Random(0).sample(held, min(args.sample, len(held)))
    enc = create_encoder("efficientnet-lite0")
    known = embed_products(indexed, enc)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = EdgeStore(Path(tmp) / "index")
        sync_catalog(Catalog(cat.root, cat.layout, indexed), store, enc, text=TextIndexer(), progress=False,
                     known_vectors=dict(zip(known.hashes, known.vectors)))
        side = Searcher(store, store.read_meta(), _encoder=enc).text_side
        queries = [(p, f"{p.metadata[LABEL]} {p.metadata['article_type']}".lower()) for p in held]
        for weight in WEIGHTS:
            hits = [hybrid.search_text(side, q, 10, colour_weight=weight) for _p, q in queries]
            rows.append((weight, _precision(queries, hits, ["article_type"], indexed, 10),
                         _precision(queries, hits, ["article_type", LABEL], indexed, 10)))
        store.close()
    table = ["| colour-word weight | P@10 article type | P@10 article type + colour |", "|---|---|---|"]
    table += [f"| {w} | {a:.3f} | {b:.3f} |" for w, a, b in rows]
    text = "\n".join([
        f"{len(queries)} held-out \"<colour> <article type>\" queries against the other 90% of the 9.6k set, with "
        "every colour word stripped from the titles and the colour field dropped, so only the colours seen in the "
        "photos know colour. Weight = `COLOUR_WORD_BOOST` in shoplens/hybrid.py (x the top fused score x colour "
        "similarity); `names_colours` false in the index metadata, as the indexer finds for such a catalog: "
        f"{side.names_colours}.", "", *table])
    print(text)
    write_section("text_colour", text, QUALITY)


if __name__ == "__main__":
    main()
