"""The catalog sync, in stages: plan → read/prepare → embed → write → finalise.

- plan (`plan_sync`): open or create the index, check it, finish or start a change of tuning, and work out
  what the run may touch; it refuses a sync that would remove too much before anything is written.
- read/prepare (`read_products`, `prepare`, `route`): hash each product's photo and decode it only when it
  must be encoded (or its colours read again); each product is then sorted into unchanged, new metadata,
  to encode, or failed.
- embed (`Embedder`): vectors of a batch of photos, from known vectors or the encoder; every vector encoded is
  written to the embedding cache (what re-projection and `tune` read), and the index's tuning is applied.
- write (`Writer`): points and payloads into the store, counted in the Summary.
- finalise (`finalise`, FINALISE_STEPS): drop orphans, prune, record fields, fit the text bridge, then the
  metadata; each step is a small function of `Finish`.

Re-running is cheap and safe: point ids are deterministic, an image whose content hash is already stored is
not encoded again, and a run killed midway is completed by the next one (the metadata is written last).
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from collections import ChainMap
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterator, Mapping

import numpy as np

from PIL import Image

from shoplens.catalog import Catalog, Product
from shoplens.colour.palette import COLOUR_VERSION, COLOURS_FIELD, PAYLOAD_KEYS
from shoplens.colour.pixels import colour_profile
from shoplens.encoders import Encoder
from shoplens.errors import UserError
from shoplens.images import ImageError, load_image, read_bytes
from shoplens.index import duplicates
from shoplens.index.text import TextIndexer, check_text
from shoplens.index.tuning import (PENDING_KEY, TUNING_FIELD, TuningIndexError, change_tuning, describe_tuning,
                                   read_kept_tuning)
from shoplens.progress import progress_bar
from shoplens.store import (SCHEMA_VERSION, DiskSpaceError, IndexDamagedError, PointData, Store, check_encoder, point_id,
                            text_dim)
from shoplens.store.space import bytes_needed, ensure_space
from shoplens.vectors.embedcache import EmbeddingCache, remember

# sync_catalog(tuning=KEEP): keep the index's tuning (and finish a pending change of it).
KEEP = "keep"

# Fields never offered as filters: free text, ids, file paths.
NOT_FILTERS = {"title", "product_id", "id", "sku", "image", "image_url", "image_path", "content_hash", "description", "year"}
MAX_FILTER_VALUES = 500


@dataclass
class Summary:
    """What an indexing run did."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    encoded: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    reprojected: int = 0

    @property
    def images_per_second(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {"added": self.added, "updated": self.updated, "unchanged": self.unchanged, "removed": self.removed,
                "failed": len(self.failed), "failures": [{"product": p, "error": e} for p, e in self.failed],
                "encoded": self.encoded, "seconds": round(self.seconds, 3),
                "images_per_second": round(self.images_per_second, 1), "reprojected": self.reprojected,
                "notes": list(self.notes)}

    def line(self) -> str:
        text = (f"added {self.added}, updated {self.updated}, unchanged {self.unchanged}, removed {self.removed}, "
                f"failed {len(self.failed)}, {self.images_per_second:.1f} images/s ({self.seconds:.1f} s)")
        if self.failed:
            names = "; ".join(f"{p}: {e}" for p, e in self.failed[:10])
            more = f" and {len(self.failed) - 10} more" if len(self.failed) > 10 else ""
            text += f"\nfailed: {names}{more}"
        for note in self.notes:
            text += f"\nnote: {note}"
        return text


# ---------------------------------------------------------------------------------------------------- plan


@dataclass
class Plan:
    """What a run works with, settled before any photo is read."""

    meta: dict  # the index's metadata (written back by finalise)
    existing: dict[str, dict]  # point id -> stored payload, after any re-projection
    damaged: object  # shoplens.index.check.Report of the integrity check before the run
    text: TextIndexer | None  # the text side kept in step (None: the index has no text vectors)
    target: object | None  # the tuning the written vectors get (a shoplens.tune.Tuning), None for raw
    known: Mapping[str, np.ndarray]  # content hash -> backbone vector: photos not encoded again
    rewrite: set[str]  # damaged points re-written from the catalog (prepared as new)
    colours_ok: bool  # stored colours have the current layout, so a same photo keeps them
    disk: object = None  # an embedded index's folder, whose free space is checked before each write

    @property
    def tuned(self) -> dict:
        """The payload field that says which tuning a written (or kept) vector has."""
        return {TUNING_FIELD: self.target.hash} if self.target is not None else {}

    @property
    def to_prepare(self) -> dict[str, dict]:
        """Stored payloads the read stage compares with; a point to re-write counts as new."""
        return {pid: payload for pid, payload in self.existing.items() if pid not in self.rewrite}


class PruneRefusedError(UserError):
    """A prune would remove more of the index than allowed (or all of it); nothing was changed."""


DEFAULT_MAX_PRUNE = 0.2  # share of the index a prune may remove without --force or --max-prune


def check_prune(existing: Mapping[str, dict], products: list[Product], max_prune: float | None,
                location: str = "the index") -> list[str]:
    """The stored points no catalog product owns (what a prune removes); PruneRefusedError when they are more
    than `max_prune` of the index or all of it (None: no limit). A photo folder moved away for a minute would
    otherwise empty a served index."""
    kept = {point_id(p.id) for p in products}
    gone = sorted(pid for pid in existing if pid not in kept)
    if max_prune is None or not gone:
        return gone
    share = len(gone) / len(existing)
    if share > max_prune or len(gone) == len(existing):
        what = "every product" if len(gone) == len(existing) else f"{share:.0%} of its products"
        raise PruneRefusedError(
            f"this sync would remove {len(gone)} of the {len(existing)} products in {location} ({what}; the limit "
            f"is {max_prune:.0%}), so nothing was changed: check that the catalog's photos are all there, then "
            "run it again with --force (or --max-prune FRACTION) to remove them")
    return gone


class LayoutChangedError(UserError):
    """The catalog now reads as another layout than the one the index was built from; nothing was changed."""


def check_layout(meta: dict, catalog: Catalog, location: str = "the index", chosen: bool = False) -> None:
    """Refuse a catalog whose detected layout is not the one the index records: another layout gives every product
    another id (a CSV with a `path` column dropped into a folder catalog would duplicate or, with a prune, wipe
    the shop). `chosen`: the layout was given (--layout), a deliberate change. An index that records no layout
    (made before layouts were recorded) takes the catalog's."""
    recorded = meta.get("layout")
    if chosen or not recorded or recorded == catalog.layout:
        return
    raise LayoutChangedError(
        f"the catalog at {catalog.root} now reads as layout {catalog.layout!r}, but {location} was built from "
        f"layout {recorded!r} (every product id would change), so nothing was changed: keep the index's with "
        f"--layout {recorded}, or change it deliberately with --layout {catalog.layout} (with --prune, --force too)")


def plan_sync(catalog: Catalog, store: Store, encoder: Encoder, summary: Summary, *, text: TextIndexer | None,
              tuning, known_vectors: Mapping[str, np.ndarray] | None, prune: bool, max_prune: float | None,
              progress, layout_chosen: bool = False) -> Plan:
    """Open (or create) the index and settle what the run works with; refuses before anything is written when
    the index is another encoder's or layout's, damaged beyond the catalog's help, short of disk, or a prune too
    large."""
    meta = store.read_meta()
    if meta is not None:
        check_layout(meta, catalog, f"the index at {store.location}", layout_chosen)
    disk = getattr(store, "path", None)  # an embedded index's folder; a server minds its own disk
    if disk is not None and store.read_meta() is None:
        ensure_space(disk, bytes_needed(len(catalog.products), encoder.dim, text.model.dim if text else None),
                     f"indexing {len(catalog.products)} products")
    meta = ensure_index(store, encoder, catalog, text)
    damaged = _damage(store, meta, summary)
    if text is not None and not text_dim(meta):
        summary.notes.append(f"the index at {store.location} was built without text vectors; text search stays off "
                             "(re-index into a new folder to turn it on)")
        text = None
    elif text is None and text_dim(meta):
        # An index with text vectors keeps them in step with the catalog, or they would go stale.
        text = TextIndexer()
        check_text(meta, text, store.location)
    target = index_target_tuning(store, meta, tuning)
    existing = store.states()
    if prune:  # before the change of tuning below, the first write of the run
        check_prune(existing, catalog.products, max_prune, f"the index at {store.location}")
    summary.reprojected = change_tuning(store, meta, encoder, target, progress=progress, states=existing)
    if summary.reprojected:
        existing = store.states()  # their bookkeeping field changed
        summary.notes.append(f"re-projected {summary.reprojected} stored vectors "
                             + (f"to tuning {describe_tuning(target)}" if target is not None else
                                "back to untuned vectors"))
    if disk is not None:
        new = sum(point_id(p.id) not in existing for p in catalog.products) + len(damaged.no_image)
        ensure_space(disk, bytes_needed(new, encoder.dim, text_dim(meta)), f"writing {new} products")
    rewrite = damaged.no_image | damaged.bad_payload  # re-encoded (or taken from the embedding cache)
    known: Mapping[str, np.ndarray] = known_vectors if known_vectors is not None else {}
    if rewrite:  # the damaged points' vectors, from the embedding cache where it has them
        known = ChainMap(dict(known), EmbeddingCache.for_encoder(encoder))
    summary.failed.extend((m.split(":")[0], m.split(":", 1)[-1].strip()) for m in catalog.missing)
    summary.notes.extend(getattr(catalog, "notes", []))
    colours_ok = (meta.get("colours") or {}).get("version") == COLOUR_VERSION
    return Plan(meta, existing, damaged, text, target, known, rewrite, colours_ok, disk)


def ensure_index(store: Store, encoder: Encoder, catalog: Catalog | None = None,
                 text: TextIndexer | None = None) -> dict:
    """Open or create the index for `encoder` (and `text`); refuse one built by another encoder or text model."""
    meta = store.read_meta()
    if meta is None:
        meta = {"schema": SCHEMA_VERSION, **encoder.describe(), "created": _now()}
        if text is not None:
            meta["text"] = text.describe()
        if catalog is not None:
            # catalog_size: the embedded store picks its configuration for this many products (store/edge.py).
            meta.update(catalog_root=str(catalog.root.resolve()), layout=catalog.layout,
                        catalog_size=len(catalog.products))
        store.create(meta)
    else:
        check_encoder(meta, encoder.name, encoder.version, encoder.dim, store.location)
        if text is not None and text_dim(meta):
            check_text(meta, text, store.location)
    return meta


def index_target_tuning(store: Store, meta: dict, tuning):
    """The tuning a run brings the index to: `tuning` itself, or for KEEP the index's own (or the one a pending
    change was heading to)."""
    if tuning is not KEEP:
        if tuning is not None:
            from shoplens.vectors.tuning import TuningError, check_tuning

            try:
                check_tuning(tuning, meta)
            except TuningError as exc:
                raise TuningIndexError(f"cannot apply it to the index at {store.location}: {exc}") from None
        return tuning
    pending = meta.get(PENDING_KEY)
    record = pending.get("to") if pending is not None else meta.get("tuning")
    return read_kept_tuning(store, record) if record else None


def _damage(store: Store, meta: dict, summary: Summary):
    """The integrity check before syncing: points to re-write; refuses a store it cannot read."""
    from shoplens.index.check import Report, startup_check

    if meta.get("points") is None and not meta.get("updated"):
        return Report(store.location)  # a new index: nothing to check
    report = startup_check(store)  # cheap: counts, metadata, a sample; `shoplens check` reads every vector
    fatal = [p for p in report.problems if p.kind in ("meta", "open", "disk", "unreadable")]
    if fatal:
        raise (DiskSpaceError if fatal[0].kind == "disk" else IndexDamagedError)(fatal[0].line())
    if report.kinds() & {"image", "vector", "text", "payload", "count", "bridge"}:
        summary.notes.append("the index was damaged: " + "; ".join(p.text for p in report.problems)
                             + " (repaired by this run where the catalog has the product)")
    return report


# ---------------------------------------------------------------------------------------------- read/prepare


@dataclass
class Prepared:
    """One product after the read stage: its payload, and its decoded photo if it needs encoding."""

    product: Product
    point: str
    payload: dict | None = None
    image: Image.Image | None = None
    error: str | None = None


def payload_for(product: Product, content_hash: str) -> dict:
    """What the store keeps with a product's vector."""
    return {**product.metadata, "product_id": product.id, "image_path": product.rel_path, "content_hash": content_hash}


def filter_fields(catalog: Catalog) -> list[str]:
    """Category-like metadata fields: short values, more than one and at most a few hundred distinct."""
    values: dict[str, set[str]] = {}
    for product in catalog.products:
        for key, value in product.metadata.items():
            if key not in NOT_FILTERS:
                values.setdefault(key, set()).add(value)
    return sorted(k for k, v in values.items()
                  if 1 < len(v) <= MAX_FILTER_VALUES and max(len(x) for x in v) <= 64)


def prepare(product: Product, existing: dict | None, draft_size: int | None, colours: bool = False,
            stored_colours_ok: bool = True) -> Prepared:
    """Read and hash the photo; decode it only to encode it (a new photo) or to read its colours again."""
    item = Prepared(product, point_id(product.id))
    try:
        data = read_bytes(product.path)
        item.payload = payload_for(product, hashlib.sha256(data).hexdigest())
        same_photo = bool(existing) and existing.get("content_hash") == item.payload["content_hash"]
        if same_photo and not colours:
            return item
        if (same_photo and stored_colours_ok and all(k in existing for k in PAYLOAD_KEYS)
                and existing.get("colour") == product.metadata.get("colour")):
            # Same photo, same colour label, same colour layout: the stored colours are still right.
            item.payload.update({k: existing[k] for k in PAYLOAD_KEYS})
            return item
        image = load_image(data, name=product.rel_path, draft_size=draft_size)
        if colours:
            item.payload.update(colour_profile(image, product.metadata.get("colour")))
        if not same_photo:
            item.image = image  # to encode; a same photo only needed its colours read
    except ImageError as exc:
        item.error = str(exc)
    return item


def read_products(products: list[Product], existing: Mapping[str, dict], draft_size: int | None, *, workers: int,
                  lookahead: int, colours: bool, stored_colours_ok: bool) -> Iterator[Prepared]:
    """The products prepared in catalog order, `lookahead` of them ahead of the consumer."""
    # Decoding in threads overlaps with encoding (PIL and onnxruntime release the GIL).
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = []
        for product in products:
            pending.append(pool.submit(prepare, product, existing.get(point_id(product.id)), draft_size, colours,
                                       stored_colours_ok))
            if len(pending) >= lookahead:
                yield pending.pop(0).result()
        for future in pending:
            yield future.result()


# What the sync does with a prepared product (route's answers).
DUPLICATE, FAILED, ENCODE, UNCHANGED, METADATA = "duplicate", "failed", "encode", "unchanged", "metadata"


def route(item: Prepared, existing: Mapping[str, dict], seen: set[str], no_text: set[str] = frozenset()) -> str:
    """Sort a prepared product: a later product with an id already seen, an unreadable photo, a photo to encode
    (new, changed, or a damaged point), unchanged, or a same photo with new metadata (or lost text vectors).
    Adds its point to `seen`."""
    if item.point in seen:
        return DUPLICATE
    seen.add(item.point)
    if item.error:
        return FAILED
    if item.image is not None:
        return ENCODE
    if existing[item.point] == item.payload and item.point not in no_text:
        return UNCHANGED
    return METADATA


# ---------------------------------------------------------------------------------------------------- embed


class Embedder:
    """Vectors for batches of prepared photos: known vectors first, the encoder for the rest.

    With `cache`, each backbone vector encoded goes to the embedding cache, so a later change of tuning
    re-projects without encoding and a killed run keeps what it encoded; the written vectors get `target`'s
    tuning."""

    def __init__(self, encoder: Encoder, known: Mapping[str, np.ndarray], target=None, cache: bool = True):
        self.encoder = encoder
        self.known = known
        self.target = target
        self.cache = EmbeddingCache.for_encoder(encoder) if cache else None
        self.encoded = 0

    def embed(self, batch: list[Prepared]) -> list[np.ndarray]:
        """The vectors to store for `batch` (row i is batch[i])."""
        hashes = [item.payload["content_hash"] for item in batch]
        vectors = [self.known.get(h) for h in hashes]
        todo = [item.image for item, vec in zip(batch, vectors) if vec is None]
        fresh = iter(self.encoder.embed_batch(todo) if todo else [])
        vectors = [next(fresh) if vec is None else vec for vec in vectors]
        if self.cache is not None and todo:  # each batch: a killed run keeps what it encoded
            remember(self.cache, {h: np.asarray(vec, np.float32) for h, vec in zip(hashes, vectors)})
        self.encoded += len(todo)
        if self.target is not None:
            vectors = list(self.target.apply(np.stack(vectors)))
        return vectors

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()


# ---------------------------------------------------------------------------------------------------- write


class Writer:
    """Writes prepared products into the store and counts them in the Summary (added or updated)."""

    def __init__(self, store: Store, summary: Summary, existing: Mapping[str, dict], text: TextIndexer | None,
                 disk=None, dim: int = 0, text_size: int | None = None):
        self.store = store
        self.summary = summary
        self.existing = existing
        self.text = text
        self.disk = disk
        self.dim = dim
        self.text_size = text_size

    def write_points(self, batch: list[Prepared], vectors: list[np.ndarray]) -> None:
        """New or changed photos: their vectors, payloads and text vectors."""
        texts = self.text.vectors([item.payload for item in batch]) if self.text else [(None, None)] * len(batch)
        self.store.upsert([PointData(item.point, vec, item.payload, *tv)
                           for item, vec, tv in zip(batch, vectors, texts)])
        for item in batch:
            if item.point in self.existing:
                self.summary.updated += 1
            else:
                self.summary.added += 1

    def write_payload(self, item: Prepared) -> None:
        """A same photo with new metadata (or lost text vectors): no re-encoding."""
        self.store.set_payload(item.point, item.payload)
        if self.text:
            self.store.update_text([PointData(item.point, None, item.payload, *self.text.vectors([item.payload])[0])])
        self.summary.updated += 1

    def ensure_space(self, count: int) -> None:
        """Refuse the next write when the disk cannot take it (the disk may fill up during the run)."""
        if self.disk is not None:
            ensure_space(self.disk, bytes_needed(count, self.dim, self.text_size),
                         f"writing the next {count} products (those before them are kept; run it again to finish)")


# ------------------------------------------------------------------------------------------------- finalise


@dataclass
class Finish:
    """What the finalise steps work on, after every product was written."""

    catalog: Catalog
    store: Store
    plan: Plan
    summary: Summary
    seen: set[str]  # the points of every catalog product read this run
    prune: bool
    colours: bool


def drop_orphans(run: Finish) -> None:
    """Damaged points no catalog product owns, whose payload says nothing: drop them."""
    orphans = sorted(run.plan.damaged.bad_payload - run.seen)
    if orphans:
        run.store.delete(orphans)
        run.summary.notes.append(f"removed {len(orphans)} damaged points that belong to no product of the catalog")


def prune_gone(run: Finish) -> None:
    """With prune, remove the products that left the catalog (their share was checked by the plan)."""
    if run.prune:
        gone = [pid for pid in run.plan.existing if pid not in run.seen]
        run.store.delete(gone)
        run.summary.removed = len(gone)


def record_fields(run: Finish) -> None:
    """Keyword indexes for filter fields (and colours) and the catalog's root, layout and colour layout."""
    meta = run.plan.meta
    fields = filter_fields(run.catalog)
    indexed = set(meta.get("filter_fields", [])) | set(meta.get("keyword_fields", []))
    keyword_fields = sorted(set(fields) | ({COLOURS_FIELD} if run.colours else set()))
    for name in keyword_fields:
        if name not in indexed:
            run.store.create_keyword_index(name)
    meta.update(catalog_root=str(run.catalog.root.resolve()), layout=run.catalog.layout, filter_fields=fields,
                keyword_fields=keyword_fields, updated=_now())
    if run.colours:  # the colour_vector layout, so search never compares vectors of two layouts
        meta["colours"] = {"version": COLOUR_VERSION}
    else:  # the payloads were just written without colours
        meta.pop("colours", None)


def fit_text_bridge(run: Finish) -> None:
    """Refit the text-to-image bridge when the points changed (or it is missing)."""
    text, summary, meta = run.plan.text, run.summary, run.plan.meta
    if text and (summary.added or summary.updated or summary.removed or not text.has_bridge(run.store, meta)):
        meta["text"] = text.fit_bridge(run.store, meta)


# The finalise steps, in order. Each is step(run: Finish) -> None; a step may change the store, add to
# run.plan.meta (written after the last step) and to run.summary.notes. A step added here (duplicate groups, ...)
# runs on every sync; a run killed during the steps is finished by the next, which runs them all again.
def group_duplicates(run: Finish) -> None:
    """The duplicate groups of the products this run touched (shoplens.index.duplicates)."""
    duplicates.finalise(run.store, run.catalog, run.plan.meta)


FINALISE_STEPS: tuple[Callable[[Finish], None], ...] = (drop_orphans, prune_gone, record_fields, fit_text_bridge,
                                                        group_duplicates)


def finalise(run: Finish, steps=FINALISE_STEPS) -> None:
    """Run the finalise steps, then flush the store and write the metadata: the last write of a sync, so a
    killed run's index still says it needs a sync."""
    for step in steps:
        step(run)
    run.store.finish()
    run.plan.meta["points"] = run.store.count()  # what `shoplens check` compares the store with
    run.store.write_meta(run.plan.meta)


# ----------------------------------------------------------------------------------------------------- sync


def sync_catalog(catalog: Catalog, store: Store, encoder: Encoder, *, text: TextIndexer | None = None,
                 colours: bool = True, batch_size: int = 32, prune: bool = False, progress: bool = True,
                 workers: int = 2, known_vectors: Mapping[str, np.ndarray] | None = None, tuning=KEEP,
                 cache: bool = True, max_prune: float | None = DEFAULT_MAX_PRUNE,
                 layout_chosen: bool = False) -> Summary:
    """Bring the index in line with the catalog and return what changed.

    `text` adds keyword and sentence vectors of each product's title and attributes (and a text-to-image
    bridge); an index that has them keeps them up to date even without it. `colours` stores each product's
    dominant colours in its payload (off: they are removed). `progress`: a bar on stderr, or on the text
    stream given. `known_vectors` (content hash -> this encoder's vector, e.g. from
    shoplens.vectors.embedcache) spares encoding those photos.

    `tuning` (a shoplens.tune.Tuning, None for none, KEEP for the index's own): stored vectors are
    tuning.apply(backbone vector); a new tuning, or none, first re-projects the stored vectors from their
    cached backbone vectors (shoplens.index.tuning). With `cache`, every vector encoded is written to the
    embedding cache (what re-projection and `tune` read).

    `prune` removes the products that left the catalog, unless they are more than `max_prune` of the index
    (a share; None: no limit) or all of it: then PruneRefusedError before anything is written.

    The catalog's layout must be the one the index records (LayoutChangedError) unless `layout_chosen` (the
    user gave it: a deliberate change)."""
    started = time.perf_counter()
    summary = Summary()
    plan = plan_sync(catalog, store, encoder, summary, text=text, tuning=tuning, known_vectors=known_vectors,
                     prune=prune, max_prune=max_prune, progress=progress, layout_chosen=layout_chosen)
    embedder = Embedder(encoder, plan.known, plan.target, cache)
    writer = Writer(store, summary, plan.existing, plan.text, plan.disk, encoder.dim, text_dim(plan.meta))
    seen: set[str] = set()
    batch: list[Prepared] = []

    def flush() -> None:
        writer.ensure_space(len(batch))
        writer.write_points(batch, embedder.embed(batch))
        summary.encoded = embedder.encoded
        batch.clear()

    to_prepare = plan.to_prepare
    bar = progress_bar(len(catalog.products), "indexing", enabled=progress)
    try:
        for item in read_products(catalog.products, plan.to_prepare, encoder.draft_size, workers=workers,
                                  lookahead=batch_size * 2, colours=colours, stored_colours_ok=plan.colours_ok):
            bar.update(1)
            if item.payload is not None:
                item.payload.update(plan.tuned)  # which tuning the vector written (or kept) has
                # the duplicate group survives a payload rewrite while the photo is the same
                item.payload.update(duplicates.carried(to_prepare.get(item.point), item.payload))
            where = route(item, plan.existing, seen, plan.damaged.no_text)
            if where == DUPLICATE:
                summary.failed.append((item.product.rel_path, f"duplicate product id {item.product.id!r}"))
            elif where == FAILED:
                summary.failed.append((item.product.rel_path, item.error))
            elif where == ENCODE:
                batch.append(item)
                if len(batch) >= batch_size:
                    flush()
            elif where == UNCHANGED:
                summary.unchanged += 1
            else:
                writer.write_payload(item)
        if batch:
            flush()
    finally:
        bar.close()  # on an error too: the error's line then starts on a line of its own
        embedder.close()
    if plan.rewrite:
        summary.notes.append(f"re-wrote {len(plan.rewrite)} damaged products (image vector or payload missing or "
                             "unreadable)")
    if plan.damaged.no_text:
        summary.notes.append(f"re-wrote the text vectors of {len(plan.damaged.no_text)} products that had lost them")
    finalise(Finish(catalog, store, plan, summary, seen, prune, colours))
    summary.seconds = time.perf_counter() - started
    return summary


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
