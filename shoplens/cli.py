"""Command line: python -m shoplens {index,search,info,check,encoders,evaluate} ..."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shoplens.catalog import LAYOUTS, CatalogError, read_catalog
from shoplens.download import DownloadError, download_fashion_images
from shoplens.encoders import DEFAULT_ENCODER, EncoderError, UnknownEncoderError, create_encoder, list_encoders
from shoplens.images import ImageError
from shoplens.hybrid import MODES
from shoplens.localise import CROP_MODES, DEFAULT_CROP, LocaliserError
from shoplens.store import DEFAULT_INDEX, StoreError, open_store

# Errors a user can act on: one line, exit status 2, no traceback.
USER_ERRORS = (CatalogError, DownloadError, EncoderError, ImageError, LocaliserError, StoreError, UnknownEncoderError,
               ValueError)


def add_store_args(parser: argparse.ArgumentParser) -> None:
    """--index / --qdrant-url / --collection, shared by every subcommand and the app."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--index", type=Path, default=None, help=f"embedded index folder (default {DEFAULT_INDEX})")
    where.add_argument("--qdrant-url", default=None, help="Qdrant server or cluster URL (API key from $QDRANT_API_KEY)")
    parser.add_argument("--collection", default="products", help="collection name on a Qdrant server")


def parse_filters(pairs: list[str] | None) -> dict[str, list[str]]:
    """['colour=Red', 'colour=Blue', 'gender=Men'] -> {'colour': ['Red', 'Blue'], 'gender': ['Men']}."""
    filters: dict[str, list[str]] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--filter takes FIELD=VALUE, got {pair!r}")
        filters.setdefault(key.strip(), []).append(value.strip())
    return filters


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m shoplens", description="Reverse image search for online shops.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="index a catalog of product photos (also: python indexer.py)")
    add_index_args(p)

    p = sub.add_parser("search", help="find the products most similar to a photo, to words, or to both")
    p.add_argument("image", type=Path, nargs="?", help="query photo (optional with --text)")
    p.add_argument("--text", default=None, metavar="WORDS",
                   help="search by words (titles and attributes); with a photo: like the photo, re-ranked by the words")
    p.add_argument("--mode", choices=MODES, default="fused",
                   help="text search: keyword, semantic, bridge or all fused (default fused)")
    add_store_args(p)
    p.add_argument("-k", type=int, default=10, help="how many results (default 10)")
    p.add_argument("--filter", action="append", metavar="FIELD=VALUE", help="only products with this value (repeatable)")
    p.add_argument("--encoder", default=None, help="must match the index's encoder (default: the index's)")
    p.add_argument("--crop", choices=[*CROP_MODES, "all"], default=DEFAULT_CROP,
                   help=f"search the best product box found in the photo (auto), the whole photo (off), or the "
                        f"whole photo and each product, results per item (all); default {DEFAULT_CROP}")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("info", help="what an index holds")
    add_store_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("check", help="verify an index (vectors, payloads, counts, derived files); --repair fixes it")
    add_store_args(p)
    p.add_argument("--repair", action="store_true",
                   help="fix what can be fixed without the catalog, and name the indexer run for the rest")
    p.add_argument("--json", action="store_true", help="print JSON")

    sub.add_parser("encoders", help="list the encoders")

    from shoplens.evaluate import add_evaluate_args

    p = sub.add_parser("evaluate", help="measure result quality on a labelled catalog (precision@k, mAP, nDCG)")
    add_evaluate_args(p)
    return parser


def add_index_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("catalog", type=Path, help="catalog folder, or a CSV manifest with a 'path' column")
    add_store_args(p)
    p.add_argument("--layout", default="auto", choices=["auto", *LAYOUTS], help="catalog layout (default: detect)")
    p.add_argument("--encoder", default=None, help=f"encoder name (default {DEFAULT_ENCODER}, or the index's)")
    p.add_argument("--fit", choices=["crop", "pad", "trim"], default=None,
                   help="square the photo by centre crop, padding, or trimming plain margins then padding")
    p.add_argument("--batch-size", type=int, default=32, help="images per encoder batch (default 32)")
    p.add_argument("--prune", action="store_true", help="remove products that left the catalog")
    p.add_argument("--text", choices=["auto", "off"], default="auto",
                   help="keyword and sentence vectors of titles and attributes, for text search (default: auto, "
                        "when the catalog has text)")
    p.add_argument("--no-colours", action="store_true", help="do not store each product's dominant colours")
    p.add_argument("--download", action="store_true", help="fetch the Kaggle fashion-images set into CATALOG first")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_index(args) -> int:
    from shoplens.sync import sync_catalog
    from shoplens.textindex import TextIndexer, catalog_has_text

    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    if args.download:
        download_fashion_images(args.catalog)
    catalog = read_catalog(args.catalog, args.layout)
    with open_store(args.index, args.qdrant_url, args.collection) as store:
        meta = store.read_meta() or {}
        name = args.encoder or meta.get("encoder") or DEFAULT_ENCODER
        options = dict(meta.get("encoder_options", {})) if name == meta.get("encoder") else {}
        if args.fit:
            options["fit"] = args.fit
        encoder = create_encoder(name, **options)
        text = None
        if args.text == "auto" and catalog_has_text([p.metadata for p in catalog.products]):
            text = TextIndexer()
        summary = sync_catalog(catalog, store, encoder, text=text, colours=not args.no_colours,
                               batch_size=args.batch_size, prune=args.prune, progress=not args.quiet)
    if args.json:
        print(json.dumps(summary.as_dict(), indent=2))
    else:
        print(summary.line())
    return 0


def ignored_words(searcher, words: str) -> str:
    """The words a photo + words search cannot use on this index (all but colour words, without text vectors)."""
    from shoplens.colour import colour_words

    rest = colour_words(words)[1]
    return "" if searcher.text_side.embed_text is not None or not rest else rest


def hit_row(hit, rank: int | None = None) -> dict:
    """The fields a person or a script wants from a hit."""
    row = {"score": round(hit.score, 4), "id": hit.product_id, "title": hit.payload.get("title", ""),
           "category": hit.payload.get("category", ""), "image_path": hit.payload.get("image_path", "")}
    if rank is not None:
        row = {"rank": rank, **row}
    return row


def cmd_search(args) -> int:
    from shoplens.search import Searcher

    if args.k < 1:
        raise ValueError("-k must be at least 1")
    searcher = Searcher.open(args.index, args.qdrant_url, args.collection, encoder=args.encoder)
    if args.image is not None and args.text and ignored_words(searcher, args.text):
        print(f"note: this index has no text vectors, so only colour words refine the photo (ignored: "
              f"{ignored_words(searcher, args.text)!r})", file=sys.stderr)
    try:
        filters = parse_filters(args.filter)
        if args.image is None:
            if not args.text:
                raise ValueError("give a query photo, --text WORDS, or both")
            items = [searcher.search_text(args.text, k=args.k, filters=filters, mode=args.mode)]
        elif args.crop == "all":
            items = searcher.search_items(args.image, k=args.k, filters=filters, words=args.text)
        else:
            items = [searcher.search_image(args.image, k=args.k, filters=filters, crop=args.crop, words=args.text)]
    finally:
        searcher.close()
    blocks = [{"box": r.box.as_dict() if r.box else None, "seconds": round(r.seconds, 4),
               "results": [hit_row(h, i) for i, h in enumerate(r.hits, 1)]} for r in items]
    if args.json:  # one search: its block at the top level; --crop all: a list of items, the whole photo first
        body = {"items": blocks} if args.crop == "all" else blocks[0]
        query = {"query": str(args.image), "crop": args.crop} if args.image else {"query_text": args.text,
                                                                                    "mode": args.mode}
        if args.image and args.text:
            query["words"] = args.text
        print(json.dumps({**query, **body}, indent=2))
        return 0
    for n, block in enumerate(blocks):
        box = block["box"]
        if args.crop == "all" or box:
            where = f"box {box['x0']},{box['y0']},{box['x1']},{box['y1']}" if box else "whole photo"
            print(f"{f'item {n}' if args.crop == 'all' and n else 'searched'}: {where}")
        if not block["results"]:
            print("no results")
        for r in block["results"]:
            print(f"{r['rank']:>3}  {r['score']:.3f}  {r['id']:<12} {r['title'][:60]:<60} {r['category']:<14} "
                  f"{r['image_path']}")
    print(f"({sum(r.seconds for r in items) * 1000:.0f} ms)", file=sys.stderr)
    return 0


def index_info(store) -> dict:
    """Counts, encoder, filterable fields with their values, and where the catalog is."""
    meta = store.read_meta()
    if meta is None:
        raise StoreError(f"no index at {store.location}; build one with: python indexer.py CATALOG")
    fields = meta.get("filter_fields", [])
    return {"location": store.location, "count": store.count(), "encoder": meta.get("encoder"),
            "encoder_version": meta.get("encoder_version"), "encoder_options": meta.get("encoder_options", {}),
            "dim": meta.get("dim"), "filter_fields": fields,
            "filter_values": {f: dict(store.facet(f, limit=50)) for f in fields},
            "catalog_root": meta.get("catalog_root"), "layout": meta.get("layout"),
            "text": meta.get("text"), "colours": meta.get("colours"),
            "created": meta.get("created"), "updated": meta.get("updated")}


def cmd_info(args) -> int:
    with open_store(args.index, args.qdrant_url, args.collection) as store:
        info = index_info(store)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"index:    {info['location']}")
    print(f"products: {info['count']}")
    print(f"encoder:  {info['encoder']} (version {info['encoder_version']}, {info['dim']}-d)")
    print(f"catalog:  {info['catalog_root']} ({info['layout']})")
    text = info["text"]
    if text:
        bridge = (text.get("bridge") or {}).get("pairs", 0)
        print(f"text:     BM25 + {text.get('model')} ({text.get('dim')}-d); bridge fitted on {bridge} products")
    else:
        print("text:     none (no text search; re-index a catalog with titles into a new folder)")
    print(f"colours:  {'seen in each photo' if info['colours'] else 'not stored'}")
    print("filters:")
    for name, values in info["filter_values"].items():
        shown = ", ".join(f"{v} ({n})" for v, n in list(values.items())[:8])
        more = " ..." if len(values) > 8 else ""
        print(f"  {name}: {shown}{more}")
    return 0


def cmd_check(args) -> int:
    """Exit 0 on a whole index, 1 on a damaged one (one line per problem, each naming its fix)."""
    from shoplens.check import repair, verify

    with open_store(args.index, args.qdrant_url, args.collection) as store:
        try:
            report = repair(store) if args.repair else verify(store)
        except OSError as exc:  # moving damaged files aside: permissions, a read-only or full disk
            raise StoreError(f"cannot repair the index at {store.location}: {exc}") from None
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print("\n".join(report.lines()))
    return 0 if report.ok else 1


def cmd_encoders(_args) -> int:
    for name, text in list_encoders().items():
        mark = " (default)" if name == DEFAULT_ENCODER else ""
        print(f"{name}{mark}: {text}")
    return 0


def cmd_evaluate(args) -> int:
    from shoplens.evaluate import cmd_evaluate as body

    return body(args)


COMMANDS = {"index": cmd_index, "search": cmd_search, "info": cmd_info, "check": cmd_check, "encoders": cmd_encoders,
            "evaluate": cmd_evaluate}


def run(command, args) -> int:
    """Run a subcommand; errors a user can act on print one line and exit 2."""
    try:
        return command(args)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to finish", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(COMMANDS[args.command], args)


def index_main(argv: list[str] | None = None) -> int:
    """Entry point of indexer.py: the `index` subcommand on its own."""
    parser = argparse.ArgumentParser(prog="python indexer.py", description="Index a catalog of product photos.")
    add_index_args(parser)
    return run(cmd_index, parser.parse_args(argv))
