"""Bytes a visitor downloads per results page, with gallery thumbnails and without (issue 11).

python -m benchmarks.thumbs [--products 72] [--no-write]

Makes `--products` synthetic 1800x2400 JPEG product photos (textured, so each is photo-sized), indexes them
with the tiny encoder, serves the app in this process twice (galleries showing the full photos: `before`;
showing 320 px thumbnails: `after`), and through gradio_client runs a photo search for 24 results and opens
the first browse page (24 products), then fetches every gallery image URL the page would load and sums the
bytes; opening one product (its full photo) is counted apart. In headless Chromium (Debian's), the time
from choosing the photo to every result tile painted, on localhost and on a throttled 20 Mbit/s link. The first `after` page also makes the
thumbnails (timed); a second search shows the cached cost.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from benchmarks.report import write_section


def make_photos(folder: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        noise = rng.integers(0, 60, (2400 // 6, 1800 // 6, 3), dtype=np.uint8)
        img = Image.fromarray(noise).resize((1800, 2400), Image.BICUBIC)
        colour = tuple(int(c) for c in rng.integers(40, 230, 3))
        img.paste(Image.new("RGB", (900 + 10 * i, 1300), colour), (450, 500))
        path = folder / f"group{i % 3}" / f"product{i:03d}.jpg"  # a category per subfolder, to browse
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(index: Path, thumbnails: bool):
    from shoplens.query.search import Searcher
    from shoplens.web.serve import WebApp, launch
    from shoplens.web.shop import Shop
    from shoplens.web.ui import build

    searcher = Searcher.open(index)
    shop = Shop(searcher, 24, thumbnails=thumbnails)
    photos = shop.photos
    app = WebApp(build(shop, 24), photos.folders(), searcher, photos)
    launch(app, host="127.0.0.1", port=free_port(), block=False, quiet=True)
    return app


def page_bytes(url: str, gallery: list) -> tuple[int, int]:
    total = 0
    for item in gallery:
        image = item["image"]
        got = httpx.get(image["url"] if image.get("url") else f"{url}/gradio_api/file={image['path']}", timeout=30)
        got.raise_for_status()
        total += len(got.content)
    return total, len(gallery)


CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# (name, download bytes/s or None for no throttling): a 20 Mbit/s line is a good shop visitor's phone.
LINKS = [("localhost", None), ("20 Mbit/s", 20e6 / 8)]


def painted_seconds(url: str, query: Path, profile: Path) -> dict[str, float]:
    """Seconds from choosing the photo to every result tile of the gallery painted, in headless Chromium."""
    from playwright.sync_api import sync_playwright

    out = {}
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(str(profile), executable_path=str(CHROMIUM), args=FLAGS,
                                                        headless=True, viewport={"width": 1280, "height": 900})
        try:
            for name, rate in LINKS:
                page = context.new_page()
                page.set_default_timeout(120_000)
                if rate:
                    cdp = context.new_cdp_session(page)
                    cdp.send("Network.enable")
                    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 20,
                                                                  "downloadThroughput": rate,
                                                                  "uploadThroughput": rate})
                    cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
                page.goto(url)
                page.wait_for_selector("#photo input[type=file]", state="attached")
                started = time.perf_counter()
                page.locator("#photo input[type=file]").set_input_files(str(query))
                page.wait_for_function("""() => {
                    const imgs = [...document.querySelectorAll('#results .thumbnail-item img')];
                    return imgs.length >= 12 && imgs.every(i => i.complete && i.naturalWidth > 0);
                }""")
                out[name] = time.perf_counter() - started
                page.wait_for_timeout(2000)  # the page's follow-up requests (boxes in the photo) end first
                page.close()
        finally:
            context.close()
    return out


def measure(index: Path, query: Path, thumbnails: bool) -> dict:
    from gradio_client import Client, handle_file

    app = serve(index, thumbnails)
    try:
        client = Client(app.url, download_files=False, verbose=False, analytics_enabled=False)
        started = time.perf_counter()
        gallery, *_ = client.predict(photo=handle_file(str(query)), k=24, api_name="/search")
        first = time.perf_counter() - started
        search_bytes, n = page_bytes(app.url.rstrip("/"), gallery)
        started = time.perf_counter()
        client.predict(photo=handle_file(str(query)), k=24, api_name="/search")
        again = time.perf_counter() - started
        field = next(f for f in ("category", "sub_category", "folder") if f in app.searcher.filter_fields)
        browse, *_ = client.predict(field, "group0", False, api_name="/browse")
        browse_bytes, nb = page_bytes(app.url.rstrip("/"), browse)
        painted = painted_seconds(app.url, query, Path(tempfile.mkdtemp(prefix="shoplens-chromium-"))) \
            if CHROMIUM.exists() else {}
        return {"painted": painted, "search_bytes": search_bytes, "search_n": n, "browse_bytes": browse_bytes, "browse_n": nb,
                "first_s": first, "again_s": again, "full": query.stat().st_size}
    finally:
        app.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=72)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    from shoplens.catalog import read_catalog
    from shoplens.encoders import create_encoder
    from shoplens.index.sync import sync_catalog
    from shoplens.store import open_store

    work = Path(tempfile.mkdtemp(prefix="shoplens-thumbs-"))
    photos = make_photos(work / "catalog", args.products)
    with open_store(work / "index") as store:
        sync_catalog(read_catalog(work / "catalog"), store, create_encoder("tiny"), progress=False, text=None)
    rows = {name: measure(work / "index", photos[0], on) for name, on in (("before", False), ("after", True))}
    mean_kb = sum(p.stat().st_size for p in photos) / len(photos) / 1024
    lines = [f"{args.products} synthetic 1800x2400 JPEG photos (quality 90, mean {mean_kb:.0f} KB), tiny encoder, "
             "the app in-process on 127.0.0.1; bytes are what the page fetches for the gallery images "
             "(`gradio_client` for the calls, `httpx` for the image URLs). `before`: galleries show the full photos; "
             "`after`: 320 px thumbnails (made on first show, cached beside the index by content hash).", "",
             "| run | search page (24 results) | browse page | opening a product (full photo) | first search | "
             "second search |", "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['search_bytes'] / 1024:,.0f} KB ({r['search_n']} images) | "
                     f"{r['browse_bytes'] / 1024:,.0f} KB ({r['browse_n']} images) | {r['full'] / 1024:,.0f} KB | "
                     f"{r['first_s']:.2f} s | {r['again_s']:.2f} s |")
    b, a = rows["before"], rows["after"]
    if b["painted"]:
        lines += ["", "Time from choosing the photo to all 12 result tiles painted (the page's default), headless "
                  "Chromium, the search itself included; `20 Mbit/s`: the link throttled through the DevTools "
                  "protocol (20 ms latency, cache off; the query photo's upload, 546 KB here, is throttled too). The "
                  "`after` thumbnails were already made by the searches above (the cached, steady state):", "",
                  "| run | " + " | ".join(name for name, _ in LINKS) + " |", "|---|" + "---|" * len(LINKS)]
        for name, r in rows.items():
            lines.append(f"| {name} | " + " | ".join(f"{r['painted'][link]:.2f} s" for link, _ in LINKS) + " |")
    lines += ["", f"Search page: **{b['search_bytes'] / max(a['search_bytes'], 1):.0f}x** fewer bytes; browse page: "
              f"**{b['browse_bytes'] / max(a['browse_bytes'], 1):.0f}x** fewer."]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("thumbs", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
