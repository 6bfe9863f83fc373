"""Running the indexer with its options: check them, pick the encoder and tuning, sync the catalog.

Both the command line (`python indexer.py`, shoplens.cli) and a serving app running a sync handed to it
(shoplens.index.live) call `index_catalog`, so the two runs are the very same.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from shoplens.catalog import read_catalog
from shoplens.encoders import DEFAULT_ENCODER, create_encoder
from shoplens.encoders.factory import profile_options
from shoplens.errors import UserError
from shoplens.progress import stream_of


@dataclass
class IndexOptions:
    """What one indexer run is asked to do: the options of `python indexer.py` that shape the sync.

    The command line (shoplens.cli) builds it from its arguments; an app builds it from a sync handed to it
    (`from_message`) or for its own `--watch` timer. Creating one checks it: bad options fail in one line."""

    catalog: Path
    layout: str = "auto"
    encoder: str | None = None
    fit: str | None = None
    views: str | None = None  # encoder option of the EfficientNet-Lite encoders (e.g. crop,flip)
    members: str | None = None  # encoder option of efficientnet-lite-ensemble
    batch_size: int = 32
    prune: bool = False
    text: str = "auto"
    no_colours: bool = False
    tuning: Path | None = None  # a tuning file to apply
    tune_label: str | None = None  # fit a tuning on these labels and apply it, in the same run
    no_tuning: bool = False
    photos: list[Path] = field(default_factory=list)  # with tune_label: extra labelled photos
    force: bool = False  # with tune_label: apply it even when it does not beat untuned search
    quiet: bool = False  # no progress bars

    def __post_init__(self) -> None:
        self.catalog = Path(self.catalog)
        self.tuning = Path(self.tuning) if self.tuning is not None else None
        self.photos = [Path(p) for p in self.photos or []]
        if self.batch_size < 1:
            raise UserError("--batch-size must be at least 1")
        if self.photos and not self.tune_label:
            raise UserError("--photos adds labelled photos to a tuning: give --tune-label FIELD too")
        if self.force and not self.tune_label:
            raise UserError("--force applies a tuning fitted by --tune-label: give --tune-label FIELD too")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def as_message(self) -> dict:
        """The options as plain JSON values with absolute paths, for an app in another working directory."""
        message = asdict(self)
        message["catalog"] = str(self.catalog.resolve())
        message["tuning"] = str(self.tuning.resolve()) if self.tuning is not None else None
        message["photos"] = [str(p.resolve()) for p in self.photos]
        return message

    @classmethod
    def from_message(cls, message: dict) -> "IndexOptions":
        """The options of a sync handed over by an indexer; unknown names are refused, missing ones default."""
        unknown = sorted(set(message) - set(cls.names()))
        if unknown:
            raise UserError(f"unknown indexing options {', '.join(unknown)}; known: {', '.join(cls.names())}")
        return cls(**{name: value for name, value in message.items() if value is not None})


def index_catalog(options: IndexOptions, store, encoders=None, progress=None):
    """Sync options.catalog into an opened store with the indexer's options; returns the sync's Summary.

    The indexer runs it on the store it opened; a serving app on its own store (`encoders`: how the app gets
    an encoder, to reuse the one it searches with; `progress`: where the bar is drawn, the indexer's stderr)."""
    from shoplens.index.sync import KEEP, sync_catalog
    from shoplens.index.text import TextIndexer, catalog_has_text

    encoders = encoders or create_encoder
    tuning = KEEP
    if options.tuning is not None:
        from shoplens.tune import load_tuning

        tuning = load_tuning(options.tuning)
    elif options.no_tuning:
        tuning = None
    catalog = read_catalog(options.catalog, options.layout)
    meta = store.read_meta() or {}
    # A new index follows a given tuning's encoder (it only fits that one).
    fitted = tuning.encoder if tuning not in (KEEP, None) and not meta else {}
    name = options.encoder or meta.get("encoder") or fitted.get("encoder") or DEFAULT_ENCODER
    encoder_options = dict(meta.get("encoder_options", {})) if name == meta.get("encoder") else {}
    if fitted and name == fitted.get("encoder"):
        encoder_options = dict(fitted.get("encoder_options") or {})
    if options.fit:
        encoder_options["fit"] = options.fit
    encoder_options.update(profile_options(options))
    encoder = encoders(name, **encoder_options)
    text = None
    if options.text == "auto" and catalog_has_text([p.metadata for p in catalog.products]):
        text = TextIndexer()
    known = None
    progress = False if options.quiet else (progress or True)
    if options.tune_label:
        tuning, known = tune_for_index(catalog, options, encoder, progress)
    return sync_catalog(catalog, store, encoder, text=text, colours=not options.no_colours,
                        batch_size=options.batch_size, prune=options.prune,
                        progress=progress, tuning=tuning, known_vectors=known)


def tune_for_index(catalog, options: IndexOptions, encoder, progress=True):
    """--tune-label: fit a tuning on the catalog (its photos encoded once, into the embedding cache) and say how it
    did held-out; (the tuning to apply, or KEEP when it did not beat untuned search; the cached vectors)."""
    from shoplens.index.embedcache import cache_file, load_cache
    from shoplens.index.sync import KEEP
    from shoplens.index.tuning import tuning_line
    from shoplens.tune import tune_catalog

    result = tune_catalog(catalog, options.tune_label, photos=options.photos, encoder=encoder, progress=progress,
                          batch_size=options.batch_size)
    # Said even when quiet (--quiet hides bars, not outcomes), on the indexer's own terminal.
    out = stream_of(progress)
    line = tuning_line(result.tuning.describe()) or f"Tuned to {options.tune_label}"
    print(f"{line} ({result.seconds:.1f} s)", file=out, flush=True)
    tuning = result.tuning
    if not result.improved and not options.force:
        print("note: the tuning does not beat untuned search on held-out products, so it is not applied "
              "(--force applies it anyway)", file=out, flush=True)
        tuning = KEEP
    # Every catalog photo was just encoded into the cache: indexing reuses those vectors instead of encoding again.
    return tuning, load_cache(cache_file(encoder))
