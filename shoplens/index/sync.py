"""Indexing in small stages: read the catalog, hash and decode photos, encode a batch, write a batch.

Re-running is cheap and safe: point ids are deterministic, an image whose content hash is
already stored is not encoded again, and a run killed midway is completed by the next one.
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterator, Mapping

import numpy as np

from PIL import Image

from shoplens.catalog import Catalog, Product
from shoplens.colour.palette import COLOUR_VERSION, COLOURS_FIELD, PAYLOAD_KEYS
from shoplens.colour.pixels import colour_profile
from shoplens.encoders import Encoder
from shoplens.images import ImageError, load_image, read_bytes
from shoplens.index import duplicates
from shoplens.index.embedcache import cache_file, load_cache, save_cache
from shoplens.index.text import TextIndexer, check_text
from shoplens.index.tuning import (PENDING_KEY, TUNING_FIELD, TuningIndexError, change_tuning, describe_tuning,
                                read_kept_tuning)
from shoplens.progress import progress_bar
from shoplens.store import (SCHEMA_VERSION, DiskSpaceError, IndexDamagedError, PointData, Store, check_encoder, point_id,
                            text_dim)
from shoplens.store.space import bytes_needed, ensure_space

# sync_catalog(tuning=KEEP): keep the index's tuning (and finish a pending change of it).
KEEP = "keep"

# Fields never offered as filters: free text, ids, file paths.
NOT_FILTERS = {"title", "product_id", "id", "sku", "image", "image_url", "image_path", "content_hash", "description", "year"}
MAX_FILTER_VALUES = 500
CACHE_EVERY = 640  # photos encoded between writes of the embedding cache


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


def _prepared(products: list[Product], existing: dict[str, dict], draft_size: int | None,
              workers: int, lookahead: int, colours: bool, stored_colours_ok: bool) -> Iterator[Prepared]:
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
            from shoplens.tune import TuningError, check_tuning

            try:
                check_tuning(tuning, meta)
            except TuningError as exc:
                raise TuningIndexError(f"cannot apply it to the index at {store.location}: {exc}") from None
        return tuning
    pending = meta.get(PENDING_KEY)
    record = pending.get("to") if pending is not None else meta.get("tuning")
    return read_kept_tuning(store, record) if record else None


def sync_catalog(catalog: Catalog, store: Store, encoder: Encoder, *, text: TextIndexer | None = None,
                 colours: bool = True, batch_size: int = 32, prune: bool = False, progress: bool = True,
                 workers: int = 2, known_vectors: Mapping[str, np.ndarray] | None = None, tuning=KEEP,
                 cache: bool = True) -> Summary:
    """Bring the index in line with the catalog and return what changed.

    `text` adds keyword and sentence vectors of each product's title and attributes (and a text-to-image
    bridge); an index that has them keeps them up to date even without it. `colours` stores each product's
    dominant colours in its payload (off: they are removed). `progress`: a bar on stderr, or on the text
    stream given. `known_vectors` (content
    hash -> this encoder's vector, e.g. from shoplens.index.embedcache) spares encoding those photos.

    `tuning` (a shoplens.tune.Tuning, None for none, KEEP for the index's own): stored vectors are
    tuning.apply(backbone vector); a new tuning, or none, first re-projects the stored vectors from their
    cached backbone vectors (shoplens.index.tuning). With `cache`, every vector encoded is written to the
    embedding cache (what re-projection and `tune` read)."""
    known_vectors = dict(known_vectors or {})
    started = time.perf_counter()
    summary = Summary()
    disk = getattr(store, "path", None)  # an embedded index's folder; a server minds its own disk
    text_size = text.model.dim if text is not None else None
    if disk is not None and store.read_meta() is None:
        ensure_space(disk, bytes_needed(len(catalog.products), encoder.dim, text_size),
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
    summary.reprojected = change_tuning(store, meta, encoder, target, progress=progress, states=existing)
    if summary.reprojected:
        existing = store.states()  # their bookkeeping field changed
        summary.notes.append(f"re-projected {summary.reprojected} stored vectors "
                             + (f"to tuning {describe_tuning(target)}" if target is not None else
                                "back to untuned vectors"))
    tuned = {TUNING_FIELD: target.hash} if target is not None else {}
    raw_cache: dict | None = None  # the embedding cache, loaded when the first photo is encoded
    text_size = text_dim(meta)
    if disk is not None:
        new = sum(point_id(p.id) not in existing for p in catalog.products) + len(damaged.no_image)
        ensure_space(disk, bytes_needed(new, encoder.dim, text_size), f"writing {new} products")
    rewrite = damaged.no_image | damaged.bad_payload  # re-encoded (or taken from the embedding cache)
    if rewrite:
        known_vectors = {**load_cache(cache_file(encoder)), **known_vectors}
    to_prepare = {pid: payload for pid, payload in existing.items() if pid not in rewrite}
    summary.failed.extend((m.split(":")[0], m.split(":", 1)[-1].strip()) for m in catalog.missing)
    summary.notes.extend(getattr(catalog, "notes", []))

    seen: set[str] = set()
    batch: list[Prepared] = []
    bar = progress_bar(len(catalog.products), "indexing", enabled=progress)

    def flush_batch() -> None:
        nonlocal raw_cache
        if disk is not None:  # the disk may fill up during the run (other writers, changed photos)
            ensure_space(disk, bytes_needed(len(batch), encoder.dim, text_size),
                         f"writing the next {len(batch)} products (those before them are kept; run it again "
                         "to finish)")
        todo = [item.image for item in batch if item.payload["content_hash"] not in known_vectors]
        fresh = iter(encoder.embed_batch(todo) if todo else [])
        vectors = [known_vectors.get(item.payload["content_hash"]) for item in batch]
        vectors = [next(fresh) if vec is None else vec for vec in vectors]
        if cache and todo:  # the backbone vectors, so a later change of tuning re-projects without encoding
            if raw_cache is None:
                raw_cache = load_cache(cache_file(encoder))
            raw_cache.update((item.payload["content_hash"], np.asarray(vec, np.float32))
                             for item, vec in zip(batch, vectors))
            if (summary.encoded + len(todo)) // CACHE_EVERY > summary.encoded // CACHE_EVERY:
                _save_raw(encoder, raw_cache)  # a killed run keeps what it encoded
        if target is not None:
            vectors = list(target.apply(np.stack(vectors)))
        texts = text.vectors([item.payload for item in batch]) if text else [(None, None)] * len(batch)
        store.upsert([PointData(item.point, vec, item.payload, *tv) for item, vec, tv in zip(batch, vectors, texts)])
        for item in batch:
            if item.point in existing:
                summary.updated += 1
            else:
                summary.added += 1
        summary.encoded += len(todo)
        batch.clear()

    stored_colours_ok = (meta.get("colours") or {}).get("version") == COLOUR_VERSION
    try:
        for item in _prepared(catalog.products, to_prepare, encoder.draft_size, workers, batch_size * 2, colours,
                              stored_colours_ok):
            bar.update(1)
            if item.payload is not None:
                item.payload.update(tuned)  # which tuning the vector written (or kept) has
                item.payload.update(duplicates.carried(to_prepare.get(item.point), item.payload))
            if item.point in seen:
                summary.failed.append((item.product.rel_path, f"duplicate product id {item.product.id!r}"))
                continue
            seen.add(item.point)
            if item.error:
                summary.failed.append((item.product.rel_path, item.error))
            elif item.image is not None:  # a new or changed photo, or a damaged point (prepared as new)
                batch.append(item)
                if len(batch) >= batch_size:
                    flush_batch()
            elif existing[item.point] == item.payload and item.point not in damaged.no_text:
                summary.unchanged += 1
            else:
                store.set_payload(item.point, item.payload)  # same photo, new metadata: no re-encoding
                if text:
                    store.update_text([PointData(item.point, None, item.payload, *text.vectors([item.payload])[0])])
                summary.updated += 1
        if batch:
            flush_batch()
    finally:
        bar.close()  # on an error too: the error's line then starts on a line of its own
    if raw_cache is not None:
        _save_raw(encoder, raw_cache)
    if rewrite:
        summary.notes.append(f"re-wrote {len(rewrite)} damaged products (image vector or payload missing or "
                             "unreadable)")
    if damaged.no_text:
        summary.notes.append(f"re-wrote the text vectors of {len(damaged.no_text)} products that had lost them")
    orphans = sorted(damaged.bad_payload - seen)
    if orphans:  # no catalog product owns these points, and their payload says nothing: drop them
        store.delete(orphans)
        summary.notes.append(f"removed {len(orphans)} damaged points that belong to no product of the catalog")

    if prune:
        gone = [pid for pid in existing if pid not in seen]
        store.delete(gone)
        summary.removed = len(gone)

    fields = filter_fields(catalog)
    indexed = set(meta.get("filter_fields", [])) | set(meta.get("keyword_fields", []))
    keyword_fields = sorted(set(fields) | ({COLOURS_FIELD} if colours else set()))
    for name in keyword_fields:
        if name not in indexed:
            store.create_keyword_index(name)
    meta.update(catalog_root=str(catalog.root.resolve()), layout=catalog.layout, filter_fields=fields,
                keyword_fields=keyword_fields, updated=_now())
    if colours:  # the colour_vector layout, so search never compares vectors of two layouts
        meta["colours"] = {"version": COLOUR_VERSION}
    else:  # the payloads were just written without colours
        meta.pop("colours", None)
    if text and (summary.added or summary.updated or summary.removed or not text.has_bridge(store, meta)):
        meta["text"] = text.fit_bridge(store, meta)
    duplicates.finalise(store, catalog, meta)  # groups of the products this run touched
    store.finish()
    meta["points"] = store.count()  # what `shoplens check` compares the store with
    store.write_meta(meta)
    summary.seconds = time.perf_counter() - started
    return summary


def _damage(store: Store, meta: dict, summary: Summary):
    """The integrity check before syncing: points to re-write; refuses a store it cannot read."""
    from shoplens.index.check import Report, verify

    if meta.get("points") is None and not meta.get("updated"):
        return Report(store.location)  # a new index: nothing to check
    report = verify(store)
    fatal = [p for p in report.problems if p.kind in ("meta", "open", "disk", "unreadable")]
    if fatal:
        raise (DiskSpaceError if fatal[0].kind == "disk" else IndexDamagedError)(fatal[0].line())
    if report.kinds() & {"image", "text", "payload", "count", "bridge"}:
        summary.notes.append("the index was damaged: " + "; ".join(p.text for p in report.problems)
                             + " (repaired by this run where the catalog has the product)")
    return report


def _save_raw(encoder: Encoder, vectors: dict[str, np.ndarray]) -> None:
    """Write the embedding cache; a cache is a convenience, so a full or read-only cache folder never fails
    the run (re-projection and repair then re-encode the photos they need)."""
    try:
        save_cache(cache_file(encoder), vectors, encoder.dim)
    except OSError:
        pass


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
