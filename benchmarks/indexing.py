"""Indexing throughput of the real indexer (sync_catalog into a fresh EdgeStore), and the cost of a re-run.

python -m benchmarks.indexing [--limit N] [--big 200] [--no-write]
python -m benchmarks.indexing --memory [--huge 200] [--repo DIR --label TEXT] [--no-write]

`--memory` measures only the indexer's peak memory on a catalog of `--huge` 6000x4000 photos (half PNG, half
JPEG), generated into a temp folder: `python indexer.py` runs in its own process (`--repo`: another checkout's,
for a "before" row) and its peak RSS is the kernel's (wait4's ru_maxrss). It writes the `indexing-memory`
section; a rerun replaces only its own label's row.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmarks.common import FASHION_IMAGES, NO_GPU, load_note, make_big_jpegs, met, now, table

TARGET_FASHION = 60.0  # images/s
TARGET_BIG = 20.0  # images/s
TARGET_RERUN = 0.05  # of the first run's time
TARGET_PEAK_MB = 1536  # the indexer's peak RSS on 6000x4000 photos
HUGE = (6000, 4000)


def timed_store(path: Path):
    """The product's EdgeStore, noting how long finish() (optimize + flush) takes."""
    from shoplens.store.edge import EdgeStore

    class TimedEdgeStore(EdgeStore):
        finish_seconds = 0.0

        def finish(self) -> None:
            started = now()
            super().finish()
            self.finish_seconds = now() - started

    return TimedEdgeStore(path)


def index(catalog, path: Path, encoder) -> dict:
    from shoplens.index.sync import sync_catalog

    store = timed_store(path)
    cpu = time.process_time()
    try:
        summary = sync_catalog(catalog, store, encoder, progress=False)
    finally:
        store.close()
    cpu = time.process_time() - cpu
    print(summary.line(), f"finish {store.finish_seconds:.2f} s", flush=True)
    return {"n": len(catalog), "encoded": summary.encoded, "seconds": summary.seconds,
            "rate": len(catalog) / summary.seconds, "finish": store.finish_seconds, "failed": len(summary.failed),
            "cpu_ms": 1000 * cpu / len(catalog)}


def make_huge_photos(folder: Path, count: int, distinct: int = 4, seed: int = 0) -> None:
    """`count` 6000x4000 catalog photos, half PNG, half JPEG: `distinct` real photos upscaled (the PNGs smooth, the
    JPEGs quality 90 with sensor-like noise), each file made unique by bytes after its end marker, which decoders
    ignore: every file is hashed, decoded and encoded as a new photo (making 200 distinct 24 MP pictures would
    take longer than indexing them). A PNG has no draft scale: it is decoded at its full 24 MP."""
    import numpy as np
    from PIL import Image

    from benchmarks.common import FASHION_IMAGES

    rng = np.random.default_rng(seed)
    sources = sorted(FASHION_IMAGES.glob("data/*/Images/images_with_product_ids/*.jpg"))
    if not sources:
        raise SystemExit(f"no photos under {FASHION_IMAGES} (set SHOPLENS_DATASETS)")
    folder.mkdir(parents=True, exist_ok=True)
    noise = rng.normal(0, 4, (HUGE[1], HUGE[0], 3)).astype(np.int16)
    bases = []
    for i in range(distinct):
        src = Image.open(sources[int(rng.integers(len(sources)))]).convert("RGB").resize(HUGE, Image.BICUBIC)
        path = folder / f"base-{i}"
        if i % 2 == 0:
            src.save(path, "PNG", compress_level=1)
        else:
            pixels = np.asarray(src, dtype=np.int16) + np.roll(noise, int(rng.integers(HUGE[1])), axis=0)
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=90)
        bases.append((path.read_bytes(), "png" if i % 2 == 0 else "jpg"))
        path.unlink()
    for i in range(count):
        data, ext = bases[i % distinct]
        (folder / f"huge-{i:04d}.{ext}").write_bytes(data + f"photo {i}".encode())


def indexer_peak(repo: Path, catalog: Path, index: Path, encoder: str) -> dict:
    """Run `repo`'s indexer.py on `catalog` in its own process: its peak RSS (MB, from wait4) and wall time."""
    import subprocess
    import sys

    started = now()
    proc = subprocess.Popen([sys.executable, "indexer.py", str(catalog), "--index", str(index), "--encoder", encoder,
                             "--text", "off", "--quiet"], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = now() - started
    out = proc.stdout.read().decode(errors="replace").strip().splitlines()
    err = proc.stderr.read().decode(errors="replace").strip().splitlines()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"peak": usage.ru_maxrss / 1024, "seconds": seconds, "status": proc.returncode,
            "line": (out[-1] if out else "") if proc.returncode == 0 else (err[-1] if err else "failed")}


def memory(args) -> str:
    """The indexer's peak RSS on `args.huge` 6000x4000 photos; the section's rows (other labels kept)."""
    import re

    from benchmarks.report import DOC

    repo = Path(args.repo).resolve()
    with tempfile.TemporaryDirectory(prefix="shoplens-bench-huge-") as tmp:
        tmp = Path(tmp)
        started = now()
        make_huge_photos(tmp / "catalog", args.huge)
        generated = now() - started
        megabytes = sum(p.stat().st_size for p in (tmp / "catalog").iterdir()) / 2**20
        result = indexer_peak(repo, tmp / "catalog", tmp / "index", args.encoder)
    row = (f"| {args.label} | {args.huge} ({args.huge // 2 + args.huge % 2} PNG, {args.huge // 2} JPEG; "
           f"{megabytes:.0f} MB) | **{result['peak']:.0f} MB** | {result['seconds']:.0f} s | "
           f"{met(result['peak'] <= TARGET_PEAK_MB and result['status'] == 0)} | {result['line'][:100]} |")
    print(row, f"(generating the photos took {generated:.0f} s)", flush=True)
    old = re.search(r"<!-- bench:indexing-memory -->.*?<!-- /bench:indexing-memory -->", DOC.read_text(), re.S)
    kept = [line for line in (old.group(0).splitlines() if old else [])
            if line.startswith("| ") and not line.startswith(("| run |", f"| {args.label} |"))]
    text = "\n".join([
        f"The indexer (`python indexer.py CATALOG --encoder {args.encoder} --text off`, a fresh index, in its own "
        f"process) on a folder of 6000x4000 photos (24 MP; 4 real photos upscaled: the PNGs smooth, the JPEGs with "
        f"noise, quality 90; each file made unique by bytes after its end marker, so each is hashed, decoded and "
        f"encoded as a new photo), generated into a temp folder. Peak RSS is the kernel's (`wait4` ru_maxrss) for the "
        f"indexer's process. Target: ≤ {TARGET_PEAK_MB} MB.", "",
        "Since issue 19 (`after`): every photo is shrunk by a whole factor right after decoding (short side still "
        "≥ the encoder's draft size), so the look-ahead of 64 prepared photos and the batch of 32 hold small "
        "pictures; decodes in flight share a process budget of 48 MP. `before-19`: the code before issue 19 "
        "(commit 805bcfd).", "",
        f"Shared 2-core machine ({load_note()}).", "",
        table(["run", "photos", "peak RSS", "wall", "target", "the indexer's summary"], []).rstrip(),
        *sorted(kept + [row]),
    ])
    if not args.no_write:
        from benchmarks.report import write_section

        write_section("indexing-memory", text, command="python -m benchmarks.indexing --memory")
    print(text)
    return text


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=0, help="index only the first N fashion-images products (0 = all)")
    ap.add_argument("--big", type=int, default=200, help="synthetic 1800x2400 JPEGs to generate and index")
    ap.add_argument("--encoder", default="efficientnet-lite0")
    ap.add_argument("--no-write", action="store_true", help="print the section instead of writing docs/benchmarks.md")
    ap.add_argument("--memory", action="store_true", help="only the indexer's peak memory on 6000x4000 photos")
    ap.add_argument("--huge", type=int, default=200, help="6000x4000 photos for --memory")
    ap.add_argument("--repo", default=str(Path(__file__).resolve().parent.parent),
                    help="the checkout whose indexer.py --memory runs (a 'before' row)")
    ap.add_argument("--label", default="after", help="the --memory row's name")
    args = ap.parse_args(argv)
    if args.memory:
        return memory(args)

    from PIL import Image

    from shoplens.catalog import Catalog, read_catalog
    from shoplens.encoders import create_encoder

    encoder = create_encoder(args.encoder)
    encoder.embed_batch([Image.new("RGB", (encoder.size, encoder.size))])  # load the ONNX session outside the timing

    catalog = read_catalog(FASHION_IMAGES)
    if args.limit:
        catalog = Catalog(catalog.root, catalog.layout, catalog.products[:args.limit])
    with tempfile.TemporaryDirectory(prefix="shoplens-bench-") as tmp:
        tmp = Path(tmp)
        first = index(catalog, tmp / "fashion", encoder)
        rerun = index(catalog, tmp / "fashion", encoder)  # a new EdgeStore on the same folder, as a new CLI run
        started = now()
        make_big_jpegs(tmp / "big", args.big)
        generated = now() - started
        big = index(read_catalog(tmp / "big"), tmp / "big-index", encoder)

    ratio = rerun["seconds"] / first["seconds"]
    summary = table(["target", "measured", "result"], [
        [f"fashion-images ≥ {TARGET_FASHION:.0f} images/s", f"{first['rate']:.1f} images/s",
         met(first["rate"] >= TARGET_FASHION)],
        [f"1800x2400 JPEGs ≥ {TARGET_BIG:.0f} images/s", f"{big['rate']:.1f} images/s", met(big["rate"] >= TARGET_BIG)],
        [f"re-run of unchanged catalog ≤ {TARGET_RERUN:.0%} of first run", f"{ratio:.1%} ({rerun['seconds']:.2f} s)",
         met(ratio <= TARGET_RERUN)],
    ])
    cores = os.cpu_count() or 1
    runs = table(["run", "photos", "encoded", "seconds", "photos/s", "of which finish() s", "CPU ms/photo",
                  f"photos/s if all {cores} cores were ours", "failed"], [
        [name, r["n"], r["encoded"], f"{r['seconds']:.1f}", f"{r['rate']:.1f}", f"{r['finish']:.2f}",
         f"{r['cpu_ms']:.1f}", f"{1000 * cores / r['cpu_ms']:.0f}", r["failed"]]
        for name, r in (("fashion-images, fresh index", first), ("fashion-images, re-run unchanged", rerun),
                        ("synthetic 1800x2400 q90, fresh index", big))
    ])
    text = "\n".join([
        "### Summary", "", summary, "",
        f"### Runs (`sync_catalog`, encoder {args.encoder}, batch 32, 2 decode threads, EdgeStore in a temp dir)", "",
        runs, "",
        "Rate = catalog photos / wall time of `sync_catalog`, which includes reading the catalog state, hashing, "
        "decoding (draft mode), encoding, upserts, keyword indexes and `finish()` (optimize + flush). The ONNX "
        "session is loaded before timing. The fashion-images copies are downscaled to ≤512 px; the synthetic "
        f"photos are real ones upscaled to 1800x2400 with noise, quality 90 (generating {args.big} took "
        f"{generated:.0f} s, not counted).", "",
        "CPU ms/photo is this process's CPU time (all threads) per catalog photo; cores x 1000 / CPU ms is the "
        "best rate an idle machine would allow, a bound that other people's jobs hardly move.", "",
        f"Shared 2-core machine ({load_note()}): absolute figures are noisy.", "",
        NO_GPU,
    ])
    if not args.no_write:
        from benchmarks.report import write_section

        write_section("indexing", text)
    print(text)
    return text


if __name__ == "__main__":
    main()
