"""The tuning of an index: which tuning its image vectors carry, the tuning file kept with it, re-projection.

An index's image vectors are `tuning.apply(backbone vectors)`, or the backbone ("raw") vectors when it has no
tuning. The raw vectors are kept in the embedding cache (shoplens.vectors.embedcache: the indexer writes every vector it
encodes there), so a new tuning, or none, re-projects the stored vectors without decoding a photo; only photos
missing from the cache are encoded again.

The tuning file itself is kept with the index (a file in an Edge index folder, the collection's metadata on a
Qdrant server), so a searcher anywhere applies the same tuning to its query photos without being told.

A change of tuning is safe to kill. It first records its target in the metadata (`tuning_pending`) and keeps the
target's file with the index; each point's payload then says which tuning its vector has (TUNING_FIELD, absent
for none), written after the vector, and every vector is computed from its raw vector, never from the stored
one, so redoing a point is harmless. While a change is pending, search refuses the index and names the command
that finishes it; the next indexer run does.
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from shoplens.catalog import Product
from shoplens.encoders import Encoder, l2_normalise
from shoplens.vectors.embedcache import EmbeddingCache, embed_products
from shoplens.progress import note, progress_bar
from shoplens.store import Store, StoreError, text_dim
from shoplens.vectors.tuning import TuningError, check_tuning, describe_tuning, load_tuning, short_metric, tuning_line  # noqa: F401

# Payload key: the hash of the tuning a point's stored vector has (absent: the raw vector). Its name ends in
# "_hash" so product_text never reads it as words; it is no filter field and is hidden from the app.
TUNING_FIELD = "tuning_hash"
PENDING_KEY = "tuning_pending"
BATCH = 256  # points re-projected per store update


class TuningIndexError(StoreError):
    """The index's tuning cannot be used or changed as asked; the message says what to do."""


def tuning_file_name(tuning_hash: str) -> str:
    """The name of a tuning's file kept with an index; one per hash, so two can coexist during a change."""
    return f"tuning-{tuning_hash[:16]}.npz"


def tuning_record(tuning) -> dict:
    """What an index's metadata records about its tuning: describe() and the name of the file kept with it."""
    return {**tuning.describe(), "file": tuning_file_name(tuning.hash)}


def tuning_bytes(tuning) -> bytes:
    """A tuning's file, as bytes."""
    with tempfile.TemporaryDirectory(prefix="shoplens-tuning-") as folder:
        path = Path(folder) / "tuning.npz"
        tuning.save(path)
        return path.read_bytes()


def keep_tuning(store: Store, tuning) -> str:
    """Keep a tuning's file with the index; its name."""
    name = tuning_file_name(tuning.hash)
    store.write_file(name, tuning_bytes(tuning))
    return name


def read_kept_tuning(store: Store, record: dict):
    """The tuning whose file the index keeps under record['file']; TuningIndexError when missing or damaged."""
    fix = f"apply it again: python indexer.py CATALOG {store.cli_args()} --tuning FILE (or --no-tuning)".replace("  ", " ")
    data = store.read_file(record.get("file") or tuning_file_name(record.get("hash", "")))
    if data is None:
        raise TuningIndexError(f"the index at {store.location} records a tuning ({describe_tuning(record)}) but its "
                               f"file is missing; {fix}")
    with tempfile.TemporaryDirectory(prefix="shoplens-tuning-") as folder:
        path = Path(folder) / "tuning.npz"
        path.write_bytes(data)
        try:
            tuning = load_tuning(path)
        except TuningError as exc:
            raise TuningIndexError(f"the tuning file kept with the index at {store.location} is unusable ({exc}); "
                                   f"{fix}") from None
    if tuning.hash != record.get("hash"):
        raise TuningIndexError(f"the tuning file kept with the index at {store.location} is not the one its "
                               f"metadata records; {fix}")
    return tuning


def finish_command(store: Store, meta: dict) -> str:
    """The indexer command that completes a pending change of tuning on this index."""
    return " ".join(["python indexer.py", str(meta.get("catalog_root") or "CATALOG"), store.cli_args()]).strip()


def check_not_pending(store: Store, meta: dict) -> None:
    """Refuse an index whose vectors are half-way through a change of tuning, naming the command that finishes it."""
    pending = meta.get(PENDING_KEY)
    if pending is None:
        return
    target = pending.get("to")
    what = f"to tuning {describe_tuning(target)}" if target else "back to untuned vectors"
    raise TuningIndexError(f"the index at {store.location} is half-way through re-projecting its vectors {what} "
                           f"(the run was interrupted); finish it with: {finish_command(store, meta)} "
                           "(it encodes no photo again)")


def index_tuning(store: Store, meta: dict):
    """The tuning the index's vectors carry (None: raw vectors); refuses a pending change or a foreign tuning."""
    check_not_pending(store, meta)
    record = meta.get("tuning")
    if not record:
        return None
    tuning = read_kept_tuning(store, record)
    try:
        check_tuning(tuning, meta)
    except TuningError as exc:
        raise TuningIndexError(f"the index at {store.location}: {exc}") from None
    return tuning


def check_query_tuning(meta: dict, tuning, location: str = "", cli_args: str = "") -> None:
    """Refuse to query an index with a tuning other than its own (its vectors would be in another space)."""
    record = meta.get("tuning") or {}
    if tuning is None or tuning.hash == record.get("hash"):
        return
    where = f" {cli_args}" if cli_args else ""
    if not record:
        raise TuningIndexError(
            f"the index at {location or 'this location'} is not tuned, so a tuning ({describe_tuning(tuning)}) "
            f"cannot query it: leave --tuning out, or apply it to the index first: python indexer.py "
            f"{meta.get('catalog_root') or 'CATALOG'}{where} --tuning FILE")
    raise TuningIndexError(
        f"the index at {location or 'this location'} is tuned with {describe_tuning(record)}, not with "
        f"{describe_tuning(tuning)}: leave --tuning out (the index's own tuning is used), or apply yours to the "
        f"index first: python indexer.py {meta.get('catalog_root') or 'CATALOG'}{where} --tuning FILE")


class TunedEncoder(Encoder):
    """Wraps an encoder: its vectors with a tuning applied, for the query photos of a tuned index.

    It keeps the wrapped encoder's name, version and size (tuned vectors are padded to it), so its vectors
    search the same index; its options add the tuning's hash, so cached tuned and raw vectors never mix.
    """

    def __init__(self, encoder: Encoder, tuning):
        self.inner = encoder
        self.tuning = tuning
        self.name, self.version, self.dim = encoder.name, encoder.version, encoder.dim
        self.draft_size = encoder.draft_size
        self.options = {**encoder.options, "tuning": tuning.hash}

    def embed_batch(self, images) -> np.ndarray:
        return self.tuning.apply(self.inner.embed_batch(images))

    @property
    def supports_text(self) -> bool:
        return self.inner.supports_text

    def embed_text(self, texts: list[str]) -> np.ndarray:
        # A text tower shares the photos' space: its vectors go through the same tuning to meet the stored ones.
        return self.tuning.apply(self.inner.embed_text(texts))

    def describe(self) -> dict:
        return {**self.inner.describe(), "tuning": self.tuning.hash}


def change_tuning(store: Store, meta: dict, encoder: Encoder, target, *, progress: bool = False,
                  batch: int | None = None, states: dict[str, dict] | None = None) -> int:
    """Bring every stored image vector to `target` (a Tuning, or None for raw vectors); how many were re-projected.

    Ids and payloads stay as they are, but for TUNING_FIELD. Finishes a pending change too. `meta` is updated
    and written; with text vectors, the text-to-image bridge is fitted again on the new image vectors.
    `states` (point id -> payload, as Store.states() gives) spares reading them again.
    """
    target_hash = target.hash if target is not None else None
    pending = meta.get(PENDING_KEY)
    current = (meta.get("tuning") or {}).get("hash")
    states = store.states() if states is None else states
    heading = ((pending or {}).get("to") or {}).get("hash")
    # A mark is written after its vector, so a mark equal to the target of the change under way means "done".
    # Any other mark may be stale once a change was interrupted: a point killed between its new vector and its
    # mark keeps its old mark (none, for raw). So a run that does not simply resume the change under way trusts
    # no mark: it clears them (while the interrupted change's record still guards the index) and redoes all.
    restart = pending is not None and (target is None or target_hash != heading)
    if restart:
        todo = sorted(states)
    else:
        todo = sorted(pid for pid, payload in states.items() if payload.get(TUNING_FIELD) != target_hash)
    if not todo and pending is None and current == target_hash:
        return 0
    # Stored vectors are raw only in an index that has never been tuned (and is not half-way through a change).
    raw = raw_vectors(store, meta, encoder, {pid: states[pid] for pid in todo},
                      stored_are_raw=pending is None and current is None, progress=progress)
    if restart and target is not None:
        marked = sorted(pid for pid, payload in states.items() if TUNING_FIELD in payload)
        for start in range(0, len(marked), 1000):
            store.set_field(marked[start:start + 1000], TUNING_FIELD, None)
    record = None
    if target is not None:
        keep_tuning(store, target)
        record = tuning_record(target)
    meta[PENDING_KEY] = {"to": record, "from": current, "started": _now()}
    store.write_meta(meta)

    bar = progress_bar(len(todo), "re-projecting", unit="vec", enabled=progress)
    batch = batch or BATCH  # read at run time, so a test can make batches small
    for start in range(0, len(todo), batch):
        chunk = todo[start:start + batch]
        vectors = l2_normalise(np.stack([raw[pid] for pid in chunk]))
        if target is not None:
            vectors = target.apply(vectors)
        store.set_vectors(chunk, vectors)  # the vector first: a point marked done always has its new vector
        store.set_field(chunk, TUNING_FIELD, target_hash)
        bar.update(len(chunk))
    bar.close()

    if text_dim(meta):  # the bridge maps text into the image space, which just moved
        from shoplens.index.text import TextIndexer

        meta["text"] = TextIndexer().fit_bridge(store, meta)
    old_files = {(meta.get("tuning") or {}).get("file"), ((pending or {}).get("to") or {}).get("file")}
    if record is not None:
        meta["tuning"] = record
    else:
        meta.pop("tuning", None)
    meta.pop(PENDING_KEY, None)
    store.write_meta(meta)
    for name in old_files - {None, (record or {}).get("file")}:
        store.delete_file(name)
    return len(todo)


def raw_vectors(store: Store, meta: dict, encoder: Encoder, payloads: dict[str, dict], *, stored_are_raw: bool,
                progress: bool = False) -> dict[str, np.ndarray]:
    """point id -> backbone vector for these points: from the embedding cache, else from the stored vectors when
    they are raw, else by encoding the photo again (only when its bytes are still those indexed).

    Every vector found is written to the cache before anything changes, so a killed run finds them there.
    TuningIndexError, changing nothing, when some point's raw vector cannot be had.
    """
    cache = EmbeddingCache.for_encoder(encoder)
    wanted = {pid: payload.get("content_hash", "") for pid, payload in payloads.items()}
    known = cache.get_many(h for h in wanted.values() if h)
    missing = [pid for pid, h in wanted.items() if h not in known]
    if missing and stored_are_raw:
        for start in range(0, len(missing), 1000):
            for hit in store.retrieve(missing[start:start + 1000], with_vector=True):
                if hit.vector is not None and wanted[hit.id]:
                    known[wanted[hit.id]] = np.asarray(hit.vector, np.float32)
        missing = [pid for pid in missing if wanted[pid] not in known]
        cache.put_many({h: known[h] for h in wanted.values() if h in known})
    if missing:
        root = Path(meta.get("catalog_root") or ".")
        products = [Product(str(payloads[pid].get("product_id", pid)), root / payloads[pid].get("image_path", ""),
                            payloads[pid].get("image_path", ""), {}) for pid in missing]
        note(progress, f"encoding {len(products)} photos whose backbone vectors are not cached")
        emb = embed_products(products, encoder, progress=progress)
        known.update(zip(emb.hashes, emb.vectors))
        missing = [pid for pid in missing if wanted[pid] not in known]
    if missing:
        names = ", ".join(str(payloads[pid].get("product_id", pid)) for pid in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise TuningIndexError(
            f"cannot change the tuning of the index at {store.location}: {len(missing)} products ({names}{more}) "
            "have no backbone vector in the embedding cache and their photos are missing or changed since they "
            "were indexed. Index the catalog once without changing the tuning (it encodes changed photos; "
            "--prune removes products that left), then try again. Nothing was changed.")
    return {pid: known[h] for pid, h in wanted.items()}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
