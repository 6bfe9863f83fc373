"""Command line: python -m shoplens {index,search,info,check,encoders,evaluate,tune} ..."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shoplens.catalog import LAYOUTS
from shoplens.download import download_fashion_images
from shoplens.encoders import DEFAULT_ENCODER, create_encoder, list_encoders
from shoplens.encoders.factory import profile_options
from shoplens.errors import UserError
from shoplens.index.duplicates import GROUP_FIELD, check_threshold, has_groups
from shoplens.index.indexer import IndexOptions, index_catalog
from shoplens.index.tuning import PENDING_KEY
from shoplens.localise import CROP_MODES, DEFAULT_CROP
from shoplens.query.collapse import LISTINGS
from shoplens.query.hybrid import MODES
from shoplens.store import DEFAULT_INDEX, StoreError, open_store
from shoplens.quality.duplicatereport import no_groups_message
from shoplens.usererrors import USER_ERRORS


def add_store_args(parser: argparse.ArgumentParser) -> None:
    """--index / --qdrant-url / --milvus-uri / --collection, shared by every subcommand and the app."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--index", type=Path, default=None, help=f"embedded index folder (default {DEFAULT_INDEX})")
    where.add_argument("--qdrant-url", default=None, help="Qdrant server or cluster URL (API key from $QDRANT_API_KEY)")
    where.add_argument("--milvus-uri", default=None, metavar="URI",
                       help="Milvus server or cluster URL (token from $MILVUS_TOKEN), or a path like ./data/milvus.db "
                            "for Milvus Lite (embedded)")
    parser.add_argument("--collection", default="products", help="collection name on a Qdrant or Milvus server")


def parse_filters(pairs: list[str] | None) -> dict[str, list[str]]:
    """['colour=Red', 'colour=Blue', 'gender=Men'] -> {'colour': ['Red', 'Blue'], 'gender': ['Men']}."""
    filters: dict[str, list[str]] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--filter takes FIELD=VALUE, got {pair!r}")
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
    p.add_argument("--all-listings", action="store_true",
                   help="show every listing; by default a group of duplicate listings is one result")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("info", help="what an index holds")
    add_store_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("check", help="verify an index (vectors, payloads, counts, derived files); --repair fixes it")
    add_store_args(p)
    p.add_argument("--repair", action="store_true",
                   help="fix what can be fixed without the catalog, and name the indexer run for the rest")
    p.add_argument("--full", action="store_true",
                   help="compare every stored image vector with the embedding cache (default: a sample of 200)")
    p.add_argument("--json", action="store_true", help="print JSON")

    sub.add_parser("encoders", help="list the encoders")

    p = sub.add_parser("duplicates", help="groups of listings that show the same photo, largest first, flagged where "
                                          "their titles, types, colours or prices disagree")
    add_store_args(p)
    p.add_argument("--threshold", type=float, default=None,
                   help="perceptual-hash similarity in (0, 1] two photos need to be duplicates (default: the "
                        "index's, 0.875)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", type=Path, default=None, metavar="FILE", help="write the report as JSON")
    out.add_argument("--csv", type=Path, default=None, metavar="FILE", help="write the report as CSV, a line a "
                                                                           "listing")

    p = sub.add_parser("evaluate", help="measure result quality on a labelled catalog (precision@k, mAP, nDCG)")
    add_evaluate_args(p)

    p = sub.add_parser("tune", help="fit a tuning of the search to the catalog's labels (and labelled photos)")
    add_tune_args(p)
    return parser


def add_profile_args(p: argparse.ArgumentParser) -> None:
    """Encoder options that move a shop along the quality/cost frontier (recorded with the index)."""
    p.add_argument("--views", default=None, metavar="VIEWS",
                   help="EfficientNet-Lite encoders: views averaged per photo, names from crop,flip,zoom,zoomflip or "
                        "a count 1-4 (each costs one more pass; default crop)")
    p.add_argument("--members", default=None, metavar="LIST",
                   help="efficientnet-lite-ensemble: its members, e.g. lite0,lite1,lite2 or lite0@320,lite2 "
                        "(default lite0,lite1,lite2 at native sizes)")


def add_index_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("catalog", type=Path, help="catalog folder, or a CSV manifest with a 'path' column")
    add_store_args(p)
    p.add_argument("--layout", default="auto", choices=["auto", *LAYOUTS],
                   help="catalog layout (default: detect, and refuse one other than the index records; giving it "
                        "changes the index's layout deliberately)")
    p.add_argument("--encoder", default=None,
                   help=f"encoder name, or onnx:DIR for your own model (default {DEFAULT_ENCODER}, or the index's)")
    p.add_argument("--fit", choices=["crop", "pad", "trim"], default=None,
                   help="square the photo by centre crop, padding, or trimming plain margins then padding")
    add_profile_args(p)
    p.add_argument("--batch-size", type=int, default=32, help="images per encoder batch (default 32)")
    p.add_argument("--prune", action="store_true", help="remove products that left the catalog")
    p.add_argument("--text", choices=["auto", "off"], default="auto",
                   help="keyword and sentence vectors of titles and attributes, for text search (default: auto, "
                        "when the catalog has text)")
    p.add_argument("--no-colours", action="store_true", help="do not store each product's dominant colours")
    p.add_argument("--profile", choices=["auto", "default", "large"], default="auto",
                   help="configuration of a new embedded index: large = int8 quantization with rescoring, originals "
                        "on disk (for about a million products); auto = large from 500,000 products (default)")
    tuning = p.add_mutually_exclusive_group()
    tuning.add_argument("--tuning", type=Path, default=None, metavar="FILE",
                        help="tune the index's vectors with this tuning (from python -m shoplens tune); stored vectors "
                             "are re-projected without encoding photos again")
    tuning.add_argument("--tune-label", default=None, metavar="FIELD[,FIELD]",
                        help="fit a tuning on the catalog's FIELD labels (plus --photos) and apply it, in one run")
    tuning.add_argument("--no-tuning", action="store_true", help="remove the index's tuning (back to untuned vectors)")
    p.add_argument("--photos", type=Path, action="append", default=[], metavar="LABELLED_PHOTOS",
                   help="with --tune-label: extra labelled photos of the catalog's products (repeatable)")
    p.add_argument("--force", action="store_true",
                   help="with --prune: remove however many products left the catalog (without it a prune that would "
                        "remove more than --max-prune of the index, or all of it, changes nothing); with "
                        "--tune-label: apply the tuning even when it does not beat untuned search held-out")
    p.add_argument("--max-prune", type=float, default=None, metavar="FRACTION",
                   help="with --prune: the share of the index a prune may remove (default 0.2)")
    p.add_argument("--download", action="store_true", help="fetch the Kaggle fashion-images set into CATALOG first")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_index(args) -> int:
    """Body of `indexer.py`: a direct sync, or, while an app serves the index, the same sync run by the app."""
    from shoplens.index.live import hand_over_sync, index_locked_message, is_locked
    from shoplens.tune.fit import fit_for_index

    # A caller's own Namespace (app.py --catalog) may leave the tuning options out: they keep the index's tuning.
    options = IndexOptions(**{name: getattr(args, name) for name in IndexOptions.names() if hasattr(args, name)})
    if options.tuning is not None:
        from shoplens.vectors.tuning import load_tuning

        load_tuning(options.tuning)  # a damaged file is refused before anything is read or changed
    if args.download:
        download_fashion_images(args.catalog)
    remote = args.qdrant_url is not None or getattr(args, "milvus_uri", None) is not None
    summary = hand_over_sync(args.index, options) if not remote else None  # a server takes writes from anyone
    if summary is None:
        try:
            with open_store(args.index, args.qdrant_url, args.collection,
                            milvus_uri=getattr(args, "milvus_uri", None),
                            profile=getattr(args, "profile", "auto")) as store:
                summary = index_catalog(options, store, fit_tuning=fit_for_index)
        except StoreError as exc:
            if is_locked(exc):
                raise StoreError(index_locked_message(args.index or DEFAULT_INDEX)) from None
            raise
    if args.json:
        print(json.dumps(summary.as_dict(), indent=2))
    else:
        print(summary.line())
    return 0


def ignored_words(searcher, words: str) -> str:
    """The words a photo + words search cannot use on this index (all but colour words, without text vectors)."""
    from shoplens.colour.words import colour_words

    rest = colour_words(words, searcher.colour_names)[1]
    return "" if searcher.text_side.embed_text is not None or not rest else rest


def hit_row(hit, rank: int | None = None) -> dict:
    """The fields a person or a script wants from a hit: `score` ranks the list (it decreases down it),
    `similarity` is the image cosine to the query photo (None for words alone)."""
    similarity = None if hit.similarity is None else round(hit.similarity, 4)
    row = {"score": round(hit.score, 4), "similarity": similarity, "id": hit.product_id,
           "title": hit.payload.get("title", ""), "category": hit.payload.get("category", ""),
           "image_path": hit.payload.get("image_path", "")}
    listings = hit.payload.get(LISTINGS)
    if listings is not None:  # a collapsed result: its duplicate group and every listing of it
        row.update(group=str(hit.payload.get(GROUP_FIELD) or hit.product_id), listings=listings)
    if rank is not None:
        row = {"rank": rank, **row}
    return row


def cmd_search(args) -> int:
    from shoplens.query.search import Searcher

    if args.k < 1:
        raise UserError("-k must be at least 1")
    searcher = Searcher.open(args.index, args.qdrant_url, args.collection, encoder=args.encoder,
                             milvus_uri=args.milvus_uri)
    if not args.all_listings and not has_groups(searcher.meta):
        print(f"note: {no_groups_message(searcher.store)}", file=sys.stderr)
    if args.image is not None and args.text and ignored_words(searcher, args.text):
        print(f"note: this index has no text vectors, so only colour words refine the photo (ignored: "
              f"{ignored_words(searcher, args.text)!r})", file=sys.stderr)
    try:
        filters = parse_filters(args.filter)
        if args.image is None:
            if not args.text:
                raise UserError("give a query photo, --text WORDS, or both")
            items = [searcher.search_text(args.text, k=args.k, filters=filters, mode=args.mode,
                                          all_listings=args.all_listings)]
        elif args.crop == "all":
            items = searcher.search_items(args.image, k=args.k, filters=filters, words=args.text,
                                          all_listings=args.all_listings)
        else:
            items = [searcher.search_image(args.image, k=args.k, filters=filters, crop=args.crop, words=args.text,
                                           all_listings=args.all_listings)]
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
            if len(r.get("listings") or ()) > 1:
                print(f"{'':>11}{len(r['listings'])} listings: "
                      + ", ".join(f"{m['id']} {m['title'][:40]}" for m in r["listings"]))
    print(f"({sum(r.seconds for r in items) * 1000:.0f} ms)", file=sys.stderr)
    return 0


def index_info(store) -> dict:
    """Counts, encoder, filterable fields with their values, and where the catalog is."""
    meta = store.require_meta()
    fields = meta.get("filter_fields", [])
    return {"location": store.location, "count": store.count(), "encoder": meta.get("encoder"),
            "encoder_version": meta.get("encoder_version"), "encoder_options": meta.get("encoder_options", {}),
            "dim": meta.get("dim"), "filter_fields": fields,
            "filter_values": {f: dict(store.facet(f, limit=50)) for f in fields},
            "catalog_root": meta.get("catalog_root"), "layout": meta.get("layout"),
            "text": meta.get("text"), "colours": meta.get("colours"), "tuning": meta.get("tuning"),
            "tuning_pending": meta.get(PENDING_KEY), "created": meta.get("created"), "updated": meta.get("updated"),
            "words_unavailable": meta.get("words_unavailable"), "profile": meta.get("edge_profile"),
            "duplicates": meta.get("duplicates")}


def cmd_info(args) -> int:
    with open_store(args.index, args.qdrant_url, args.collection, milvus_uri=args.milvus_uri) as store:
        info = index_info(store)
    if getattr(args, "snapshot_of", None) is not None:
        info["location"] = f"{args.snapshot_of} (a snapshot from the app serving it)"
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
        if info["words_unavailable"]:
            print(f"          unavailable here: {info['words_unavailable']}")
    else:
        print("text:     none (no text search; re-index a catalog with titles into a new folder)")
    print(f"colours:  {'seen in each photo' if info['colours'] else 'not stored'}")
    print(f"tuning:   {tuning_summary(info)}")
    dups = info.get("duplicates")
    print(f"duplicates: {dups['groups']} groups of listings with the same photo (python -m shoplens duplicates)"
          if dups else "duplicates: not grouped yet (the next indexer run groups them)")
    print("filters:")
    for name, values in info["filter_values"].items():
        shown = ", ".join(f"{v} ({n})" for v, n in list(values.items())[:8])
        more = " ..." if len(values) > 8 else ""
        print(f"  {name}: {shown}{more}")
    return 0


def tuning_summary(info: dict) -> str:
    """info's one tuning line: 'lda on product_type (hash 1a2b3c4d); held-out P@10 0.69 → 0.81', or 'none'."""
    from shoplens.index.tuning import describe_tuning, tuning_line

    record, pending = info.get("tuning"), info.get("tuning_pending")
    if pending is not None:
        return (f"half-way through re-projecting to {describe_tuning(pending.get('to'))}; run the indexer on the "
                "catalog again to finish")
    if not record:
        return "none (untuned backbone vectors)"
    figures = tuning_line(record).partition(": ")[2]
    return describe_tuning(record) + (f"; {figures}" if figures else "")


def cmd_check(args) -> int:
    """Exit 0 on a whole index, 1 on a damaged one (one line per problem, each naming its fix).

    On an Edge index a repair refuses (exit 2, nothing changed) while an app serves the index or another
    process has it open; a plain check beside a serving app verifies a snapshot the app makes."""
    from shoplens.index.check import repair, verify
    from shoplens.index.live import index_locked_message, is_locked, readable_index, refuse_if_held

    if args.qdrant_url is not None or args.milvus_uri is not None:  # a server: its own process guards its files
        with open_store(None, args.qdrant_url, args.collection, milvus_uri=args.milvus_uri) as store:
            report = repair(store) if args.repair else verify(store, full=getattr(args, "full", False))
        return print_report(report, args.json)
    index = args.index or DEFAULT_INDEX
    try:
        if args.repair:
            refuse_if_held(index)
            with open_store(index) as store:
                try:
                    report = repair(store)
                except OSError as exc:  # moving damaged files aside: permissions, a read-only or full disk
                    raise StoreError(f"cannot repair the index at {store.location}: {exc}") from None
        else:
            with readable_index(index) as where:
                with open_store(where) as store:
                    report = verify(store, full=getattr(args, "full", False))
                if Path(where) != Path(index):
                    report.relocate(where, index)
                    report.notes.append(f"checked a snapshot the app serving {index} made between two writes"
                                        + ("; stop the app before repairing" if not report.ok else ""))
    except StoreError as exc:
        if is_locked(exc):
            raise StoreError(index_locked_message(index)) from None
        raise
    return print_report(report, args.json)


def print_report(report, as_json: bool) -> int:
    """A check's report as lines (or JSON); the exit status: 0 whole, 1 damaged."""
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print("\n".join(report.lines()))
    return 0 if report.ok else 1


def cmd_encoders(_args) -> int:
    from shoplens.encoders.factory import encoder_costs

    costs = encoder_costs()
    for name, text in list_encoders().items():
        mark = " (default)" if name == DEFAULT_ENCODER else ""
        cost = costs.get(name)
        line = (f"; {cost['ms_per_photo']:g} ms per photo ({cost.get('measured', 'measured')})" if cost else
                "; cost per photo not measured")
        print(f"{name}{mark}: {text}{line}")
    return 0


def add_evaluate_args(p) -> None:
    """The `evaluate` subcommand's options (the parser itself lives in cli.build_parser)."""
    p.add_argument("catalog", type=Path, nargs="?", help="labelled catalog (optional with --index)")
    p.add_argument("--label", action="append", default=None, metavar="FIELD",
                   help="metadata field that defines relevance; repeat it or join with ',' for several "
                        "(product_type,colour); required except with --text-phrasings")
    p.add_argument("--queries", type=Path, default=None,
                   help="a second catalog whose photos query CATALOG (e.g. shoppers' photos); default: leave-one-out")
    p.add_argument("--layout", default="auto", choices=["auto", *LAYOUTS], help="catalog layout (default: detect)")
    p.add_argument("--queries-layout", default="auto", choices=["auto", *LAYOUTS], help="layout of --queries")
    add_store_args(p)
    p.add_argument("--encoder", default=None,
                   help=f"encoder name, or onnx:DIR for your own model (default {DEFAULT_ENCODER}, or the index's)")
    p.add_argument("--fit", choices=["crop", "pad", "trim"], default=None,
                   help="square the photo by centre crop, padding, or trimming plain margins then padding")
    add_profile_args(p)
    p.add_argument("--crop", choices=CROP_MODES, default=None,
                   help=f"cut each --queries photo to its best product box first (auto) or not (off); "
                        f"default {DEFAULT_CROP} with --queries, off in leave-one-out")
    p.add_argument("--tuning", type=Path, default=None, metavar="FILE",
                   help="apply this tuning (from `tune`) to the catalog's and the queries' vectors")
    p.add_argument("--tune-folds", type=int, default=None, metavar="K",
                   help="cross-validate a tuning: fit it on K-1 folds of near-duplicate groups, query the whole "
                        "catalog with the held-out fold's photos (with --queries: fit on everything, query with them)")
    p.add_argument("--tune-label", action="append", default=None, metavar="FIELD",
                   help="label field(s) the tuning is fitted on (default: --label)")
    p.add_argument("--photos", action="append", type=Path, default=[], metavar="LABELLED_PHOTOS",
                   help="extra labelled photos to fit the tuning on (a catalog of any layout; repeatable)")
    p.add_argument("--photos-layout", default="auto", choices=["auto", *LAYOUTS], help="layout of --photos")
    p.add_argument("--method", default=None, help="tuning method (default: tune's default, lda-sqrt; see `tune --help`)")
    p.add_argument("--text-queries", action="append", default=None, metavar="FIELDS",
                   help="evaluate text search instead: held-out products' FIELDS as queries, e.g. "
                        "colour+article_type or title (repeatable); precision per search and label prefix")
    p.add_argument("--text-phrasings", type=Path, default=None, metavar="FILE",
                   help="evaluate text search on shoppers' phrasings with relevance rules (e.g. "
                        "benchmarks/data/text_phrasings.csv): capped precision@10 per search and split; "
                        "with --index DIR the index is kept there and reused")
    p.add_argument("--holdout", type=float, default=0.1, help="share of products held out with --text-queries")
    p.add_argument("--sample", type=int, default=None, help="evaluate a random sample of N queries (seeded)")
    p.add_argument("--seed", type=int, default=0, help="seed of --sample and of --tune-folds (default 0)")
    p.add_argument("--batch-size", type=int, default=32, help="images per encoder batch (default 32)")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="write the figures as JSON to FILE")
    p.add_argument("--rows", type=int, default=30, help="label values shown in the table (default 30)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def cmd_evaluate(args) -> int:
    """Body of `python -m shoplens evaluate`."""
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if args.catalog is None and args.index is None and args.qdrant_url is None and args.milvus_uri is None:
        raise UserError("give a CATALOG folder, or --index/--qdrant-url/--milvus-uri to evaluate an existing index")
    use_index = args.index is not None or args.qdrant_url is not None or args.milvus_uri is not None
    if args.text_phrasings:
        return _cmd_evaluate_phrasings(args)
    if not args.label:
        raise UserError("--label FIELD is required (the metadata field that defines relevance)")
    if args.text_queries:
        return _cmd_evaluate_text(args, use_index)
    if args.tune_folds is not None or args.tune_label or args.photos or args.method:
        return _cmd_evaluate_tuned(args, use_index)
    from shoplens.quality.evaluate import evaluate

    options = {**({"fit": args.fit} if args.fit else {}), **profile_options(args)}
    if use_index and (args.fit or profile_options(args)):
        raise UserError("--fit, --views and --members cannot change an existing index's vectors; leave them out "
                        "or evaluate the catalog")
    encoder, tuning = args.encoder, None
    if args.tuning is not None:
        from shoplens.vectors.tuning import check_tuning, load_tuning

        tuning = load_tuning(args.tuning)
        if not use_index:  # an index checks it itself: only its own tuning may query it
            encoder = create_encoder(args.encoder or tuning.encoder["encoder"], **options)
            check_tuning(tuning, encoder.describe())
    result = evaluate(None if use_index else args.catalog, args.label, queries=args.queries, layout=args.layout,
                      queries_layout=args.queries_layout, encoder=encoder, encoder_options=options,
                      index=args.index, qdrant_url=args.qdrant_url, milvus_uri=args.milvus_uri,
                      collection=args.collection, sample=args.sample,
                      seed=args.seed, batch_size=args.batch_size, progress=not args.quiet,
                      use_cache=not args.no_cache,
                      crop=args.crop or (DEFAULT_CROP if args.queries is not None else "off"), tuning=tuning)
    print(result.table(args.rows))
    _write_json(args.json, result.as_dict())
    return 0


def _cmd_evaluate_phrasings(args) -> int:
    """evaluate CATALOG --text-phrasings FILE [--index DIR] [--json FILE]: text search on shoppers' phrasings."""
    from shoplens.quality.phrasings import PhrasingError, evaluate_phrasings

    if args.catalog is None or args.qdrant_url is not None or args.queries is not None or args.text_queries:
        raise PhrasingError("--text-phrasings indexes a CATALOG itself (into --index DIR when given, to reuse it): "
                            "give the catalog, without --qdrant-url, --queries or --text-queries")
    result = evaluate_phrasings(args.catalog, args.text_phrasings, layout=args.layout, index=args.index,
                                encoder=args.encoder, progress=not args.quiet)
    print(result.table())
    if result.unscored:
        print(f"no product is relevant to (left out): {', '.join(result.unscored)}", file=sys.stderr)
    _write_json(args.json, result.as_dict())
    return 0


def _write_json(path: Path | None, data: dict) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n")
        print(f"wrote {path}", file=sys.stderr)


def _cmd_evaluate_tuned(args, use_index: bool) -> int:
    """evaluate --tune-folds K / --photos / --tune-label: figures of a tuning fitted here, never on its queries."""
    from shoplens.catalog import read_catalog as read
    from shoplens.vectors.embedcache import embed_products
    from shoplens.quality.evaluate import parse_label, with_recall_alias
    from shoplens.tune import DEFAULT_METHOD
    from shoplens.tune.crossval import cross_validate, query_evaluation
    from shoplens.tune.fit import gather

    if use_index or args.catalog is None:
        raise UserError("a cross-validated tuning is fitted from a CATALOG's cached vectors: give the catalog, "
                         "not --index")
    if args.tuning is not None:
        raise UserError("--tuning applies a finished tuning; --tune-folds/--photos/--tune-label fit one: use one or "
                         "the other")
    if args.fit or args.sample or (args.crop or "off") != "off":
        raise UserError("--fit, --sample and --crop auto do not apply to a tuned evaluation (it uses the "
                         "catalog's cached whole-photo vectors)")
    eval_fields = parse_label(args.label)
    fit_fields = parse_label(args.tune_label) if args.tune_label else eval_fields
    method = args.method or DEFAULT_METHOD
    encoder = create_encoder(args.encoder or DEFAULT_ENCODER, **profile_options(args))
    meta = encoder.describe()
    data = gather(args.catalog, fit_fields, args.photos, encoder, args.layout, args.photos_layout,
                  not args.quiet, not args.no_cache, args.batch_size)
    for extra in data.info["photos"]:
        print(f"photos {extra['source']}: {extra['matched']} of {extra['photos']} match a catalog "
              f"{'+'.join(fit_fields)} value", file=sys.stderr)
    extra_info = {"tuning": {"method": method, "label": fit_fields, "photos": data.info["photos"]}}
    if args.queries is not None:
        qcat = read(args.queries, args.queries_layout)
        qemb = embed_products(qcat.products, encoder, args.batch_size, not args.quiet, not args.no_cache)
        before, after, _tuning, left_out = query_evaluation(data, qemb.products, qemb.hashes, qemb.vectors,
                                                            fit_fields, eval_fields, meta, method, args.seed)
        extra_info["tuning"]["protocol"] = ("fitted on the catalog's labelled products and --photos; --queries "
                                            "photos query the tuned catalog")
        extra_info["tuning"]["queries_left_out_as_fitted"] = left_out
        extra_info["queries_source"] = str(qcat.root)
        if left_out:
            print(f"{left_out} query photos were also fitted on (same photo) and are left out", file=sys.stderr)
    else:
        folds = args.tune_folds or 5
        before, after = cross_validate(data, fit_fields, eval_fields, meta, method, folds, args.seed)
        extra_info["tuning"]["folds"] = folds
        extra_info["tuning"]["protocol"] = after.protocol
    after.info.update(extra_info)
    print(after.table(args.rows))
    metric = "hit@1" if args.queries is not None else "precision@10"
    print(f"untuned {metric} {before.summary[metric]:.3f} -> tuned ({method} on {'+'.join(fit_fields)}) "
          f"{after.summary[metric]:.3f}")
    _write_json(args.json, {**after.as_dict(), "untuned": with_recall_alias(before.summary),
                            "untuned_per_label": {k: with_recall_alias(v) for k, v in before.per_label.items()}})
    return 0


def _cmd_evaluate_text(args, use_index: bool) -> int:
    from shoplens.quality.textevaluate import evaluate_text, parse_query_kinds

    if use_index or args.queries is not None:
        raise UserError("--text-queries holds products out of a CATALOG and indexes the rest itself: "
                         "give the catalog, without --index or --queries")
    result = evaluate_text(args.catalog, args.label, parse_query_kinds(args.text_queries), layout=args.layout,
                           encoder=args.encoder, holdout=args.holdout, seed=args.seed, sample=args.sample,
                           progress=not args.quiet, use_cache=not args.no_cache)
    print(result.table())
    _write_json(args.json, result.as_dict())
    return 0


def add_tune_args(p) -> None:
    """The `tune` subcommand's options."""
    from shoplens.tune import DEFAULT_METHOD, list_methods

    p.add_argument("catalog", type=Path, help="labelled catalog (folder or CSV manifest)")
    p.add_argument("--label", action="append", required=True, metavar="FIELD",
                   help="label field(s) to learn, e.g. product_type or product_type,colour")
    p.add_argument("--photos", action="append", type=Path, default=[], metavar="LABELLED_PHOTOS",
                   help="extra labelled photos of the catalog's products (a catalog of any layout, e.g. "
                        "grocery-store/train.txt); their label values must match the catalog's; repeatable")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="where to write the tuning (.npz)")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="write the figures as JSON to FILE")
    p.add_argument("--layout", default="auto", choices=["auto", *LAYOUTS], help="catalog layout (default: detect)")
    p.add_argument("--photos-layout", default="auto", choices=["auto", *LAYOUTS], help="layout of --photos")
    p.add_argument("--encoder", default=None, help=f"backbone encoder (default {DEFAULT_ENCODER})")
    add_profile_args(p)
    methods = "; ".join(f"{k}: {v}" for k, v in list_methods().items())
    p.add_argument("--method", default=DEFAULT_METHOD, help=f"tuning method (default {DEFAULT_METHOD}). {methods}")
    p.add_argument("--force", action="store_true",
                   help="write the tuning even when it does not beat the untuned vectors on held-out products")
    p.add_argument("--holdout", type=float, default=0.2,
                   help="share of near-duplicate groups held out for the before/after figures (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out split and of training (default 0)")
    p.add_argument("--batch-size", type=int, default=32, help="images per encoder batch (default 32)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def cmd_tune(args) -> int:
    """Body of `python -m shoplens tune`: fit, show held-out figures before/after, write FILE unless it loses."""
    from shoplens.tune import tune_catalog

    if not 0 < args.holdout < 1:
        raise UserError("--holdout must be between 0 and 1")
    if args.out.exists() and args.out.is_dir():
        raise UserError(f"--out {args.out} is a folder; give a file name such as {args.out / 'tuning.npz'}")
    options = profile_options(args)
    encoder = create_encoder(args.encoder or DEFAULT_ENCODER, **options) if options else args.encoder
    result = tune_catalog(args.catalog, args.label, args.photos, encoder, args.method, not args.quiet,
                          layout=args.layout, photos_layout=args.photos_layout, holdout=args.holdout,
                          seed=args.seed, use_cache=not args.no_cache, batch_size=args.batch_size)
    tuning, info, figures = result.tuning, result.info, result.figures
    label = "+".join(tuning.label)
    print(f"tuning {tuning.kind} on {label}: {info['catalog_products']} catalog products, {info['labelled']} "
          f"labelled, {info['label_values']} values, {info['groups']} near-duplicate groups")
    for extra in info["photos"]:
        print(f"photos {extra['source']}: {extra['matched']} of {extra['photos']} match a catalog {label} value")
    metric = figures["metric"]
    before, after = figures["before"], figures["after"]
    def fig(value) -> str:  # None: no held-out query had a relevant product left to find
        return "-" if value is None else f"{value:.3f}"

    cells = ", ".join(f"{m} {fig(before[m])} -> {fig(after[m])}" for m in ("precision@1", "precision@10", "hit@1",
                                                                            "hit@5", "map@10"))
    print(f"held-out ({figures['queries']} photos of {args.holdout:.0%} of the groups): {cells}")
    written = result.improved or args.force
    if written:
        tuning.save(args.out)
        expansion = (f"query expansion k {tuning.expansion['k']}, alpha {tuning.expansion['alpha']:g}"
                     if tuning.expansion else "no query expansion")
        print(f"wrote {args.out}: {tuning.kind}, {tuning.out_dim}-d in {tuning.dim}, {expansion}, "
              f"hash {tuning.hash[:12]}, "
              f"{result.seconds:.1f} s (vectors {info['seconds_vectors']} s, held-out fit {info['seconds_measure']} s, "
              f"fit {info['seconds_fit']} s)")
        if not result.improved:
            print(f"warning: held-out {metric} did not improve ({fig(before[metric])} -> {fig(after[metric])}); "
                  "written because of --force", file=sys.stderr)
    else:
        print(f"not written: the tuned held-out {metric} ({fig(after[metric])}) is not better than the untuned "
              f"({fig(before[metric])}); --force writes it anyway", file=sys.stderr)
    _write_json(args.json, {"written": bool(written), "out": str(args.out), **tuning.describe(),
                            "out_dim": tuning.out_dim, "seconds": result.seconds, "info": info})
    return 0 if written else 1


def cmd_duplicates(args) -> int:
    """The duplicates report: every group with its listings, largest first, disagreements flagged."""
    from shoplens.quality import duplicatereport as report

    threshold = check_threshold(args.threshold) if args.threshold is not None else None
    with open_store(args.index, args.qdrant_url, args.collection, milvus_uri=args.milvus_uri) as store:
        meta = store.require_meta()
        groups = report.find_groups(store, threshold)
        fields = report.report_fields(meta)
        used = threshold if threshold is not None else (meta.get("duplicates") or {}).get("threshold")
        data = report.as_json(groups, fields, store.location, used)
    if args.json is not None:
        _write_json(args.json, data)
    elif args.csv is not None:
        try:
            args.csv.write_text(report.as_csv(groups, fields), encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write {args.csv}: {exc.strerror or exc}") from None
    else:
        print(report.as_text(groups, fields))
    if args.json is not None or args.csv is not None:
        print(f"{data['groups']} duplicate groups, {data['listings']} listings, {data['disagreeing_groups']} "
              f"disagree; written to {args.json or args.csv}")
    return 0


COMMANDS = {"index": cmd_index, "search": cmd_search, "info": cmd_info, "check": cmd_check, "encoders": cmd_encoders,
            "evaluate": cmd_evaluate, "tune": cmd_tune, "duplicates": cmd_duplicates}


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


# Commands that only read an index: beside a serving app they read a snapshot it makes (shoplens.index.live).
READ_ONLY = ("search", "info", "evaluate", "duplicates")


def beside_app(command):
    """`command` run on a snapshot of args.index when an app serves that index, else on the index itself."""
    def wrapped(args) -> int:
        from shoplens.index.live import readable_index

        if (args.qdrant_url is not None or getattr(args, "milvus_uri", None) is not None
                or (args.command == "evaluate" and args.index is None)):
            return command(args)
        with readable_index(args.index) as index:
            if index != args.index:
                args.snapshot_of = args.index  # messages name the served index, not the copy
            args.index = index
            return command(args)
    return wrapped


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = COMMANDS[args.command]
    return run(beside_app(command) if args.command in READ_ONLY else command, args)


def index_main(argv: list[str] | None = None) -> int:
    """Entry point of indexer.py: the `index` subcommand on its own."""
    parser = argparse.ArgumentParser(prog="python indexer.py", description="Index a catalog of product photos.")
    add_index_args(parser)
    return run(cmd_index, parser.parse_args(argv))
