"""Web app benchmarks: cold start to the first page, search latency through gradio_client, 16 parallel clients.

python -m benchmarks.app [--index DIR] [--catalog DIR] [--searches 100] [--text-searches 100] [--clients 16]
                         [--per-client 50]

The index defaults to benchmarks/out/app-index-10k, built once (a few minutes) from the shared
fashion-product-images-small set (9,583 products) with the default encoder (and text vectors, the catalog has
titles). When the index has text vectors, /search_text is timed too (one client, words only).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from benchmarks.report import write_section

REPO = Path(__file__).resolve().parent.parent
DEFAULT_INDEX = REPO / "benchmarks" / "out" / "app-index-10k"
DEFAULT_CATALOG = REPO.parent / "shared" / "datasets" / "fashion-product-images-small"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_index(index: Path, catalog: Path) -> None:
    if (index / "index.json").exists():
        return
    print(f"building {index} from {catalog} (one time) ...", flush=True)
    subprocess.run([sys.executable, "indexer.py", str(catalog), "--index", str(index), "--quiet"], cwd=REPO,
                   check=True)


def start(index: Path, port: int, repo: Path = REPO, timeout: float = 120) -> tuple[subprocess.Popen, float]:
    """Start `repo`'s app.py and return it with the seconds until the first page (HTML and config) was served."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py", "--index", str(index), "--port", str(port)], cwd=repo,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited with status {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200 and httpx.get(url + "config", timeout=5).status_code == 200:
                return proc, time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"app.py did not serve its first page within {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def client_for(url: str):
    from gradio_client import Client

    return Client(url, download_files=False, verbose=False, analytics_enabled=False)


def timed_searches(url: str, photos: list[Path], n: int, offset: int = 0,
                   api_name: str = "/search", items: list[int] | None = None) -> tuple[list[float], int]:
    """n photo searches through one client (`/search`, or `/show_items`: the products found in the photo, each
    searched); per-search seconds and the number of errors. `items` collects how many products each photo had."""
    from gradio_client import handle_file

    client = client_for(url)
    times, errors = [], 0
    for i in range(n):
        photo = photos[(offset + i) % len(photos)]
        t = time.perf_counter()
        try:
            outputs = client.predict(photo=handle_file(str(photo)), api_name=api_name)
            results = next(o for o in outputs if isinstance(o, dict) and "results" in o)
            if not results.get("results"):
                errors += 1
            elif items is not None:
                items.append(max(len(results.get("items", [])) - 1, 0))
        except Exception:  # noqa: BLE001 - counted, reported
            errors += 1
        times.append(time.perf_counter() - t)
    client.close()
    return times, errors


TEXT_QUERIES = ["navy blue tshirts", "red running shoes", "black leather handbag", "white sneakers",
                "women blue jeans", "men formal shirt", "gold watch", "pink kurta", "brown sandals",
                "green sports shorts", "black sunglasses", "grey hoodie", "kids dress", "silver earrings",
                "men black belt", "white casual shirt", "yellow top", "blue backpack", "women heels", "red saree"]


def text_queries(meta: dict, n: int, seed: int = 0) -> list[str]:
    """The hand-written queries above, then product titles of the catalog (seeded sample) up to n."""
    from shoplens.catalog import read_catalog

    titles = sorted({p.metadata["title"] for p in read_catalog(meta["catalog_root"], meta.get("layout", "auto")).products
                     if p.metadata.get("title")})
    rng = np.random.default_rng(seed)
    extra = max(n - len(TEXT_QUERIES), 0)
    picked = [titles[i] for i in rng.choice(len(titles), min(extra, len(titles)), replace=False)]
    return (TEXT_QUERIES + picked)[:n]


def timed_text_searches(url: str, queries: list[str]) -> tuple[list[float], int]:
    """One search by words (no photo) per query through one client; per-search seconds and the number of errors."""
    client = client_for(url)
    times, errors = [], 0
    for words in queries:
        t = time.perf_counter()
        try:
            _, _, results = client.predict(words=words, photo=None, api_name="/search_text")
            if not results.get("results"):
                errors += 1
        except Exception:  # noqa: BLE001 - counted, reported
            errors += 1
        times.append(time.perf_counter() - t)
    client.close()
    return times, errors


def ms(values, q) -> str:
    return f"{np.percentile(values, q) * 1000:.0f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.app", description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=DEFAULT_INDEX)
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG, help="built into --index when it is missing")
    parser.add_argument("--searches", type=int, default=100)
    parser.add_argument("--text-searches", type=int, default=100, help="searches by words (when the index has text)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--per-client", type=int, default=50)
    parser.add_argument("--no-write", action="store_true", help="print, do not update docs/benchmarks.md")
    args = parser.parse_args(argv)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

    ensure_index(args.index, args.catalog)
    meta = json.loads((args.index / "index.json").read_text())
    root = Path(meta["catalog_root"])
    photos = sorted(p for p in root.rglob("*.jpg"))[::97][:64]  # spread over the catalog
    has_text = bool(meta.get("text")) and args.text_searches > 0
    queries = text_queries(meta, args.text_searches) if has_text else []

    port = free_port()
    load_start = os.getloadavg()
    proc, cold = start(args.index, port)
    url = f"http://127.0.0.1:{port}/"
    try:
        timed_searches(url, photos, 5)  # warm-up: encoder and localiser weights, caches
        single, single_errors = timed_searches(url, photos, args.searches)
        timed_searches(url, photos, 3, api_name="/show_items")  # warm-up: the localiser's weights
        found: list[int] = []
        item_times, item_errors = timed_searches(url, photos, args.searches, api_name="/show_items", items=found)
        single_errors += item_errors
        if has_text:
            timed_text_searches(url, TEXT_QUERIES[:5])  # warm-up: sentence model, bridge
            text_times, text_errors = timed_text_searches(url, queries)
        load_single = os.getloadavg()  # after the one-client runs, before the parallel clients
        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            runs = list(pool.map(lambda c: timed_searches(url, photos, args.per_client, c * 7), range(args.clients)))
        wall = time.perf_counter() - started
    finally:
        stop(proc)
    from shoplens.store import open_store

    with open_store(args.index) as store:  # after the app let go of the index
        count = store.count()
    loaded = [t for times, _ in runs for t in times]
    errors = sum(e for _, e in runs)
    total = args.clients * args.per_client

    load_end = os.getloadavg()
    if has_text:
        text_row = (f"| search by words (`/search_text`, no photo), one client, {len(text_times)} searches: p50 / p95 "
                    f"| {ms(text_times, 50)} / {ms(text_times, 95)} | reported |\n")
        text_note = (f"Searches by words: {min(len(TEXT_QUERIES), len(queries))} short queries such as \"navy blue "
                     f"tshirts\", then catalog product titles (seeded sample); BM25 and MiniLM fused, errors (no "
                     f"results or a failure): {text_errors}.\n")
    else:
        text_row = text_note = ""
        if args.text_searches > 0:
            text_note = "Searches by words: not measured, the index has no text vectors (rebuild it to add them).\n"
    body = f"""
Index: {count:,} products, `{args.index.relative_to(REPO) if args.index.is_relative_to(REPO) else args.index}`,
{meta.get('encoder')} encoder, catalog `{root.name}`; query photos are {len(photos)} catalog photos, uploaded as files. The app runs as
`python app.py --index ...` in its own process (queue concurrency 4); clients are `gradio_client.Client` with
`download_files=False`, on the same machine.

| what | result | target |
|---|---|---|
| cold start: `python app.py` to the first page (`/` and `/config` served) | {cold:.2f} s | ≤ 6 s |
| search latency, one client, {len(single)} searches: p50 / p95 | {ms(single, 50)} / {ms(single, 95)} | p50 ≤ 150 ms |
| products in the photo (`/show_items`: localiser, then each box searched), one client: p50 / p95 | {ms(item_times, 50)} / {ms(item_times, 95)} | reported |
| {args.clients} parallel clients x {args.per_client} searches: errors | {errors} of {total} | 0 |
| {args.clients} parallel clients: p50 / p95 per search | {ms(loaded, 50)} / {ms(loaded, 95)} | reported |
| {args.clients} parallel clients: throughput | {total / wall:.1f} searches/s | reported |
{text_row}
Photo search latency is end to end through the client (`/search`): upload of the photo, queueing, decoding,
encoding, searching the whole photo with the colour re-ranking, and the 12-result gallery (captions and photo
URLs) coming back. The page then runs `/show_items` as a follow-up event: the saliency localiser and a search
for each product box it finds (on average {np.mean(found) if found else 0:.1f} boxes per query photo here; called on
its own, as timed, it also searches the whole photo again), so the first results never wait for the localiser.
Single-client errors (both endpoints): {single_errors}.
{text_note}Load average (1 min / 5 min) on {os.cpu_count()} cores: {load_start[0]:.1f} / {load_start[1]:.1f} before the app
started, {load_single[0]:.1f} / {load_single[1]:.1f} after the one-client runs, {load_end[0]:.1f} / {load_end[1]:.1f} at the end (the
{args.clients} clients and the app load the cores themselves; the machine is also shared, so figures on an idle
machine are lower).
"""
    print(body)
    if not args.no_write:
        write_section("app", body)
    return 0 if errors == 0 and single_errors == 0 and (not has_text or text_errors == 0) else 1


if __name__ == "__main__":
    sys.exit(main())
