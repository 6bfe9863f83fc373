"""The text indexed for a product, and its BM25 sparse vectors with Qdrant's own tokenizer and weighting.

BM25 here is `qdrant_edge.Bm25`: the same tokenizer, stemmer, stopwords and term-frequency
weighting as Qdrant's server-side BM25, so an Edge shard and a Qdrant server give the same
scores. The store's sparse vector must be configured with the IDF modifier: documents carry
only term-frequency weights, and Qdrant multiplies in each term's IDF at search time.
"""

from __future__ import annotations

import re
from functools import lru_cache

# Metadata that identifies, locates or dates a product rather than describes it: it only adds noise
# tokens (a query never says "2011" or "10000") and would make every product match number queries.
SKIP_FIELDS = {"id", "product_id", "sku", "ean", "gtin", "upc", "image_path", "path", "rel_path", "image",
               "image_url", "url", "link", "content_hash", "hash", "year", "date", "created", "updated",
               "price",
               # The colours seen in the photo (shoplens.colour): the index's own data, not the catalog's words.
               "colours", "colour_vector",
               # The duplicate listing group (shoplens.index.duplicates): the index's own data too, and written
               # after the text (so a product's words, and the bridge's content version, never depend on it).
               "dup_sig", "duplicate_group", "duplicate_size", "duplicate_lead", "listings"}
SKIP_SUFFIXES = ("_id", "_path", "_url", "_hash", "_date", "_at", "_year")
# A value that says "unknown".
EMPTY_VALUES = {"", "na", "n/a", "nan", "none", "null", "-", "unknown"}
_NOT_WORDS = re.compile(r"^(?:[\d\s.,:/+-]+|[0-9a-f]{16,}|\w+://\S+|\S*[/\\]\S*\.\w{2,4})$", re.IGNORECASE)

# The fields naming what a product is and its colour, in the layouts catalog.py reads.
TYPE_AND_COLOUR_FIELDS = ("article_type", "product_type", "colour")

# BM25 length normalisation needs the typical document length; Qdrant's default (256 tokens) suits
# passages, not product texts of ~10 tokens, where it would switch length normalisation off.
AVG_LEN = 10.0  # the fashion set's title + attributes average 9.8 distinct terms
K1 = 1.2
B = 0.75


def describing_fields(metadata: dict) -> list[str]:
    """The metadata fields that describe the product (title first), in the catalog's order."""
    keys = [k for k in metadata if k not in SKIP_FIELDS and not k.endswith(SKIP_SUFFIXES)]
    return sorted(keys, key=lambda k: k != "title")


def product_text(metadata: dict, fields: list[str] | None = None) -> str:
    """The text indexed for a product: its title, then its other describing values, each once.

    `fields` picks the fields (in that order); by default every field except ids, paths, hashes,
    URLs, dates and prices. Values that are numbers, hashes, URLs or file paths, "NA"-like
    values, and values already given by an earlier field are left out. Empty when nothing is left.
    """
    parts: list[str] = []
    seen: set[str] = set()
    for key in describing_fields(metadata) if fields is None else fields:
        value = " ".join(str(metadata.get(key) or "").split())
        low = value.lower()
        if low in EMPTY_VALUES or low in seen or _NOT_WORDS.match(value):
            continue
        seen.add(low)
        parts.append(value)
    return " ".join(parts)


def semantic_text(metadata: dict) -> str:
    """The text for a product's sentence vector: title, product type and colour where the catalog has them.

    Measured on the fashion set, MiniLM does better without the generic attributes (gender, season,
    usage...) that BM25's IDF discounts but mean pooling does not. A catalog with neither field
    gets `product_text`.
    """
    fields = [f for f in TYPE_AND_COLOUR_FIELDS if metadata.get(f)]
    return product_text(metadata, ["title"] + fields) if fields else product_text(metadata)


@lru_cache(maxsize=8)
def bm25_model(avg_len: float = AVG_LEN, k: float = K1, b: float = B):
    """A `qdrant_edge.Bm25` with English stemming and stopwords (Qdrant's defaults) and this catalog's `avg_len`."""
    from qdrant_edge import Bm25, Bm25Config

    return Bm25(Bm25Config(k=k, b=b, avg_len=avg_len))


def bm25_document(text: str, avg_len: float = AVG_LEN) -> tuple[list[int], list[float]]:
    """A product text's BM25 sparse vector as (indices, values): saturated term frequencies, no IDF.

    Empty lists for a text with no indexable words (a store should then write no sparse vector).
    """
    vector = bm25_model(avg_len).embed_document(text)
    return list(vector.indices), list(vector.values)


def bm25_query(text: str) -> tuple[list[int], list[float]]:
    """A query's BM25 sparse vector as (indices, values): weight 1 per distinct term (IDF comes from the store)."""
    vector = bm25_model().embed_query(text)
    return list(vector.indices), list(vector.values)
