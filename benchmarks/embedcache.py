"""Bytes the embedding cache writes: the append-only store against the whole-file .npz it replaced (issue 19).

python -m benchmarks.embedcache [--vectors 100000] [--dim 1280] [--batch 32] [--old-vectors 10000] [--no-write]

Each run writes `--vectors` random float32 vectors of `--dim` (1280: the default encoder, efficientnet-lite0)
into a fresh cache in a temporary folder, `--batch` at a time as the sync does (one put_many per encoder batch),
and counts the bytes this process handed to write() (`wchar` of /proc/self/io: the vector file, SQLite's log and
its checkpoints into the database file). The ratio is that over the vectors' own size (target ≤ 1.2x).

For comparison the old cache (one .npz rewritten whole every 640 encodes, and at the end) is run on
`--old-vectors` (its bytes grow with the square of the count, so 100k would write ~40 GB), and its 100k figure
is worked out from its rule: every rewrite writes all vectors so far.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.report import write_section
from shoplens.atomic import atomic_write
from shoplens.vectors.embedcache import EmbeddingCache


def written_bytes() -> int:
    """Bytes this process has passed to write() and its kin so far."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise OSError("no wchar in /proc/self/io")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def keys(n: int, offset: int = 0) -> list[str]:
    return [f"{i + offset:064x}" for i in range(n)]  # sha256-like hex content hashes


def run_new(n: int, dim: int, batch: int, rng: np.random.Generator) -> dict:
    with tempfile.TemporaryDirectory(prefix="shoplens-bench-cache-") as tmp:
        folder = Path(tmp)
        cache = EmbeddingCache(folder / "bench.sqlite", dim, {"encoder": "bench", "dim": dim})
        names = keys(n)
        before, started = written_bytes(), time.perf_counter()
        for start in range(0, n, batch):
            chunk = names[start:start + batch]
            cache.put_many(dict(zip(chunk, rng.standard_normal((len(chunk), dim), dtype=np.float32))))
        cache.close()  # the last checkpoint of SQLite's log into the database
        seconds, written = time.perf_counter() - started, written_bytes() - before
        on_disk = folder_bytes(folder)
        again = EmbeddingCache(folder / "bench.sqlite", dim)
        sample = [names[i] for i in rng.choice(n, 32, replace=False)]
        t0 = time.perf_counter()
        got = again.get_many(sample)
        lookup_ms = (time.perf_counter() - t0) * 1000
        assert len(got) == 32 and len(again) == n
        again.close()
    return {"written": written, "seconds": seconds, "on_disk": on_disk, "lookup_ms": lookup_ms}


def run_old(n: int, dim: int, batch: int, rng: np.random.Generator, every: int = 640) -> dict:
    """The cache before: a dict in memory, the whole .npz written atomically every `every` encodes and at the end."""
    with tempfile.TemporaryDirectory(prefix="shoplens-bench-npz-") as tmp:
        path = Path(tmp) / "bench.npz"
        known: dict[str, np.ndarray] = {}
        names = keys(n)

        def save() -> None:
            hashes = np.array(list(known), dtype="U64")
            matrix = np.stack(list(known.values())).astype(np.float32)
            atomic_write(path, lambda t: np.savez(t, hashes=hashes, vectors=matrix), suffix=".npz")

        before, started, done = written_bytes(), time.perf_counter(), 0
        for start in range(0, n, batch):
            chunk = names[start:start + batch]
            known.update(zip(chunk, rng.standard_normal((len(chunk), dim), dtype=np.float32)))
            if (done + len(chunk)) // every > done // every:
                save()
            done += len(chunk)
        save()
        return {"written": written_bytes() - before, "seconds": time.perf_counter() - started}


def old_rule_bytes(n: int, dim: int, batch: int, every: int = 640) -> int:
    """The old cache's vector bytes written for n vectors: every save writes all vectors so far (keys left out)."""
    total, done = 0, 0
    for start in range(0, n, batch):
        size = min(batch, n - start)
        if (done + size) // every > done // every:
            total += (done + size) * dim * 4
        done += size
    return total + n * dim * 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--old-vectors", type=int, default=10_000)
    parser.add_argument("--no-write", action="store_true", help="print, do not write docs/benchmarks.md")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    size = args.vectors * args.dim * 4
    new = run_new(args.vectors, args.dim, args.batch, rng)
    small_new = run_new(args.old_vectors, args.dim, args.batch, rng)
    old = run_old(args.old_vectors, args.dim, args.batch, rng)
    small_size = args.old_vectors * args.dim * 4
    ratio = new["written"] / size
    mb = 1e6
    rows = [
        f"| append-only SQLite + vector file (this) | {args.vectors:,} | {size / mb:,.0f} MB | "
        f"{new['written'] / mb:,.0f} MB | **{ratio:.3f}x** | {new['seconds']:.1f} s | {new['on_disk'] / mb:,.0f} MB |",
        f"| append-only SQLite + vector file (this) | {args.old_vectors:,} | {small_size / mb:,.0f} MB | "
        f"{small_new['written'] / mb:,.0f} MB | {small_new['written'] / small_size:.3f}x | "
        f"{small_new['seconds']:.1f} s | |",
        f"| whole .npz every 640 encodes (before) | {args.old_vectors:,} | {small_size / mb:,.0f} MB | "
        f"{old['written'] / mb:,.0f} MB | {old['written'] / small_size:.2f}x | {old['seconds']:.1f} s | |",
        f"| whole .npz every 640 encodes (before), by its rule | {args.vectors:,} | {size / mb:,.0f} MB | "
        f"{old_rule_bytes(args.vectors, args.dim, args.batch) / mb:,.0f} MB | "
        f"{old_rule_bytes(args.vectors, args.dim, args.batch) / size:.0f}x | not run | |",
    ]
    verdict = "met" if ratio <= 1.2 else "NOT met"
    body = f"""Bytes written by the embedding cache for {args.vectors:,} vectors of {args.dim} float32 (the default
encoder's size), put {args.batch} at a time as the sync does; bytes are what the process handed to write()
(`wchar` of /proc/self/io: vector file, SQLite log and checkpoints). Random vectors, 64-hex-digit keys.

| cache | vectors | their size | written | written / size | time | on disk |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Target: at most 1.2x the vectors' size for 100k vectors: {ratio:.3f}x, **{verdict}**. A lookup of 32 random
keys in the {args.vectors:,}-vector cache took {new['lookup_ms']:.1f} ms. The old cache's last row is computed from
its rule (each rewrite writes every vector so far, keys not counted), not run."""
    print(body)
    if not args.no_write:
        write_section("embedcache", body)


if __name__ == "__main__":
    main()
