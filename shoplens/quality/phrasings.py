"""Text search measured on shoppers' phrasings: `python -m shoplens evaluate CATALOG --text-phrasings FILE`.

The held-out evaluation (shoplens.quality.textevaluate) builds its queries from the very fields BM25 indexes
("navy blue tshirts" against a catalog whose text holds "Navy Blue" and "Tshirts"), which flatters
keyword search. Here the queries are written by people the way shoppers talk ("kicks", "tote",
"wrist watch for men"), each with an explicit relevance rule on the catalog's label values, and split
into a fixed "tune" half (for any weight or expansion choice) and a "report" half (the figure).

File format (CSV, `#` lines are comments): split,query,article_types,colours,genders; the last three
hold `;`-separated label values, empty meaning "any". A product is relevant when its article type is
one of `article_types` and, where given, its colour and gender are among those listed.

Score: capped precision@10 = relevant in the top 10 / min(10, number of relevant products), so a
query with 3 relevant products scores 1.0 when all 3 are in its top 10.
"""

from __future__ import annotations

import csv
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shoplens.catalog import Catalog, read_catalog
from shoplens.errors import UserError
from shoplens.query.hybrid import MODES, search_text
from shoplens.store.edge import EdgeStore

SPLITS = ("tune", "report")
COLUMNS = ["split", "query", "article_types", "colours", "genders"]
RULE_FIELDS = {"article_types": "article_type", "colours": "colour", "genders": "gender"}


class PhrasingError(UserError):
    """A phrasings file that cannot be read: the message names the file and line."""


@dataclass(frozen=True)
class Phrasing:
    """One shopper's query and the label values that make a product relevant to it."""

    split: str
    query: str
    rule: dict  # payload field -> allowed values (a frozenset); a field not named allows any value

    def relevant(self, payload: dict) -> bool:
        """Whether a product with this payload is relevant to the query."""
        return all(str(payload.get(name, "")).strip() in allowed for name, allowed in self.rule.items())


def read_phrasings(path: str | Path) -> list[Phrasing]:
    """The phrasings in a CSV file (see the module docstring); a bad line raises PhrasingError naming it."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise PhrasingError(f"cannot read phrasings file {path}: {exc.strerror or exc}") from None
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip() and not line.lstrip().startswith("#")]
    if not numbered:
        raise PhrasingError(f"{path} holds no phrasings")
    rows = list(csv.reader([line for _n, line in numbered]))
    if [c.strip() for c in rows[0]] != COLUMNS:
        raise PhrasingError(f"{path}:{numbered[0][0]}: the header must be {','.join(COLUMNS)}")
    out, seen = [], set()
    for (n, _line), row in zip(numbered[1:], rows[1:]):
        if len(row) != len(COLUMNS):
            raise PhrasingError(f"{path}:{n}: {len(row)} columns, expected {len(COLUMNS)}")
        cells = dict(zip(COLUMNS, (c.strip() for c in row)))
        if cells["split"] not in SPLITS:
            raise PhrasingError(f"{path}:{n}: split must be one of {', '.join(SPLITS)}, not {cells['split']!r}")
        query = " ".join(cells["query"].split())
        if not query or query.lower() in seen:
            raise PhrasingError(f"{path}:{n}: empty or repeated query {query!r}")
        seen.add(query.lower())
        rule = {RULE_FIELDS[col]: frozenset(v.strip() for v in cells[col].split(";") if v.strip())
                for col in RULE_FIELDS if cells[col]}
        if "article_type" not in rule:
            raise PhrasingError(f"{path}:{n}: {query!r} has no article_types")
        out.append(Phrasing(cells["split"], query, rule))
    return out


def capped_precision(found: list[dict], phrasing: Phrasing, n_relevant: int, k: int = 10) -> float:
    """Relevant products among the first k payloads / min(k, n_relevant); NaN when nothing is relevant."""
    if n_relevant == 0:
        return float("nan")
    return sum(phrasing.relevant(p) for p in found[:k]) / min(k, n_relevant)


@dataclass
class PhrasingEvaluation:
    """Capped precision@k per split and search mode, and per query."""

    k: int
    figures: dict = field(default_factory=dict)  # split -> mode -> mean capped P@k
    per_query: dict = field(default_factory=dict)  # mode -> query -> capped P@k
    counts: dict = field(default_factory=dict)  # split -> number of scored queries
    unscored: list = field(default_factory=list)  # queries whose rule matches no product
    info: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"k": self.k, "capped_precision": self.figures, "queries": self.counts,
                "per_query": self.per_query, "unscored": self.unscored, **self.info}

    def table(self) -> str:
        lines = [f"| phrasings | search | capped P@{self.k} |", "|---|---|---|"]
        for split, modes in self.figures.items():
            for mode, value in modes.items():
                lines.append(f"| {split} ({self.counts[split]}) | {mode} | {value:.3f} |")
        return "\n".join(lines)


def relevant_counts(payloads: list[dict], phrasings: list[Phrasing]) -> dict[str, int]:
    """query -> how many indexed products its rule makes relevant."""
    return {ph.query: sum(ph.relevant(p) for p in payloads) for ph in phrasings}


def score_phrasings(side, payloads: list[dict], phrasings: list[Phrasing], modes=MODES, k: int = 10,
                    search=search_text) -> PhrasingEvaluation:
    """Run every phrasing in every mode against an opened index's TextSide and score it."""
    counts = relevant_counts(payloads, phrasings)
    result = PhrasingEvaluation(k)
    result.unscored = [ph.query for ph in phrasings if counts[ph.query] == 0]
    scored = [ph for ph in phrasings if counts[ph.query]]
    for mode in modes:
        if mode == "bridge" and side.get_bridge() is None:  # loaded on first use; skipped only when there is none
            continue
        result.per_query[mode] = {ph.query: capped_precision([h.payload for h in search(side, ph.query, k, mode=mode)],
                                                             ph, counts[ph.query], k) for ph in scored}
    for split in (*SPLITS, "all"):
        chosen = [ph for ph in scored if split == "all" or ph.split == split]
        result.counts[split] = len(chosen)
        result.figures[split] = {mode: float(np.mean([values[ph.query] for ph in chosen])) if chosen else float("nan")
                                 for mode, values in result.per_query.items()}
    return result


@contextmanager
def phrasing_index(catalog: Catalog, index: str | Path | None = None, encoder=None, progress: bool = False):
    """An opened Searcher on `catalog` indexed for real (image vectors from the embedding cache, BM25, MiniLM,
    colours, the bridge). `index`: a folder to keep it in and reuse on the next run (built when it holds no
    index; an index there is trusted to be this catalog's)."""
    from shoplens.encoders import DEFAULT_ENCODER, Encoder, create_encoder
    from shoplens.vectors.embedcache import embed_products
    from shoplens.index.sync import sync_catalog
    from shoplens.index.text import TextIndexer
    from shoplens.query.search import Searcher

    enc = encoder if isinstance(encoder, Encoder) else create_encoder(encoder or DEFAULT_ENCODER)
    with tempfile.TemporaryDirectory(prefix="shoplens-phrasings-") as tmp:
        store = EdgeStore(Path(index) if index else Path(tmp) / "index")
        try:
            meta = store.read_meta()
            if meta is not None and not meta.get("text"):
                raise PhrasingError(f"the index in {index} has no text vectors: give a new --index folder "
                                    "(or none) and the catalog is indexed with text there")
            if meta is None:
                known = embed_products(catalog.products, enc, progress=progress)
                sync_catalog(catalog, store, enc, text=TextIndexer(), progress=progress,
                             known_vectors=dict(zip(known.hashes, known.vectors)))
            yield Searcher(store, store.read_meta(), _encoder=enc)
        finally:
            store.close()


def evaluate_phrasings(catalog: str | Path | Catalog, phrasings: str | Path | list[Phrasing], *, layout: str = "auto",
                       index: str | Path | None = None, encoder=None, k: int = 10, modes=MODES,
                       progress: bool = False) -> PhrasingEvaluation:
    """Index the whole catalog (or reuse `index`) and score the phrasings in every search mode."""
    started = time.perf_counter()
    items = phrasings if isinstance(phrasings, list) else read_phrasings(phrasings)
    cat = catalog if isinstance(catalog, Catalog) else read_catalog(catalog, layout)
    with phrasing_index(cat, index, encoder, progress) as searcher:
        payloads = [h.payload for h in searcher.store.iterate()]
        side = searcher.text_side
        indexed_at = time.perf_counter()
        result = score_phrasings(side, payloads, items, modes, k)
    result.info = {"catalog": str(cat.root), "indexed": len(payloads),
                   "phrasings": str(phrasings) if not isinstance(phrasings, list) else "given",
                   "seconds_indexing": round(indexed_at - started, 1),
                   "seconds_searching": round(time.perf_counter() - indexed_at, 1)}
    return result
