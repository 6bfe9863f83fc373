"""Search by words, and by a photo plus words: ranked lists from the store, fused, then colour-aware.

A text query runs its searches with the same filters and fuses them by weighted reciprocal rank
fusion (shoplens.query.fusion, Qdrant's own formula): BM25 keywords over titles and attributes, MiniLM
sentence vectors of the same text and, with ImageBind, its text tower against the photos. The bridge
(the sentence vector mapped into the image space) is a mode of its own: measured, it did not help the
fusion. Colour words ("navy", "red") re-rank by the colours seen in each product's photo when the
catalog's own words do not name colours; a colour word inside one of the catalog's product names
("orange juice") is no colour, and a negated one ("not red") leaves that colour out. Weights come
from benchmarks/text_phrasings.py, benchmarks/colour.py and two probes whose answers docs/quality.md keeps.

Scores: every list comes back ranked by `Hit.score`, which decreases down the list (photo:
image cosine + PHOTO_COLOUR_WEIGHT x colour similarity, + COLOUR_MATCH for a product showing a colour
the words asked for; words, or photo + words: the fused rank score). `Hit.similarity` is the raw image
cosine to the query photo (None for words alone).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from shoplens.colour.palette import COLOURS_FIELD, named_colour_vector
from shoplens.colour.words import ColourWords, read_colour_words
from shoplens.errors import UserError
from shoplens.index.text import MIN_BRIDGE_PAIRS
from shoplens.query.fusion import rrf
from shoplens.query.rerank import RERANK_TOP, RERANK_WEIGHT, rerank_hits
from shoplens.store import TEXT_VECTOR, Filters, Hit, Store, StoreError
from shoplens.text.document import bm25_query
from shoplens.text.expand import type_votes

# List weights in the fusion, chosen on the tune half of shoppers' phrasings (benchmarks/text_phrasings.py):
# "labels" is the sentence search within the catalog types the words mean (shoplens.text.expand). The
# bridge is left out: with titles on every product it lowered type + colour precision, and it added
# nothing on the phrasings once the type list was in; it stays a mode of its own. A missing list is absent.
TEXT_WEIGHTS = {"keyword": 2.0, "semantic": 1.0, "bridge": 0.0, "imagebind": 2.0, "labels": 8.0}
RRF_K = 60
CANDIDATES = 100  # how deep each list goes before fusion
TIE_MARGIN = 10  # extra hits fetched so that ties at the cut-off are decided by id, the same on every store
# How much a typed colour counts against the photos' colours (x top fused score x colour similarity):
# nothing when the catalog's own text names colours (measured: it only cost precision), more when the
# photos are the only place colours are known (docs/quality.md, text_colour).
COLOUR_WORD_BOOST = {"named": 0.0, "unnamed": 1.0}
PHOTO_COLOUR_WEIGHT = RERANK_WEIGHT  # image similarity + this x colour similarity, for photo queries
WORDS_WEIGHT = 1.0  # weight of the words' ranking against the photo's (1.0) in a photo + words query
# Added to the score of a product whose photo shows a colour the words asked for: it ranks above every
# product that does not (the words filter by colour; the others only top the list up).
COLOUR_MATCH = 2.0  # above any cosine (at most 1) of a product that does not match
MODES = ("fused", "keyword", "semantic", "bridge")


@dataclass
class TextSide:
    """What a text query needs from an opened index: its store, a sentence encoder, the bridge, ImageBind."""

    store: Store
    embed_text: object  # str -> sentence vector, or None when the index has no text vectors
    bridge: object = None  # shoplens.text.bridge.Bridge, or None until loaded (see get_bridge)
    image_text: object = None  # str -> image-space vector (an encoder with a text tower), or None
    names_colours: bool = True  # the catalog's titles and attributes name colours (see COLOUR_WORD_BOOST)
    colour_names: frozenset = frozenset()  # the catalog's product names with colour words ("orange juice")
    load_bridge: Callable | None = None  # () -> Bridge or None: run once, by the first search that uses it
    _bridge_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _bridge_loaded: bool = False

    def get_bridge(self):
        """The bridge, loaded on first use. Its own lock: a load (which may re-fit from every stored vector)
        holds up only the bridge searches waiting for it, never the other searches of the process."""
        if self.bridge is not None or self.load_bridge is None:
            return self.bridge
        with self._bridge_lock:
            if not self._bridge_loaded:
                self.bridge = self.load_bridge()
                self._bridge_loaded = True
        return self.bridge
    labels: object = None  # shoplens.text.expand.LabelVocabulary: the catalog's product types, or None


def colour_word_weight(side: TextSide) -> float:
    """The weight of the photos' colours for colour words in a text query on this index."""
    return COLOUR_WORD_BOOST["named" if side.names_colours else "unnamed"]


def ranked_lists(side: TextSide, text: str, n: int, filters: Filters | None = None,
                 ids: list[str] | None = None, wanted: set[str] | None = None) -> dict[str, list[Hit]]:
    """Each available search's best `n` hits for `text` (restricted to point `ids` when given);
    `wanted` names the searches to run (default: those with a weight in the fusion)."""
    if side.embed_text is None and side.image_text is None:
        raise StoreError("this index has no text vectors: re-index the catalog into a new folder "
                         "(python indexer.py CATALOG --index NEW_DIR; text is on for catalogs with titles or "
                         "attributes) or use an encoder with a text tower")
    wanted = wanted or {name for name, weight in TEXT_WEIGHTS.items() if weight > 0}
    lists: dict[str, list[Hit]] = {}
    if side.embed_text is not None:
        if "keyword" in wanted:
            lists["keyword"] = side.store.search_keywords(bm25_query(text), n, filters, ids)
        if wanted & {"semantic", "bridge", "labels"}:
            sentence = side.embed_text(text)
            if "semantic" in wanted:
                lists["semantic"] = side.store.search(sentence, n, filters, using=TEXT_VECTOR, ids=ids)
            bridge = side.get_bridge() if "bridge" in wanted else None
            if bridge is not None:
                lists["bridge"] = side.store.search(bridge.project(sentence)[0], n, filters, ids=ids)
            if "labels" in wanted and bm25_query(text)[0]:  # stopwords alone name no product type
                lists.update(label_list(side, sentence, n, filters, ids, [lists.get("keyword"), lists.get("semantic")]))
    if side.image_text is not None and "imagebind" in wanted:
        lists["imagebind"] = side.store.search(side.image_text(text), n, filters, ids=ids)
    # Stores order tied scores differently; rank ties by point id so fusion is the same on every store.
    return {name: sorted(hits, key=lambda h: (-h.score, h.id)) for name, hits in lists.items()}


def label_list(side: TextSide, sentence, n: int, filters: Filters | None, ids: list[str] | None,
               evidence: list[list[Hit] | None] = ()) -> dict[str, list[Hit]]:
    """{"labels": the semantic search within the catalog types the words mean} (shoplens.text.expand: by
    the words' likeness to each type's name, and the types of the `evidence` lists' top hits); empty when
    the index has no types, the words name none, or a filter already picks the type."""
    vocabulary = side.labels
    if vocabulary is None or vocabulary.field in (filters or {}):
        return {}
    chosen = vocabulary.match(sentence, votes=type_votes(vocabulary.field, evidence))
    if not chosen:
        return {}
    return {"labels": side.store.search(sentence, n, {**(filters or {}), vocabulary.field: chosen},
                                        using=TEXT_VECTOR, ids=ids)}


def fuse(lists: dict[str, list[Hit]], weights: dict[str, float], limit: int) -> list[Hit]:
    """Weighted RRF of named hit lists into one list of hits scored by their fused score."""
    names = [name for name in lists if weights.get(name, 0) > 0]
    by_id = {h.id: h for name in names for h in lists[name]}
    ids, scores = rrf([[h.id for h in lists[name]] for name in names], RRF_K, [weights[n] for n in names], limit)
    return [Hit(i, float(s), by_id[i].payload) for i, s in zip(ids, scores)]


def colour_boost(hits: list[Hit], colours: list[str], weight: float) -> list[Hit]:
    """Re-rank hits by score + weight x similarity of their photo's colours to the named colours;
    each hit's score becomes that combined score (similarity, where set, is kept)."""
    if not colours or not hits or weight <= 0:
        return hits
    return rerank_hits(hits, named_colour_vector(colours), weight)


def without_colours(hits: list[Hit], excluded: list[str]) -> list[Hit]:
    """Hits whose main colour (the first of `colours`: the catalog's label, else the photo's dominant
    colour) is none of `excluded` ("not red"). A product without stored colours is kept."""
    if not excluded:
        return hits
    return [h for h in hits if not (h.payload.get(COLOURS_FIELD) or [None])[0] in excluded]


def read_words(text: str, side: TextSide | None = None, colour_names=()) -> ColourWords:
    """A query's colour words, read with the catalog's product names (from `side`, else `colour_names`)."""
    return read_colour_words(text, side.colour_names if side is not None else frozenset(colour_names))


def search_text(side: TextSide, text: str, k: int = 10, filters: Filters | None = None,
                mode: str = "fused", colour_weight: float | None = None) -> list[Hit]:
    """The products best matching a text query, best first. `mode` picks one list instead of the fusion;
    `colour_weight` overrides the index's weight of the photos' colours for colour words. Negated colours
    ("not red") are left out of the searched words, and products of that main colour out of the results."""
    if mode not in MODES:
        raise UserError(f"mode must be one of {MODES}, not {mode!r}")
    if k < 1:
        raise UserError(f"k must be at least 1, not {k}")
    text = " ".join(text.split())
    if not text:
        raise UserError("the text query is empty")
    read = read_words(text, side)
    if not read.searchable:
        raise UserError(f"{text!r} only says what to leave out; say what to find too (e.g. 'shoes not red')")
    text = read.searchable
    if mode != "fused":
        # A few more than k: stores cut ties at the limit differently, and ties are then ordered by id.
        n = k + TIE_MARGIN if not read.excluded else max(CANDIDATES, k + TIE_MARGIN)
        lists = ranked_lists(side, text, n, filters, wanted={mode})
        if mode not in lists:
            raise StoreError(f"this index cannot search by {mode}" +
                             (f" (it has no text-to-image bridge: fewer than {MIN_BRIDGE_PAIRS} products with "
                              "text and a photo)"
                              if mode == "bridge" else ""))
        return without_colours(lists[mode], read.excluded)[:k]
    lists = ranked_lists(side, text, max(CANDIDATES, k), filters)
    fused = fuse(lists, TEXT_WEIGHTS, max(CANDIDATES, k))
    weight = colour_word_weight(side) if colour_weight is None else colour_weight
    boosted = colour_boost(fused, read.colours, weight * (fused[0].score if fused else 0))
    return without_colours(boosted, read.excluded)[:k]


def photo_colour_rerank(hits: list[Hit], query_colours: list[float] | None, weight: float = PHOTO_COLOUR_WEIGHT
                        ) -> list[Hit]:
    """Image hits re-ordered by image score + weight x colour similarity to the query photo's colours.

    Each hit's score becomes that combined score (the order); `similarity` keeps the image cosine."""
    hits = [h if h.similarity is not None else Hit(h.id, h.score, h.payload, h.vector, h.text_vector, h.score)
            for h in hits]
    if query_colours is None or not hits or weight <= 0:
        return hits
    return rerank_hits(hits, query_colours, weight)


def image_hits(hits: list[Hit], bonus: float = 0.0) -> list[Hit]:
    """Store hits of an image search with `similarity` set to their cosine and `bonus` added to the score."""
    return [Hit(h.id, h.score + bonus, h.payload, h.vector, h.text_vector, h.score) for h in hits]


def search_photo(store: Store, vector: np.ndarray, k: int = 10, filters: Filters | None = None, *,
                 query_colours: list[float] | None = None, words: str | None = None,
                 side: TextSide | None = None, colour_names=()) -> list[Hit]:
    """Image search, colour-aware, optionally refined by words ("like this, but in red").

    Colour words filter the candidates to products whose photo shows that colour (topped up with the
    others when fewer than k match; a match scores COLOUR_MATCH more); negated colours ("not red") leave
    out products of that main colour; other words rank the photo's candidates by text, fused with the
    photo's own ranking. Without typed colours, the query photo's colours re-rank the candidates.
    `colour_names` (the catalog's product names with colour words) is used when there is no `side`."""
    if k < 1:
        raise UserError(f"k must be at least 1, not {k}")
    read = read_words(" ".join((words or "").split()), side, colour_names)
    colours, rest = read.colours, read.rest
    refine = bool(rest) and side is not None and side.embed_text is not None
    deeper = refine or colours or read.excluded or (query_colours is not None and PHOTO_COLOUR_WEIGHT > 0)
    n = max(RERANK_TOP, k) if deeper else k
    if colours:
        hits = image_hits(store.search(vector, n, {**(filters or {}), COLOURS_FIELD: colours}), COLOUR_MATCH)
        if len(hits) < k:
            seen = {h.id for h in hits}
            hits += image_hits([h for h in store.search(vector, n, filters) if h.id not in seen])
    else:
        hits = photo_colour_rerank(store.search(vector, n, filters), query_colours)
    hits = without_colours(hits, read.excluded)
    if refine:
        # The catalog-type list is left out here: measured on words alone, not on photo + words.
        words_lists = {name for name, weight in TEXT_WEIGHTS.items() if weight > 0 and name != "labels"}
        lists = {"image": hits, **ranked_lists(side, rest, len(hits), ids=[h.id for h in hits], wanted=words_lists)}
        weights = {name: WORDS_WEIGHT * TEXT_WEIGHTS.get(name, 0.0) for name in lists}
        weights["image"] = 1.0
        similarity = {h.id: h.similarity for h in hits}
        # The words and the photo decide the order (the fused score); each hit keeps its image similarity.
        hits = [Hit(h.id, h.score, h.payload, similarity=similarity[h.id]) for h in fuse(lists, weights, len(hits))]
    return hits[:k]
