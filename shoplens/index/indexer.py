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
    # with prune: remove however much left the catalog; with tune_label: apply it even when it does not beat
    # untuned search
    force: bool = False
    max_prune: float | None = None  # with prune: the share of the index it may remove (default DEFAULT_MAX_PRUNE)
    quiet: bool = False  # no progress bars

    def __post_init__(self) -> None:
        self.catalog = Path(self.catalog)
        self.tuning = Path(self.tuning) if self.tuning is not None else None
        self.photos = [Path(p) for p in self.photos or []]
        if self.encoder:  # onnx:DIR with DIR absolute, so an app in another working directory finds the model
            from shoplens.encoders.onnxmodel import canonical_name

            self.encoder = canonical_name(self.encoder)
        if self.batch_size < 1:
            raise UserError("--batch-size must be at least 1")
        if self.photos and not self.tune_label:
            raise UserError("--photos adds labelled photos to a tuning: give --tune-label FIELD too")
        if self.force and not (self.tune_label or self.prune):
            raise UserError("--force removes however much left the catalog with --prune, or applies a tuning fitted "
                            "by --tune-label: give --prune or --tune-label FIELD too")
        if self.max_prune is not None:
            if not 0 <= self.max_prune <= 1:
                raise UserError(f"--max-prune {self.max_prune:g}: give a share of the index from 0 to 1 (0.2 is 20 %)")
            if not self.prune:
                raise UserError("--max-prune limits what --prune removes: give --prune too")

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


def index_catalog(options: IndexOptions, store, encoders=None, progress=None, fit_tuning=None):
    """Sync options.catalog into an opened store with the indexer's options; returns the sync's Summary.

    The indexer runs it on the store it opened; a serving app on its own store (`encoders`: how the app gets
    an encoder, to reuse the one it searches with; `progress`: where the bar is drawn, the indexer's stderr).
    `fit_tuning(catalog, options, encoder, progress) -> (tuning or None, known vectors)` fits the tuning of
    --tune-label (shoplens.tune.fit.fit_for_index): fitting lies above the index (it evaluates held-out), so it
    is handed in by the command line and the app, never imported from here."""
    from shoplens.index.sync import DEFAULT_MAX_PRUNE, KEEP, sync_catalog
    from shoplens.index.text import TextIndexer, catalog_has_text

    encoders = encoders or create_encoder
    tuning = KEEP
    if options.tuning is not None:
        from shoplens.vectors.tuning import load_tuning

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
        if fit_tuning is None:
            raise UserError("--tune-label: this run cannot fit a tuning (no fitting was handed to it); fit one with "
                            "python -m shoplens tune and apply it with --tuning FILE")
        fitted_tuning, known = fit_tuning(catalog, options, encoder, progress)
        tuning = KEEP if fitted_tuning is None else fitted_tuning
    max_prune = None if options.force else (DEFAULT_MAX_PRUNE if options.max_prune is None else options.max_prune)
    return sync_catalog(catalog, store, encoder, text=text, colours=not options.no_colours,
                        batch_size=options.batch_size, prune=options.prune, max_prune=max_prune,
                        progress=progress, tuning=tuning, known_vectors=known, layout_chosen=options.layout != "auto")
