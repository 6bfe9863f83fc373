"""Search an index by photo, or by a product already in it. One code path for every store."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from shoplens.colour.palette import COLOUR_VERSION
from shoplens.colour.pixels import colour_profile
from shoplens.encoders import Encoder, create_encoder
from shoplens.images import load_image
from shoplens.index.text import TextIndexer, check_text
from shoplens.index.tuning import (TUNING_FIELD, TunedEncoder, TuningIndexError, check_not_pending, check_query_tuning,
                                index_tuning)
from shoplens.localise import DEFAULT_CROP, DEFAULT_LOCALISER, Box, Localiser, check_crop, create_localiser
from shoplens.localise.crop import CROP_DRAFT, MARGIN
from shoplens.query.collapse import collapsed, group_of
from shoplens.query.expansion import expand_on_store
from shoplens.query.hybrid import TextSide, search_photo, search_text
from shoplens.store import Filters, Hit, Store, StoreError, check_encoder, open_store, point_id, text_dim
from shoplens.text.expand import LabelVocabulary
from shoplens.text.minilm import MiniLM


@dataclass
class Results:
    """Ranked hits plus how long the search took."""

    hits: list[Hit]
    seconds: float = 0.0
    box: Box | None = None  # the part of the photo that was searched; None: the whole photo


@dataclass
class Searcher:
    """An opened index and the encoder it was built with; open once per process and share."""

    store: Store
    meta: dict
    _encoder: Encoder | None = None
    _encoder_options: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    localiser_name: str = DEFAULT_LOCALISER
    _localiser: Localiser | None = None
    _text_side: TextSide | None = None
    _tuning: object = None  # the index's shoplens.tune.Tuning, once loaded
    _tuning_loaded: bool = False
    _query_encoder: Encoder | None = None

    @classmethod
    def open(cls, index: str | Path | None = None, qdrant_url: str | None = None, collection: str = "products",
             encoder: str | None = None, tuning=None, milvus_uri: str | None = None, **encoder_options) -> "Searcher":
        """Open an existing index; `encoder` (optional) must match the one it was built with, and `tuning`
        (optional, a shoplens.tune.Tuning) the one its vectors carry. Its own tuning is used without being asked."""
        store = open_store(index, qdrant_url, collection, milvus_uri=milvus_uri)
        try:
            meta = store.require_meta()
            check_not_pending(store, meta)  # half-way through a change of tuning: refuse before anything else
            options = {**meta.get("encoder_options", {}), **encoder_options}
            searcher = cls(store, meta, _encoder_options=options)
            if encoder is not None:  # asked for one: refuse now, before any photo is read
                enc = create_encoder(encoder, **(options if encoder == meta.get("encoder") else encoder_options))
                check_encoder(meta, enc.name, enc.version, enc.dim, store.location)
                searcher._encoder = enc
            check_query_tuning(meta, tuning, store.location, store.cli_args())
            searcher.tuning  # a missing or damaged tuning file is refused now, not at the first search
        except BaseException:
            store.close()  # a refused open must not keep the index (an Edge folder's lock) held
            raise
        return searcher

    @property
    def tuning(self):
        """The tuning the index's vectors carry (a shoplens.tune.Tuning), or None; loaded once."""
        with self._lock:
            return self._load_tuning()

    def _load_tuning(self):
        # Called under self._lock.
        if not self._tuning_loaded:
            self._tuning = index_tuning(self.store, self.meta)
            self._tuning_loaded = True
        return self._tuning

    @property
    def encoder(self) -> Encoder:
        """What turns a query photo into a vector of this index: its encoder, then its tuning when it has one.

        Created on first use (weights load then too)."""
        with self._lock:
            if self._query_encoder is None:
                if self._encoder is None:
                    enc = create_encoder(self.meta["encoder"], **self._encoder_options)
                    check_encoder(self.meta, enc.name, enc.version, enc.dim, self.store.location)
                    self._encoder = enc
                tuning = self._load_tuning()
                self._query_encoder = self._encoder if tuning is None else TunedEncoder(self._encoder, tuning)
            return self._query_encoder

    @property
    def localiser(self) -> Localiser:
        """The localiser that finds products in a photo, created on first use."""
        with self._lock:
            if self._localiser is None:
                self._localiser = create_localiser(self.localiser_name)
            return self._localiser

    @property
    def catalog_root(self) -> Path | None:
        root = self.meta.get("catalog_root")
        return Path(root) if root else None

    @property
    def filter_fields(self) -> list[str]:
        return list(self.meta.get("filter_fields", []))

    def embed(self, image: str | Path | bytes | Image.Image):
        """The query vector for a photo (path, bytes or PIL image)."""
        enc = self.encoder
        return enc.embed(load_image(image, draft_size=enc.draft_size))

    def search_vector(self, vector, k: int = 10, filters: Filters | None = None, exclude: str | None = None,
                      all_listings: bool = False) -> Results:
        """Nearest products to a vector; `exclude` leaves one point id out (the query product itself).
        One result per duplicate group unless `all_listings`."""
        started = time.perf_counter()
        extra = 1 if exclude else 0
        hits = collapsed(self.store, self.meta, lambda n: [
            Hit(h.id, h.score, h.payload, h.vector, h.text_vector, h.score)
            for h in self.store.search(vector, n + extra, filters) if h.id != exclude][:n], k, all_listings)
        return Results(self.checked(hits), time.perf_counter() - started)

    def expanded(self, vector, filters: Filters | None = None, exclude: str | None = None):
        """`vector` after the query expansion the index's tuning records (shoplens.query.expansion), if any."""
        tuning = self.tuning
        if tuning is None or not tuning.expansion:
            return vector
        return expand_on_store(self.store.search, self.store.retrieve, vector, tuning.expansion, filters, exclude)

    def checked(self, hits: list[Hit]) -> list[Hit]:
        """`hits`, after checking that their vectors carry the tuning this searcher queries with.

        Each hit's payload says which tuning its vector has, so an index re-projected while this searcher
        was open (a long-running app) is caught at no cost instead of being searched in the wrong space.
        """
        tuning = self.tuning
        expected = tuning.hash if tuning is not None else None
        if all(h.payload.get(TUNING_FIELD) == expected for h in hits):
            return hits
        meta = self.store.read_meta() or {}
        check_not_pending(self.store, meta)
        raise TuningIndexError(f"the index at {self.store.location} changed its tuning since it was opened "
                               "(re-indexed with another --tuning); open it again (restart the app)")

    def load(self, image: str | Path | bytes | Image.Image, crop: bool = True) -> Image.Image:
        """Decode a photo; large enough that a box cut from it still fills the encoder's input when `crop`."""
        draft = self.encoder.draft_size
        return load_image(image, draft_size=max(draft or 0, CROP_DRAFT) if crop and draft else draft)

    def locate(self, image: str | Path | bytes | Image.Image) -> list[Box]:
        """Boxes around the products in a photo (with the context margin search uses), best first.

        Coordinates are pixels of the photo as `load` decodes it (JPEGs may decode at a reduced size).
        """
        img = self.load(image)
        return [box.expand(MARGIN, *img.size) for box in self.localiser.locate(img)]

    def search_image(self, image: str | Path | bytes | Image.Image, k: int = 10, filters: Filters | None = None,
                     crop: str | Box = DEFAULT_CROP, words: str | None = None, all_listings: bool = False) -> Results:
        """The products most similar to a photo, best first; `seconds` includes localising and encoding.

        `crop`: "off" searches the whole photo, "auto" its best box (the whole photo when none is
        found), a Box (from `locate`) that part of it. `Results.box` says which part was searched.
        The photo's colours re-rank the candidates; `words` ("but in red") filter or re-rank them.
        """
        started = time.perf_counter()
        box = crop if isinstance(crop, Box) else None
        img = self.load(image, crop=box is not None or check_crop(crop) == "auto")
        if crop == "auto":
            boxes = self.localiser.locate(img)
            box = boxes[0].expand(MARGIN, *img.size) if boxes else None
        query = box.crop(img) if box else img
        return self.search_embedded(self.encoder.embed(query), k, filters, self.colours_of(query), words, box,
                                    started, all_listings=all_listings)

    def colours_of(self, image: Image.Image) -> list[float] | None:
        """The colour profile a photo's results are re-ranked by, or None when the index stores no colours."""
        return colour_profile(image)["colour_vector"] if self.has_colours else None

    def search_embedded(self, vector, k: int = 10, filters: Filters | None = None, colours: list[float] | None = None,
                        words: str | None = None, box: Box | None = None, started: float | None = None,
                        all_listings: bool = False) -> Results:
        """search_image for a photo already encoded (`vector`) with its colours (`colours_of`): the app encodes
        many shoppers' photos in one batch and searches each; `started` (perf_counter) is when its work began.
        One result per duplicate group unless `all_listings`."""
        started = time.perf_counter() if started is None else started
        side = self.text_side if words and self.has_text else None
        vector = self.expanded(vector, filters)  # query expansion, when the index's tuning records one
        hits = collapsed(self.store, self.meta, lambda n: search_photo(
            self.store, vector, n, filters, query_colours=colours, words=words, side=side,
            colour_names=self.colour_names), k, all_listings)
        return Results(self.checked(hits), time.perf_counter() - started, box)

    def search_items(self, image: str | Path | bytes | Image.Image, k: int = 10,
                     filters: Filters | None = None, words: str | None = None,
                     all_listings: bool = False) -> list[Results]:
        """Results for the whole photo first, then for each product found in it (best box first)."""
        img = self.load(image)
        whole = self.search_image(img, k, filters, crop="off", words=words, all_listings=all_listings)
        return [whole] + [self.search_image(img, k, filters, crop=box, words=words, all_listings=all_listings)
                          for box in self.locate(img)]

    def more_like(self, product_id: str, k: int = 10, filters: Filters | None = None,
                  all_listings: bool = False) -> Results:
        """Products similar to one already indexed, from its stored vector (no re-encoding); its own duplicate
        listings are not "more like" it, so collapsed results leave its group out."""
        started = time.perf_counter()
        pid = point_id(product_id)
        found = self.store.retrieve([pid], with_vector=True)
        if not found:
            raise StoreError(f"product {product_id!r} is not in the index")
        vector = self.expanded(found[0].vector, filters, pid)
        hits = collapsed(self.store, self.meta, lambda n: [h for h in search_photo(
            self.store, vector, n + 1, filters, query_colours=found[0].payload.get("colour_vector"))
            if h.id != pid][:n], k, all_listings, exclude=[group_of(found[0])])
        return Results(self.checked(hits), time.perf_counter() - started)

    def product(self, product_id: str) -> Hit | None:
        """One indexed product by its product id."""
        found = self.store.retrieve([point_id(product_id)])
        return found[0] if found else None

    @property
    def has_colours(self) -> bool:
        """Whether the index stores the colours seen in each photo, in this version's layout."""
        return (self.meta.get("colours") or {}).get("version") == COLOUR_VERSION

    @property
    def has_text(self) -> bool:
        """Whether this index can be searched by words."""
        return bool(text_dim(self.meta)) or self.encoder.supports_text

    @property
    def colour_names(self) -> frozenset:
        """The catalog's product names that contain colour words ("orange juice"), recorded at indexing."""
        return frozenset((self.meta.get("text") or {}).get("colour_names") or ())

    @property
    def text_side(self) -> TextSide:
        """What text queries need (sentence model, a text tower), set up on first use.

        The bridge is not loaded here: only a bridge search loads it (TextSide.get_bridge), outside this
        lock, since a missing or stale file is re-fitted from every stored vector."""
        with self._lock:
            if self._text_side is None:
                embed_text = load = labels = None
                if text_dim(self.meta):
                    indexer = TextIndexer(MiniLM(threads=1))  # one query: a second thread costs more than it saves
                    check_text(self.meta, indexer, self.store.location)
                    embed_text = indexer.embed_query
                    load = lambda: indexer.load_bridge(self.store, self.meta)  # noqa: E731
                    labels = LabelVocabulary.from_store(self.store, indexer.model.embed_texts)  # embedded on first use
                image_text = None
                if self._encoder_supports_text():
                    image_text = lambda text: self.encoder.embed_text([text])[0]  # noqa: E731
                names_colours = (self.meta.get("text") or {}).get("names_colours", True)
                self._text_side = TextSide(self.store, embed_text, None, image_text, names_colours,
                                           self.colour_names, load, labels=labels)
            return self._text_side

    def _encoder_supports_text(self) -> bool:
        # Asked under self._lock: read the encoder without taking the lock again (a tuning does not change it).
        enc = self._encoder or create_encoder(self.meta["encoder"], **self._encoder_options)
        return enc.supports_text

    def search_text(self, text: str, k: int = 10, filters: Filters | None = None, mode: str = "fused",
                    all_listings: bool = False) -> Results:
        """The products best matching words (keyword and semantic search fused, colour-aware), best first; one
        per duplicate group unless `all_listings`."""
        started = time.perf_counter()
        side = self.text_side
        hits = collapsed(self.store, self.meta, lambda n: search_text(side, text, n, filters, mode), k, all_listings)
        return Results(hits, time.perf_counter() - started)

    def reload(self) -> None:
        """Read the index's metadata again after a sync in this process (filters, text bridge, tuning may have
        changed); the encoder's weights are kept, what depends on the metadata is set up again on first use."""
        meta = self.store.read_meta()
        if meta is None:
            return
        with self._lock:
            tuning_changed = meta.get("tuning") != self.meta.get("tuning")
            self.meta = meta
            self._text_side = None
            if tuning_changed:
                self._tuning, self._tuning_loaded, self._query_encoder = None, False, None

    def close(self) -> None:
        self.store.close()
