"""Text search end to end on both stores: keyword, semantic, fused and bridge modes, colours, photo + words.

A hand-made shop of 16 products (CSV manifest with titles, article types and colours; each photo a
coloured shape on white, so the colour extraction names it exactly) is indexed once per store through
`sync_catalog` with the real TextIndexer (MiniLM). The image encoder is a colour-blind shape mask, like
ImageNet features that barely see colour: photo search finds the shape, colours come from the payload.
Expected rankings are worked out by hand, or from the store's own lists fused by `fused_by_hand` (weighted
RRF written out again here, not shoplens.query.fusion.rrf, the code under test).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_product_photo
from shoplens.catalog import read_catalog
from shoplens.colour import PALETTE, colour_profile
from shoplens.encoders import Encoder, create_encoder, l2_normalise
from shoplens.index.sync import sync_catalog
from shoplens.index.text import BRIDGE_FILE, MIN_BRIDGE_PAIRS, TextIndexer, load_bridge
from shoplens.quality.textevaluate import evaluate_text
from shoplens.query import hybrid
from shoplens.query.hybrid import (CANDIDATES, RRF_K, TEXT_WEIGHTS, WORDS_WEIGHT, TextSide, photo_colour_rerank,
                             search_text)
from shoplens.query.rerank import colour_similarity
from shoplens.query.search import Searcher
from shoplens.store import TEXT_VECTOR, Hit, StoreError, point_id
from shoplens.store.edge import EdgeStore
from shoplens.store.remote import QdrantStore
from shoplens.text.document import bm25_query

STORES = ["edge", "qdrant-client"]

# Colours as photos show them; every one verified to be named exactly (and only) by colour_profile.
RGB = {"Red": (214, 40, 40), "Blue": (40, 80, 200), "Green": (40, 160, 80), "Yellow": (235, 200, 40),
       "Black": (25, 25, 25), "Orange": (240, 120, 20), "Purple": (130, 50, 160), "Brown": (120, 75, 40),
       "Navy": (25, 32, 62), "Pink": (230, 120, 170)}

# id, title, article type, colour, shape (conftest.make_product_photo: square, wide, round).
SHOP = [("p01", "Running Shoe", "Footwear", "Red", "wide"),
        ("p02", "Hiking Boot", "Footwear", "Brown", "wide"),
        ("p03", "Leather Satchel", "Bags", "Brown", "round"),
        ("p04", "Canvas Tote Bag", "Bags", "Blue", "round"),
        ("p05", "Cotton T-Shirt", "Tshirts", "Green", "square"),
        ("p06", "Denim Jacket", "Jackets", "Blue", "square"),
        ("p07", "Summer Dress", "Dresses", "Yellow", "square"),
        ("p08", "Baseball Cap", "Caps", "Red", "round"),
        ("p09", "Wool Scarf", "Scarves", "Purple", "wide"),
        ("p10", "Silk Tie", "Ties", "Navy", "wide"),
        ("p11", "Striped Polo Shirt", "Shirts", "Orange", "square"),
        ("p12", "Ankle Socks", "Socks", "Black", "wide"),
        ("p13", "Sports Watch", "Watches", "Black", "round"),
        ("p14", "Rain Coat", "Jackets", "Yellow", "square"),
        ("p15", "Travel Backpack", "Bags", "Green", "round"),
        ("p16", "Evening Clutch", "Bags", "Red", "round")]
SHAPE = {pid: shape for pid, *_rest, shape in SHOP}
COLOUR = {pid: colour for pid, _t, _a, colour, _s in SHOP}
SQUARES = {pid for pid, shape in SHAPE.items() if shape == "square"}


class ShapeEncoder(Encoder):
    """Fake model that sees shape, not colour: the 8x8 share of non-white pixels, L2-normalised."""

    name = "fake-shape"
    version = "1"
    dim = 64

    def embed_batch(self, images):
        rows = []
        for img in images:
            ink = (np.asarray(img.convert("RGB"), np.int16) < 200).any(axis=2).astype(np.float32)
            h, w = ink.shape
            cells = ink[: h - h % 8, : w - w % 8].reshape(8, h // 8, 8, w // 8).mean(axis=(1, 3))
            rows.append(cells.reshape(-1) + 0.01)
        return l2_normalise(np.stack(rows)) if rows else np.zeros((0, self.dim), np.float32)


def scaled_photo(path: Path, colour, shape: str, scale: float) -> Path:
    """Like conftest.make_product_photo, with the shape shrunk by `scale` around the picture's centre."""
    from PIL import ImageDraw

    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", (160, 200), (250, 250, 250))
    box = {"square": (30, 40, 130, 170), "wide": (10, 100, 150, 170), "round": (30, 50, 130, 160)}[shape]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    box = (cx + (box[0] - cx) * scale, cy + (box[1] - cy) * scale, cx + (box[2] - cx) * scale,
           cy + (box[3] - cy) * scale)
    (ImageDraw.Draw(img).ellipse if shape == "round" else ImageDraw.Draw(img).rectangle)(box, fill=colour)
    img.save(path, "JPEG", quality=90)
    return path


def write_catalog(root: Path, rows) -> Path:
    """A CSV manifest of (id, title, article_type, colour, shape[, scale]) rows with their photos."""
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for pid, title, article_type, colour, shape, *scale in rows:
        rel = f"photos/{pid}.jpg"
        if not (root / rel).exists():
            if scale:
                scaled_photo(root / rel, RGB[colour], shape, scale[0])
            else:
                make_product_photo(root / rel, RGB[colour], shape)
        out.append({"id": pid, "path": rel, "title": title, "article_type": article_type, "colour": colour})
    with open(root / "products.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(out[0]))
        writer.writeheader()
        writer.writerows(out)
    return root


def open_kind(kind: str, path: Path):
    return EdgeStore(path) if kind == "edge" else QdrantStore(":memory:")


def build(kind: str, catalog_root: Path, index_path: Path, text: TextIndexer | None, encoder: Encoder | None = None,
          colours: bool = True):
    """Index the catalog into a new store of `kind`; the Searcher over it and the sync summary."""
    store = open_kind(kind, index_path)
    encoder = encoder or ShapeEncoder()
    summary = sync_catalog(read_catalog(catalog_root), store, encoder, text=text, colours=colours, progress=False)
    # The hand-made shop has products with the very same photo (p08 and p16 are both red circles, p07 and p14
    # yellow squares), which the index groups as duplicate listings. These tests are about how words and colours
    # rank every listing, so the Searcher reads the index as one without groups (every listing shown, as for an
    # index built before groups); the collapse itself is tests/test_duplicates.py's.
    meta = store.read_meta()
    meta.pop("duplicates", None)
    return Searcher(store, meta, _encoder=encoder), summary


def fused_by_hand(lists, weights, k: int = RRF_K):
    """Weighted reciprocal rank fusion written out for the tests: Qdrant's 1 / (rank / weight + k - 1) per list,
    summed; equal sums keep the order in which ids were first seen."""
    scores: dict = {}
    for ranking, weight in zip(lists, weights):
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + (1 / (rank / weight + k - 1) if weight > 0 else 0.0)
    order = sorted(scores, key=lambda item: -scores[item])
    return order, [scores[item] for item in order]


def ids(hits) -> list[str]:
    return [h.payload["product_id"] for h in (hits.hits if hasattr(hits, "hits") else hits)]


@pytest.fixture(scope="module")
def text_indexer() -> TextIndexer:
    return TextIndexer()


@pytest.fixture(scope="module")
def shop_dir(tmp_path_factory) -> Path:
    return write_catalog(tmp_path_factory.mktemp("shop") / "catalog", SHOP)


@pytest.fixture(scope="module")
def shops(shop_dir, text_indexer, tmp_path_factory):
    """The shop indexed with text and colours, once per store: {kind: Searcher}."""
    built = {kind: build(kind, shop_dir, tmp_path_factory.mktemp("index") / "idx", text_indexer)[0]
             for kind in STORES}
    yield built
    for searcher in built.values():
        searcher.close()


@pytest.fixture(params=STORES)
def shop(request, shops) -> Searcher:
    return shops[request.param]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Query photos not in the catalog: photos(colour, shape) -> path."""
    base = tmp_path_factory.mktemp("queries")

    def make(colour: str, shape: str) -> Path:
        path = base / f"{colour}-{shape}.jpg"
        return path if path.exists() else make_product_photo(path, RGB[colour], shape)

    return make


# --- 1. keyword mode ---

def test_keyword_word_only_one_title_has(shop):
    assert ids(shop.search_text("satchel", mode="keyword")) == ["p03"]
    assert ids(shop.search_text("WOOL!", mode="keyword")) == ["p09"]  # case and punctuation do not matter
    # BM25 over title and attributes: a word of one product's title beats a word every bag has.
    assert ids(shop.search_text("clutch bag", mode="keyword"))[0] == "p16"


def test_keyword_stemming(shop):
    # Neither product's text has the plural: "Running Shoe Footwear Red", "Hiking Boot Footwear Brown".
    assert ids(shop.search_text("shoes", mode="keyword")) == ["p01"]
    assert ids(shop.search_text("boots", mode="keyword")) == ["p02"]
    # ... and the other way round: the article type "Bags" is found by "bag".
    assert set(ids(shop.search_text("bag", mode="keyword"))) == {"p03", "p04", "p15", "p16"}


def test_keyword_filters(shop):
    assert ids(shop.search_text("bag", filters={"colour": "Red"}, mode="keyword")) == ["p16"]
    # "Canvas Tote Bag" + "Bags" has the term twice: it leads the other blue-or-green bag.
    assert ids(shop.search_text("bag", filters={"colour": ["Blue", "Green"]}, mode="keyword")) == ["p04", "p15"]
    assert shop.search_text("bag", filters={"colour": "Pink"}, mode="keyword").hits == []
    # Filters apply to the fused search too (every list is filtered).
    fused = ids(shop.search_text("bag", k=16, filters={"colour": "Red"}))
    assert fused[0] == "p16" and {COLOUR[p] for p in fused} == {"Red"} and len(fused) == 3


def test_query_without_indexable_words(shop):
    # Stopwords only: no BM25 terms, so the keyword list is empty (not an error) ...
    assert bm25_query("the and of") == ([], [])
    assert shop.search_text("the and of", mode="keyword").hits == []
    # ... and the fusion is the semantic list alone, in its order.
    semantic = ids(shop.search_text("the and of", k=5, mode="semantic"))
    assert len(semantic) == 5 and ids(shop.search_text("the and of", k=5)) == semantic
    # Nothing at all to search for, or an unknown mode, is a clear error.
    with pytest.raises(ValueError, match="empty"):
        shop.search_text("   \t ")
    with pytest.raises(ValueError, match="mode must be one of"):
        shop.search_text("bag", mode="bm25")


def test_keyword_text_is_the_products_own_words(shop):
    assert shop.search_text("0", mode="keyword").hits == []
    # "satchel": one document of 16 has it. Its text "Leather Satchel Bags Brown" has 4 terms; BM25 with k1 1.2,
    # b 0.75 and an average length of 10 weighs a term found once 2.2 / (1 + 1.2 x (0.25 + 0.75 x 4 / 10)) =
    # 2.2 / 1.66, and the store multiplies in its IDF ln(1 + (16 - 1 + 0.5) / (1 + 0.5)).
    (hit,) = shop.search_text("satchel", mode="keyword").hits
    idf = np.log(1 + (len(SHOP) - 1 + 0.5) / (1 + 0.5))
    assert hit.score == pytest.approx(idf * 2.2 / 1.66, rel=1e-5)


@pytest.mark.parametrize("kind", STORES)
def test_names_colours_reads_the_catalogs_words_not_the_photos(kind, tmp_path, text_indexer):
    root = tmp_path / "catalog"
    rows = [("u1", "Hiking Boot", "Footwear", "wide"), ("u2", "Leather Satchel", "Bags", "round"),
            ("u3", "Baseball Cap", "Caps", "round"), ("u4", "Wool Scarf", "Scarves", "wide")]
    for pid, _title, _type, shape in rows:
        make_product_photo(root / f"photos/{pid}.jpg", RGB["Red"], shape)
    with open(root / "products.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "path", "title", "article_type"])
        writer.writerows([pid, f"photos/{pid}.jpg", title, article_type] for pid, title, article_type, _s in rows)
    without, _ = build(kind, root, tmp_path / "plain", text_indexer, colours=False)
    with_colours, _ = build(kind, root, tmp_path / "colours", text_indexer, colours=True)
    try:
        assert without.meta["text"]["names_colours"] is False
        assert with_colours.meta["text"]["names_colours"] is False
    finally:
        without.close()
        with_colours.close()


# --- 2. semantic mode ---

@pytest.mark.parametrize("query, expected", [("sneakers", "p01"), ("timepiece", "p13"), ("necktie", "p10")])
def test_semantic_synonym_top1(shop, query, expected):
    # None of these words is in any product's text: the keyword list finds nothing.
    assert shop.search_text(query, mode="keyword").hits == []
    hits = shop.search_text(query, k=3, mode="semantic").hits
    assert ids(hits)[0] == expected
    assert hits[0].score > hits[1].score


def test_semantic_filters(shop):
    assert ids(shop.search_text("sneakers", k=3, filters={"colour": "Brown"}, mode="semantic")) == ["p02", "p03"]


# --- 3. fused mode: weighted RRF of the store's keyword and semantic lists, by hand ---

FUSED_QUERIES = ["bag for hiking", "leather bag", "sneakers", "jacket", "polo shirt", "bag"]


def by_score(hits):
    return sorted(hits, key=lambda h: (-h.score, h.id))


@pytest.mark.parametrize("query", FUSED_QUERIES)
def test_fused_is_weighted_rrf_of_keyword_and_semantic(shop, text_indexer, query, monkeypatch):
    monkeypatch.setitem(TEXT_WEIGHTS, "labels", 0.0)  # the catalog-type list: tests/test_phrasings.py
    store = shop.store
    # Ties are ranked by point id, whatever order the store lists them in.
    keyword = ids(by_score(store.search_keywords(bm25_query(query), CANDIDATES)))
    semantic = ids(by_score(store.search(text_indexer.embed_query(query), CANDIDATES, using=TEXT_VECTOR)))
    assert len(semantic) == len(SHOP)
    expected, scores = fused_by_hand([keyword, semantic], [TEXT_WEIGHTS["keyword"], TEXT_WEIGHTS["semantic"]])
    got = shop.search_text(query, k=8).hits
    assert ids(got) == expected[:8]
    assert [h.score for h in got] == pytest.approx(scores[:8], rel=1e-6)


def test_fused_worked_by_hand(shop, monkeypatch):
    monkeypatch.setitem(TEXT_WEIGHTS, "labels", 0.0)  # the catalog-type list: tests/test_phrasings.py
    # "backpack": keyword list [p15] only (weight 2); semantic list p15 first (weight 1).
    # p15 scores 1/(1/2 + 59) + 1/(1/1 + 59).
    got = shop.search_text("backpack", k=1).hits
    assert ids(got) == ["p15"]
    assert got[0].score == pytest.approx(1 / 60 + 1 / 59.5)


# --- 4. congruence: both stores rank alike ---

CONGRUENCE = ["satchel", "shoes", "bag", "clutch bag", "sneakers", "warm winter scarf", "leather bag",
              "bag for hiking", "jacket", "the and of"]


def tie_groups(hits) -> list[tuple[float, frozenset]]:
    """Hits as (score, the ids with that score), best first: tied hits may come in either order."""
    groups: dict[float, set] = {}
    for h in hits:
        groups.setdefault(round(h.score, 5), set()).add(h.payload["product_id"])
    return [(score, frozenset(members)) for score, members in groups.items()]


def has_ties(hits) -> bool:
    return len(tie_groups(hits)) < len(hits)


def test_stores_congruent(shops):
    edge, remote = shops["edge"], shops["qdrant-client"]
    for query in CONGRUENCE:
        for filters in (None, {"colour": ["Red", "Blue"]}):
            a, b = (s.search_text(query, k=16, filters=filters, mode="keyword").hits for s in (edge, remote))
            assert tie_groups(a) == tie_groups(b), (query, filters)
            a, b = (s.search_text(query, k=16, filters=filters, mode="semantic").hits for s in (edge, remote))
            assert ids(a) == ids(b), (query, filters)
            assert [h.score for h in a] == pytest.approx([h.score for h in b], rel=1e-4)
            a, b = (s.search_text(query, k=16, filters=filters).hits for s in (edge, remote))
            assert ids(a) == ids(b), (query, filters)
            assert [h.score for h in a] == pytest.approx([h.score for h in b], rel=1e-6)


def test_keyword_ties_are_common(shops):
    # Four bags share the term "bag" in their article type; three have texts of the same length, so their
    # BM25 scores tie exactly. Which order a store lists them in is its own business (it differs between
    # Edge and qdrant-client, and between two Edge shards built alike), which matters for the fusion below.
    for searcher in shops.values():
        hits = searcher.search_text("bag", mode="keyword").hits
        assert [members for _score, members in tie_groups(hits)] == [{"p04"}, {"p03", "p15", "p16"}]


def test_fused_order_does_not_depend_on_the_stores_tie_order(shops):
    # Keyword ties (p03, p15, p16 for "bag") come back in a different order from each store; ranked_lists
    # orders ties by point id, so the fusion is the same everywhere.
    fused = [[h.product_id for h in s.search_text("bag", k=16).hits] for s in shops.values()]
    assert fused[0] == fused[1]
    keyword = [[h.product_id for h in s.search_text("bag", k=16, mode="keyword").hits] for s in shops.values()]
    assert keyword[0] == keyword[1]


# --- 5. the bridge ---

BRIDGE_TYPES = [("Sneaker", "Shoes", "wide"), ("Loafer", "Shoes", "wide"), ("Sandal", "Shoes", "wide"),
                ("Tshirt", "Tops", "square"), ("Sweater", "Tops", "square"), ("Blazer", "Tops", "square"),
                ("Tote", "Bags", "round"), ("Wallet", "Bags", "round"), ("Beanie", "Hats", "round")]
BRIDGE_COLOURS = ["Red", "Blue", "Green", "Yellow", "Black", "Orange"]
# Each photo its own: types of one shape differ in size, so the tiny encoder (colour and shape) tells all apart.
BRIDGE_SHOP = [(f"b{i:02d}", f"{colour} {name}", article_type, colour, shape, 1.0 - 0.2 * (t % 3))
               for i, (t, (name, article_type, shape), colour) in
               enumerate((t, typ, c) for t, typ in enumerate(BRIDGE_TYPES) for c in BRIDGE_COLOURS)]
BRIDGE_NAMES = {pid: title for pid, title, *_rest in BRIDGE_SHOP}


@pytest.fixture(scope="module")
def bridge_shops(text_indexer, tmp_path_factory):
    assert len(BRIDGE_SHOP) >= MIN_BRIDGE_PAIRS, "the bridge tests need a catalog big enough to fit one"
    root = write_catalog(tmp_path_factory.mktemp("bridge") / "catalog", BRIDGE_SHOP)
    built = {kind: build(kind, root, tmp_path_factory.mktemp("bridge-index") / "idx", text_indexer,
                         create_encoder("tiny"))[0] for kind in STORES}
    yield built
    for searcher in built.values():
        searcher.close()


@pytest.fixture(params=STORES)
def bridge_shop(request, bridge_shops) -> Searcher:
    return bridge_shops[request.param]


def test_bridge_written_and_searchable(bridge_shop, text_indexer):
    store, meta = bridge_shop.store, bridge_shop.meta
    fitted = meta["text"]["bridge"]
    assert fitted["pairs"] == 54 and fitted["alpha"] > 0
    path = store.artifact_path(BRIDGE_FILE)
    assert path.is_file()
    assert bridge_shop.text_side.get_bridge() is not None
    # The bridge list, by hand: the query's sentence vector through the saved map, against the photos.
    bridge = load_bridge(path, text_indexer.key, f"{meta['encoder']}@{meta['encoder_version']}")
    assert bridge.fitted_on == 54
    for query, own in (("Blue Wallet Bags Blue", "b43"), ("Red Sneaker Shoes Red", "b00")):
        # A product's own sentence text (title, type, colour): the fitted map sends it nearest its own photo.
        expected = ids(store.search(bridge.project(text_indexer.embed_query(query))[0], 10))
        got = ids(bridge_shop.search_text(query, k=10, mode="bridge"))
        assert got == expected and got[0] == own and BRIDGE_NAMES[own] == query.rsplit(" ", 2)[0]



def test_fused_leaves_the_bridge_out(bridge_shop, text_indexer, monkeypatch):
    monkeypatch.setitem(TEXT_WEIGHTS, "labels", 0.0)  # the catalog-type list: tests/test_phrasings.py
    assert TEXT_WEIGHTS["bridge"] == 0
    store, query = bridge_shop.store, "comfortable walking sneakers"
    # Ties are ranked by point id, whatever order the store lists them in.
    keyword = ids(by_score(store.search_keywords(bm25_query(query), CANDIDATES)))
    semantic = ids(by_score(store.search(text_indexer.embed_query(query), CANDIDATES, using=TEXT_VECTOR)))
    expected, _ = fused_by_hand([keyword, semantic], [TEXT_WEIGHTS["keyword"], TEXT_WEIGHTS["semantic"]])
    assert ids(bridge_shop.search_text(query, k=10)) == expected[:10]


def test_bridge_congruent(bridge_shops):
    edge, remote = bridge_shops["edge"], bridge_shops["qdrant-client"]
    for query in ("red shoes", "a warm hat", "yellow bag", "Blue Wallet Bags Blue"):
        assert ids(edge.search_text(query, k=10, mode="bridge")) == ids(remote.search_text(query, k=10, mode="bridge"))


def test_small_catalog_has_no_bridge(shop):
    assert len(SHOP) < MIN_BRIDGE_PAIRS
    assert shop.meta["text"]["bridge"]["pairs"] == len(SHOP)
    assert not shop.store.artifact_path(BRIDGE_FILE).exists()
    assert shop.text_side.get_bridge() is None
    with pytest.raises(StoreError):
        shop.search_text("sneakers", mode="bridge")


def test_small_catalog_bridge_error_says_why(shop):
    with pytest.raises(StoreError, match="cannot search by bridge") as err:
        shop.search_text("sneakers", mode="bridge")
    assert str(MIN_BRIDGE_PAIRS) in str(err.value)


def test_load_bridge_refits_a_deleted_file(bridge_shop, text_indexer):
    store, meta = bridge_shop.store, bridge_shop.meta
    path = store.artifact_path(BRIDGE_FILE)
    before = load_bridge(path)
    path.unlink()
    again = text_indexer.load_bridge(store, meta)
    assert path.is_file() and again is not None and again.fitted_on == 54
    assert np.allclose(again.weights, before.weights, atol=1e-6) and np.allclose(again.bias, before.bias, atol=1e-6)
    # A file that is there and current is read, not fitted again.
    mtime = path.stat().st_mtime_ns
    text_indexer.load_bridge(store, meta)
    assert path.stat().st_mtime_ns == mtime


# --- 6. colours ---

def test_payloads_carry_photo_colours(shop):
    for pid, _title, _type, colour, _shape in SHOP:
        (hit,) = shop.store.retrieve([point_id(pid)])
        assert hit.payload["colours"] == [colour.lower()], pid
        vec = hit.payload["colour_vector"]
        assert len(vec) == len(PALETTE) and sum(vec) == pytest.approx(1.0, abs=0.01)
        assert vec[PALETTE.index(colour.lower())] > 0.9
    assert "colours" in shop.meta["keyword_fields"]


def test_words_colour_filters_photo_results(shop, photos):
    # A blue square photo: by shape, the squares come first; "red" puts the red products first.
    hits = shop.search_image(photos("Blue", "square"), k=6, words="red").hits
    assert set(ids(hits[:3])) == {"p01", "p08", "p16"}
    assert all("red" not in h.payload["colours"] for h in hits[3:])  # topped up with the others
    assert len(hits) == 6
    # A product showing the colour asked for scores COLOUR_MATCH (2) more than its cosine: the list's scores
    # decrease although the red ones (round and wide) are less like the square photo than the squares after them.
    cosine = {ids([h])[0]: h.score for h in shop.store.search(shop.embed(photos("Blue", "square")), 16)}
    assert [h.similarity for h in hits] == pytest.approx([cosine[p] for p in ids(hits)], abs=1e-6)
    assert [h.score for h in hits] == pytest.approx([cosine[p] + (2.0 if p in {"p01", "p08", "p16"} else 0.0)
                                                     for p in ids(hits)], abs=1e-6)
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    assert max(cosine[p] for p in ids(hits[:3])) < min(cosine[p] for p in ids(hits[3:]))
    assert set(ids(shop.search_image(photos("Blue", "square"), k=2, words="red"))) < {"p01", "p08", "p16"}
    # Two colours: products with either.
    both = ids(shop.search_image(photos("Blue", "square"), k=5, words="red/green"))
    assert set(both) == {"p01", "p08", "p16", "p05", "p15"}


def test_words_rerank_within_the_photos_candidates(shop, photos, text_indexer):
    photo = photos("Blue", "square")
    image = ids(shop.search_image(photo, k=CANDIDATES))  # the photo's own ranking (colour re-ranked)
    candidates = [point_id(p) for p in image]
    keyword = ids(shop.store.search_keywords(bm25_query("backpack"), len(candidates), ids=candidates))
    semantic = ids(shop.store.search(text_indexer.embed_query("backpack"), len(candidates), using=TEXT_VECTOR,
                                     ids=candidates))
    weights = [1.0, WORDS_WEIGHT * TEXT_WEIGHTS["keyword"], WORDS_WEIGHT * TEXT_WEIGHTS["semantic"]]
    expected, scores = fused_by_hand([image, keyword, semantic], weights)
    hits = shop.search_image(photo, k=8, words="backpack").hits
    assert ids(hits) == expected[:8] and ids(hits)[0] == "p15"
    # The score is the fused one (so it decreases down the list); the similarity stays the photo's cosine.
    assert [h.score for h in hits] == pytest.approx(scores[:8], rel=1e-6)
    cosine = {ids([h])[0]: h.score for h in shop.store.search(shop.embed(photo), 16)}
    assert [h.similarity for h in hits] == pytest.approx([cosine[p] for p in ids(hits)], abs=1e-6)
    # The words never bring in a product outside the photo's candidates: here the filter's.
    hits = shop.search_image(photo, k=5, filters={"colour": "Blue"}, words="bag").hits
    assert ids(hits) == ["p04", "p06"]


def test_photo_colours_break_close_image_ties(shop, photos):
    # Squares all look alike to the shape encoder (scores within 0.01); the photo's colour decides among them.
    for colour in ("Green", "Orange", "Blue", "Yellow"):
        photo = photos(colour, "square")
        plain = shop.store.search(shop.embed(photo), 5)
        assert set(ids(plain)) == SQUARES and plain[0].score - plain[-1].score < 0.01
        got = shop.search_image(photo, k=16).hits
        same = [p for p in SQUARES if COLOUR[p] == colour]
        assert set(ids(got[:len(same)])) == set(same), colour
        # The score is image cosine + PHOTO_COLOUR_WEIGHT x colour similarity, so it decreases down the list;
        # the similarity is the store's own cosine. Each square photo is one colour of the palette, so the
        # colour similarity is 1 for a product of the photo's colour and 0 for another: score = cosine + 0.2.
        by_id = {ids([h])[0]: h.score for h in shop.store.search(shop.embed(photo), 16)}
        assert [h.similarity for h in got] == pytest.approx([by_id[p] for p in ids(got)], abs=1e-6)
        assert [h.score for h in got] == pytest.approx(
            [by_id[p] + (0.2 if COLOUR[p] == colour else 0.0) for p in ids(got)], abs=0.02)
        assert all(a.score >= b.score for a, b in zip(got, got[1:]))


def test_photo_colour_rerank_by_hand():
    green = [0.0] * len(PALETTE)
    green[PALETTE.index("green")] = 1.0
    blue = [0.0] * len(PALETTE)
    blue[PALETTE.index("blue")] = 1.0
    query = colour_profile(Image.new("RGB", (32, 32), RGB["Green"]))["colour_vector"]
    close = [Hit("b", 0.95, {"colour_vector": blue}), Hit("g", 0.93, {"colour_vector": green})]
    # 0.93 + 0.2 x 1 beats 0.95 + 0.2 x 0: the score is that sum, the similarity stays the photo's cosine.
    assert [h.id for h in photo_colour_rerank(close, query)] == ["g", "b"]
    assert [h.score for h in photo_colour_rerank(close, query)] == pytest.approx([1.13, 0.95], abs=1e-3)
    assert [h.similarity for h in photo_colour_rerank(close, query)] == [0.93, 0.95]
    far = [Hit("b", 0.95, {"colour_vector": blue}), Hit("g", 0.5, {"colour_vector": green})]
    assert [h.id for h in photo_colour_rerank(far, query)] == ["b", "g"]  # colour never beats a clear image gap
    # No query colours, or a product without a colour vector: the image order stands (or it sinks).
    assert [(h.id, h.score, h.similarity) for h in photo_colour_rerank(close, None)] == [("b", 0.95, 0.95),
                                                                                         ("g", 0.93, 0.93)]
    bare = [Hit("x", 0.95, {}), Hit("g", 0.93, {"colour_vector": green})]
    assert [h.id for h in photo_colour_rerank(bare, query)] == ["g", "x"]


# --- 7. incremental indexing ---

SMALL = [("s1", "Hiking Boot", "Footwear", "Brown", "wide"), ("s2", "Leather Satchel", "Bags", "Brown", "round"),
         ("s3", "Denim Jacket", "Jackets", "Blue", "square"), ("s4", "Baseball Cap", "Caps", "Red", "round")]


@pytest.mark.parametrize("kind", STORES)
def test_title_change_updates_text_and_keeps_colours(kind, tmp_path, text_indexer):
    root = write_catalog(tmp_path / "catalog", SMALL)
    searcher, first = build(kind, root, tmp_path / "idx", text_indexer)
    try:
        assert (first.added, first.encoded) == (4, 4)
        assert ids(searcher.search_text("boot", mode="keyword")) == ["s1"]
        (before,) = searcher.store.retrieve([point_id("s1")], with_vector=True)
        write_catalog(root, [("s1", "Trail Clog", "Footwear", "Brown", "wide")] + SMALL[1:])
        again = sync_catalog(read_catalog(root), searcher.store, ShapeEncoder(), text=text_indexer, progress=False)
        assert (again.added, again.updated, again.unchanged, again.encoded) == (0, 1, 3, 0)
        assert ids(searcher.search_text("clog", mode="keyword")) == ["s1"]
        assert searcher.search_text("boot", mode="keyword").hits == []
        (after,) = searcher.store.retrieve([point_id("s1")], with_vector=True)
        assert after.payload["title"] == "Trail Clog"
        assert after.payload["colours"] == before.payload["colours"] == ["brown"]
        assert after.payload["colour_vector"] == before.payload["colour_vector"]
        assert np.allclose(after.vector, before.vector)  # the photo's vector is kept
        assert not np.allclose(after.text_vector, before.text_vector)  # the sentence vector follows the title
        assert np.allclose(after.text_vector, text_indexer.vectors([after.payload])[0][0], atol=1e-5)
        # Nothing changed: nothing written.
        third = sync_catalog(read_catalog(root), searcher.store, ShapeEncoder(), text=text_indexer, progress=False)
        assert (third.updated, third.unchanged) == (0, 4)
    finally:
        searcher.close()


@pytest.mark.parametrize("kind", STORES)
def test_text_removed_from_a_product_leaves_no_stale_words(kind, tmp_path, text_indexer):
    root = write_catalog(tmp_path / "catalog", SMALL)
    searcher, _ = build(kind, root, tmp_path / "idx", text_indexer, colours=False)
    try:
        write_catalog(root, [("s1", "", "", "", "wide")] + SMALL[1:])  # same photo, every describing value gone
        summary = sync_catalog(read_catalog(root), searcher.store, ShapeEncoder(), text=text_indexer, colours=False,
                               progress=False)
        assert (summary.updated, summary.encoded) == (1, 0)
        assert searcher.store.retrieve([point_id("s1")])[0].payload["title"] == ""
        assert searcher.search_text("boot", mode="keyword").hits == []
    finally:
        searcher.close()


# --- 8. an index built without text ---

@pytest.fixture(scope="module")
def plain_shops(shop_dir, tmp_path_factory):
    built = {kind: build(kind, shop_dir, tmp_path_factory.mktemp("plain") / "idx", None)[0] for kind in STORES}
    yield built
    for searcher in built.values():
        searcher.close()


@pytest.fixture(params=STORES)
def plain_shop(request, plain_shops) -> Searcher:
    return plain_shops[request.param]


def test_index_without_text_refuses_text_search(plain_shop):
    assert "text" not in plain_shop.meta and not plain_shop.has_text
    for mode in ("fused", "keyword", "semantic"):
        with pytest.raises(StoreError, match="no text vectors") as err:
            plain_shop.search_text("bag", mode=mode)
        assert "python indexer.py" in str(err.value)
    # Photo search still works, and its colour words still filter (colours do not need text).
    assert set(ids(plain_shop.search_image(Path(plain_shop.catalog_root) / "photos/p05.jpg", k=3, words="red"))) \
        == {"p01", "p08", "p16"}


def test_index_without_text_error_names_a_fix_that_works(plain_shop):
    with pytest.raises(StoreError) as err:
        plain_shop.search_text("bag")
    assert "new folder" in str(err.value) or "--index" in str(err.value)


def test_sync_with_text_on_an_index_without_it_notes_and_goes_on(plain_shop, shop_dir, text_indexer):
    summary = sync_catalog(read_catalog(shop_dir), plain_shop.store, ShapeEncoder(), text=text_indexer,
                           progress=False)
    assert summary.failed == [] and summary.unchanged == len(SHOP)
    assert len(summary.notes) == 1 and "without text vectors" in summary.notes[0]
    assert "note: " in summary.line()
    meta = plain_shop.store.read_meta()
    assert "text" not in meta
    with pytest.raises(StoreError, match="no text vectors"):
        search_text(TextSide(plain_shop.store, None), "bag")


# --- 9. evaluate_text ---

EVAL_SHOP = [(f"e{i:02d}", f"{adj} {colour} {name}", article_type, colour, shape)
             for i, (adj, (name, article_type, shape), colour) in enumerate(
                 (adj, t, c) for t in [("Sneaker", "Shoes", "wide"), ("Tshirt", "Tshirts", "square"),
                                       ("Handbag", "Bags", "round"), ("Scarf", "Scarves", "wide")]
                 for c in ["Red", "Blue"] for adj in ["Classic", "Modern", "Vintage"])]


def test_evaluate_text_on_a_tiny_catalog(tmp_path):
    root = write_catalog(tmp_path / "catalog", EVAL_SHOP)
    result = evaluate_text(root, "article_type,colour", [["colour", "article_type"], ["title"]],
                           encoder=ShapeEncoder(), holdout=0.25, seed=0, k=5, use_cache=False)
    assert result.labels == ["article_type", "article_type + colour"]
    assert result.queries == {"colour+article_type": 6, "title": 6, "all": 12}  # round(24 x 0.25) held out
    assert result.info["indexed"] == 18 and result.info["held_out"] == 6
    for kind in ("colour+article_type", "title", "all"):
        assert set(result.figures[kind]) == {"fused", "keyword", "semantic"}  # no bridge under 50 products
        for by_label in result.figures[kind].values():  # a type + colour match is also a type match
            assert by_label["article_type"] >= by_label["article_type + colour"], (kind, by_label)
    # Seed 0 holds out Modern Red Sneaker, Vintage Red Tshirt and four of the six handbags (Classic and Modern,
    # Red and Blue), leaving 5 sneakers (2 red), 5 tshirts (2 red), 2 handbags (1 red, 1 blue) and 6 scarves.
    from shoplens.quality.textevaluate import hold_out

    held = {p.title for p in hold_out(read_catalog(root).products, 0.25, 0)[1]}
    assert held == {"Modern Red Sneaker", "Vintage Red Tshirt", "Classic Red Handbag", "Modern Red Handbag",
                    "Classic Blue Handbag", "Modern Blue Handbag"}
    # By hand, keyword search, P@5: "Red Shoes" -> the 5 shoes ("shoes" is rarer than "red"): type 5/5, type +
    # colour 2/5; "Red Tshirts" likewise 5/5 and 2/5; each of the 4 bag queries finds the only 2 bags: 2/5, and
    # the one bag of its colour: 1/5. Means over 6 queries: type (1 + 1 + 4 x 0.4) / 6 = 0.6, type + colour
    # (0.4 + 0.4 + 4 x 0.2) / 6 = 0.2667.
    keyword = result.figures["colour+article_type"]["keyword"]
    assert keyword["article_type"] == pytest.approx(0.6)
    assert keyword["article_type + colour"] == pytest.approx(1.6 / 6)
    assert "| colour+article_type (6) | keyword |" in result.table()
    # "all" weighs each kind by its number of queries.
    for mode, by_label in result.figures["all"].items():
        for label in result.labels:
            kinds = [result.figures[kind][mode][label] for kind in ("colour+article_type", "title")]
            assert by_label[label] == pytest.approx(sum(kinds) / 2), (mode, label)


# --- 10. the bridge loads only for a search that uses it ---

def test_default_words_query_does_not_load_the_bridge(bridge_shops, monkeypatch):
    import threading
    import time

    indexed = bridge_shops["edge"]
    calls: list[int] = []
    release = threading.Event()
    original = TextIndexer.load_bridge

    def slow_load(self, store, meta):
        calls.append(1)
        assert release.wait(20), "the bridge load was never released"
        return original(self, store, meta)

    monkeypatch.setattr(TextIndexer, "load_bridge", slow_load)
    searcher = Searcher(indexed.store, indexed.meta, _encoder=indexed.encoder)
    assert TEXT_WEIGHTS["bridge"] == 0
    words = searcher.search_text("red shoes", k=5).hits  # fused, the default: keyword + semantic only
    assert len(words) == 5 and calls == []
    searcher.search_text("red shoes", k=5, mode="keyword")
    searcher.search_image(Path(searcher.catalog_root) / "photos/b00.jpg", k=3, words="shoes")
    assert calls == []
    # A bridge search loads it, on its own lock: while that load is stuck, other searches go on.
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(hits=searcher.search_text("red shoes", mode="bridge")))
    worker.start()
    for _ in range(400):  # until the worker is inside the load
        if calls:
            break
        time.sleep(0.05)
    assert calls == [1]
    assert ids(searcher.search_text("yellow bag", k=3)) and ids(searcher.search_image(
        Path(searcher.catalog_root) / "photos/b00.jpg", k=3))
    release.set()
    worker.join(20)
    assert not worker.is_alive() and result["hits"].hits
    searcher.search_text("red shoes", mode="bridge")
    assert calls == [1]  # loaded once


def test_bridge_staleness_is_judged_by_content_not_file_times(bridge_shop, text_indexer):
    import os

    store, meta = bridge_shop.store, bridge_shop.meta
    path = store.artifact_path(BRIDGE_FILE)
    version = meta["text"]["bridge"]["version"]
    assert len(version) == 16 and load_bridge(path).version == version
    # An old file time says nothing: the file is current, so it is read, not fitted again.
    os.utime(path, (1_000_000, 1_000_000))
    text_indexer.load_bridge(store, meta)
    assert path.stat().st_mtime == 1_000_000
    # A file fitted on other content (another version) is fitted again, and gets the index's version back.
    stale = load_bridge(path)
    stale.version = "0123456789abcdef"
    stale.save(path)
    os.utime(path, None)  # newer than the index's fit: still stale
    again = text_indexer.load_bridge(store, meta)
    assert again.version == version and load_bridge(path).version == version


# --- 11. colour words in a catalog whose words do not name colours ---

@pytest.mark.parametrize("kind", STORES)
def test_colour_words_count_the_photos_colours_when_the_text_names_none(kind, tmp_path, text_indexer):
    # Three bags alike in words ("Leather Bag", type Bags) in red, blue and green, a red scarf and a brown boot; no
    # colour column and no colour word in any title, so the index records names_colours false (boost 1.0).
    rows = [("v1", "Leather Bag", "Bags", "Red", "round"), ("v2", "Leather Bag", "Bags", "Blue", "round"),
            ("v3", "Leather Bag", "Bags", "Green", "round"), ("v4", "Wool Scarf", "Scarves", "Red", "wide"),
            ("v5", "Hiking Boot", "Footwear", "Brown", "wide")]
    root = tmp_path / "catalog"
    for pid, _title, _type, colour, shape in rows:
        make_product_photo(root / f"photos/{pid}.jpg", RGB[colour], shape)
    with open(root / "products.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "path", "title", "article_type"])
        writer.writerows([pid, f"photos/{pid}.jpg", title, kind_] for pid, title, kind_, _c, _s in rows)
    searcher, _ = build(kind, root, tmp_path / "idx", text_indexer)
    try:
        assert searcher.meta["text"]["names_colours"] is False and searcher.meta["text"]["colour_names"] == []
        assert hybrid.colour_word_weight(searcher.text_side) == 1.0
        # By hand: the three bags tie in both lists (same words), so they take fused ranks 1-3 in point-id order:
        # between 1/(1+59) + 1/(1/2+59) = 0.03347 (first) and 1/(3+59) + 1/(3/2+59) = 0.03266 (third). "red" is in
        # no product's words; the boost adds 0.03347 x colour similarity (about 1 for a red photo, 0 otherwise).
        # The red bag: at least 0.03266 + 0.0335 = 0.066; the red scarf, not a keyword match, at most
        # 1/(1/2+59) + 0.0335 = 0.0503 and at least 1/(5/2+59) + 0.0318 = 0.048; any other bag at most 0.0335.
        hits = searcher.search_text("red bag", k=5).hits
        assert ids(hits)[:2] == ["v1", "v4"]
        assert set(ids(hits)[2:4]) == {"v2", "v3"}
        assert all(a.score >= b.score for a, b in zip(hits, hits[1:])) and hits[0].similarity is None
        # The same query without the photos' colours (a catalog whose words name colours): the bags first, in id
        # order, the red scarf after them.
        plain = search_text(searcher.text_side, "red bag", k=4, colour_weight=0.0)
        assert set(ids(plain)[:3]) == {"v1", "v2", "v3"}
    finally:
        searcher.close()


# --- 12. words that are both a colour and a product ---

GROCER = [("g1", "Orange Juice", "Juice", "Blue", "square"), ("g2", "Apple Juice", "Juice", "Green", "square"),
          ("g3", "Orange", "Fruit", "Orange", "round"), ("g4", "Apple", "Fruit", "Red", "round"),
          ("g5", "Carrot", "Vegetables", "Orange", "wide")]


@pytest.mark.parametrize("kind", STORES)
def test_a_product_name_with_a_colour_word_is_not_a_colour(kind, tmp_path, text_indexer, photos):
    # A grocer's titles: "orange" is a fruit and part of "Orange Juice" (a blue carton here), never a colour asked for.
    root = tmp_path / "catalog"
    for pid, _title, _type, colour, shape in GROCER:
        make_product_photo(root / f"photos/{pid}.jpg", RGB[colour], shape)
    with open(root / "products.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "path", "title", "article_type"])
        writer.writerows([pid, f"photos/{pid}.jpg", title, type_] for pid, title, type_, _c, _s in GROCER)
    searcher, _ = build(kind, root, tmp_path / "idx", text_indexer)
    try:
        # "juice" follows one colour word only (orange), and "Orange" is a whole title.
        assert searcher.meta["text"]["colour_names"] == ["orange", "orange juice"]
        assert searcher.meta["text"]["names_colours"] is False  # no title names a colour, read this way
        # Words alone: no orange boost (it would lift the orange fruit and the carrot over the juice). The juice
        # is the one product with both words (BM25) and the closest sentence: first.
        assert ids(searcher.search_text("orange juice", k=3))[0] == "g1"
        # A blue carton's photo refined by "orange juice": not filtered to orange products; the words re-rank the
        # photo's candidates (the squares: both juices), and the orange juice leads.
        refined = searcher.search_image(photos("Blue", "square"), k=3, words="orange juice").hits
        assert ids(refined)[0] == "g1" and all(h.score < 2 for h in refined)
        # "red" is still a colour here: the red apple first, by COLOUR_MATCH.
        red = searcher.search_image(photos("Blue", "square"), k=3, words="red").hits
        assert ids(red)[0] == "g4" and red[0].score == pytest.approx(red[0].similarity + 2.0)
        # "not red": the red apple is left out of the photo's results. ("not orange" would be words about the
        # fruit here, not a colour: "orange" is one of this catalog's product names.)
        assert set(ids(searcher.search_image(photos("Blue", "square"), k=5, words="not red"))) == \
            {"g1", "g2", "g3", "g5"}
    finally:
        searcher.close()


# --- 13. fusion with an image encoder's text tower (ImageBind's list) ---

class ShapeTextEncoder(ShapeEncoder):
    """ShapeEncoder with a text tower, like ImageBind's: a text naming a shape embeds like a photo of that shape."""

    name = "fake-shape-text"

    def __init__(self, folder: Path):
        self.folder = folder  # where the reference photos of each shape are drawn

    @property
    def supports_text(self) -> bool:
        return True

    def embed_text(self, texts):
        rows = []
        for text in texts:
            shape = next((s for s in ("round", "wide", "square") if s in text), "square")
            path = self.folder / f"{shape}.jpg"
            if not path.exists():
                make_product_photo(path, (90, 90, 90), shape)
            rows.append(self.embed(Image.open(path)))
        return np.stack(rows)


def test_fusion_includes_the_image_encoders_text_list(shop_dir, tmp_path, text_indexer, monkeypatch):
    monkeypatch.setitem(TEXT_WEIGHTS, "labels", 0.0)  # the catalog-type list: tests/test_phrasings.py
    encoder = ShapeTextEncoder(tmp_path / "shapes")
    searcher, _ = build("edge", shop_dir, tmp_path / "idx", text_indexer, encoder)
    try:
        side = searcher.text_side
        assert side.image_text is not None and TEXT_WEIGHTS["imagebind"] == 2.0
        query = "something round"
        lists = hybrid.ranked_lists(side, query, CANDIDATES)
        assert set(lists) == {"keyword", "semantic", "imagebind"}
        store = searcher.store
        keyword = ids(by_score(store.search_keywords(bm25_query(query), CANDIDATES)))
        semantic = ids(by_score(store.search(text_indexer.embed_query(query), CANDIDATES, using=TEXT_VECTOR)))
        image = ids(by_score(store.search(encoder.embed_text([query])[0], CANDIDATES)))
        # The text tower ranks the round products (p03, p04, p08, p13, p15, p16) first.
        assert set(image[:6]) == {p for p, shape in SHAPE.items() if shape == "round"}
        weights = [TEXT_WEIGHTS["keyword"], TEXT_WEIGHTS["semantic"], 2.0]
        expected, scores = fused_by_hand([keyword, semantic, image], weights)
        without, _ = fused_by_hand([keyword, semantic], weights[:2])
        assert expected[:8] != without[:8]  # so the list is seen to count
        got = searcher.search_text(query, k=8).hits
        assert ids(got) == expected[:8]
        assert [h.score for h in got] == pytest.approx(scores[:8], rel=1e-6)
    finally:
        searcher.close()
