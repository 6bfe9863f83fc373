"""App start and a `search` beside a serving app on a 100k-product index, before vs after (issue 19).

python -m benchmarks.startup [--points 100000] [--dim 1280] [--repeats 3] [--rebuild]

The index: `--points` synthetic unit vectors (1280-d: efficientnet-lite0's size, recorded as that encoder so a
real photo search runs on it) with short payloads, in a Qdrant Edge folder built once under benchmarks/out/
and optimized as the indexer leaves it. Side by side, in one process and one run:

1. app start: `shoplens.web.serve.create(INDEX)` (open, the integrity check, the page) with the full check of
   every vector that the app ran before (`verify`) and with the start-up check it runs now (`startup_check`:
   counts, metadata, the first 256 points), alternated `--repeats` times; the check alone is timed too;
2. a `search` beside a serving app: the app (this process) serves the index and its channel is open; then
   `python -m shoplens search PHOTO --index INDEX --json` runs as a child process, which asks the app for a
   snapshot. Before: the app copied the whole folder under its write lock; after: it hard-links the files of
   optimized segments (shoplens.index.live.SNAPSHOT_LINKED) and copies the rest. Timed: the command's wall
   time, and the time the app held its write lock for the snapshot (its syncs wait that long).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import OUT, load_note, table
from benchmarks.report import write_section

REPO = Path(__file__).resolve().parent.parent
ENCODER = "efficientnet-lite0"


def build(index: Path, points: int, dim: int) -> float:
    """The synthetic index at `index` (made when missing); seconds it took (0 when it was there)."""
    from shoplens.encoders import create_encoder
    from shoplens.store import SCHEMA_VERSION, PointData, point_id
    from shoplens.store.edge import EdgeStore

    if (index / "index.json").exists():
        with EdgeStore(index) as store:
            if store.count() == points and int(store.read_meta()["dim"]) == dim:
                return 0.0
        shutil.rmtree(index)
    started = time.perf_counter()
    described = create_encoder(ENCODER).describe()
    if described["dim"] != dim:
        described = {"encoder": "synthetic", "encoder_version": "1", "dim": dim}
    rng = np.random.default_rng(0)
    categories = ["Tops", "Shoes", "Bags", "Dresses", "Watches"]
    with EdgeStore(index) as store:
        store.create({"schema": SCHEMA_VERSION, **described, "catalog_size": points})
        for start in range(0, points, 2000):
            n = min(2000, points - start)
            vecs = rng.normal(size=(n, dim)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            store.upsert([PointData(point_id(f"p{start + i}"), vecs[i],
                                    {"product_id": f"p{start + i}", "content_hash": f"{start + i:040x}",
                                     "title": f"Product {start + i}", "category": categories[(start + i) % 5],
                                     "path": f"photos/p{start + i}.jpg"}) for i in range(n)])
        store.create_keyword_index("category")
        store.finish()
        meta = store.read_meta()
        meta.update(points=store.count(), filter_fields=["category"], keyword_fields=["category"])
        store.write_meta(meta)
    return time.perf_counter() - started


def time_app_start(index: Path, repeats: int) -> dict[str, list[float]]:
    """Seconds to create() the app with the full check (before) and the start-up check (after), alternated."""
    import shoplens.web.serve as serve
    from shoplens.index.check import startup_check, verify
    from shoplens.store.edge import EdgeStore

    out: dict[str, list[float]] = {"before": [], "after": [], "check before": [], "check after": []}
    for _ in range(repeats):
        for mode, check in (("before", verify), ("after", startup_check)):
            serve.startup_check = check  # what create() runs: verify before this change, startup_check after
            started = time.perf_counter()
            app = serve.create(index)
            out[mode].append(time.perf_counter() - started)
            assert app.searcher is not None, "the app did not serve the index"
            app.close()
            with EdgeStore(index) as store:
                store.count()  # opened: the check below times the check only
                started = time.perf_counter()
                report = check(store)
                out[f"check {mode}"].append(time.perf_counter() - started)
                assert report.ok, report.lines()
    serve.startup_check = startup_check
    return out


def time_search_beside_app(index: Path, repeats: int, photo: Path) -> dict[str, dict[str, list[float]]]:
    """A `search` command beside a serving app: its wall time and the app's write-lock time per snapshot."""
    import shoplens.index.live as live_module
    from shoplens.web.serve import create

    held: list[float] = []
    real = live_module.snapshot_tree

    def timed(*args, **kwargs):  # runs under the app's write lock (handle_snapshot)
        started = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            held.append(time.perf_counter() - started)

    live_module.snapshot_tree = timed
    app = create(index)
    app.live.start()
    out = {mode: {"wall": [], "lock": [], "copied": [], "linked": []} for mode in ("before", "after")}
    try:
        command = [sys.executable, "-m", "shoplens", "search", str(photo), "--index", str(index), "-k", "5",
                   "--crop", "off", "--json"]
        subprocess.run(command, cwd=REPO, capture_output=True, timeout=600)  # warm the page cache and the model
        for _ in range(repeats):
            for mode, links in (("before", False), ("after", True)):
                app.live.snapshot_links = links
                started = time.perf_counter()
                done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
                out[mode]["wall"].append(time.perf_counter() - started)
                assert done.returncode == 0, done.stderr
                assert len(json.loads(done.stdout)["results"]) == 5
                out[mode]["lock"].append(held[-1])
                out[mode]["copied"].append(app.live.snapshot_stats["copied"])
                out[mode]["linked"].append(app.live.snapshot_stats["linked"])
    finally:
        app.close()
        live_module.snapshot_tree = real
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args(argv)
    index = OUT / f"startup-{args.points}-{args.dim}"
    if args.rebuild and index.exists():
        shutil.rmtree(index)
    built = build(index, args.points, args.dim)
    print(f"index ready ({built:.0f} s to build)", flush=True)
    photo = OUT / "startup-query.jpg"
    Image.new("RGB", (320, 320), (180, 40, 60)).save(photo)
    start = time_app_start(index, args.repeats)
    print("app start:", {k: [round(v, 2) for v in vals] for k, vals in start.items()}, flush=True)
    search = time_search_beside_app(index, args.repeats, photo)
    print("search:", {m: {k: [round(v, 2) for v in vals] for k, vals in d.items()} for m, d in search.items()},
          flush=True)

    med = statistics.median

    def ratio(before: float, after: float) -> str:
        return f"{before / after:.1f}x" if after > 0 else "n/a"

    mb = 2 ** 20
    rows = [
        ["app start (`create`: open, check, page)", f"{med(start['before']):.2f} s", f"{med(start['after']):.2f} s",
         ratio(med(start["before"]), med(start["after"]))],
        ["its integrity check alone", f"{med(start['check before']):.2f} s", f"{med(start['check after']):.3f} s",
         ratio(med(start["check before"]), med(start["check after"]))],
        ["`search` beside the serving app (command wall time)", f"{med(search['before']['wall']):.2f} s",
         f"{med(search['after']['wall']):.2f} s", ratio(med(search["before"]["wall"]), med(search["after"]["wall"]))],
        ["app's write lock held for the snapshot", f"{med(search['before']['lock']):.2f} s",
         f"{med(search['after']['lock']):.2f} s", ratio(med(search["before"]["lock"]), med(search["after"]["lock"]))],
        ["snapshot bytes copied / hard-linked", f"{med(search['before']['copied']) / mb:.0f} MB / "
         f"{med(search['before']['linked']) / mb:.0f} MB", f"{med(search['after']['copied']) / mb:.0f} MB / "
         f"{med(search['after']['linked']) / mb:.0f} MB", ""],
    ]
    on_disk = sum(p.stat().st_size for p in index.rglob("*") if p.is_file()) / mb
    body = (f"Index: {args.points:,} synthetic unit vectors, {args.dim}-d (recorded as {ENCODER}), short payloads, "
            f"one Qdrant Edge folder as the indexer leaves it (optimized; {on_disk:.0f} MB of files). Before and after "
            f"run side by side in one process, alternated, median of {args.repeats}.\n\n"
            + table(["", "before (full check / whole copy)", "after (start-up check / hard links)", "ratio"], rows)
            + "\n\nBefore: the app ran the full check (every vector read and checked) when it started, as every "
            "indexer run did; after: the start-up check (metadata, count against the recorded count, derived files, "
            "the first 256 points in id order, which are spread over the catalog because point ids are hashes); "
            "`python -m shoplens check` still reads every vector. The `search` command includes starting Python, "
            "loading the encoder and encoding the query photo in a child process; the snapshot part is what "
            "differs. Before: the app copied the whole index folder under its write lock; after: it hard-links the "
            "files optimized segments never rewrite (vectors, HNSW graph, id mappings) and copies the rest (WAL, "
            "payloads, the appendable segment, delete flags). " + load_note() + ".\n")
    write_section("startup", body)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
