"""Memory of the web app under hostile uploads: 16 photos at once whose pixels cost far more than their bytes.

python -m benchmarks.uploads [--clients 16] [--products 200] [--probes NAME,...] [--repo DIR] [--label TEXT]
                             [--no-write]

Builds (once) a small index of the first `--products` products of fashion-product-images-small with the
default encoder (and text vectors: the catalog has titles), starts `python app.py` on it in its own process,
and for each probe photo (a fresh app each time) warms it up with one ordinary search, then sends `--clients` concurrent uploads through gradio_client
(one client per thread) of that photo and samples the app process's RSS every 10 ms:

- `normal`: a catalog photo (60x80 JPEG), the ordinary search the others are compared with;
- `bomb`: a ~12 KB PNG of 6000x6600 pixels (39.6 MP, one colour): cheap to send, costly to decode;
- `budget`: a PNG of 4000x4000 (16 MP) with some detail: the largest PNG the app still decodes;
- `strip`, `wide`: a ~120-byte PNG of 1x10000 and of 20000x1 pixels: within every pixel budget, but a
  preprocessing step that scales the short side to 224 first makes a 224 x 2,240,000 picture of it.

Reported per probe: RSS before, the peak during the burst, RSS 3 s after it, the wall time and what the
clients were told (the status line, first 120 characters), and for every probe measured with `normal` in
the same run, its extra peak and extra wall time per upload over `normal`. `--label` names the run in
docs/benchmarks.md (a "before" run of the old code, `--repo` a checkout of it, and an "after" run are
kept side by side; a rerun replaces only the rows of its own label and probes).
"""

from __future__ import annotations

import argparse
import csv
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

from benchmarks.app import free_port, start, stop
from benchmarks.common import FASHION_SMALL, OUT, load_note
from benchmarks.report import write_section

REPO = Path(__file__).resolve().parent.parent
TARGET_MB = 1536
TARGET_EXTRA_MB = 200  # any upload within the pixel budget, over a normal search's peak
TARGET_EXTRA_S = 1.0  # and over a normal search's time, per upload
PROBES = ("normal", "bomb", "budget", "strip", "wide")


def ensure_index(index: Path, products: int) -> None:
    """A manifest of the first `products` catalog products (absolute photo paths), indexed once."""
    if (index / "index.json").exists():
        return
    catalog = index.parent / f"uploads-catalog-{products}"
    catalog.mkdir(parents=True, exist_ok=True)
    with open(FASHION_SMALL / "styles.csv", newline="", encoding="utf-8", errors="replace") as fh:
        rows = [r for r in csv.DictReader(fh) if (FASHION_SMALL / "images" / f"{r['id']}.jpg").exists()][:products]
    with open(catalog / "products.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "path", "title", "category", "gender"])
        for r in rows:
            writer.writerow([r["id"], str(FASHION_SMALL / "images" / f"{r['id']}.jpg"), r["productDisplayName"],
                             r["articleType"], r["gender"]])
    subprocess.run([sys.executable, "indexer.py", str(catalog / "products.csv"), "--index", str(index), "--quiet"],
                   cwd=REPO, check=True)


def probe_photos(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    bomb = folder / "bomb-6000x6600.png"
    if not bomb.exists():
        Image.new("1", (6000, 6600), 1).save(bomb, optimize=True)
    budget = folder / "budget-4000x4000.png"
    if not budget.exists():
        rng = np.random.default_rng(0)
        small = rng.integers(0, 255, (50, 50, 3), dtype=np.uint8)  # blocks of colour: compresses, still decodes
        Image.fromarray(small).resize((4000, 4000), Image.NEAREST).save(budget, optimize=True)
    strips = {}
    for name, size in (("strip", (1, 10000)), ("wide", (20000, 1))):
        strips[name] = folder / f"{name}-{size[0]}x{size[1]}.png"
        if not strips[name].exists():
            Image.new("RGB", size, (200, 30, 30)).save(strips[name], optimize=True)
    return {"normal": FASHION_SMALL / "images" / "10001.jpg", "bomb": bomb, "budget": budget, **strips}


class Sampler(threading.Thread):
    """Samples a process's RSS (MiB) every 10 ms until stopped; keeps the peak."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = 0.0
        self.running = True

    def rss(self) -> float:
        return self.proc.memory_info().rss / 2**20

    def run(self):
        while self.running:
            try:
                self.peak = max(self.peak, self.rss())
            except psutil.Error:
                return
            time.sleep(0.01)


def upload(url: str, photo: Path) -> str:
    from gradio_client import Client, handle_file

    client = None
    try:
        client = Client(url, download_files=False, verbose=False, analytics_enabled=False,
                        httpx_kwargs={"timeout": 120})
        _, status, _ = client.predict(photo=handle_file(str(photo)), api_name="/search")
        return str(status)
    except Exception as exc:  # noqa: BLE001 - reported
        return f"client error: {type(exc).__name__} {exc}"
    finally:
        if client is not None:
            client.close()


def burst(url: str, pid: int, photo: Path, clients: int) -> dict:
    sampler = Sampler(pid)
    before = sampler.rss()
    sampler.start()
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        statuses = list(pool.map(lambda _: upload(url, photo), range(clients)))
    seconds = time.perf_counter() - started
    time.sleep(3)
    sampler.running = False
    sampler.join()
    return {"before": before, "peak": sampler.peak, "after": sampler.rss(), "seconds": seconds,
            "status": sorted(set(short(s) for s in statuses))}


def short(status: str) -> str:
    """A status line for the table: no HTML, no Markdown escapes, no timings, one line, 120 characters."""
    text = re.sub(r"<[^>]+>", "", status).replace("\\", "").replace("|", "/").replace("\n", " ")
    return re.sub(r"\d+ ms", "… ms", text).strip()[:120]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--products", type=int, default=200)
    parser.add_argument("--probes", default=",".join(PROBES), help=f"comma-separated, of {', '.join(PROBES)}")
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose app.py runs (a 'before' run)")
    parser.add_argument("--label", default="after")
    parser.add_argument("--no-write", action="store_true", help="print only, leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    wanted = [p.strip() for p in args.probes.split(",") if p.strip()]
    unknown = sorted(set(wanted) - set(PROBES))
    if unknown:
        parser.error(f"unknown probes {unknown}; choose from {', '.join(PROBES)}")

    index = OUT / f"uploads-index-{args.products}"
    ensure_index(index, args.products)
    photos = {name: path for name, path in probe_photos(OUT / "upload-probes").items() if name in wanted}
    rows, warm = {}, ""
    for name, path in photos.items():  # a fresh app per probe: one probe's leftovers do not count for the next
        port = free_port()
        proc, _ = start(index, port, args.repo, timeout=900)  # a busy shared machine starts it slowly
        url = f"http://127.0.0.1:{port}/"
        try:
            warm = upload(url, FASHION_SMALL / "images" / "10000.jpg")  # weights loaded, one ordinary search done
            time.sleep(2)
            rows[name] = burst(url, proc.pid, path, args.clients)
        finally:
            stop(proc)
    normal = rows.get("normal")
    lines = []
    for name, r in rows.items():
        size = photos[name].stat().st_size
        shown = f"{size} B" if size < 1024 else f"{size / 1024:.0f} KB"
        extra = "–"
        if normal is not None and name != "normal":
            extra = (f"{r['peak'] - normal['peak']:+.0f} MB, "
                     f"{(r['seconds'] - normal['seconds']) / args.clients:+.2f} s")
        lines.append(f"| {args.label} | {name} ({shown}) | {args.clients} | {r['before']:.0f} MB | "
                     f"**{r['peak']:.0f} MB** | {r['after']:.0f} MB | {r['seconds']:.1f} s | {extra} | "
                     f"{'; '.join(r['status'])} |")
    print(f"warm-up search: {warm[:80]}")
    print("\n".join(lines))
    if not args.no_write:
        record(lines, args, list(photos))
    return 0


def record(lines: list[str], args, probes: list[str]) -> None:
    """Keep the rows of other labels and probes; replace this label's rows of the probes just measured."""
    from benchmarks.report import DOC

    old = re.search(r"<!-- bench:uploads -->.*?<!-- /bench:uploads -->", DOC.read_text(), re.S)
    kept = []
    for line in old.group(0).splitlines() if old else []:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| ") or cells[0] == "run":
            continue
        if len(cells) == 7:  # a row from before the clients and extra columns: all those runs had 16 clients
            cells = cells[:2] + ["16"] + cells[2:6] + ["–"] + cells[6:]
        if cells[0] == args.label and cells[1].split(" (")[0] in probes:
            continue
        kept.append("| " + " | ".join(cells) + " |")
    body = (f"Index: the first {args.products} products of fashion-product-images-small, default encoder, text "
            f"vectors; `python app.py` in its own process (queue concurrency 4), a fresh one per probe. `clients` "
            f"clients (`gradio_client`, one per thread) upload the same photo at once; the app's RSS is sampled "
            f"every 10 ms. `normal`: a 60x80 catalog JPEG, an ordinary search; `bomb`: a one-colour PNG of "
            f"6000x6600 pixels (39.6 MP) of a few KB; `budget`: a PNG of 4000x4000 (16 MP, the upload pixel "
            f"budget); `strip`, `wide`: PNGs of 1x10000 and 20000x1 pixels (~120 bytes). `over normal`: the peak "
            f"minus `normal`'s peak, and the wall time minus `normal`'s per upload, same run. Targets: peak ≤ "
            f"{TARGET_MB} MB for `bomb`; any upload within the budget ≤ {TARGET_EXTRA_MB} MB and ≤ "
            f"{TARGET_EXTRA_S:.0f} s per upload over `normal`.\n\n"
            "Since issue 14: an upload is decoded within 16 megapixels (a JPEG at its draft scale; any "
            "other format is refused from its header, before a pixel is decoded), at most 2 at once across all "
            "requests, and shrunk by a whole factor right after decoding; glibc's mmap threshold is fixed at 1 MiB "
            "so freed photo memory goes back to the system instead of staying with the process. `before`: the code "
            "before issue 14 (commit a76d53d; run 2026-12-02, 16 clients). Since issue 19 (`after`): crop-mode preprocessing cuts a strip "
            "longer than 4:1 before resizing it, so a 1x10000 photo costs a 224 x 224 picture; `before-19`: the "
            "code before issue 19 (commit 805bcfd), same machine and day as `after`. Shared 2-core machine "
            f"({load_note()}): wall times are noisy.\n\n"
            "| run | photo | clients | RSS before | peak | RSS 3 s after | wall | over normal | what the clients "
            "were told |\n"
            "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(sorted(kept + lines)) + "\n")
    write_section("uploads", body)


if __name__ == "__main__":
    sys.exit(main())
