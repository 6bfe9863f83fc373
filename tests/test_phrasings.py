"""Shoppers' phrasings: the file, the capped precision, the catalog-type expansion, and the evaluation end to end.

Expected values are worked out by hand (noted beside each); the end-to-end test indexes a hand-made shop
of 8 products with the real indexer and a colour-blind fake image encoder.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from conftest import absent, make_product_photo
from shoplens.catalog import read_catalog
from shoplens.encoders import Encoder, l2_normalise
from shoplens.quality.phrasings import (Phrasing, PhrasingError, capped_precision, evaluate_phrasings, read_phrasings,
                                score_phrasings)
from shoplens.query import hybrid
from shoplens.query.hybrid import TextSide, label_list
from shoplens.store import TEXT_VECTOR, Hit
from shoplens.text.expand import LabelVocabulary, pick_labels, type_votes

HEADER = "split,query,article_types,colours,genders\n"


def write(tmp_path: Path, body: str, name: str = "p.csv") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


# -- the file ---------------------------------------------------------------------------------------------

def test_read_phrasings_rules_and_comments(tmp_path):
    path = write(tmp_path, "# written by hand\n\n" + HEADER + "tune,kicks,Casual Shoes;Sports Shoes,,\n"
                 'report,"navy  shirt, formal",Shirts,Navy Blue,Men;Unisex\n')
    first, second = read_phrasings(path)
    assert (first.split, first.query, first.rule) == ("tune", "kicks", {"article_type": {"Casual Shoes", "Sports Shoes"}})
    assert second.query == "navy shirt, formal"  # spaces folded, the quoted comma kept
    assert second.rule == {"article_type": {"Shirts"}, "colour": {"Navy Blue"}, "gender": {"Men", "Unisex"}}
    # Every named field must match; an unnamed one allows anything.
    assert second.relevant({"article_type": "Shirts", "colour": "Navy Blue", "gender": "Unisex"})
    assert not second.relevant({"article_type": "Shirts", "colour": "Blue", "gender": "Men"})
    assert not second.relevant({"article_type": "Shirts", "colour": "Navy Blue"})  # no gender: not Men
    assert first.relevant({"article_type": "Sports Shoes", "colour": "Red"})


@pytest.mark.parametrize("body, message", [
    ("split,query,types\n", "p.csv:1: the header must be"),
    (HEADER + "train,kicks,Casual Shoes,,\n", "p.csv:2: split must be one of tune, report, not 'train'"),
    (HEADER + "tune,kicks,,,\n", "p.csv:2: 'kicks' has no article_types"),
    (HEADER + "tune,kicks,Casual Shoes,,\nreport,Kicks,Sports Shoes,,\n", "p.csv:3: empty or repeated query 'Kicks'"),
    (HEADER + "tune,kicks,Casual Shoes\n", "p.csv:2: 3 columns, expected 5"),
    ("# only a comment\n", "holds no phrasings"),
])
def test_read_phrasings_names_the_bad_line(tmp_path, body, message):
    with pytest.raises(PhrasingError, match=message.replace("(", r"\(")):
        read_phrasings(write(tmp_path, body))


def test_read_phrasings_missing_file(tmp_path):
    with pytest.raises(PhrasingError, match="cannot read phrasings file"):
        read_phrasings(tmp_path / "absent.csv")


def test_shipped_phrasings_file():
    """The repo's set: at least 40, both halves non-trivial, every rule on the catalog's label values."""
    items = read_phrasings(Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "text_phrasings.csv")
    assert len(items) == 86
    assert sum(p.split == "tune" for p in items) == 43 and sum(p.split == "report" for p in items) == 43


def test_shipped_rules_use_catalog_values(datasets_dir):
    styles = datasets_dir / "fashion-product-images-small" / "styles.csv"
    if not styles.exists():
        absent(f"{styles} is absent", "SHOPLENS_REQUIRE_DATASETS")
    rows = list(csv.DictReader(styles.open()))
    values = {"article_type": {r["articleType"] for r in rows}, "colour": {r["baseColour"] for r in rows},
              "gender": {r["gender"] for r in rows}}
    items = read_phrasings(Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "text_phrasings.csv")
    unknown = [(p.query, f, v) for p in items for f, allowed in p.rule.items() for v in allowed if v not in values[f]]
    assert unknown == []


# -- the score --------------------------------------------------------------------------------------------

PH = Phrasing("tune", "tote", {"article_type": frozenset({"Handbags"})})
BAG, SHOE = {"article_type": "Handbags"}, {"article_type": "Casual Shoes"}


def test_capped_precision_by_hand():
    found = [BAG, SHOE, BAG] + [SHOE] * 7 + [BAG]  # 2 bags in the top 10, the 11th does not count
    assert capped_precision(found, PH, n_relevant=3) == pytest.approx(2 / 3)  # min(10, 3) = 3
    assert capped_precision(found, PH, n_relevant=25) == pytest.approx(2 / 10)
    assert capped_precision([BAG, BAG], PH, n_relevant=2) == 1.0  # all there is, found
    assert math.isnan(capped_precision(found, PH, n_relevant=0))


def test_score_phrasings_by_split_by_hand():
    """Two tune and one report phrasing, a fake search returning fixed lists; one rule matches nothing."""
    items = [PH, Phrasing("tune", "kicks", {"article_type": frozenset({"Casual Shoes"})}),
             Phrasing("report", "purse", {"article_type": frozenset({"Handbags"})}),
             Phrasing("report", "brolly", {"article_type": frozenset({"Umbrellas"})})]
    catalog = [BAG, BAG, SHOE, SHOE, SHOE, SHOE]  # 2 bags, 4 shoes, no umbrella
    answers = {"tote": [BAG, SHOE, SHOE], "kicks": [SHOE, BAG, SHOE], "purse": [SHOE, SHOE, BAG, BAG]}

    def search(_side, query, k, mode):
        return [Hit(str(i), 1.0, p) for i, p in enumerate(answers[query])]

    result = score_phrasings(None, catalog, items, modes=("keyword",), search=search)
    # tote 1/min(10,2) = 0.5, kicks 2/4 = 0.5, purse 2/2 = 1.0; brolly has no relevant product: left out.
    assert result.per_query["keyword"] == {"tote": 0.5, "kicks": 0.5, "purse": 1.0}
    assert result.figures["tune"]["keyword"] == 0.5 and result.figures["report"]["keyword"] == 1.0
    assert result.figures["all"]["keyword"] == pytest.approx(2 / 3)
    assert result.counts == {"tune": 2, "report": 1, "all": 3}
    assert result.unscored == ["brolly"]


# -- the catalog's own types ------------------------------------------------------------------------------

def test_pick_labels_by_hand():
    labels = ["Bags", "Belts", "Caps", "Ties"]
    sims = [0.50, 0.45, 0.20, 0.38]
    assert pick_labels(sims, labels, top=3, margin=0.1) == ["Bags", "Belts"]  # floor max(0.3, 0.5 - 0.1) = 0.4
    assert pick_labels(sims, labels, top=3, margin=0.15) == ["Bags", "Belts", "Ties"]  # floor 0.35
    assert pick_labels(sims, labels, top=1, margin=0.15) == ["Bags"]
    assert pick_labels(sims, labels, top=3, margin=0.02) == ["Bags"]  # floor 0.48
    assert pick_labels([0.29, 0.1, 0.2, 0.25], labels, top=3, margin=0.1) == []  # names no type the catalog has
    assert pick_labels([0.4, 0.4, 0.1, 0.1], ["Ties", "Bags", "Caps", "Belts"], top=3, margin=0.1) == ["Bags", "Ties"]
    with pytest.raises(ValueError, match="3 similarities for 4 labels"):
        pick_labels([0.1, 0.2, 0.3], labels)


AXES = {"Bags": [1, 0, 0], "Shoes": [0, 1, 0], "Ties": [0, 0, 1]}


def axis_embed(texts):
    return np.array([AXES[t] for t in texts], np.float32) * 3.0  # not unit length: the vocabulary normalises


class FacetStore:
    """Answers facet() like a store with keyword indexes on `fields`, and records searches."""

    def __init__(self, fields: dict):
        self.fields = fields
        self.searches = []

    def facet(self, name, limit=1000):
        if name not in self.fields:
            raise RuntimeError(f"no keyword index on {name}")
        return self.fields[name]

    def search(self, vector, k=10, filters=None, exact=False, using=None, ids=None):
        self.searches.append((filters, using, ids))
        return [Hit("x", 0.5, {})]


def test_vocabulary_from_store_and_match():
    store = FacetStore({"sub_category": [("Topwear", 3), ("Shoes", 2)],
                        "article_type": [("Ties", 1), ("Bags", 4), ("Shoes", 2), ("", 1)]})
    vocabulary = LabelVocabulary.from_store(store, axis_embed)
    assert (vocabulary.field, vocabulary.labels) == ("article_type", ["Bags", "Shoes", "Ties"])  # most specific first
    # (1, 1, 0): cosine 0.707 with Bags and Shoes, 0 with Ties.
    assert vocabulary.similarities(np.array([1, 1, 0])) == pytest.approx([0.7071, 0.7071, 0.0], abs=1e-4)
    assert vocabulary.match(np.array([1, 1, 0]), top=3, margin=0.1) == ["Bags", "Shoes"]
    # (0.2, 0.1, 1): cosines 0.195, 0.098, 0.976 (each / 1.0247): only Ties within 0.1 of the best.
    assert vocabulary.match(np.array([0.2, 0.1, 1.0]), top=3, margin=0.1) == ["Ties"]
    # A vote of 0.9 (weight 1) lifts Shoes to 0.098 + 0.9 = 0.998, ahead of Ties' 0.976; Bags 0.195 stays out.
    votes = {"Shoes": 0.9}
    assert vocabulary.match(np.array([0.2, 0.1, 1.0]), top=3, margin=0.1, votes=votes, vote_weight=1.0) == ["Shoes", "Ties"]
    assert vocabulary.match(np.array([0.2, 0.1, 1.0]), top=3, margin=0.1, votes=votes, vote_weight=0.0) == ["Ties"]
    assert LabelVocabulary.from_store(FacetStore({"article_type": [("Bags", 4)]}), axis_embed) is None  # one type


def test_type_votes_by_hand():
    def hits(*types):
        return [Hit(str(i), 1.0, {"article_type": t}) for i, t in enumerate(types)]

    keyword = hits("Tshirts", "Tshirts", "Shirts", "Tshirts")
    semantic = hits("Shirts", "Shirts", "Tops", "Shirts", "Shirts")
    # depth 4: keyword Tshirts 3/4, Shirts 1/4; semantic Shirts 3/4, Tops 1/4 (its 5th hit is too deep);
    # averaged over the two lists.
    assert type_votes("article_type", [keyword, semantic], depth=4) == pytest.approx(
        {"Tshirts": 0.375, "Shirts": 0.5, "Tops": 0.125})
    assert type_votes("article_type", [keyword, None], depth=2) == {"Tshirts": 1.0}  # a missing list abstains
    assert type_votes("article_type", [], depth=2) == {}


def test_label_list_searches_within_the_types():
    store = FacetStore({})
    side = TextSide(store, embed_text=None, labels=LabelVocabulary("article_type", ["Bags", "Shoes", "Ties"], axis_embed))
    # cosines 0.724, 0.688, 0: both within the default margin (0.05)
    found = label_list(side, np.array([1.0, 0.95, 0.0]), 50, {"gender": "Women"}, None)
    assert [h.id for h in found["labels"]] == ["x"]
    assert store.searches == [({"gender": "Women", "article_type": ["Bags", "Shoes"]}, TEXT_VECTOR, None)]
    # A filter on the type field already says what the shopper wants; words naming no type add nothing.
    assert label_list(side, np.array([1.0, 0, 0]), 50, {"article_type": "Ties"}, None) == {}
    assert label_list(side, np.array([0.2, 0.2, -1.0]), 50, None, None) == {}  # all cosines below 0.3
    assert len(store.searches) == 1


# -- end to end on a hand-made shop -----------------------------------------------------------------------

SHOP = [("s1", "Leather Satchel", "Bags", "Brown", "round"), ("s2", "Canvas Tote Bag", "Bags", "Blue", "round"),
        ("s3", "Evening Clutch", "Bags", "Red", "round"), ("s4", "Running Shoe", "Shoes", "Red", "wide"),
        ("s5", "Hiking Boot", "Shoes", "Brown", "wide"), ("s6", "Silk Tie", "Ties", "Navy Blue", "wide"),
        ("s7", "Cotton T-Shirt", "Tshirts", "Green", "square"), ("s8", "Denim Jacket", "Jackets", "Blue", "square")]


class InkEncoder(Encoder):
    """Fake model: the 4x4 share of non-white pixels, L2-normalised (shape, not colour)."""

    name = "fake-ink"
    version = "1"
    dim = 16

    def embed_batch(self, images):
        rows = []
        for img in images:
            ink = (np.asarray(img.convert("RGB"), np.int16) < 200).any(axis=2).astype(np.float32)
            h, w = ink.shape
            rows.append(ink[: h - h % 4, : w - w % 4].reshape(4, h // 4, 4, w // 4).mean(axis=(1, 3)).ravel() + 0.01)
        return l2_normalise(np.stack(rows))


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    root = tmp_path_factory.mktemp("phrasing-shop")
    with (root / "products.csv").open("w", newline="") as f:  # the CSV-manifest layout of tests/test_hybrid.py
        writer = csv.writer(f)
        writer.writerow(["id", "path", "title", "article_type", "colour"])
        for pid, title, kind, colour, shape in SHOP:
            make_product_photo(root / "photos" / f"{pid}.jpg", (120, 60, 40), shape)
            writer.writerow([pid, f"photos/{pid}.jpg", title, kind, colour])
    return root


def test_evaluate_phrasings_end_to_end(shop, tmp_path):
    phrasings = write(tmp_path, HEADER + "tune,satchel,Bags,,\nreport,silk,Ties,,\nreport,boot,Shoes,Brown,\n"
                      "tune,umbrella,Umbrellas,,\n")
    index = tmp_path / "index"
    result = evaluate_phrasings(read_catalog(shop), phrasings, index=index, encoder=InkEncoder(),
                                modes=("keyword",), progress=False)
    # BM25 finds only the products whose text holds the word: satchel -> s1 (1 of 3 bags: 1/3),
    # silk -> s6 (the only tie: 1/1), boot -> s5 (the only brown shoe: 1/1); no umbrella in the shop.
    assert result.per_query["keyword"] == {"satchel": pytest.approx(1 / 3), "silk": 1.0, "boot": 1.0}
    assert result.figures["tune"]["keyword"] == pytest.approx(1 / 3)
    assert result.figures["report"]["keyword"] == 1.0
    assert result.unscored == ["umbrella"] and result.info["indexed"] == 8
    from shoplens.store.edge import EdgeStore

    with EdgeStore(index) as store:  # kept for the next run: the 8 products, with their text vectors
        assert store.count() == 8 and store.read_meta()["text"]
    again = evaluate_phrasings(read_catalog(shop), phrasings, index=index, encoder=InkEncoder(), modes=("keyword",))
    assert again.per_query == result.per_query and again.info["seconds_indexing"] < result.info["seconds_indexing"]


def test_label_vocabulary_on_a_real_index(shop, tmp_path):
    """The Searcher reads the shop's article types; 'bag' means Bags to MiniLM, and the labels list holds bags only."""
    from shoplens.quality.phrasings import phrasing_index

    with phrasing_index(read_catalog(shop), tmp_path / "index", InkEncoder()) as searcher:
        side = searcher.text_side
        assert (side.labels.field, side.labels.labels) == ("article_type", ["Bags", "Jackets", "Shoes", "Ties", "Tshirts"])
        sentence = side.embed_text("bag")
        assert side.labels.match(sentence)[0] == "Bags"
        found = label_list(side, sentence, 10, None, None)["labels"]
        assert {h.payload["article_type"] for h in found} <= set(side.labels.match(sentence))
        assert {"s1", "s2", "s3"} <= {h.payload["product_id"] for h in found}


def test_evaluate_flag_errors(tmp_path, capsys):
    from shoplens.cli import main

    assert main(["evaluate", "--text-phrasings", str(tmp_path / "x.csv"), "--index", str(tmp_path)]) == 2
    assert "--text-phrasings indexes a CATALOG itself" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "--label FIELD is required" in capsys.readouterr().err


class WordsStore(FacetStore):
    """Keyword search finds k1 (a shoe); the semantic search finds s1 (a bag) then k1; within Shoes, k1."""

    SHOE, BAG = {"article_type": "Shoes"}, {"article_type": "Bags"}

    def search_keywords(self, keywords, k=10, filters=None, ids=None):
        return [Hit("k1", 3.0, self.SHOE)]

    def search(self, vector, k=10, filters=None, exact=False, using=None, ids=None):
        self.searches.append((filters, using, ids))
        if filters and "article_type" in filters:
            return [Hit("k1", 0.6, self.SHOE)] if "Shoes" in filters["article_type"] else []
        return [Hit("s1", 0.8, self.BAG), Hit("k1", 0.6, self.SHOE)]


def test_fused_with_the_type_list_by_hand():
    assert {n: hybrid.TEXT_WEIGHTS[n] for n in ("keyword", "semantic", "bridge", "labels")} == {
        "keyword": 2.0, "semantic": 1.0, "bridge": 0.0, "labels": 8.0} and hybrid.RRF_K == 60
    store = WordsStore({})
    side = TextSide(store, embed_text=lambda text: np.array([1.0, 0.9, 0.0]),
                    labels=LabelVocabulary("article_type", ["Bags", "Shoes", "Ties"], axis_embed))
    hits = hybrid.search_text(side, "comfy kicks", k=2)
    # Cosines: Bags 0.743, Shoes 0.669 (Bags alone within 0.05). Votes (top 20 of each list): keyword
    # Shoes 1/1, semantic Bags 1/2 + Shoes 1/2, averaged: Shoes 0.75, Bags 0.25 -> Shoes 1.419, Bags 0.993.
    assert store.searches[-1] == ({"article_type": ["Shoes"]}, TEXT_VECTOR, None)
    # k1: keyword rank 1 (w 2) 1/(1/2 + 59) + semantic rank 2 (w 1) 1/(2 + 59) + types rank 1 (w 8) 1/(1/8 + 59);
    # s1: semantic rank 1: 1/(1 + 59).
    assert [h.id for h in hits] == ["k1", "s1"]
    assert [h.score for h in hits] == pytest.approx([1 / 59.5 + 1 / 61 + 1 / 59.125, 1 / 60])
    # Stopwords alone: no type is read from them. The semantic search is the only vector search made, and
    # k1 (this fake's keyword hit, 1/59.5 + 1/61 = 0.0332) leads s1 (1/60 = 0.0167) without the type list.
    before = len(store.searches)
    hits = hybrid.search_text(side, "the and of", k=2)
    assert store.searches[before:] == [(None, TEXT_VECTOR, None)]
    assert [h.score for h in hits] == pytest.approx([1 / 59.5 + 1 / 61, 1 / 60])


def test_type_list_alike_on_both_stores(shop, tmp_path):
    """Edge and a Qdrant server (qdrant-client in memory) read the same types and fuse alike."""
    from shoplens.index.sync import sync_catalog
    from shoplens.index.text import TextIndexer
    from shoplens.query.search import Searcher
    from shoplens.store.edge import EdgeStore
    from shoplens.store.remote import QdrantStore

    catalog, encoder, searchers = read_catalog(shop), InkEncoder(), []
    for store in (EdgeStore(tmp_path / "edge"), QdrantStore(":memory:")):
        sync_catalog(catalog, store, encoder, text=TextIndexer(), progress=False)
        searchers.append(Searcher(store, store.read_meta(), _encoder=encoder))
    edge, remote = (s.text_side for s in searchers)
    assert edge.labels.labels == remote.labels.labels == ["Bags", "Jackets", "Shoes", "Ties", "Tshirts"]
    for query in ("bag", "kicks", "something for the office", "warm coat"):
        assert ([h.id for h in searchers[0].search_text(query, k=8).hits]
                == [h.id for h in searchers[1].search_text(query, k=8).hits]), query
    for s in searchers:
        s.close()


def test_score_phrasings_loads_a_lazy_bridge():
    """The bridge loads on first use (TextSide.get_bridge): the scorer must ask for it, not skip the bridge mode
    because it has not been loaded yet (the stale bridge row of docs/quality.md came from that skip)."""
    class Side:
        bridge = None

        def get_bridge(self):
            self.bridge = object()
            return self.bridge

    def search(_side, query, k, mode):
        return [Hit("0", 1.0, BAG)]

    result = score_phrasings(Side(), [BAG, SHOE], [PH], modes=("keyword", "bridge"), search=search)
    assert set(result.per_query) == {"keyword", "bridge"} and result.per_query["bridge"] == {"tote": 1.0}
