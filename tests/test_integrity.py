"""Index integrity: each index file truncated or zeroed in turn must end in a clear message or a repaired
index (after `shoplens check --repair` and/or an indexer re-run), never in a traceback, a signal or a
silently smaller result set. Every command runs in a child process, so a SIGBUS or a Rust abort shows up
as a failed test, not a dead pytest.

The oracle is a dump of the pristine index (ids, payloads, vectors) taken before any damage: a repaired
index must hold exactly the same products with the same vectors. By default one case per kind of file
runs (CI_CASES); SHOPLENS_CORRUPTION=all runs the 24 representative cases, SHOPLENS_CORRUPTION_FULL=1
every file with every kind of damage (66 cases).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, fresh_cache, make_product_photo

N_PRODUCTS = 64  # more than MIN_BRIDGE_PAIRS (50), so the index has a text bridge
COLOURS = {"Red": (214, 40, 40), "Blue": (40, 80, 200), "Green": (40, 160, 80), "Yellow": (235, 200, 40)}
SHAPES = {"Tops": "square", "Shoes": "wide", "Bags": "round"}

# Files of a Qdrant Edge index (globs under the index folder) and the damage done to them. The representative
# set covers each kind of file the issue names: vectors, payload, id tracker, WAL, config, shoplens meta, bridge.
CASES = [
    ("optimised", "shard/segments/*/vector_storage-image/matrix.dat", "half"),
    ("optimised", "shard/segments/*/vector_storage-image/matrix.dat", "zero"),
    ("optimised", "shard/segments/*/vector_storage-text/matrix.dat", "half"),
    ("appendable", "shard/segments/*/vector_storage-image/vectors/chunk_0.mmap", "zero"),
    ("appendable", "shard/segments/*/vector_storage-image/vectors/status.dat", "empty"),
    ("optimised", "shard/segments/*/payload_storage/page_0.dat", "empty"),
    ("optimised", "shard/segments/*/payload_storage/page_0.dat", "zero"),
    ("optimised", "shard/segments/*/payload_storage/tracker.dat", "zero"),
    ("appendable", "shard/segments/*/payload_storage/config.json", "half"),
    ("optimised", "shard/segments/*/id_tracker.mappings", "zero"),
    ("optimised", "shard/segments/*/id_tracker.versions", "half"),
    ("appendable", "shard/segments/*/mutable_id_tracker.mappings", "half"),
    ("appendable", "shard/segments/*/mutable_id_tracker.versions", "empty"),
    ("optimised", "shard/wal/first-index", "zero"),
    ("appendable", "shard/wal/open-1", "zero"),
    ("optimised", "shard/edge_config.json", "half"),
    ("optimised", "shard/segments/*/segment.json", "zero"),
    ("appendable", "shard/segments/*/version.info", "empty"),
    ("optimised", "shard/segments/*/vector_index-image/graph.bin", "half"),
    ("optimised", "shard/segments/*/vector_storage-bm25/store/page_0.dat", "empty"),
    ("appendable", "index.json", "half"),
    ("optimised", "index.json", "zero"),
    ("appendable", "text-bridge.npz", "half"),
    ("optimised", "text-bridge.npz", "zero"),
]
MODES = ("half", "empty", "zero")
# What CI runs by default (each case starts about six child processes, so the 24 above take ~12 minutes on
# two cores): one case for each kind of file the issue names — vectors (a truncated matrix, and the status
# file whose damage makes Edge panic), payload, id tracker, WAL, Edge's config, shoplens' metadata, the bridge.
# SHOPLENS_CORRUPTION=all runs the 24 above; SHOPLENS_CORRUPTION_FULL=1 every file with every damage.
CI_CASES = [CASES[i] for i in (0, 4, 6, 9, 14, 15, 20, 23)]


def make_catalog(root: Path) -> Path:
    """N_PRODUCTS product photos with titles, categories and colours, in a CSV manifest."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(N_PRODUCTS):
        colour, category = list(COLOURS)[i % 4], list(SHAPES)[(i // 4) % 3]
        rgb = tuple(min(255, c + (i // 12) * 6) for c in COLOURS[colour])
        rel = f"photos/p{i:03d}.jpg"
        make_product_photo(root / rel, rgb, SHAPES[category])
        rows.append({"id": f"p{i:03d}", "path": rel, "title": f"{colour} {category[:-1].lower()} number {i}",
                     "category": category, "colour": colour})
    with open(root / "products.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def child_env(cache: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "SHOPLENS_CACHE": str(cache), "RUST_BACKTRACE": "0",
           "PYTHONFAULTHANDLER": "1"}
    return env


def run(args: list[str], cache: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    fresh_cache(cache)  # no embeddings of its own, but the exported models are shared (no 10 s MiniLM export)
    return subprocess.run([sys.executable, *args], cwd=REPO, env=child_env(cache), capture_output=True, text=True,
                          timeout=timeout)


DUMP = r"""
import json, sys
from shoplens.store.edge import EdgeStore
store = EdgeStore(sys.argv[1])
out = {}
for hit in store.iterate(with_vector=True):
    out[hit.id] = {"payload": hit.payload, "image": None if hit.vector is None else hit.vector.tolist(),
                   "text": None if hit.text_vector is None else hit.text_vector.tolist()}
print(json.dumps(out))
"""


def dump(index: Path, cache: Path) -> dict:
    done = run(["-c", DUMP, str(index)], cache)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def assert_clean(done: subprocess.CompletedProcess, allowed=(0, 1, 2)) -> None:
    """A command that ended the way a user can act on: an allowed exit status, no signal, no traceback."""
    where = f"exit {done.returncode}\nstdout: {done.stdout[-1500:]}\nstderr: {done.stderr[-3000:]}"
    assert done.returncode >= 0, f"killed by signal {-done.returncode}: {where}"
    assert done.returncode in allowed, where
    assert "Traceback" not in done.stderr and "panicked" not in done.stderr, where


def same_index(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want), f"{len(got)} products instead of {len(want)}"
    for pid, point in want.items():
        assert got[pid]["payload"] == point["payload"], pid
        assert got[pid]["image"] is not None and np.allclose(got[pid]["image"], point["image"], atol=1e-6), pid
        assert (got[pid]["text"] is None) == (point["text"] is None), pid
        if point["text"] is not None:
            assert np.allclose(got[pid]["text"], point["text"], atol=1e-5), pid


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Both Edge layouts of the same catalog, with their pristine dumps: 'appendable' (a small index, as
    Qdrant leaves it) and 'optimised' (indexing threshold 1 KB: matrix.dat, HNSW graphs, immutable id tracker)."""
    import qdrant_edge as qe

    from shoplens.catalog import read_catalog
    from shoplens.encoders import create_encoder
    from shoplens.index.sync import sync_catalog
    from shoplens.index.text import TextIndexer
    from shoplens.store.edge import EdgeStore

    base = tmp_path_factory.mktemp("integrity")
    cache = fresh_cache(base / "cache")
    old = os.environ.get("SHOPLENS_CACHE")
    os.environ["SHOPLENS_CACHE"] = str(cache)
    try:
        catalog = make_catalog(base / "catalog")
        text = TextIndexer()
        out = {"catalog": catalog, "cache": cache, "base": base}
        for layout, optimizers in (("appendable", None), ("optimised", qe.EdgeOptimizersConfig(indexing_threshold=1))):
            with EdgeStore(base / layout, optimizers_config=optimizers) as store:
                summary = sync_catalog(read_catalog(catalog), store, create_encoder("tiny"), text=text, progress=False)
                assert summary.added == N_PRODUCTS
            out[layout] = base / layout
            out[f"{layout}-dump"] = dump(base / layout, cache)
    finally:
        if old is None:
            os.environ.pop("SHOPLENS_CACHE", None)
        else:
            os.environ["SHOPLENS_CACHE"] = old
    # The layouts really differ the way the cases assume.
    assert list((base / "optimised").glob("shard/segments/*/vector_storage-image/matrix.dat"))
    assert list((base / "appendable").glob("shard/segments/*/vector_storage-image/vectors/chunk_0.mmap"))
    assert len(out["optimised-dump"]) == N_PRODUCTS
    return out


def damage(path: Path, mode: str) -> None:
    size = path.stat().st_size
    if mode == "half":
        os.truncate(path, size // 2)
    elif mode == "empty":
        os.truncate(path, 0)
    else:
        with open(path, "r+b") as fh:
            fh.write(b"\0" * size)


def record(case: str, **steps) -> None:
    """With SHOPLENS_CORRUPTION_REPORT=FILE, append how a case ended (for docs/integrity.md)."""
    path = os.environ.get("SHOPLENS_CORRUPTION_REPORT")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"case": case, **{k: (v.returncode, (v.stdout.strip() or v.stderr.strip())[:600])
                                                  for k, v in steps.items()}}) + "\n")


def all_cases() -> list[tuple[str, str, str]]:
    if not os.environ.get("SHOPLENS_CORRUPTION_FULL"):
        return CASES if os.environ.get("SHOPLENS_CORRUPTION") == "all" else CI_CASES
    files = {case[:2] for case in CASES}
    return [(layout, pattern, mode) for layout, pattern in sorted(files) for mode in MODES]


@pytest.mark.parametrize("layout,pattern,mode", all_cases(), ids=lambda v: str(v).replace("shard/segments/*/", ""))
def test_damaged_file_ends_in_a_message_or_a_repaired_index(built, tmp_path, layout, pattern, mode):
    index = tmp_path / "index"
    shutil.copytree(built[layout], index)
    cache = tmp_path / "cache"  # an empty embedding cache: repairs cannot lean on vectors cached by the build
    targets = sorted(index.glob(pattern))
    assert targets, f"no {pattern} in the {layout} index"
    for target in targets:
        damage(target, mode)
    want = built[f"{layout}-dump"]
    where = ["--index", str(index)]

    info = run(["-m", "shoplens", "info", *where], cache)
    assert_clean(info, allowed=(0, 2))
    check = run(["-m", "shoplens", "check", *where], cache)
    assert_clean(check, allowed=(0, 1))
    case = f"{layout} {pattern} {mode}"
    if check.returncode == 0:
        record(case, info=info, check=check)
        # "ok" must be true: the damage touched nothing the index uses (e.g. an unused part of a file).
        same_index(dump(index, cache), want)
        return
    problems = check.stdout.strip().splitlines()
    assert problems and all(line.startswith(("damaged: ", "note: ")) for line in problems), check.stdout
    assert all("; fix: " in line and ("python indexer.py" in line or "python -m shoplens check" in line)
               for line in problems if line.startswith("damaged: ")), check.stdout

    repaired = run(["-m", "shoplens", "check", *where, "--repair"], cache)
    assert_clean(repaired, allowed=(0, 1))
    if repaired.returncode == 1:  # what is left needs the catalog, and the report says which command
        assert "python indexer.py" in repaired.stdout or "rebuild" in repaired.stdout, repaired.stdout
    reindex = run(["indexer.py", str(built["catalog"]), *where, "--quiet"], cache)
    assert_clean(reindex, allowed=(0,))
    final = run(["-m", "shoplens", "check", *where], cache)
    record(case, info=info, check=check, repair=repaired, reindex=reindex, final=final)
    assert_clean(final, allowed=(0,))
    same_index(dump(index, cache), want)


def test_the_issue_case_half_a_matrix_is_repaired_by_an_indexer_run_alone(built, tmp_path):
    """Half of vector_storage-image/matrix.dat gone: the indexer re-run (no check first) re-writes the
    products whose vectors are missing instead of saying 'unchanged', and says so."""
    index = tmp_path / "index"
    shutil.copytree(built["optimised"], index)
    for target in index.glob("shard/segments/*/vector_storage-image/matrix.dat"):
        damage(target, "half")
    cache = tmp_path / "cache"
    reindex = run(["indexer.py", str(built["catalog"]), "--index", str(index), "--quiet"], cache)
    assert_clean(reindex, allowed=(0,))
    first = reindex.stdout.splitlines()[0]
    assert not first.startswith("added 0, updated 0, unchanged 64"), reindex.stdout
    assert "damaged" in reindex.stdout
    same_index(dump(index, cache), built["optimised-dump"])


def test_app_refuses_a_damaged_index_and_names_the_repair(built, tmp_path, caplog):
    from shoplens.web.serve import create

    index = tmp_path / "index"
    shutil.copytree(built["optimised"], index)
    for target in index.glob("shard/segments/*/vector_storage-image/matrix.dat"):
        damage(target, "half")
    with caplog.at_level("WARNING", logger="shoplens.web"):
        app = create(index)
    try:
        assert app.searcher is None
        page = json.dumps(app.demo.config)
        # Visitors see the command with a placeholder; the server's log has it with the real folder (issue 19).
        assert "is damaged" in page and "check --index INDEX_DIR --repair" in page
        assert str(tmp_path) not in page and str(built["catalog"]) not in page
        assert f"check --index {index} --repair" in caplog.text
    finally:
        app.demo.close()


def test_app_refuses_an_index_it_cannot_open(built, tmp_path, caplog):
    from shoplens.web.serve import create

    index = tmp_path / "index"
    shutil.copytree(built["optimised"], index)
    (index / "shard" / "edge_config.json").write_text("{")
    caplog.set_level(logging.INFO)
    app = create(index)
    try:
        assert app.searcher is None
        page = json.dumps(app.demo.config)
        # Visitors see the command with a placeholder; the server's log has it with the real folder (issue 19).
        assert "check --index INDEX_DIR --repair" in page and str(tmp_path) not in page
        assert f"check --index {index} --repair" in caplog.text
    finally:
        app.demo.close()


def test_verify_reports_each_defect_and_repair_fixes_it_on_qdrant_client(tmp_path, monkeypatch):
    """The checks that apply to a Qdrant server, on qdrant-client's local (':memory:') mode: a point without
    its image vector, a point without its payload, a garbage bridge file."""
    from shoplens.catalog import read_catalog
    from shoplens.encoders import create_encoder
    from shoplens.index.check import repair, verify
    from shoplens.index.sync import sync_catalog
    from shoplens.index.text import BRIDGE_FILE, TextIndexer
    from shoplens.store.remote import QdrantStore

    monkeypatch.setenv("SHOPLENS_CACHE", str(fresh_cache(tmp_path / "cache")))
    catalog = read_catalog(make_catalog(tmp_path / "catalog"))
    store = QdrantStore(":memory:")
    try:
        sync_catalog(catalog, store, create_encoder("tiny"), text=TextIndexer(), progress=False)
        assert verify(store).ok and verify(store).points == N_PRODUCTS
        hits = sorted(store.iterate(), key=lambda h: h.product_id)
        lost_vector, lost_payload = hits[3], hits[7]
        from qdrant_client import models

        store.client.delete_vectors(store.collection, vectors=["image"],
                                    points=models.PointIdsList(points=[lost_vector.id]), wait=True)
        store.client.overwrite_payload(store.collection, payload={}, points=[lost_payload.id], wait=True)
        store.artifact_path(BRIDGE_FILE).write_bytes(b"PK\x03\x04 not a zip")
        report = verify(store)
        assert report.kinds() == {"image", "payload", "bridge"}, report.lines()
        assert report.no_image == {lost_vector.id} and report.bad_payload == {lost_payload.id}
        assert all("python -m shoplens check" in line for line in report.lines() if line.startswith("damaged"))

        fixed = repair(store)
        # The two damaged products were dropped; only the catalog brings them back, and the report says so.
        assert fixed.kinds() == {"count"} and fixed.points == N_PRODUCTS - 2, fixed.lines()
        assert "python indexer.py" in fixed.lines()[-1] or any("python indexer.py" in x for x in fixed.lines())
        summary = sync_catalog(catalog, store, create_encoder("tiny"), text=TextIndexer(), progress=False)
        assert summary.added == 2
        assert verify(store).ok and store.count() == N_PRODUCTS
    finally:
        store.close()


def test_indexer_refuses_to_start_without_disk_space_and_leaves_the_index_alone(built, tmp_path, monkeypatch):
    """The free-space probe says 1 MB: the run stops with one line naming the folder and the space needed,
    before writing anything."""
    import shutil as shutil_module
    from collections import namedtuple

    from shoplens.catalog import read_catalog
    from shoplens.encoders import create_encoder
    from shoplens.index.sync import sync_catalog
    from shoplens.store import DiskSpaceError
    from shoplens.store import space
    from shoplens.store.edge import EdgeStore

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(space.shutil, "disk_usage", lambda _p: usage(2**30, 2**30 - 2**20, 2**20))
    assert shutil_module.disk_usage is space.shutil.disk_usage
    monkeypatch.setenv("SHOPLENS_CACHE", str(tmp_path / "cache"))
    catalog = read_catalog(built["catalog"])

    fresh = tmp_path / "fresh"
    with pytest.raises(DiskSpaceError) as err:
        with EdgeStore(fresh) as store:
            sync_catalog(catalog, store, create_encoder("tiny"), progress=False)
    message = str(err.value)
    assert str(fresh) in message and "1.0 MB free" in message and "\n" not in message
    # (48 floats x 4 bytes + 1024 payload) x 3 x 64 products = 233,472 bytes, + 4 MiB reserve = 4,427,776
    # bytes = 4.2 MB (worked by hand).
    assert "needs about 4.2 MB" in message, message
    assert not fresh.exists()


def test_space_estimate_by_hand():
    from shoplens.store.space import bytes_needed

    # 2,906 products, EfficientNet 1280-d + MiniLM 384-d: (1664 x 4 + 1024) x 3 x 2906 + 4 MiB.
    assert bytes_needed(2906, 1280, 384) == (1664 * 4 + 1024) * 3 * 2906 + 4 * 2**20
    assert bytes_needed(0, 1280) == 4 * 2**20


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MB ext4 file system on a loop device (needs root and mkfs.ext4); unmounted afterwards."""
    if os.geteuid() != 0 or not shutil.which("mkfs.ext4"):
        pytest.skip("a real full disk needs root and mkfs.ext4 (loop mount)")
    image, mount = tmp_path / "disk.img", tmp_path / "disk"
    mount.mkdir()
    with open(image, "wb") as fh:
        fh.truncate(64 * 2**20)
    made = subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], capture_output=True)
    mounted = made.returncode == 0 and subprocess.run(["mount", "-o", "loop", str(image), str(mount)],
                                                      capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("cannot loop-mount a file system here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def fill(mount: Path, leave_kb: int) -> None:
    """Fill the file system until `leave_kb` KB are free."""
    free_kb = shutil.disk_usage(mount).free // 1024
    with open(mount / "filler", "wb") as fh:
        chunk = b"\0" * 1024 * 1024
        todo = max(free_kb - leave_kb, 0) * 1024
        while todo > 0:
            fh.write(chunk[:min(todo, len(chunk))])
            todo -= min(todo, len(chunk))
        fh.flush()
        os.fsync(fh.fileno())


def test_full_disk_gives_one_line_and_no_signal(built, small_disk, tmp_path):
    """A real full disk: before this change the indexer died with SIGBUS (600 KB free) or a traceback in
    optimize (2 MB free). Now: one line, exit 2; the existing index is untouched and still opens."""
    cache = tmp_path / "cache"
    fresh = small_disk / "fresh"
    fill(small_disk, 600)
    done = run(["indexer.py", str(built["catalog"]), "--index", str(fresh), "--encoder", "tiny", "--quiet"], cache)
    assert_clean(done, allowed=(2,))
    assert "not enough disk space" in done.stderr and str(fresh) in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not fresh.exists() or not any(fresh.iterdir())

    # An existing index on a disk with no space left at all: it is still read, and a run that would write
    # refuses up front, leaving every product as it was.
    (small_disk / "filler").unlink()
    index = small_disk / "index"
    # Edge's files are sparse (32 MB apparent, a few KB used): copy them sparse, as Edge made them.
    subprocess.run(["cp", "-a", "--sparse=always", str(built["appendable"]), str(index)], check=True)
    bigger = tmp_path / "bigger"
    shutil.copytree(built["catalog"], bigger)
    for i in range(8):
        make_product_photo(bigger / "photos" / f"new{i}.jpg", (10 * i, 200, 30), "round")
    with open(bigger / "products.csv", "a", newline="") as fh:
        csv.writer(fh).writerows([[f"new{i}", f"photos/new{i}.jpg", f"new bag {i}", "Bags", "Green"]
                                  for i in range(8)])
    fill(small_disk, 0)
    info = run(["-m", "shoplens", "info", "--index", str(index)], cache)
    assert_clean(info, allowed=(0, 2))
    more = run(["indexer.py", str(bigger), "--index", str(index), "--quiet"], cache)
    assert_clean(more, allowed=(2,))
    assert "disk" in more.stderr and len(more.stderr.strip().splitlines()) == 1, more.stderr
    (small_disk / "filler").unlink()
    same_index(dump(index, cache), built["appendable-dump"])


def test_metadata_without_a_backup_names_a_rebuild_into_a_new_folder(built, tmp_path):
    """An index made before index.backup.json existed: a zeroed index.json cannot be restored; every command
    says so in one line, and the rebuild it names works."""
    index = tmp_path / "index"
    shutil.copytree(built["appendable"], index)
    (index / "index.backup.json").unlink()
    damage(index / "index.json", "zero")
    cache = tmp_path / "cache"
    for args, allowed in ((["-m", "shoplens", "check", "--index", str(index)], (1,)),
                          (["-m", "shoplens", "check", "--index", str(index), "--repair"], (1,)),
                          (["-m", "shoplens", "info", "--index", str(index)], (2,)),
                          (["indexer.py", str(built["catalog"]), "--index", str(index), "--quiet"], (2,))):
        done = run(args, cache)
        assert_clean(done, allowed=allowed)
        assert "python indexer.py CATALOG --index NEW_DIR" in done.stdout + done.stderr, args
    rebuilt = run(["indexer.py", str(built["catalog"]), "--index", str(tmp_path / "new"), "--encoder", "tiny",
                   "--quiet"], cache)
    assert_clean(rebuilt, allowed=(0,))
    same_index(dump(tmp_path / "new", cache), built["appendable-dump"])


def test_text_search_refits_a_truncated_bridge_instead_of_a_traceback(built, tmp_path, monkeypatch):
    """A half text-bridge.npz used to raise BadZipFile on every text search, and no re-run repaired it."""
    from shoplens.index.text import BRIDGE_FILE
    from shoplens.query.search import Searcher

    monkeypatch.setenv("SHOPLENS_CACHE", str(built["cache"]))
    index = tmp_path / "index"
    shutil.copytree(built["appendable"], index)
    damage(index / BRIDGE_FILE, "half")
    searcher = Searcher.open(index)
    try:
        hits = searcher.search_text("red top", k=5, mode="bridge").hits
        assert len(hits) == 5
    finally:
        searcher.close()
    from shoplens.text.bridge import load_bridge

    assert load_bridge(index / BRIDGE_FILE).fitted_on == N_PRODUCTS  # written back whole


@pytest.mark.parametrize("kind", ["edge", "qdrant"])
def test_indexer_drops_a_damaged_point_no_product_owns(folder_catalog, tmp_path, monkeypatch, kind):
    """A point with an empty payload whose id is no catalog product's: the check flags it, the indexer
    removes it (nothing could ever find or re-write it), and the index is whole again."""
    from shoplens.catalog import read_catalog
    from shoplens.encoders import create_encoder
    from shoplens.index.check import verify
    from shoplens.index.sync import sync_catalog
    from shoplens.store import PointData
    from shoplens.store.edge import EdgeStore
    from shoplens.store.remote import QdrantStore

    monkeypatch.setenv("SHOPLENS_CACHE", str(tmp_path / "cache"))
    catalog = read_catalog(folder_catalog)
    store = EdgeStore(tmp_path / "index") if kind == "edge" else QdrantStore(":memory:")
    try:
        sync_catalog(catalog, store, create_encoder("tiny"), progress=False)
        junk = "00000000-0000-5000-8000-000000000001"
        store.upsert([PointData(junk, np.full(48, 0.1, np.float32), {})])
        report = verify(store)
        assert report.bad_payload == {junk} and report.kinds() == {"payload"}, report.lines()
        summary = sync_catalog(catalog, store, create_encoder("tiny"), progress=False)
        assert summary.unchanged == 8 and any("belong to no product" in n for n in summary.notes), summary.notes
        assert verify(store).ok and store.count() == 8
    finally:
        store.close()


def test_check_on_a_whole_index_exits_0_and_speaks_json(built, tmp_path, capsys, monkeypatch):
    from shoplens.cli import main

    monkeypatch.setenv("SHOPLENS_CACHE", str(built["cache"]))
    index = tmp_path / "index"
    shutil.copytree(built["optimised"], index)
    assert main(["check", "--index", str(index)]) == 0
    assert capsys.readouterr().out.strip() == f"ok: the index at {index} is whole ({N_PRODUCTS} products)"
    assert main(["check", "--index", str(index), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["points"] == report["recorded"] == report["scanned"] == N_PRODUCTS
    assert main(["check", "--index", str(index), "--repair"]) == 0
    assert "nothing to repair" in capsys.readouterr().out
    assert main(["check", "--index", str(tmp_path / "nothing-here")]) == 1
    assert "no index at" in capsys.readouterr().out


def test_repair_makes_the_fresh_shard_as_the_original_was(built, tmp_path, monkeypatch):
    """A repair that copies the points into a fresh shard creates it with the original's configuration (HNSW,
    quantization, vectors on disk, optimizer threshold, sparse IDF) and payload indexes, so filtered and keyword
    searches answer exactly as before the damage. Before: the fresh shard had Qdrant's defaults."""
    import qdrant_edge as qe

    from shoplens.catalog import read_catalog
    from shoplens.encoders import create_encoder
    from shoplens.index.check import repair, verify
    from shoplens.index.sync import sync_catalog
    from shoplens.index.text import TextIndexer
    from shoplens.query.search import Searcher
    from shoplens.store import point_id
    from shoplens.store.edge import EdgeStore, read_json

    monkeypatch.setenv("SHOPLENS_CACHE", str(built["cache"]))  # the build's embedding cache refills the vectors
    index = tmp_path / "index"
    with EdgeStore(index, hnsw_config=qe.HnswIndexConfig(m=8, ef_construct=40, full_scan_threshold=5000),
                   quantization_config=qe.ScalarQuantizationConfig(qe.ScalarType.Int8, quantile=0.99, always_ram=True),
                   on_disk_vectors=True, optimizers_config=qe.EdgeOptimizersConfig(indexing_threshold=1)) as store:
        sync_catalog(read_catalog(built["catalog"]), store, create_encoder("tiny"), text=TextIndexer(), progress=False)

    def config_and_indexes() -> tuple[dict, dict]:
        with EdgeStore(index) as store:  # as read back by a fresh opening
            schema = {name: str(info.data_type) for name, info in store.shard.info().payload_schema.items()}
        return read_json(index / "shard" / "edge_config.json"), schema

    photo = built["catalog"] / "photos" / "p004.jpg"
    shoes_red = {"category": ["Shoes"], "colour": ["Red"]}

    def answers() -> tuple[list[str], list[str]]:
        searcher = Searcher.open(index)
        try:
            # Every listing: make_catalog's products of one colour and category share one photo (one duplicate
            # group); what is compared here is the shard's filtering and words, not the collapse.
            filtered = searcher.search_image(photo, k=10, filters=shoes_red, crop="off", all_listings=True).hits
            words = searcher.search_text("blue shoe number 17", k=5, mode="keyword", all_listings=True).hits
        finally:
            searcher.close()
        return [h.product_id for h in filtered], [h.product_id for h in words]

    config, schema = config_and_indexes()
    # What the store was asked for, as Edge keeps it (worked out from the options above).
    assert config["hnsw_config"]["m"] == 8 and config["hnsw_config"]["ef_construct"] == 40
    assert config["optimizers"]["indexing_threshold"] == 1 and config["vectors"]["image"]["on_disk"] is True
    assert "int8" in json.dumps(config["quantization_config"]).lower()
    assert config["sparse_vectors"] == {"bm25": {"modifier": "idf"}}
    # The catalog's category fields, the colour names, and the duplicate group fields (issue 21) the sync indexes.
    assert schema == {"category": "PayloadSchemaType.Keyword", "colour": "PayloadSchemaType.Keyword",
                      "colours": "PayloadSchemaType.Keyword", "duplicate_group": "PayloadSchemaType.Keyword",
                      "duplicate_lead": "PayloadSchemaType.Keyword"}
    filtered, words = answers()
    # Red is i % 4 == 0 and Shoes (i // 4) % 3 == 1: i in 4, 16, 28, 40, 52 (make_catalog); the photo is p004's.
    assert sorted(filtered) == ["p004", "p016", "p028", "p040", "p052"] and filtered[0] == "p004"
    assert words[0] == "p017"  # "Blue shoe number 17": the only title with all four words

    with EdgeStore(index) as store:  # the damage: two products lose their image vector
        store.shard.update(qe.UpdateOperation.delete_vectors([point_id("p004"), point_id("p017")], ["image"]))
        store.shard.flush()
        assert verify(store).kinds() == {"image"}
        report = repair(store)
    assert report.ok, report.lines()
    assert any("copied 64 whole products into a fresh shard (2 image vectors refilled" in r for r in report.repaired)
    assert config_and_indexes() == (config, schema)
    assert answers() == (filtered, words)
