"""A Milvus server or cluster through pymilvus, or Milvus Lite (the Milvus engine embedded: one .db file, served by
a child process that pymilvus starts and stops with this one).

Data model, the same as the Qdrant stores': one row per product with the image vector, the payload (a JSON
field), and for a catalog with text the MiniLM sentence vector and the BM25 term weights (a sparse vector).
Filters are JSON-path expressions on the payload; counts per value (facets) are counted here from the
matching payloads, since Milvus has no facet call. The index metadata and the files kept with the index
(e.g. its tuning) live in a second collection, `<collection>_shoplens`, so they travel with the collection.

Engine versions: the words side needs several vector fields and sparse vectors (Milvus 2.4 and Milvus Lite).
On an older server (the 2.3 `milvus` package) the collection holds the image side only, the metadata records
why (`words_unavailable`), and keyword and text searches say so; image search, filters and counts work.

BM25: Milvus scores a sparse vector by inner product, with no IDF modifier as Qdrant has, so the store applies
Qdrant's IDF itself at query time: idf(t) = ln(1 + (N - n_t + 0.5) / (n_t + 0.5)), N = products with words,
n_t = those containing term t (counted through the `terms` array field kept beside the sparse vector).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import math
import os
import re
import uuid
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from shoplens.cache import cache_dir
from shoplens.store.base import (IMAGE_VECTOR, KEYWORD_VECTOR, TEXT_VECTOR, Filters, Hit, PointData, ServerLostError,
                                 Sparse, Store, StoreError, normalise_filters, text_dim, tie_ranked)

DEFAULT_COLLECTION = "products"
META_SUFFIX = "_shoplens"
META_KEY = "meta"
FILE_PREFIX = "file:"
CHUNK = 48_000  # base64 characters per metadata row (a VARCHAR holds at most 65,535 bytes)
MAX_TERMS = 4096  # distinct BM25 terms kept per product (a Milvus array needs a capacity)
ID_LEN = 64
QUERY_WINDOW = 16_384  # Milvus answers at most this many rows per query (offset + limit)
# Reads see every write acknowledged before them, deletes included, as on the Qdrant stores ("Session" was
# tried: a count right after a delete still counted the deleted rows on the 2.3 server).
CONSISTENCY = "Strong"
# A store that has written nothing (a searcher, the app) reads at "Bounded" staleness instead: a Strong search
# waits for the server's next time tick, 200-400 ms on the 2.3 server, for writes a shopper cannot tell apart.
READER_CONSISTENCY = "Bounded"
# Per-call timeouts, whole seconds: pymilvus 2.5 retries a call that failed in gRPC (the server unreachable,
# ...) until `timeout` seconds have passed only when it is an int; without one it retries 75 times with
# back-off up to 3 s, ~210 s on a server that has gone away. The same timeout is each attempt's gRPC deadline,
# and a deadline exceeded is not retried: a call gives up after about timeout + 3 s.
# An upsert of a batch or a delete: a healthy server acknowledges it in milliseconds, but one on starved cores
# took over 10 s in a loaded test run (a false "lost the server"): 20 s, still ten times quicker than before.
WRITE_TIMEOUT = 20
READ_TIMEOUT = 30  # a query or search: some read many rows (a page of 16k payloads, an exact search)
# Until a read has answered, the server may have just (re)started: a restarted 2.3 server holds queries until
# the old process's session expires, 30 s after it stopped (a first query waited 24 s after a restart, on 2
# busy cores). Creating a collection (loaded before the call returns) and Lite's flush take seconds as well.
START_TIMEOUT = 120
WRITES = ("upsert", "delete", "insert")
SLOW = ("create_collection", "create_index", "flush", "load_collection")
READS = ("query", "search")


def _pymilvus():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # milvus-lite imports the deprecated pkg_resources
            import pymilvus
            try:
                import milvus_lite  # noqa: F401
            except ImportError:  # servers only
                pass
    except ImportError as exc:
        raise StoreError(f"a Milvus store needs pymilvus (pip install -r requirements.txt): {exc}") from None
    # pymilvus logs every failed call at ERROR on its own handler; our StoreError already says what failed.
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("pymilvus")] + ["pymilvus"]:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    return pymilvus


def is_lite(uri: str) -> bool:
    """A local path (./data/milvus.db) means Milvus Lite; a URL (http://host:19530) a server."""
    return "://" not in uri


def unit(vector) -> list[float]:
    """The vector scaled to length 1, as Qdrant stores cosine vectors (Milvus keeps them as given)."""
    v = np.asarray(vector, np.float32)
    norm = float(np.linalg.norm(v))
    return (v / norm if norm > 0 else v).tolist()


def _quote(value: str) -> str:
    return json.dumps(str(value))  # a Milvus string literal: double quotes, backslash escapes


def _field_path(key: str) -> str:
    return f"payload[{_quote(key)}]"


def milvus_filter(filters: Filters | None, ids: Sequence[str] | None = None, extra: str | None = None) -> str:
    """Our {field: [values]} (and optionally a set of point ids) as a Milvus boolean expression ('' when empty)."""
    conds = []
    for key, values in normalise_filters(filters).items():
        listed = ", ".join(_quote(v) for v in values)
        # A payload value is a string or a list of strings (matches when any element matches), as in Qdrant.
        conds.append(f"({_field_path(key)} in [{listed}] or json_contains_any({_field_path(key)}, [{listed}]))")
    if ids is not None:
        conds.append(f"id in [{', '.join(_quote(i) for i in ids)}]")
    if extra:
        conds.append(extra)
    return " and ".join(conds)


class MilvusStore(Store):
    """One Milvus collection of products plus its metadata collection."""

    def __init__(self, uri: str, collection: str = DEFAULT_COLLECTION, token: str | None = None,
                 timeout: float = 5.0, hnsw: dict | None = None, strong: bool = False):
        """`uri`: http(s)://host:port for a server or cluster (token from $MILVUS_TOKEN), or a file path for
        Milvus Lite. `hnsw` (M, efConstruction) applies when a server collection is created; Lite indexes FLAT.
        `strong`: read at strong consistency even before this store has written (see READER_CONSISTENCY)."""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,200}", collection):
            raise StoreError(f"--collection {collection!r}: a Milvus collection name is letters, digits and _")
        self.uri = str(uri)
        self.collection = collection
        self.meta_collection = collection + META_SUFFIX
        self.location = f"{self.uri} (collection {collection})"
        self._token = token if token is not None else os.environ.get("MILVUS_TOKEN", "")
        self._timeout = timeout
        self._hnsw = hnsw or {"M": 16, "efConstruction": 100}
        self._client = None
        self._meta_cache: dict | None = None
        self._artifacts: Path | None = None
        self._wrote = strong
        self._answered = False  # whether a read has answered (the server is up and its collections loaded)
        self._loads: set[str] = set()  # collections this store asked the server to load (see _call)
        self._writer = False  # whether this store has written (`_wrote` is also set by `strong`)
        self._stored = 0  # product rows this store has written (acknowledged by the server)

    def _consistency(self) -> str:
        return CONSISTENCY if self._wrote else READER_CONSISTENCY

    @contextlib.contextmanager
    def fresh_reads(self):
        """Reads at strong consistency for the duration (a start-up check right after an indexer's run)."""
        before, self._wrote = self._wrote, True
        try:
            yield self
        finally:
            self._wrote = before or self._writer

    # connection

    @property
    def client(self):
        if self._client is None:
            pm = _pymilvus()
            uri = self.uri
            if is_lite(uri):
                path = Path(uri).expanduser()
                if not path.name.endswith(".db"):
                    raise StoreError(f"--milvus-uri {uri}: a Milvus Lite file name ends in .db "
                                     "(or give a server URL, http://host:19530)")
                path.parent.mkdir(parents=True, exist_ok=True)
                uri = str(path.resolve())
            try:
                # A connection of its own: pymilvus shares one between the clients of a URI, and a client's
                # close() drops it for all of them, so closing one store broke every other in this process.
                self._client = pm.MilvusClient(uri=uri, token=self._token, timeout=self._timeout,
                                               alias=f"shoplens-{uuid.uuid4().hex}")
            except Exception as exc:  # grpc's "Fail connecting to server ..." after the timeout, a lock, ...
                raise StoreError(f"cannot reach Milvus at {self.uri}: {_reason(exc)}") from None
        return self._client

    def _call_timeout(self, fn_name: str) -> int:
        """The seconds one pymilvus call may take, retries included (see WRITE_TIMEOUT)."""
        if not self._answered or fn_name in SLOW:
            return START_TIMEOUT
        return WRITE_TIMEOUT if fn_name in WRITES else READ_TIMEOUT

    def _call(self, fn_name: str, *args, **kwargs):
        if fn_name in WRITES or fn_name == "create_collection":
            self._wrote = self._writer = True
        timeout = self._call_timeout(fn_name)
        try:
            result = getattr(self.client, fn_name)(*args, timeout=timeout, **kwargs)
        except StoreError:
            raise
        except Exception as exc:
            why = _lost(exc, timeout)
            if why:
                self._answered = False  # if it comes back, it comes back starting (see START_TIMEOUT)
                raise ServerLostError(self._lost_message(fn_name, why)) from None
            if fn_name in READS and _not_loaded(exc) and args[0] not in self._loads:
                # A server just (re)started answers "collection not loaded" until it has reloaded our
                # collections (they are always loaded): wait for that load, once, and ask again.
                self._loads.add(args[0])
                self._call("load_collection", args[0])
                return self._call(fn_name, *args, **kwargs)
            raise StoreError(f"Milvus at {self.location} failed ({fn_name}): {_reason(exc)}") from None
        if fn_name in READS:
            self._answered = True
        elif fn_name in ("upsert", "insert") and args[0] == self.collection:
            self._stored += len(args[1])
        return result

    def _lost_message(self, fn_name: str, why: str) -> str:
        where = f"Milvus Lite at {self.uri}" if is_lite(self.uri) else f"the Milvus server at {self.uri}"
        if not self._writer:
            return f"lost {where} ({fn_name}: {why}): start it, or check --milvus-uri, and try again"
        kept = f"; the {self._stored} products written before are kept" if self._stored else ""
        return (f"lost {where} ({fn_name}: {why}){kept}: start the server and run the same command again, it "
                "resumes where it stopped")

    def server_version(self) -> str:
        """The engine's version, e.g. 'v2.3.5', or 'lite 2.5.1' for Milvus Lite."""
        if is_lite(self.uri):
            from importlib.metadata import PackageNotFoundError, version

            try:
                return f"lite {version('milvus-lite')}"
            except PackageNotFoundError:
                return "lite"
        try:
            return str(self._call("get_server_version"))
        except StoreError:
            return "unknown"

    def words_supported(self) -> str | None:
        """None when the engine holds sparse and several vector fields, else why not."""
        if is_lite(self.uri):
            return None
        found = re.search(r"(\d+)\.(\d+)", self.server_version())
        if found and (int(found[1]), int(found[2])) < (2, 4):
            return (f"Milvus {self.server_version()} at {self.uri} has no sparse vectors and one vector field per "
                    "collection (both need 2.4+): keyword and text search are unavailable on this index, image "
                    "search works")
        return None

    # metadata and files (rows of the metadata collection)

    def _has(self, name: str) -> bool:
        return bool(self._call("has_collection", name))

    def _meta_rows(self, keys: list[str]) -> dict[str, str]:
        if not keys:
            return {}
        rows = self._call("query", self.meta_collection, filter=f"key in [{', '.join(_quote(k) for k in keys)}]",
                          output_fields=["key", "value"], consistency_level=self._consistency())
        return {r["key"]: r["value"] for r in rows}

    def _put_rows(self, rows: dict[str, str]) -> None:
        if rows:
            self._call("upsert", self.meta_collection, [{"key": k, "value": v, "v": [0.0, 1.0]} for k, v in rows.items()])

    def _create_meta_collection(self) -> None:
        pm = _pymilvus()
        schema = pm.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("key", pm.DataType.VARCHAR, is_primary=True, max_length=512)
        schema.add_field("value", pm.DataType.VARCHAR, max_length=65_535)
        schema.add_field("v", pm.DataType.FLOAT_VECTOR, dim=2)  # Milvus wants a vector field in every collection
        index = self.client.prepare_index_params()
        index.add_index("v", index_type="FLAT", metric_type="L2")
        self._call("create_collection", self.meta_collection, schema=schema, index_params=index,
                   consistency_level=CONSISTENCY)

    def read_meta(self) -> dict | None:
        if not self._has(self.collection):
            return None
        if not self._has(self.meta_collection):
            raise StoreError(f"collection {self.collection!r} at {self.uri} was not made by shoplens (no "
                             f"{self.meta_collection!r}); use --collection to pick another")
        raw = self._meta_rows([META_KEY]).get(META_KEY)
        if raw is None:
            raise StoreError(f"collection {self.collection!r} at {self.uri} has no index metadata (a run stopped "
                             "while creating it): drop it or re-run the indexer")
        try:
            self._meta_cache = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise StoreError(f"the index metadata in {self.meta_collection!r} is damaged ({exc})") from None
        return dict(self._meta_cache)

    def write_meta(self, meta: dict) -> None:
        kept = (self._meta_cache or {}).get("words_unavailable")
        if kept and "words_unavailable" not in meta:
            # A fact about the collection create() made (no words-side fields), not about the run: a caller that
            # writes back the metadata it started with (the sync, at its end) must not drop it, or every later
            # reader asks for fields the collection lacks.
            meta = {**meta, "words_unavailable": kept}
        if not self._has(self.meta_collection):
            self._create_meta_collection()
        self._put_rows({META_KEY: json.dumps(meta, sort_keys=True)})
        self._meta_cache = dict(meta)

    def _meta(self) -> dict:
        if self._meta_cache is None:
            meta = self.read_meta()
            if meta is None:
                raise StoreError(f"no index in collection {self.collection!r} at {self.uri}; build one with: "
                                 f"python indexer.py CATALOG --milvus-uri {self.uri}")
        return self._meta_cache

    def create(self, meta: dict) -> None:
        pm = _pymilvus()
        meta = dict(meta)
        words = bool(text_dim(meta))
        why_not = self.words_supported() if words else None
        if why_not:
            meta["words_unavailable"] = why_not
        # Metadata first: a run killed after this finds the collection half-made and finishes it here.
        self.write_meta(meta)
        if self._has(self.collection):
            return
        schema = pm.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", pm.DataType.VARCHAR, is_primary=True, max_length=ID_LEN)
        schema.add_field(IMAGE_VECTOR, pm.DataType.FLOAT_VECTOR, dim=int(meta["dim"]))
        schema.add_field("payload", pm.DataType.JSON)
        index = self.client.prepare_index_params()
        if is_lite(self.uri):
            index.add_index(IMAGE_VECTOR, index_type="FLAT", metric_type="COSINE")
        else:
            index.add_index(IMAGE_VECTOR, index_type="HNSW", metric_type="COSINE", params=self._hnsw)
        if words and not why_not:
            schema.add_field(TEXT_VECTOR, pm.DataType.FLOAT_VECTOR, dim=text_dim(meta))
            schema.add_field(KEYWORD_VECTOR, pm.DataType.SPARSE_FLOAT_VECTOR)
            schema.add_field("terms", pm.DataType.ARRAY, element_type=pm.DataType.INT64, max_capacity=MAX_TERMS)
            schema.add_field("has_text", pm.DataType.BOOL)
            schema.add_field("has_keywords", pm.DataType.BOOL)
            index.add_index(TEXT_VECTOR, index_type="FLAT" if is_lite(self.uri) else "HNSW", metric_type="COSINE",
                            **({} if is_lite(self.uri) else {"params": self._hnsw}))
            index.add_index(KEYWORD_VECTOR, index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
        self._call("create_collection", self.collection, schema=schema, index_params=index,
                   consistency_level=CONSISTENCY)

    def _words(self) -> bool:
        """Whether this collection has the words-side fields."""
        meta = self._meta()
        return bool(text_dim(meta)) and not meta.get("words_unavailable")

    # writes

    def _row(self, point: PointData, dim_text: int | None) -> dict:
        row = {"id": point.id, IMAGE_VECTOR: unit(point.vector),
               "payload": point.payload}
        if dim_text:
            row.update(self._word_fields(point, dim_text))
        return row

    @staticmethod
    def _word_fields(point: PointData, dim_text: int) -> dict:
        vectors = point.text_vectors()
        text = vectors.get(TEXT_VECTOR)
        indices, values = vectors.get(KEYWORD_VECTOR, ([], []))
        weights = {int(i): float(v) for i, v in zip(indices, values) if float(v) != 0.0}
        # A product without text still needs a valid vector: a unit placeholder, hidden by has_text = false.
        placeholder = [1.0] + [0.0] * (dim_text - 1)
        return {TEXT_VECTOR: unit(text) if text is not None else placeholder, KEYWORD_VECTOR: weights,
                "terms": sorted(weights)[:MAX_TERMS], "has_text": text is not None, "has_keywords": bool(weights)}

    def upsert(self, points: list[PointData]) -> None:
        if not points:
            return
        dim_text = text_dim(self._meta()) if self._words() else None
        self._call("upsert", self.collection, [self._row(p, dim_text) for p in points])

    def _full_rows(self, ids: Sequence[str]) -> dict[str, dict]:
        """Whole rows (vectors included) by id: Milvus replaces rows whole, so partial updates read them first."""
        fields = ["id", IMAGE_VECTOR, "payload"] + ([TEXT_VECTOR, KEYWORD_VECTOR, "terms", "has_text", "has_keywords"]
                                                   if self._words() else [])
        out = {}
        for i in range(0, len(ids), 1000):
            rows = self._query_rows(milvus_filter(None, ids[i:i + 1000]), fields)
            for r in rows:
                row = {f: r[f] for f in fields}
                row[IMAGE_VECTOR] = [float(x) for x in row[IMAGE_VECTOR]]
                if TEXT_VECTOR in row:
                    row[TEXT_VECTOR] = [float(x) for x in row[TEXT_VECTOR]]
                    row[KEYWORD_VECTOR] = _sparse_dict(row[KEYWORD_VECTOR])
                    row["terms"] = [int(t) for t in row["terms"]]
                out[str(r["id"])] = row
        return out

    def _rewrite(self, ids: Sequence[str], change) -> None:
        rows = self._full_rows(list(ids))
        for pid, row in rows.items():
            change(pid, row)
        if rows:
            self._call("upsert", self.collection, list(rows.values()))

    def update_text(self, points: list[PointData]) -> None:
        if not self._words():
            return  # this engine keeps no words (read_meta()['words_unavailable'] says why)
        dim_text = text_dim(self._meta())
        by_id = {p.id: p for p in points}
        self._rewrite(list(by_id), lambda pid, row: row.update(self._word_fields(by_id[pid], dim_text)))

    def set_vectors(self, ids: list[str], vectors: np.ndarray) -> None:
        by_id = {i: unit(v) for i, v in zip(ids, vectors)}
        self._rewrite(list(by_id), lambda pid, row: row.__setitem__(IMAGE_VECTOR, by_id[pid]))

    def set_field(self, ids: list[str], key: str, value) -> None:
        def change(_pid, row):
            if value is None:
                row["payload"].pop(key, None)
            else:
                row["payload"][key] = value

        if ids:
            self._rewrite(list(ids), change)

    def set_fields(self, writes: dict[str, dict]) -> None:
        """Set payload keys of many points, each its own values (duplicate groups): Milvus rewrites whole rows, so
        one read and one write per 500 points instead of one per point."""
        ids = list(writes)
        for i in range(0, len(ids), 500):
            self._rewrite(ids[i:i + 500], lambda pid, row: row["payload"].update(writes[pid]))

    def set_payload(self, point: str, payload: dict) -> None:
        self._rewrite([point], lambda _pid, row: row.__setitem__("payload", dict(payload)))

    def delete(self, ids: list[str]) -> None:
        for i in range(0, len(ids), 1000):
            self._call("delete", self.collection, filter=milvus_filter(None, ids[i:i + 1000]))

    def create_keyword_index(self, field_name: str) -> None:
        # Filters work on every payload key. An index on a JSON path needs Milvus 2.5.11+; older engines (the
        # 2.3 server, Milvus Lite) filter by scanning the payloads, which stays fast to a few million rows.
        meta = self._meta()
        fields = sorted(set(meta.get("milvus_keyword_fields", [])) | {field_name})
        if fields != meta.get("milvus_keyword_fields"):
            self.write_meta({**meta, "milvus_keyword_fields": fields})
        found = re.search(r"(\d+)\.(\d+)\.(\d+)", self.server_version())
        if is_lite(self.uri) or not found or tuple(map(int, found.groups())) < (2, 5, 11):
            return
        try:
            index = self.client.prepare_index_params()
            index.add_index("payload", index_type="INVERTED", index_name=f"kw_{re.sub(r'[^0-9A-Za-z_]', '_', field_name)}",
                            params={"json_path": _field_path(field_name), "json_cast_type": "varchar"})
            self.client.create_index(self.collection, index, timeout=START_TIMEOUT)
        except Exception:  # an engine without JSON-path indexes: the scan above
            pass

    def finish(self) -> None:
        # A server has every acknowledged write in its log already (durable, searchable); flush would only seal
        # segments early, which it does by itself by size, and costs seconds per call. Lite writes its file here.
        if is_lite(self.uri):
            self._call("flush", self.collection)

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # closing a connection that already failed
                pass
            self._client = None

    # files kept with the index: base64 chunks in the metadata collection, the header row written last

    def write_file(self, name: str, data: bytes) -> None:
        if not self._has(self.meta_collection):
            self._create_meta_collection()
        encoded = base64.b64encode(data).decode("ascii")
        digest = hashlib.sha256(data).hexdigest()
        chunks = [encoded[i:i + CHUNK] for i in range(0, len(encoded), CHUNK)] or [""]
        # Chunks go under the content's hash, so a half-written new version never mixes with the old one.
        self._put_rows({f"{FILE_PREFIX}{name}:{digest[:16]}:{i}": c for i, c in enumerate(chunks)})
        self._put_rows({FILE_PREFIX + name: json.dumps({"sha256": digest, "chunks": len(chunks)})})

    def read_file(self, name: str) -> bytes | None:
        if not self._has(self.meta_collection):
            return None
        header = self._meta_rows([FILE_PREFIX + name]).get(FILE_PREFIX + name)
        if not header:
            return None
        head = json.loads(header)
        keys = [f"{FILE_PREFIX}{name}:{head['sha256'][:16]}:{i}" for i in range(head["chunks"])]
        rows = self._meta_rows(keys)
        try:
            data = base64.b64decode("".join(rows[k] for k in keys), validate=True)
        except (KeyError, ValueError):
            data = None
        if data is None or hashlib.sha256(data).hexdigest() != head["sha256"]:
            raise StoreError(f"the file {name!r} kept in {self.meta_collection!r} at {self.uri} is damaged")
        return data

    def delete_file(self, name: str) -> None:
        if not self._has(self.meta_collection):
            return
        header = self._meta_rows([FILE_PREFIX + name]).get(FILE_PREFIX + name)
        self._call("delete", self.meta_collection, filter=f"key == {_quote(FILE_PREFIX + name)}")
        if header:
            head = json.loads(header)
            keys = [f"{FILE_PREFIX}{name}:{head['sha256'][:16]}:{i}" for i in range(head["chunks"])]
            self._call("delete", self.meta_collection, filter=f"key in [{', '.join(_quote(k) for k in keys)}]")

    def artifact_path(self, name: str) -> Path:
        # Derived files (not the index's own): this machine's cache, one folder per URI and collection.
        if self._artifacts is None:
            self._artifacts = cache_dir("milvus", re.sub(r"[^0-9A-Za-z.-]+", "_", f"{self.uri}-{self.collection}"))
        return self._artifacts / name

    def cli_args(self) -> str:
        return f"--milvus-uri {self.uri}" + (f" --collection {self.collection}"
                                             if self.collection != DEFAULT_COLLECTION else "")

    # reads

    def _unavailable(self, what: str) -> None:
        meta = self._meta()
        if not text_dim(meta):
            raise StoreError(f"{what} needs an index built with text; this one has none")
        if meta.get("words_unavailable"):
            raise StoreError(f"{what} is unavailable: {meta['words_unavailable']}")

    def search(self, vector: np.ndarray, k: int = 10, filters: Filters | None = None, exact: bool = False,
               using: str = IMAGE_VECTOR, ids: Sequence[str] | None = None) -> list[Hit]:
        if ids is not None and not ids:
            return []
        extra = None
        if using != IMAGE_VECTOR:
            self._unavailable("text search")
            extra = "has_text == true"
        data, expr = np.asarray(vector, np.float32).tolist(), milvus_filter(filters, ids, extra)

        def fetch(limit: int) -> list[Hit]:
            # HNSW has no exact mode in Milvus: a beam far wider than k reads (nearly) every candidate instead.
            ef = min(QUERY_WINDOW, max(limit, 16_384 if exact else 128))
            return self._search(data, using, limit, expr, {"metric_type": "COSINE", "params": {"ef": ef}})

        return tie_ranked(fetch, k, most=QUERY_WINDOW)

    def search_keywords(self, keywords: Sparse, k: int = 10, filters: Filters | None = None,
                        ids: Sequence[str] | None = None) -> list[Hit]:
        indices, values = keywords
        if not len(indices) or (ids is not None and not ids):
            return []
        self._unavailable("keyword search")
        total = self.count(extra="has_keywords == true")
        query = {}
        for i, v in zip(indices, values):
            n = self.count(extra=f"array_contains(terms, {int(i)})")
            if n and float(v):
                query[int(i)] = float(v) * math.log(1 + (total - n + 0.5) / (n + 0.5))
        if not query:
            return []
        expr, params = milvus_filter(filters, ids), {"metric_type": "IP", "params": {"drop_ratio_search": 0.0}}
        return tie_ranked(lambda limit: self._search(query, KEYWORD_VECTOR, limit, expr, params), k,
                          most=QUERY_WINDOW)

    def _search(self, data, using: str, k: int, expr: str, params: dict) -> list[Hit]:
        result = self._call("search", self.collection, data=[data], anns_field=using, limit=k, filter=expr,
                            output_fields=["payload"], search_params=params, consistency_level=self._consistency())
        hits = [Hit(str(r["id"]), float(r["distance"]), dict(r["entity"].get("payload") or {})) for r in result[0]]
        return [h for h in hits if h.score > 0] if using == KEYWORD_VECTOR else hits

    def scroll(self, filters: Filters | None = None, limit: int = 100, offset: str | None = None,
               with_vector: bool = False) -> tuple[list[Hit], str | None]:
        # Pages in id order: Milvus returns a limited query's rows merged by primary key, the order its own
        # query iterator pages by; the next page starts after the last id (offset = that id, exclusive).
        self._meta()
        expr = milvus_filter(filters, extra=f"id > {_quote(offset)}" if offset is not None else None)
        fields = ["id", "payload"] + ([IMAGE_VECTOR] + ([TEXT_VECTOR, "has_text"] if self._words() else [])
                                      if with_vector else [])
        rows = self._query_rows(expr or 'id != ""', fields, limit=limit + 1)
        rows = sorted(rows, key=lambda r: str(r["id"]))
        more = len(rows) > limit
        hits = [self._record_hit(r, with_vector) for r in rows[:limit]]
        return hits, (hits[-1].id if more and hits else None)

    def _query_rows(self, expr: str, fields: list[str], **kwargs) -> list[dict]:
        try:
            return self._call("query", self.collection, filter=expr, output_fields=fields,
                              consistency_level=self._consistency(), **kwargs)
        except ServerLostError:
            raise
        except StoreError:
            # Milvus Lite 2.5 fails a query for a JSON field when no row matches ("Unsupported data type: 0").
            if self.count(extra=expr) == 0:
                return []
            raise

    def _record_hit(self, row: dict, with_vector: bool) -> Hit:
        hit = Hit(str(row["id"]), 0.0, dict(row.get("payload") or {}))
        if with_vector:
            hit.vector = np.asarray(row[IMAGE_VECTOR], np.float32)
            if row.get("has_text"):
                hit.text_vector = np.asarray(row[TEXT_VECTOR], np.float32)
        return hit

    def retrieve(self, ids: list[str], with_vector: bool = False) -> list[Hit]:
        if not ids:
            return []
        self._meta()
        fields = ["id", "payload"] + ([IMAGE_VECTOR] + ([TEXT_VECTOR, "has_text"] if self._words() else [])
                                      if with_vector else [])
        out = []
        for i in range(0, len(ids), 1000):
            rows = self._query_rows(milvus_filter(None, ids[i:i + 1000]), fields)
            out += [self._record_hit(r, with_vector) for r in rows]
        order = {pid: n for n, pid in enumerate(ids)}
        return sorted(out, key=lambda h: order.get(h.id, 0))

    def count(self, filters: Filters | None = None, extra: str | None = None) -> int:
        self._meta()
        rows = self._call("query", self.collection, filter=milvus_filter(filters, extra=extra),
                          output_fields=["count(*)"], consistency_level=self._consistency())
        return int(rows[0]["count(*)"]) if rows else 0

    def facet(self, field_name: str, filters: Filters | None = None, limit: int = 1000) -> list[tuple[str, int]]:
        # No facet call in Milvus: count the values of the matching payloads, page by page.
        counts: dict[str, int] = {}
        for hit in self.iterate(filters, page=QUERY_WINDOW - 1):
            value = hit.payload.get(field_name)
            for v in value if isinstance(value, list) else [value]:
                if v is not None and str(v) != "":
                    counts[str(v)] = counts.get(str(v), 0) + 1
        return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]


def _sparse_dict(value) -> dict[int, float]:
    """A sparse vector as pymilvus returns it (a dict, or a scipy-like row) -> {index: weight}."""
    if isinstance(value, dict):
        return {int(k): float(v) for k, v in value.items()}
    try:
        coo = value.tocoo()
        return {int(i): float(v) for i, v in zip(coo.col, coo.data)}
    except AttributeError:
        return dict(value)


def _grpc_status(exc: BaseException):
    """(gRPC status code, details) of the gRPC error behind a pymilvus error, or None when there is none."""
    import grpc

    seen = set()
    while exc is not None and id(exc) not in seen:  # pymilvus re-raises `e from e`: a chain with a loop
        seen.add(id(exc))
        if isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None)):
            return exc.code(), str(exc.details() or "")
        code = getattr(exc, "code", None)
        # After its retries pymilvus 2.5 raises MilvusException(e.code, ...): the gRPC error's bound method,
        # the only link left to it (`raise e from e` drops the cause). A later version may pass the code itself.
        if isinstance(getattr(code, "__self__", None), grpc.RpcError):
            return code(), str(code.__self__.details() or "")
        if isinstance(code, grpc.StatusCode):
            return code, str(getattr(exc, "message", "") or "")
        exc = exc.__cause__ or exc.__context__
    return None


def _lost(exc: BaseException, timeout: int) -> str | None:
    """Why the server did not answer ('connection refused for 20 s', ...), or None for any other error."""
    import grpc

    code, details = _grpc_status(exc) or (None, "")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"no answer within {timeout} s"
    if code == grpc.StatusCode.UNAVAILABLE:
        found = re.search(r"connection refused|connection reset|socket closed|name resolution|no route to host|"
                          r"network is unreachable", details, re.IGNORECASE)
        return f"{found[0].lower() if found else 'unavailable'} for {timeout} s"
    return None


def _not_loaded(exc: BaseException) -> bool:
    """Whether the server said the collection is not loaded (Milvus error 101)."""
    return getattr(exc, "code", None) == 101 or "not loaded" in str(getattr(exc, "message", "") or exc)


def _reason(exc: Exception) -> str:
    """The first line of a pymilvus/grpc error, without the class noise."""
    status = _grpc_status(exc)
    if status:  # str() of a gRPC error is "<_InactiveRpcError of RPC that terminated with:" and more lines
        return f"{status[0].name.lower()}: {status[1].strip()[:300]}"
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return text.strip().splitlines()[0][:300]
