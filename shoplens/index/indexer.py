"""Running the indexer with its options: check them, pick the encoder and tuning, sync the catalog.

Both the command line (`python indexer.py`, shoplens.cli) and a serving app running a sync handed to it
(shoplens.index.live) call `index_catalog`, so the two runs are the very same.
"""

from __future__ import annotations


from shoplens.catalog import read_catalog
from shoplens.encoders import DEFAULT_ENCODER, create_encoder
from shoplens.errors import UserError
from shoplens.progress import stream_of


def check_index_args(args) -> None:
    """Refuse bad indexing options in one line (and fill those a hand-made Namespace, e.g. app.py's, leaves out)."""
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    # Callers that build their own Namespace (app.py --catalog) may leave the tuning options out: keep the tuning.
    for name, default in (("tuning", None), ("tune_label", None), ("no_tuning", False), ("photos", []),
                          ("force", False)):
        if not hasattr(args, name):
            setattr(args, name, default)
    if args.photos and not args.tune_label:
        raise UserError("--photos adds labelled photos to a tuning: give --tune-label FIELD too")
    if args.force and not args.tune_label:
        raise UserError("--force applies a tuning fitted by --tune-label: give --tune-label FIELD too")


def index_catalog(args, store, encoders=None, progress=None):
    """Sync args.catalog into an opened store with the indexer's options; returns the sync's Summary.

    The indexer runs it on the store it opened; a serving app on its own store (`encoders`: how the app gets
    an encoder, to reuse the one it searches with; `progress`: where the bar is drawn, the indexer's stderr)."""
    from shoplens.index.sync import KEEP, sync_catalog
    from shoplens.index.text import TextIndexer, catalog_has_text

    encoders = encoders or create_encoder
    tuning = KEEP
    if args.tuning is not None:
        from shoplens.tune import load_tuning

        tuning = load_tuning(args.tuning)
    elif args.no_tuning:
        tuning = None
    catalog = read_catalog(args.catalog, args.layout)
    meta = store.read_meta() or {}
    # A new index follows a given tuning's encoder (it only fits that one).
    fitted = tuning.encoder if tuning not in (KEEP, None) and not meta else {}
    name = args.encoder or meta.get("encoder") or fitted.get("encoder") or DEFAULT_ENCODER
    options = dict(meta.get("encoder_options", {})) if name == meta.get("encoder") else {}
    if fitted and name == fitted.get("encoder"):
        options = dict(fitted.get("encoder_options") or {})
    if args.fit:
        options["fit"] = args.fit
    encoder = encoders(name, **options)
    text = None
    if args.text == "auto" and catalog_has_text([p.metadata for p in catalog.products]):
        text = TextIndexer()
    known = None
    progress = False if args.quiet else (progress or True)
    if args.tune_label:
        tuning, known = tune_for_index(catalog, args, encoder, progress)
    return sync_catalog(catalog, store, encoder, text=text, colours=not args.no_colours,
                        batch_size=args.batch_size, prune=args.prune,
                        progress=progress, tuning=tuning, known_vectors=known)


def tune_for_index(catalog, args, encoder, progress=True):
    """--tune-label: fit a tuning on the catalog (its photos encoded once, into the embedding cache) and say how it
    did held-out; (the tuning to apply, or KEEP when it did not beat untuned search; the cached vectors)."""
    from shoplens.index.embedcache import cache_file, load_cache
    from shoplens.index.sync import KEEP
    from shoplens.index.tuning import tuning_line
    from shoplens.tune import tune_catalog

    result = tune_catalog(catalog, args.tune_label, photos=args.photos, encoder=encoder, progress=progress,
                          batch_size=args.batch_size)
    # Said even when quiet (--quiet hides bars, not outcomes), on the indexer's own terminal.
    out = stream_of(progress)
    line = tuning_line(result.tuning.describe()) or f"Tuned to {args.tune_label}"
    print(f"{line} ({result.seconds:.1f} s)", file=out, flush=True)
    tuning = result.tuning
    if not result.improved and not args.force:
        print("note: the tuning does not beat untuned search on held-out products, so it is not applied "
              "(--force applies it anyway)", file=out, flush=True)
        tuning = KEEP
    # Every catalog photo was just encoded into the cache: indexing reuses those vectors instead of encoding again.
    return tuning, load_cache(cache_file(encoder))
