"""Index integrity: verify that every product's point is whole and that the counts agree; repair what can be.

`verify(store)` reads the index metadata, opens the store, compares its point count with the count the
last indexing run recorded, reads every point (payload, image vector, text vectors where the index has
text) and loads the derived files (the text bridge). Each problem is one line naming the command that
fixes it. `repair(store)` fixes what needs no catalog: restores the metadata and Qdrant Edge's config
from their copies, moves a damaged WAL or segment aside, copies the readable points into a fresh shard
(refilling image vectors from the embedding cache, recomputing text vectors from the payload), and refits
the bridge; products it had to drop are re-added by the indexer, whose command it prints.
"""

from __future__ import annotations

import itertools
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shoplens.store import (IMAGE_VECTOR, TEXT_VECTOR, DiskSpaceError, NotWritableError, ServerLostError, Store,
                            StoreError, point_id, repair_command, text_dim)
from shoplens.store.base import not_writable, not_writable_error

EXAMPLES = 3  # product ids named per problem
VECTOR_SAMPLE = 200  # stored image vectors a check compares with the embedding cache (all with full=True)
VECTOR_ATOL = 1e-3  # how far a stored (unit) vector may lie from the cache's before it counts as another's


@dataclass
class Problem:
    """One thing wrong with the index: what, the command that fixes it, and whether `repair` can."""

    kind: str  # meta, open, disk, count, unreadable, image, text, payload, bridge, tuning
    text: str
    fix: str
    repairable: bool = True

    def line(self) -> str:
        return f"{self.text}; fix: {self.fix}"


@dataclass
class Report:
    """What `verify` found (and, after `repair`, what was done)."""

    location: str
    meta: dict | None = None
    points: int | None = None  # the store's count
    recorded: int | None = None  # the count the last indexing run recorded
    scanned: int | None = None  # points read one by one
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    # point ids by defect, for the indexer to re-write exactly these
    no_image: set[str] = field(default_factory=set)
    no_text: set[str] = field(default_factory=set)
    bad_payload: set[str] = field(default_factory=set)
    compared: int = 0  # stored image vectors compared with the embedding cache

    @property
    def ok(self) -> bool:
        return not self.problems

    def kinds(self) -> set[str]:
        return {p.kind for p in self.problems}

    def lines(self) -> list[str]:
        """One line per problem (or 'ok'), then what was repaired and any notes."""
        out = [f"repaired: {r}" for r in self.repaired]
        if self.ok:
            count = f"{self.points} products" if self.points is not None else "no products"
            out.append(f"ok: the index at {self.location} is whole ({count})")
        out += [f"damaged: {p.line()}" for p in self.problems]
        out += [f"note: {n}" for n in self.notes]
        return out

    def summary(self) -> str:
        """The problems on one line each, for an error message or a page."""
        return "\n".join(p.line() for p in self.problems)

    def relocate(self, old: str | Path, new: str | Path) -> None:
        """Name `new` wherever the report names `old`: a check of a snapshot reports on the index it copies."""
        def swap(text: str) -> str:
            text = text.replace(f"--index {shlex.quote(str(old))}", f"--index {shlex.quote(str(new))}")
            return text.replace(str(old), str(new))

        self.location = swap(self.location)
        self.problems = [Problem(p.kind, swap(p.text), swap(p.fix), p.repairable) for p in self.problems]
        self.notes = [swap(n) for n in self.notes]

    def as_dict(self) -> dict:
        return {"location": self.location, "ok": self.ok, "points": self.points, "recorded": self.recorded,
                "scanned": self.scanned, "vectors_compared": self.compared, "repaired": list(self.repaired), "notes": list(self.notes),
                "problems": [{"kind": p.kind, "problem": p.text, "fix": p.fix, "repairable": p.repairable}
                             for p in self.problems]}


def is_remote(store: Store) -> bool:
    return not hasattr(store, "path")


def where_args(store: Store) -> str:
    """The --index / --qdrant-url / --milvus-uri arguments naming this store."""
    if is_remote(store):
        option, where = ("--milvus-uri", store.uri) if hasattr(store, "uri") else ("--qdrant-url",
                                                                                  getattr(store, "url", store.location))
        return f"{option} {shlex.quote(str(where))} --collection {getattr(store, 'collection', '')}"
    return f"--index {shlex.quote(str(store.path))}"


def indexer_command(store: Store, meta: dict | None) -> str:
    """The indexer run that re-adds products from the catalog."""
    catalog = (meta or {}).get("catalog_root") or "CATALOG"
    return f"python indexer.py {shlex.quote(str(catalog))} {where_args(store)}"


def check_command(store: Store) -> str:
    return (repair_command(str(store.path)) if not is_remote(store)
            else f"python -m shoplens check {where_args(store)} --repair")


# Points read whole by the start-up check of the app and the indexer. Point ids are uuid5 hashes of product
# ids and every store lists points in id order, so the first SAMPLE points are a sample spread over the catalog.
SAMPLE = 256


def startup_check(store: Store, sample: int = SAMPLE) -> Report:
    """The check an app or an indexer runs when it starts: what is cheap (the metadata, the store's opening,
    its count against the recorded one, the derived files) and `sample` points read whole. The full scan of
    every vector is `shoplens check` (verify): on a server store it pulls the whole collection.

    A store that reads at bounded staleness (Milvus) reads fresh here, so a start right after an indexer run
    never takes the writes it has not seen yet for lost products."""
    fresh = getattr(store, "fresh_reads", None)
    if fresh is None:
        return verify(store, sample=sample)
    with fresh():
        return verify(store, sample=sample)


def verify(store: Store, scan: bool = True, full: bool = False, sample: int | None = None) -> Report:
    """Check the index; never raises for a damaged index (each problem is in the report).

    `scan` reads every point (vectors and payloads), or only the first `sample` of them; without it only the
    metadata, the store's opening, the counts and the derived files are checked. The scan compares a sample of
    VECTOR_SAMPLE stored image vectors (`full`: all) with the embedding cache where it has their photo's vector."""
    report = Report(store.location)
    try:
        meta = store.read_meta()
    except ServerLostError:
        raise  # the server is down, not the index damaged: say so, not "repair it"
    except StoreError as exc:
        from shoplens.store.edge import META_BACKUP, read_json

        backup = not is_remote(store) and read_json(Path(store.path) / META_BACKUP) is not None
        rebuild = "rebuild it into a new folder: python indexer.py CATALOG --index NEW_DIR"
        report.problems.append(Problem("meta", str(exc).split("; ")[0], check_command(store) if backup else rebuild,
                                       backup))
        return report
    if meta is None:
        report.problems.append(Problem("meta", f"no index at {store.location}",
                                       f"build one: {indexer_command(store, None)}", False))
        return report
    report.meta = meta
    report.recorded = meta.get("points")
    try:
        report.points = store.count()
    except DiskSpaceError as exc:
        report.problems.append(Problem("disk", str(exc), "free some disk space", False))
        return report
    except (ServerLostError, NotWritableError):
        raise  # the server is down, or the folder cannot be written: not a damaged index
    except StoreError as exc:
        if "WouldBlock" in str(exc):  # held by another process (a serving app, an indexer): busy, not damaged
            raise
        report.problems.append(Problem("open", _reason(exc), check_command(store)))
        return report
    _check_count(store, report)
    if scan:
        vectors = VectorSample(None if full else VECTOR_SAMPLE)
        _scan(store, meta, report, limit=sample, vectors=vectors)
        _check_vectors(store, meta, report, vectors)
    _check_bridge(store, meta, report)
    _check_tuning(store, meta, report)
    return report


def _check_tuning(store: Store, meta: dict, report: Report) -> None:
    """The tuning the index records loads and is the one its vectors carry: search, the indexer and the app
    refuse the index otherwise, so `check` must not call it whole."""
    from shoplens.index.tuning import PENDING_KEY, TuningIndexError, index_tuning

    try:
        index_tuning(store, meta)
    except TuningIndexError as exc:
        what, _, own_fix = str(exc).partition("; ")
        if meta.get(PENDING_KEY) is not None:
            fix = own_fix  # finish the interrupted change: the message names that run
        else:
            run = indexer_command(store, meta)
            fix = (f"apply the tuning file again: {run} --tuning FILE; or re-tune: {run} --tune-label FIELD; "
                   f"or serve raw vectors: {run} --no-tuning")
        report.problems.append(Problem("tuning", what, fix, False))


def _reason(exc: Exception) -> str:
    # Our messages end with "; repair it with: ..."; the report names the fix itself.
    return str(exc).split("; repair it with")[0]


def _check_count(store: Store, report: Report) -> None:
    recorded, count = report.recorded, report.points
    if recorded is None or count is None:
        return
    if count < recorded:
        report.problems.append(Problem(
            "count", f"{recorded - count} of the {recorded} products indexed by the last run are missing "
                     f"(the store holds {count})",
            f"re-add them from the catalog: {indexer_command(store, report.meta)}", False))
    elif count > recorded:
        report.notes.append(f"the store holds {count} products, {count - recorded} more than the last finished "
                            f"indexing run recorded (a run was interrupted); run the indexer again: "
                            f"{indexer_command(store, report.meta)}")


def _scan(store: Store, meta: dict, report: Report, limit: int | None = None,
          vectors: "VectorSample | None" = None) -> None:
    from shoplens.text.document import product_text

    # A server without the words side (Milvus 2.3: `words_unavailable`) keeps no text vectors to check.
    dim, with_text = int(meta.get("dim", 0)), bool(text_dim(meta)) and not meta.get("words_unavailable")
    examples: dict[str, list[str]] = {"image": [], "text": [], "payload": []}
    scanned = 0
    try:
        hits = store.iterate(with_vector=True, page=min(256, limit or 256))
        for hit in hits if limit is None else itertools.islice(hits, limit):
            scanned += 1
            pid = str(hit.payload.get("product_id", "")) if hit.payload else ""
            name = pid or hit.id
            if not pid or not hit.payload.get("content_hash") or point_id(pid) != hit.id:
                report.bad_payload.add(hit.id)
                examples["payload"].append(name)
            vec = hit.vector
            if vec is None or vec.shape[-1] != dim or not np.isfinite(vec).all() or not np.any(vec):
                report.no_image.add(hit.id)
                examples["image"].append(name)
            elif vectors is not None and pid and hit.payload.get("content_hash"):
                vectors.offer(hit.id, name, hit.payload, vec)
            if with_text and hit.payload and product_text(hit.payload):
                tv = hit.text_vector
                if tv is None or not np.isfinite(tv).all() or not np.any(tv):
                    report.no_text.add(hit.id)
                    examples["text"].append(name)
    except (ServerLostError, NotWritableError):
        raise
    except StoreError as exc:
        report.problems.append(Problem("unreadable", _reason(exc), check_command(store)))
        return
    report.scanned = scanned
    if report.points is not None and scanned != report.points and (limit is None or scanned < limit):
        report.problems.append(Problem("count", f"the store counts {report.points} products but {scanned} can be "
                                                "read", check_command(store)))
    fix = check_command(store)
    for kind, ids, what in (("image", report.no_image, "have no usable image vector (missing, zero or not finite)"),
                            ("text", report.no_text, "have words but no text vector"),
                            ("payload", report.bad_payload, "have a missing or damaged payload (product id, "
                                                            "content hash)")):
        if ids:
            shown = ", ".join(examples[kind][:EXAMPLES]) + (" ..." if len(ids) > EXAMPLES else "")
            report.problems.append(Problem(kind, f"{len(ids)} products {what}: {shown}", fix))


class VectorSample:
    """A reproducible sample of `size` points met in a scan (reservoir sampling, seeded; None: all of them)."""

    def __init__(self, size: int | None, seed: int = 0):
        import random

        self.size = size
        self.items: list[tuple[str, str, dict, np.ndarray]] = []  # (point id, product, payload, stored vector)
        self.seen = 0
        self._rng = random.Random(seed)

    def offer(self, pid: str, name: str, payload: dict, vector: np.ndarray) -> None:
        self.seen += 1
        item = (pid, name, payload, np.asarray(vector, np.float32))
        if self.size is None or len(self.items) < self.size:
            self.items.append(item)
        else:
            slot = self._rng.randrange(self.seen)
            if slot < self.size:
                self.items[slot] = item


def _check_vectors(store: Store, meta: dict, report: Report, sample: VectorSample) -> None:
    """Compare the sampled stored image vectors with what the embedding cache says their photos give (with the
    index's tuning applied): a stored vector silently replaced by another product's is found here. Points the
    cache does not hold, and an index half-way through a change of tuning, are not compared."""
    from shoplens.index.tuning import PENDING_KEY, TUNING_FIELD, read_kept_tuning
    from shoplens.vectors.embedcache import EmbeddingCache

    if not sample.items or meta.get(PENDING_KEY) is not None:
        return
    record = meta.get("tuning") or {}
    try:
        tuning = read_kept_tuning(store, record) if record else None
        with EmbeddingCache.for_index(meta) as cache:
            raw = cache.get_many(payload["content_hash"] for _pid, _name, payload, _vec in sample.items)
    except Exception:  # noqa: BLE001 - no usable cache or tuning file: nothing to compare with (checked elsewhere)
        return
    items = [item for item in sample.items if item[2]["content_hash"] in raw
             and item[2].get(TUNING_FIELD) == record.get("hash")]  # a vector marked with another tuning: skip
    if not items:
        return
    from shoplens.encoders import l2_normalise

    expected = np.stack([raw[payload["content_hash"]] for _pid, _name, payload, _vec in items])
    if tuning is not None:
        expected = tuning.apply(l2_normalise(expected))
    expected = l2_normalise(expected)
    stored = l2_normalise(np.stack([vec for _pid, _name, _payload, vec in items]))
    wrong = [item for item, ok in zip(items, np.all(np.abs(stored - expected) <= VECTOR_ATOL, axis=1)) if not ok]
    report.compared = len(items)
    if wrong:
        report.no_image.update(pid for pid, _name, _payload, _vec in wrong)
        shown = ", ".join(name for _pid, name, _payload, _vec in wrong[:EXAMPLES]) + (" ..." if len(wrong) > EXAMPLES else "")
        report.problems.append(Problem(
            "vector", f"{len(wrong)} of {len(items)} stored image vectors compared with the embedding cache are not "
                      f"their photo's (replaced by another product's?): {shown}",
            f"re-write them from the cache: {indexer_command(store, meta)}", False))


def _check_bridge(store: Store, meta: dict, report: Report) -> None:
    from shoplens.index.text import BRIDGE_FILE, MIN_BRIDGE_PAIRS, bridge_readable

    fitted = (meta.get("text") or {}).get("bridge") or {}
    if fitted.get("pairs", 0) < MIN_BRIDGE_PAIRS:
        return
    reason = bridge_readable(store, meta)
    if reason:
        report.problems.append(Problem("bridge", f"derived file {BRIDGE_FILE} {reason}", check_command(store)))


def repair(store: Store) -> Report:
    """Fix what can be fixed without the catalog, then verify again; the report lists what was done and
    what is left (products to re-add from the catalog, with the indexer command)."""
    before = verify(store)
    if before.ok:
        before.notes.append("nothing to repair")
        return before
    if not is_remote(store):
        check_writable(Path(store.path))  # a repair that cannot write would move readable files aside for nothing
    done: list[str] = []
    if is_remote(store):
        _repair_points_remote(store, before, done)
    else:
        _repair_edge(store, before, done)
        store.close()  # reopened by the next read: the shard may have been swapped
    after = verify(store)
    if "text" in after.kinds() and after.meta:
        done += _refill_text(store, after)
        after = verify(store)
    if "bridge" in after.kinds() and after.meta:
        done += _refit_bridge(store, after.meta)
        after = verify(store)
    after.repaired = done
    if not after.ok and not done:
        after.notes.append("nothing could be repaired without the catalog")
    return after


def check_writable(folder: Path) -> None:
    """NotWritableError (one line: the folder and what refused) unless files can be made in `folder` and in each
    folder under it that a repair writes to (the shard, its segments)."""
    folders = [folder] + [p for p in (folder / "shard", folder / "shard" / "segments") if p.is_dir()]
    for where in folders:
        probe = where / f".shoplens-write-probe-{os.getpid()}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            why = not_writable(exc)
            if why:
                raise not_writable_error(where, why, exc.strerror or "") from None
            raise


def _repair_edge(store, report: Report, done: list[str]) -> None:
    from shoplens.store import edgerepair

    folder: list[Path] = []

    def aside() -> Path:
        if not folder:
            folder.append(edgerepair.damaged_dir(store.path))
        return folder[0]

    if "meta" in report.kinds():
        restored = edgerepair.restore_meta(store.path)
        if restored is None:
            return
        done.append(restored)
        report = verify(store)
    meta = report.meta
    if meta is None:
        return
    _keep_recorded_count(store, report)
    if "open" in report.kinds():
        store.close()
        actions, still = edgerepair.repair_open(store.path, meta, aside)
        done += actions
        if still is not None:
            return
        report = verify(store)
    if report.kinds() & {"unreadable", "image", "payload", "count"} and report.problems:
        known = _cached_vectors(meta)
        dim = int(meta["dim"])
        refilled = []

        def keep(pid: str, payload: dict, vectors: dict) -> dict | None:
            product = str(payload.get("product_id", ""))
            if not product or not payload.get("content_hash") or point_id(product) != pid:
                return None  # the indexer re-adds it from the catalog
            image = edgerepair.usable_vector(vectors.get(IMAGE_VECTOR), dim)
            if image is None:
                image = known.get(payload["content_hash"])
                if image is None:
                    return None
                refilled.append(pid)
            out = {k: v for k, v in vectors.items() if k != IMAGE_VECTOR}
            text = out.get(TEXT_VECTOR)
            if text is not None and edgerepair.usable_vector(text, len(text)) is None:
                out.pop(TEXT_VECTOR)  # recomputed from the payload below
            out[IMAGE_VECTOR] = np.asarray(image, np.float32).tolist()
            return out

        if "count" in report.kinds() and not report.kinds() & {"unreadable", "image", "payload"}:
            return  # every stored point is whole: only the catalog can bring back the missing ones
        try:
            copied, dropped = edgerepair.rebuild_shard(store, meta, keep, aside)
        except RuntimeError as exc:
            report.notes.append(str(exc))
            return
        done.append(f"copied {copied} whole products into a fresh shard"
                    + (f" ({len(refilled)} image vectors refilled from the embedding cache)" if refilled else "")
                    + (f"; dropped {dropped} that could not be read or had no usable image vector (the indexer "
                       "re-adds them)" if dropped else ""))
    if folder:
        done.append(f"damaged files were moved to {folder[0]} (delete it once the index is whole again)")


def _repair_points_remote(store, report: Report, done: list[str]) -> None:
    """A Qdrant server keeps its own files; here only points without a usable vector or payload are dropped."""
    drop = sorted(report.bad_payload | report.no_image)
    _keep_recorded_count(store, report)
    if drop:
        store.delete(drop)
        done.append(f"dropped {len(drop)} damaged products (the indexer re-adds them)")


def _keep_recorded_count(store: Store, report: Report) -> None:
    """Record the count before dropping anything, so the dropped products show as missing until re-added."""
    meta = report.meta
    if meta is not None and report.points is not None and (report.recorded or 0) < report.points:
        meta["points"] = report.points
        store.write_meta(meta)


def _cached_vectors(meta: dict) -> dict[str, np.ndarray]:
    """content hash -> image vector from the embedding cache of the index's encoder (empty when unknown)."""
    try:
        from shoplens.encoders import create_encoder
        from shoplens.vectors.embedcache import EmbeddingCache

        encoder = create_encoder(meta["encoder"], **dict(meta.get("encoder_options") or {}))
        if (encoder.version, encoder.dim) != (meta.get("encoder_version"), int(meta["dim"])):
            return {}
        return EmbeddingCache.for_encoder(encoder)
    except Exception:  # noqa: BLE001 - an unknown encoder or no cache: nothing to refill from
        return {}


def _refill_text(store: Store, report: Report) -> list[str]:
    from shoplens.index.text import TextIndexer
    from shoplens.store import PointData

    hits = store.retrieve(sorted(report.no_text))
    text = TextIndexer()
    vectors = text.vectors([h.payload for h in hits])
    store.update_text([PointData(h.id, None, h.payload, *tv) for h, tv in zip(hits, vectors)])
    store.finish()
    return [f"recomputed the text vectors of {len(hits)} products from their payloads"]


def _refit_bridge(store: Store, meta: dict) -> list[str]:
    from shoplens.index.text import BRIDGE_FILE, TextIndexer

    meta = dict(meta)
    meta["text"] = TextIndexer().fit_bridge(store, meta)
    store.write_meta(meta)
    return [f"refitted {BRIDGE_FILE} from the stored vectors"]
