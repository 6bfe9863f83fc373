"""The text side of an index: each product's keyword (BM25) and sentence (MiniLM) vectors, and the bridge.

The bridge maps a sentence vector into the image encoder's space so a text query also searches the
photos. It is fitted on the catalog's own (text, image) pairs after an indexing run and saved in the
store's artifact folder; the index metadata records a digest of the content it was fitted on
(`content_version`), and so does the file, so a searcher tells a stale file by content, not by clock.
The same pass records the catalog's product names that contain colour words ("orange juice"), so
that a query's colour words are read as colours only where they describe something.
"""

from __future__ import annotations

import hashlib
import zipfile
from datetime import datetime, timezone
from typing import Sequence

import numpy as np

from shoplens.colour.words import colour_words, learn_colour_names
from shoplens.store import IndexMismatchError, Sparse, Store
from shoplens.text.bridge import Bridge, fit_bridge, load_bridge
from shoplens.text.document import AVG_LEN, B, K1, bm25_document, describing_fields, product_text, semantic_text
from shoplens.text.minilm import MiniLM

BRIDGE_FILE = "text-bridge.npz"
BRIDGE_ALPHA = 0.1  # ridge penalty, from a probe (docs/quality.md, text_probe)
BRIDGE_NEIGHBOURS = 1
MIN_BRIDGE_PAIRS = 50  # fewer pairs than this fit noise, not a map
NAMES_COLOURS_SHARE = 0.5  # a catalog "names colours" when at least this share of its texts has a colour word
# What reading a damaged or foreign .npz raises (a truncated zip, a zeroed header, a missing array).
BRIDGE_READ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def image_encoder_key(meta: dict) -> str:
    return f"{meta.get('encoder')}@{meta.get('encoder_version')}"


COLOUR_LABEL_FIELDS = {"colour"}  # a product's own colour label: it names a colour by definition
NAME_VALUE_CHARS = 64  # longer values are free text (descriptions), not names or attributes


def name_values(payload: dict) -> list[str]:
    """A product's title and short attribute values, where its product names are (not its colour label)."""
    return [str(payload[k]) for k in describing_fields(payload)
            if k not in COLOUR_LABEL_FIELDS and k != "description" and len(str(payload[k] or "")) <= NAME_VALUE_CHARS]


def content_version(entries) -> str:
    """A digest of (point id, photo hash, text) entries in any order: equal exactly when the content is."""
    digest = hashlib.sha256()
    for entry in sorted(entries):
        digest.update("\x1f".join(entry).encode("utf-8", "replace") + b"\x1e")
    return digest.hexdigest()[:16]


def catalog_has_text(payloads: Sequence[dict]) -> bool:
    """Whether products carry words worth indexing (a title or describing attributes)."""
    return any(product_text(p) for p in payloads)


class TextIndexer:
    """Computes the text vectors of products' payloads, and fits and loads the bridge."""

    def __init__(self, model: MiniLM | None = None):
        self.model = model or MiniLM()

    @property
    def key(self) -> str:
        return f"{self.model.name}@{self.model.version}"

    def describe(self) -> dict:
        """What the index records about its text side."""
        return {**self.model.describe(), "keywords": "qdrant-bm25", "bm25": {"k": K1, "b": B, "avg_len": AVG_LEN},
                "sentence_text": "title+type+colour"}

    def vectors(self, payloads: Sequence[dict]) -> list[tuple[np.ndarray | None, Sparse | None]]:
        """(sentence vector, BM25 terms) per payload; (None, None) for a product without text."""
        texts = [product_text(p) for p in payloads]
        have = [i for i, t in enumerate(texts) if t]
        # The sentence model reads a shorter text than BM25: generic attributes blur its mean pooling.
        dense = self.model.embed_texts([semantic_text(payloads[i]) for i in have])
        out: list[tuple[np.ndarray | None, Sparse | None]] = [(None, None)] * len(texts)
        for row, i in enumerate(have):
            out[i] = (dense[row], bm25_document(texts[i]))
        return out

    def embed_query(self, text: str) -> np.ndarray:
        return self.model.embed_text(text)

    # bridge

    def has_bridge(self, store: Store, meta: dict) -> bool:
        """Whether the saved bridge matches the index's last fit (or the catalog was too small to fit one),
        and the metadata has what this version records with it (content version, colour names)."""
        text = meta.get("text") or {}
        fitted = text.get("bridge")
        if not fitted or "version" not in fitted or "colour_names" not in text:
            return False
        return fitted.get("pairs", 0) < MIN_BRIDGE_PAIRS or bridge_readable(store, meta) is None

    def fit_bridge(self, store: Store, meta: dict) -> dict:
        """Fit the bridge on every product with both vectors, save it, and return the new meta['text'].

        The same pass learns the catalog's colour-word product names and whether its words name colours."""
        text_rows, image_rows, entries, names, texts = [], [], [], [], []
        for hit in store.iterate(with_vector=True):
            if hit.text_vector is not None:
                text = product_text(hit.payload)
                texts.append(text)
                names.append((name_values(hit.payload), hit.payload.get("colour")))
                if hit.vector is not None:
                    text_rows.append(hit.text_vector)
                    image_rows.append(hit.vector)
                    entries.append((hit.id, str(hit.payload.get("content_hash", "")), text))
        info = {"pairs": len(text_rows), "version": content_version(entries), "fitted": _now()}
        if len(text_rows) >= MIN_BRIDGE_PAIRS:
            bridge = fit_bridge(np.stack(text_rows), np.stack(image_rows), alpha=BRIDGE_ALPHA,
                                neighbours=BRIDGE_NEIGHBOURS, text_model=self.key,
                                image_encoder=image_encoder_key(meta), version=info["version"])
            bridge.save(store.artifact_path(BRIDGE_FILE))
            info.update(alpha=BRIDGE_ALPHA, neighbours=BRIDGE_NEIGHBOURS)
        # Whether the catalog's own words name colours decides how much the photos' colours count for
        # colour words in a query (shoplens.query.hybrid.colour_word_weight); "Orange Juice" names none.
        colour_names = learn_colour_names(names)
        named = sum(bool(colour_words(text, colour_names)[0]) for text in texts)
        names_colours = named >= NAMES_COLOURS_SHARE * max(len(texts), 1)
        return {**(meta.get("text") or self.describe()), "bridge": info, "names_colours": names_colours,
                "colour_names": colour_names}

    def load_bridge(self, store: Store, meta: dict) -> Bridge | None:
        """The index's bridge: read from its file, re-fitted when missing or stale (e.g. on another machine
        than the one that indexed a Qdrant server); None when the catalog is too small for one.

        Stale means fitted on other content: the file's content version differs from the metadata's
        (an index from before versions: its pair count differs). File times are not compared: clocks
        and copies lie. Re-fitting scrolls every vector, so callers load the bridge only for a search
        that uses it, and never while holding a lock other requests wait on."""
        fitted = (meta.get("text") or {}).get("bridge") or {}
        if fitted.get("pairs", 0) < MIN_BRIDGE_PAIRS:
            return None
        path = store.artifact_path(BRIDGE_FILE)
        try:
            bridge = load_bridge(path, self.key, image_encoder_key(meta))
            if (bridge.version == fitted["version"]) if "version" in fitted else (bridge.fitted_on == fitted["pairs"]):
                return bridge
        except BRIDGE_READ_ERRORS:
            pass  # missing, unreadable or for other models: fit it again from the stored vectors
        self.fit_bridge(store, meta)
        return load_bridge(path, self.key, image_encoder_key(meta))


def bridge_readable(store: Store, meta: dict) -> str | None:
    """None when the index's saved bridge loads and matches its models; else what is wrong with the file."""
    path = store.artifact_path(BRIDGE_FILE)
    if not path.exists():
        return "is missing"
    try:
        bridge = load_bridge(path, f"{meta['text'].get('model')}@{meta['text'].get('version')}",
                             image_encoder_key(meta))
    except BRIDGE_READ_ERRORS as exc:
        return f"cannot be read ({type(exc).__name__}: {str(exc)[:120]})"
    except Exception as exc:  # noqa: BLE001 - numpy raises assorted errors on garbage
        return f"cannot be read ({type(exc).__name__})"
    if not (np.isfinite(bridge.weights).all() and np.isfinite(bridge.bias).all()):
        return "holds values that are not finite"
    return None


def check_text(meta: dict, text: TextIndexer, location: str = "") -> None:
    """Refuse to add text vectors from another text model than the one the index was built with."""
    built = meta.get("text") or {}
    if (built.get("model"), str(built.get("version")), int(built.get("dim", 0))) != \
            (text.model.name, str(text.model.version), text.model.dim):
        raise IndexMismatchError(
            f"the index at {location or 'this location'} holds text vectors of {built.get('model')!r} "
            f"(version {built.get('version')}, {built.get('dim')}-d), not {text.model.name!r} "
            f"(version {text.model.version}); re-index into a new folder")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

