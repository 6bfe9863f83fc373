"""Web app benchmarks: a crowd on one shared link. In one run, on one index: photo searches in-process (serial)
against the app with 1, 16 and 64 clients, with and without fetching the result thumbnails; searches by words
with 16 clients; the app's memory under 64 clients x 20 searches; where one search's time goes.

python -m benchmarks.app [--index DIR] [--catalog DIR] [--baseline DIR] [--serial 60] [--single 40]
                         [--per-client 8] [--crowd-per-client 20] [--text-per-client 8] [--no-write]

The index defaults to benchmarks/out/app-index-fashion, built once from the shared fashion-images set (2,906
products, default encoder, text vectors). Every upload is a distinct file (a catalog photo with a few random
bytes after its end), so no cache of an earlier upload answers a search. `--baseline DIR` also times the app
of another checkout (`DIR/app.py`, say the code before a change) on the same index, in the same run, for the
16-client rows: before and after side by side.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import time
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil

from benchmarks.report import write_section

REPO = Path(__file__).resolve().parent.parent
DEFAULT_INDEX = REPO / "benchmarks" / "out" / "app-index-fashion"
DEFAULT_CATALOG = REPO.parent / "shared" / "datasets" / "fashion-images"


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


def start(index: Path, port: int, root: Path = REPO, timeout: float = 300) -> tuple[subprocess.Popen, float]:
    """Start `root`/app.py and return it with the seconds until the first page (HTML and config) was served."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py", "--index", str(index), "--port", str(port)], cwd=root,
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

    # A long timeout: 64 clients connecting to an app on two busy cores wait more than httpx's default 5 s.
    return Client(url, download_files=False, verbose=False, analytics_enabled=False, httpx_kwargs={"timeout": 120})


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


def unique_uploads(photos: list[Path], folder: Path, n: int, seed: int = 0) -> list[Path]:
    """n distinct upload files: catalog photos with 16 random bytes after the image's end (decoders stop before
    them), so Gradio stores each as a new file and no earlier upload's decode or vector is reused."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        src = photos[i % len(photos)]
        path = folder / f"u{seed}-{i:05d}{src.suffix}"
        path.write_bytes(src.read_bytes() + rng.bytes(16))
        out.append(path)
    return out


@dataclass
class Run:
    """What one configuration measured: per-search seconds, errors, wall time, result thumbnails fetched."""

    times: list[float] = field(default_factory=list)
    errors: int = 0
    wall: float = 0.0
    fetched: int = 0
    statuses: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.times)

    @property
    def rate(self) -> float:
        return self.count / self.wall if self.wall else 0.0

    def p(self, q: float) -> float:
        return float(np.percentile(self.times, q)) if self.times else float("nan")


def image_urls(value, base: str) -> list[str]:
    """The URLs of the images in a gallery value as gradio_client returns it (download_files=False)."""
    urls = []
    for tile in value or []:
        image = tile.get("image") if isinstance(tile, dict) else tile[0] if isinstance(tile, (list, tuple)) else None
        url = image.get("url") if isinstance(image, dict) else None
        if url:
            urls.append(url if url.startswith("http") else base.rstrip("/") + "/" + url.lstrip("/"))
    return urls


def crowd(url: str, clients: int, jobs: list[list], call, fetch: bool) -> Run:
    """`clients` gradio_client clients (one thread each), connected first, then all searching at once; client c
    runs call(client, job) for each job of jobs[c] and, with `fetch`, then GETs the result thumbnails as a
    browser does. A search is an error when it raises or returns no results."""
    with ThreadPoolExecutor(4) as pool:
        made = list(pool.map(lambda _: client_for(url), range(clients)))
    run = Run()
    lock = threading.Lock()
    ready = threading.Barrier(clients + 1)

    def work(c: int):
        client, http = made[c], httpx.Client(timeout=60)
        ready.wait()
        for job in jobs[c]:
            t = time.perf_counter()
            ok, got, status = False, 0, ""
            try:
                gallery, status, results = call(client, job)
                ok = bool(results.get("results"))
                if ok and fetch:
                    for link in image_urls(gallery, url):
                        got += http.get(link).status_code == 200
            except Exception as exc:  # noqa: BLE001 - counted, reported
                status = f"{type(exc).__name__}: {exc}"
            spent = time.perf_counter() - t
            with lock:
                run.times.append(spent)
                run.fetched += got
                if not ok:
                    run.errors += 1
                    run.statuses.append(str(status)[:120])
        http.close()
        client.close()

    threads = [threading.Thread(target=work, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    run.wall = time.perf_counter() - started
    return run


def photo_call(client, path: Path):
    from gradio_client import handle_file

    return client.predict(photo=handle_file(str(path)), api_name="/search")


def words_call(client, words: str):
    return client.predict(words=words, photo=None, api_name="/search_text")


def split(items: list, clients: int, per_client: int) -> list[list]:
    """per_client items for each client, taken in turn from `items` (distinct while there are enough)."""
    return [[items[(c * per_client + i) % len(items)] for i in range(per_client)] for c in range(clients)]


def serial_in_process(index: Path, uploads: list[Path]) -> Run:
    """The same photo searches made one after another through Searcher.search_image in this process: each upload's
    bytes decoded as the app decodes them, encoded, searched (12 results, crop off, colour re-ranking)."""
    from shoplens.query.search import Searcher
    from shoplens.web.shop import Shop

    searcher = Searcher.open(index)
    shop = Shop(searcher, thumbnails=False)
    try:
        for path in uploads[:3]:  # warm-up: weights, caches
            searcher.search_image(shop.read_upload(path.read_bytes()), k=12, crop="off")
        run = Run()
        started = time.perf_counter()
        for path in uploads[3:]:
            t = time.perf_counter()
            results = searcher.search_image(shop.read_upload(path.read_bytes()), k=12, crop="off")
            run.times.append(time.perf_counter() - t)
            run.errors += not results.hits
        run.wall = time.perf_counter() - started
    finally:
        searcher.close()
    return run


class Memory:
    """The app process's RSS (MiB), sampled every 50 ms in a thread."""

    def __init__(self, pid: int):
        self.proc = psutil.Process(pid)
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def now(self) -> float:
        return self.proc.memory_info().rss / 2**20

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def breakdown(index: Path, uploads: list[Path], queries: list[str]) -> tuple[list[tuple[str, float, float]], float]:
    """Where one client's photo search goes: the app served in this process, its steps timed by wrapping them
    (a deterministic profile of the few functions that matter); the rest of the end-to-end time is Gradio's
    HTTP, queue and event stream and the client. Rows: (step, ms per search photo, ms per search by words)."""
    import gradio.blocks as blocks

    from shoplens.query.search import Searcher
    from shoplens.web import serve
    from shoplens.web.shop import Shop

    spent: dict[tuple[str, str], float] = {}
    phase = {"now": "photo"}
    lock = threading.Lock()

    def wrap(owner, name: str, label: str):
        real = getattr(owner, name)

        def count(t: float):
            with lock:
                key = (label, phase["now"])
                spent[key] = spent.get(key, 0.0) + time.perf_counter() - t

        if inspect.iscoroutinefunction(real):  # Gradio's pre- and postprocessing are coroutines
            async def timed(*args, **kwargs):
                t = time.perf_counter()
                try:
                    return await real(*args, **kwargs)
                finally:
                    count(t)
        else:
            def timed(*args, **kwargs):
                t = time.perf_counter()
                try:
                    return real(*args, **kwargs)
                finally:
                    count(t)

        setattr(owner, name, timed)
        return owner, name, real

    wrapped = [wrap(Shop, "read_upload", "decode the upload (one per search)"),
               wrap(Shop, "_embed_batch", "encode (the batch's call)"),
               wrap(Searcher, "colours_of", "the photo's colour profile"),
               wrap(Searcher, "search_embedded", "search the index, colour re-ranking"),
               wrap(Searcher, "search_text", "search by words (BM25, MiniLM, fusion)"),
               wrap(Shop, "gallery", "the gallery's tiles (thumbnails, captions)"),
               wrap(blocks.Blocks, "preprocess_data", "Gradio: inputs (upload checks, states)"),
               wrap(blocks.Blocks, "postprocess_data", "Gradio: outputs (gallery files into its cache, JSON)")]
    app = serve.create(index)
    try:
        url = serve.launch(app, port=free_port(), block=False, quiet=True)
        client = client_for(url)
        for path in uploads[:3]:
            photo_call(client, path)
        words_call(client, queries[0])
        spent.clear()
        started = time.perf_counter()
        for path in uploads[3:]:
            photo_call(client, path)
        photo_total = time.perf_counter() - started
        phase["now"] = "words"
        started = time.perf_counter()
        for words in queries:
            words_call(client, words)
        words_total = time.perf_counter() - started
        client.close()
    finally:
        app.close()
        for owner, name, real in wrapped:
            setattr(owner, name, real)
    n_photo, n_words = max(len(uploads) - 3, 1), max(len(queries), 1)
    rows = []
    for label in dict.fromkeys(label for label, _ in spent):
        rows.append((label, 1000 * spent.get((label, "photo"), 0.0) / n_photo,
                     1000 * spent.get((label, "words"), 0.0) / n_words))
    known_photo = sum(s for (label, ph), s in spent.items() if ph == "photo" and not label.startswith("Gradio")
                      and label != "the gallery's tiles (thumbnails, captions)")
    rows.append(("end to end through the client (all of the above and the rest)",
                 1000 * photo_total / n_photo, 1000 * words_total / n_words))
    return rows, known_photo


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def row(name: str, run: Run, fetch: bool) -> str:
    if run.count and run.errors == run.count:  # nothing was searched: no figure to read
        return f"| {name} | – | {run.count} | invalid: every search failed ({run.statuses[0][:60]}) | | | {run.errors} |"
    thumbs = f"yes ({run.fetched / max(run.count, 1):.1f} per search)" if fetch else "no"
    return (f"| {name} | {thumbs} | {run.count} | {run.rate:.1f} | {ms(run.p(50))} | {ms(run.p(95))} | "
            f"{run.errors} |")


def verdict(ok: bool) -> str:
    return "met" if ok else "**NOT met**"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.app", description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=DEFAULT_INDEX)
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG, help="built into --index when it is missing")
    parser.add_argument("--baseline", type=Path, default=None, help="also time DIR/app.py (16 clients), same index")
    parser.add_argument("--serial", type=int, default=60, help="in-process serial photo searches")
    parser.add_argument("--single", type=int, default=40, help="searches by the one client")
    parser.add_argument("--per-client", type=int, default=8, help="searches per client, 16 and 64 clients")
    parser.add_argument("--crowd-per-client", type=int, default=20, help="searches per client, the memory run")
    parser.add_argument("--text-per-client", type=int, default=8, help="searches by words per client, 16 clients")
    parser.add_argument("--clients", type=int, default=16, help="the parallel clients of the throughput target")
    parser.add_argument("--crowd", type=int, default=64, help="the crowd of the errors and memory targets")
    parser.add_argument("--no-write", action="store_true", help="print, do not update docs/benchmarks.md")
    args = parser.parse_args(argv)
    args.index = args.index.resolve()  # the baseline's app.py runs in another folder
    many, crowd_n = args.clients, args.crowd
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

    ensure_index(args.index, args.catalog)
    meta = json.loads((args.index / "index.json").read_text())
    root = Path(meta["catalog_root"])
    from shoplens.catalog import read_catalog

    products = read_catalog(meta["catalog_root"], meta.get("layout", "auto")).products
    photos = sorted(p.path for p in products)[::max(len(products) // 96, 1)][:96]  # spread over the catalog
    has_text = bool(meta.get("text"))
    queries = text_queries(meta, 64) if has_text else []
    scratch = REPO / "benchmarks" / "out" / "app-uploads"
    n_uploads = max(args.serial + 3, args.single + 8, crowd_n * args.crowd_per_client, crowd_n * args.per_client + 8)
    uploads = unique_uploads(photos, scratch, n_uploads)
    load_start = os.getloadavg()

    serial = serial_in_process(args.index, uploads[:args.serial + 3])
    print(f"in-process serial: {serial.rate:.1f}/s p50 {ms(serial.p(50))}", flush=True)

    rows, runs = [], {}
    port = free_port()
    proc, cold = start(args.index, port)
    url = f"http://127.0.0.1:{port}/"
    memory = {}
    try:
        crowd(url, 1, [uploads[:5]], photo_call, False)  # warm-up: weights, caches
        if has_text:
            crowd(url, 1, [queries[:3]], words_call, False)
        offset = 8
        for fetch in (False, True):
            for clients in (1, many, crowd_n):
                per = args.single if clients == 1 else args.per_client
                if clients == crowd_n and fetch:
                    continue  # the memory run below is this configuration, at 20 searches per client
                jobs = split(uploads[offset:], clients, per)
                run = crowd(url, clients, jobs, photo_call, fetch)
                runs[(clients, fetch)] = run
                rows.append(row(f"app, {clients} client{'s' if clients > 1 else ''}", run, fetch))
                print(rows[-1], flush=True)
        if has_text:
            for fetch in (False, True):
                run = crowd(url, many, split(queries, many, args.text_per_client), words_call, fetch)
                runs[("words", fetch)] = run
                rows.append(row(f"app, {many} clients, search by words", run, fetch))
                print(rows[-1], flush=True)
        mem = Memory(proc.pid)
        memory["start"] = mem.now()
        with mem:
            run = crowd(url, crowd_n, split(uploads, crowd_n, args.crowd_per_client), photo_call, True)
        time.sleep(5)
        memory["peak"], memory["after"] = mem.peak, mem.now()
        runs[(crowd_n, True)] = run
        rows.append(row(f"app, {crowd_n} clients x {args.crowd_per_client} (the memory run)", run, True))
        print(rows[-1], flush=True)
    finally:
        stop(proc)

    base_rows = []
    if args.baseline is not None:
        proc, _ = start(args.index, port, root=args.baseline)
        try:
            crowd(url, 1, [uploads[:5]], photo_call, False)
            if has_text:
                crowd(url, 1, [queries[:3]], words_call, False)
            for fetch in (False, True):
                run = crowd(url, many, split(uploads[8:], many, args.per_client), photo_call, fetch)
                runs[("base", fetch)] = run
                base_rows.append(row(f"**before** (`--baseline`), {many} clients", run, fetch))
                print(base_rows[-1], flush=True)
            if has_text:
                run = crowd(url, many, split(queries, many, args.text_per_client), words_call, False)
                runs[("base-words", False)] = run
                base_rows.append(row(f"**before** (`--baseline`), {many} clients, search by words", run, False))
                print(base_rows[-1], flush=True)
        finally:
            stop(proc)

    try:
        steps, _ = breakdown(args.index, uploads[-(args.single + 3):], queries[:args.single] if has_text else [])
    except Exception as exc:  # noqa: BLE001 - the crowd's figures are still worth writing
        steps = [(f"breakdown failed: {type(exc).__name__}: {exc}", float("nan"), float("nan"))]
    from shoplens.store import open_store

    with open_store(args.index) as store:  # after the app let go of the index
        count = store.count()
    load_end = os.getloadavg()

    r16, r16f, r1 = runs[(many, False)], runs[(many, True)], runs[(1, False)]
    crowd_run = runs[(crowd_n, True)]
    r64 = runs[(crowd_n, False)]
    targets = [
        (f"{many} clients ≥ 1.5x in-process serial (thumbnails not fetched)", f"{r16.rate / serial.rate:.2f}x",
         r16.rate >= 1.5 * serial.rate),
        (f"{many} clients ≥ 1.5x in-process serial (thumbnails fetched)", f"{r16f.rate / serial.rate:.2f}x",
         r16f.rate >= 1.5 * serial.rate),
        ("one client's p50 ≤ 2x the in-process p50", f"{r1.p(50) / serial.p(50):.2f}x",
         r1.p(50) <= 2 * serial.p(50)),
        (f"{crowd_n} clients: 0 errors", f"{r64.errors} + {crowd_run.errors} of {r64.count + crowd_run.count}",
         r64.errors + crowd_run.errors == 0),
        (f"{crowd_n} x {args.crowd_per_client} searches: peak RSS ≤ 1.5 GB", f"{memory['peak']:.0f} MB", memory["peak"] <= 1536),
        ("RSS back within 10 % of the start afterwards",
         f"{memory['start']:.0f} → {memory['after']:.0f} MB ({(memory['after'] / memory['start'] - 1) * 100:+.1f} %)",
         memory["after"] <= 1.1 * memory["start"]),
    ]
    if ("base-words", False) in runs:
        before, after = runs[("base-words", False)], runs[("words", False)]
        targets.append((f"search by words, {many} clients ≥ 3x before", f"{after.rate / before.rate:.2f}x "
                        f"({before.rate:.1f} → {after.rate:.1f} searches/s)", after.rate >= 3 * before.rate))
    if ("base", False) in runs:
        targets.append((f"photo search, {many} clients, after / before (reported)",
                        f"{r16.rate / runs[('base', False)].rate:.2f}x", True))
    where = args.index.relative_to(REPO) if args.index.is_relative_to(REPO) else args.index
    table = "\n".join(rows + base_rows)
    target_table = "\n".join(f"| {name} | {value} | {verdict(ok) if 'reported' not in name else 'reported'} |"
                             for name, value, ok in targets)
    step_rows = "\n".join(f"| {label} | {photo:.1f} | {words:.1f} |" for label, photo, words in steps)
    body = f"""
Index: {count:,} products, `{where}`, {meta.get('encoder')} encoder, catalog `{root.name}`. Query photos: {len(photos)}
catalog photos spread over the catalog, each upload a distinct file (random bytes after the image's end), so
nothing an earlier upload left in a cache answers a search. The app runs as `python app.py --index ...` in its own
process; clients are `gradio_client.Client` (one thread each, `download_files=False`, connected before the clock
starts) on the same machine; "thumbnails" = each client then GETs the result tiles' image URLs as a browser does.
Errors: a search that raised or returned no results (a "busy" answer counts as an error).

In-process serial (`Searcher.search_image` on the decoded upload, one after another, {serial.count} searches):
**{serial.rate:.1f} searches/s**, p50 {ms(serial.p(50))}, p95 {ms(serial.p(95))}. Cold start to the first page: {cold:.2f} s.

| configuration | thumbnails | searches | searches/s | p50 | p95 | errors |
|---|---|---|---|---|---|---|
{table}

| target (ratios: the machine is shared) | measured | |
|---|---|---|
{target_table}

Where one client's search goes (the app served in the benchmark's process, one client, {max(len(uploads[-(args.single + 3):]) - 3, 1)} photo searches and
{len(queries[:args.single])} searches by words; each step timed by wrapping its function; ms per search; "encode" is the
batch call, which one search has to itself here):

| step | photo ms | words ms |
|---|---|---|
{step_rows}

Load average (1 min / 5 min) on {os.cpu_count()} cores: {load_start[0]:.1f} / {load_start[1]:.1f} at the start,
{load_end[0]:.1f} / {load_end[1]:.1f} at the end. Other jobs share these cores, and the clients run on them too:
read the ratios (measured in the same run), not the absolute figures.
"""
    print(body)
    if not args.no_write:
        write_section("app", body)
    return 0 if all(ok for _, _, ok in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
