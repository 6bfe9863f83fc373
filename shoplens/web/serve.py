"""Command line of the web app: optionally index a catalog, open the index once, serve the page."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import io
import json
import logging
import shlex
import socket
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder
from PIL import Image
from starlette.middleware import Middleware

from shoplens.cli import add_store_args, cmd_index
from shoplens.encoders import create_encoder
from shoplens.errors import UserError
from shoplens.index.check import startup_check
from shoplens.index.live import LiveIndex, Watcher, is_locked
from shoplens.query.search import Searcher
from shoplens.store import IndexDamagedError, StoreError
from shoplens.usererrors import USER_ERRORS
from shoplens.web.bodylimit import BodyLimit
from shoplens.web.photos import PhotoGate, Photos
from shoplens.web.shop import MAX_UPLOAD_BYTES, Shop
from shoplens.web.ui import CACHE_EXPIRY, CSS, MAX_PAGE_SIZE, PAGE_SIZE, SEARCH_SLOTS, build, build_message
from shoplens.web.views import redact

log = logging.getLogger("shoplens.web")

# Encoding is CPU-bound: a few at a time keeps 2-8 cores busy without thrashing; the rest wait in line.
CONCURRENCY = 4
WATCH_SECONDS = 60.0
QUEUE_SIZE = 256
# Request bodies: a photo of MAX_UPLOAD_BYTES pasted as a data: URL (base64, 4/3) plus the rest of the request.
MAX_BODY_BYTES = MAX_UPLOAD_BYTES * 4 // 3 + 1024 * 1024
# Threads for event handlers: every admitted search holds one while it waits for its encoder batch.
MAX_THREADS = SEARCH_SLOTS + 32
THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="slate",
                       # System fonts: no request to a font CDN, so the page loads offline and fast.
                       font=["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "sans-serif"],
                       font_mono=["ui-monospace", "SFMono-Regular", "monospace"])


@dataclass
class WebApp:
    """A built page plus what it may serve; `searcher` is None when there is nothing to search."""

    demo: gr.Blocks
    allowed_paths: list[str] = field(default_factory=list)
    searcher: Searcher | None = None
    photos: Photos = field(default_factory=lambda: Photos(None, []))
    url: str = ""
    warming: threading.Thread | None = None
    live: LiveIndex | None = None  # the local channel: indexer syncs and snapshots (an Edge index only)
    watcher: Watcher | None = None  # app.py --watch
    shop: Shop | None = None

    def close(self) -> None:
        """Stop the server and release the index."""
        if self.watcher is not None:
            self.watcher.stop()
        if self.live is not None:
            self.live.close()
        self.demo.close()
        if self.warming is not None:
            self.warming.join(timeout=60)  # exiting while ONNX loads its weights aborts the process
        if self.shop is not None:
            self.shop.encoding.close()
        if self.searcher is not None:
            self.searcher.close()


def how_to_build(reason: str, where: str) -> str:
    return (f"### No products to search yet\n\n{reason}\n\n"
            f"Build an index from a folder of product photos, then start the app again:\n\n"
            f"```\npython indexer.py CATALOG_DIR {where}\npython app.py {where}\n```\n\n"
            f"or do both at once: `python app.py --catalog CATALOG_DIR {where}`. {IN_THE_LOG}")


def in_use(reason: str, where: str) -> str:
    return (f"### This index is in use by another process\n\n{reason}\n\nAnother app (or the indexer) has it "
            f"open; only one process can open an index at a time. Stop the other one, or serve a copy of the "
            f"index, then start the app again (`python app.py {where}`). {IN_THE_LOG}")


def damaged_page(problems: str) -> str:
    """The page for an index that fails `shoplens check`: what is wrong, and the commands that repair it."""
    body = problems.replace("`", "'")  # shown verbatim in a code block, never as markdown or HTML
    return (f"### This index is damaged; it is not served\n\nSearching it would miss products. Problems found:\n\n"
            f"```\n{body}\n```\n\nRepair it, then start the app again. {IN_THE_LOG}")


# The pages below are seen by visitors (the app may be shared by a public link): they name the index and the
# catalog by these placeholders; the server's log has every command with its real paths.
INDEX_PLACEHOLDER = "INDEX_DIR"
CATALOG_PLACEHOLDER = "CATALOG_DIR"
SERVER_PLACEHOLDER = "SERVER_URL"
IN_THE_LOG = "The full commands, with this server's paths, are in the app's log."


@dataclass
class Visitors:
    """Turns what the server knows (paths, URLs) into what a visitor may read, logging the full text."""

    known: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, index: str | Path | None, qdrant_url: str | None, milvus_uri: str | None) -> "Visitors":
        known: dict[str, str] = {}
        if qdrant_url or milvus_uri:
            known[str(qdrant_url or milvus_uri)] = SERVER_PLACEHOLDER
        folder = Path(index or "data/index")
        if not (qdrant_url or milvus_uri):
            for form in {str(index or "data/index"), str(folder), str(folder.resolve())}:
                known[form] = INDEX_PLACEHOLDER
            catalog = recorded_catalog(folder)
            if catalog:
                known[catalog] = CATALOG_PLACEHOLDER
        return cls(known)

    def learn(self, meta: dict | None) -> None:
        """Add the catalog folder an opened index records."""
        if meta and meta.get("catalog_root"):
            self.known[str(meta["catalog_root"])] = CATALOG_PLACEHOLDER

    def where(self, index: str | Path | None, qdrant_url: str | None, milvus_uri: str | None) -> str:
        """The store options of a command, with placeholders for the server's own values."""
        if milvus_uri:
            return f"--milvus-uri {SERVER_PLACEHOLDER}"
        if qdrant_url:
            return f"--qdrant-url {SERVER_PLACEHOLDER}"
        return f"--index {INDEX_PLACEHOLDER}"

    def page(self, text: str, full: str | None = None) -> str:
        """`text` with every known path or URL replaced by its placeholder and any other server path cut to its
        last part; `full` (or `text`) goes to the server log whole."""
        log.warning("%s", full if full is not None else text)
        for value in sorted(self.known, key=len, reverse=True):
            if value:
                text = text.replace(shlex.quote(value), self.known[value]).replace(value, self.known[value])
        return redact(text)


def recorded_catalog(folder: Path) -> str | None:
    """The catalog folder an index folder's metadata records, read directly (no store opened), or None."""
    for name in ("index.json", "index.backup.json"):
        try:
            root = json.loads((folder / name).read_text()).get("catalog_root")
        except (OSError, ValueError, AttributeError):
            continue
        if root:
            return str(root)
    return None


def create(index: str | Path | None = None, qdrant_url: str | None = None, collection: str = "products",
           page_size: int = PAGE_SIZE, cache_expiry: tuple[int, int] = CACHE_EXPIRY,
           milvus_uri: str | None = None) -> WebApp:
    """Open the index once and build the page; a missing, empty, busy or unreachable index gives a page that says so.

    Those pages never show the server's folders, catalog path or store address (placeholders instead); the
    full commands go to the log. `cache_expiry` (every, older than; seconds): Gradio's copies of uploads and
    shown photos are deleted then.
    """
    full_where = (f"--milvus-uri {milvus_uri}" if milvus_uri else f"--qdrant-url {qdrant_url}" if qdrant_url
                  else f"--index {index or 'data/index'}")
    visitors = Visitors.of(index, qdrant_url, milvus_uri)
    where = visitors.where(index, qdrant_url, milvus_uri)
    try:
        searcher = Searcher.open(index, qdrant_url, collection, milvus_uri=milvus_uri)
        visitors.learn(searcher.meta)
        # A damaged index would serve a silently smaller catalog; the cheap check (counts, metadata, a sample
        # of points): the full scan of every vector is `shoplens check`'s.
        report = startup_check(searcher.store)
        if not report.ok:
            searcher.close()
            summary = report.summary()
            return WebApp(build_message(visitors.page(damaged_page(summary), f"index not served:\n{summary}")))
        if searcher.store.count() == 0:
            searcher.close()
            return WebApp(build_message(visitors.page(
                how_to_build("The index is empty.", where),
                f"the index at {searcher.store.location} is empty; build it: python indexer.py CATALOG_DIR "
                f"{full_where}")))
        shop = Shop(searcher, page_size)
        photos = shop.photos  # the allow-list follows the index opened here
        demo = build(shop, page_size, cache_expiry)
    except IndexDamagedError as exc:
        return WebApp(build_message(visitors.page(damaged_page(str(exc)), f"index not served: {exc}")))
    except StoreError as exc:
        if is_locked(exc):
            return WebApp(build_message(visitors.page(in_use(f"`{exc}`", where), f"index not served: {exc}")))
        return WebApp(build_message(visitors.page(how_to_build(f"`{exc}`", where),
                                                  f"index not served: {exc} (store options: {full_where})")))
    from shoplens.tune.fit import fit_for_index  # fits the tuning of a sync handed over with --tune-label

    # An Edge index gets a channel for the indexer's syncs and snapshots; a server (Qdrant, Milvus) takes the
    # indexer's writes itself, so its LiveIndex only runs the app's own syncs (--watch).
    local = qdrant_url is None and milvus_uri is None
    live = LiveIndex(searcher.store.path if local else None, searcher.store, reusing_encoder(searcher), shop.refresh,
                     fit_tuning=fit_for_index)
    return WebApp(demo, photos.folders(), searcher, photos, live=live, shop=shop)


def reusing_encoder(searcher: Searcher):
    """How the app's syncs get an encoder: the one it searches with when it is the same, else a new one."""
    def get(name: str, **options):
        enc = searcher._encoder
        if enc is not None and name == searcher.meta.get("encoder") and options == searcher._encoder_options:
            return enc
        return create_encoder(name, **options)
    return get


def warm_up(searcher: Searcher) -> threading.Thread:
    """Load the encoder's weights in the background so the first search does not pay for it."""
    def run():
        try:
            searcher.embed(Image.new("RGB", (64, 64), (255, 255, 255)))
        except Exception as exc:  # noqa: BLE001 - the first real search will report it properly
            log.warning("encoder warm-up failed: %s", exc)

    thread = threading.Thread(target=run, name="warm-up", daemon=True)
    thread.start()
    return thread


def launch(app: WebApp, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           concurrency: int = CONCURRENCY, block: bool = True, quiet: bool = False) -> str:
    """Serve the app (queued, uploads bounded, files: the indexed photos only); returns the local URL."""
    release_memory_promptly()
    app.demo.queue(default_concurrency_limit=concurrency, max_size=QUEUE_SIZE)
    chatter = io.StringIO()
    # Gradio prints several lines (and a long one when the share link fails); we print our own.
    with contextlib.redirect_stdout(chatter):
        app.demo.launch(server_name=host, server_port=port, share=share, allowed_paths=app.allowed_paths,
                        max_file_size=MAX_UPLOAD_BYTES, prevent_thread_lock=True, max_threads=MAX_THREADS,
                        quiet=True, show_error=False,
                        ssr_mode=False, theme=THEME, css=CSS, footer_links=["api"],
                        # allowed_paths only lets Gradio copy our photos into its cache; the gate decides what
                        # its file routes serve: the indexed photos, one file at a time, and its own files.
                        app_kwargs={"middleware": [Middleware(BodyLimit, limit=MAX_BODY_BYTES),
                                                   Middleware(PhotoGate, photos=app.photos,
                                                              uploads=get_upload_folder())]})
    if app.searcher is not None:  # only once serving: exiting while ONNX loads its weights aborts the process
        app.warming = warm_up(app.searcher)
    if app.shop is not None:
        app.shop.warm_thumbnails()  # galleries then find them made, off the request path
    if app.live is not None:
        try:
            app.live.start()
        except StoreError as exc:
            app.demo.close()
            raise StoreError(f"{exc}; this app does not take syncs") from None
    app.url = app.demo.local_url
    if not quiet:
        print(f"shoplens: serving on {app.url}", flush=True)
        if share and app.demo.share_url:
            print(f"shoplens: public link {app.demo.share_url}", flush=True)
    if share and not app.demo.share_url:
        print("shoplens: could not create a public --share link (offline or blocked?); "
              f"still serving locally on {app.url}", flush=True)
    if block:
        try:
            app.demo.block_thread()
        finally:
            app.close()
    return app.url


def release_memory_promptly() -> None:
    """Have glibc give big freed blocks (decoded photos) back to the system at once.

    By default its mmap threshold grows to the size of the largest block freed, so after one big photo
    every later one is carved from the heap and its memory is kept by the process for good.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD = 1 MiB, fixed: blocks above it are mmapped and unmapped
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def check_options(args) -> str | None:
    """What is wrong with the app's options, in one line, or None; checked before anything is opened."""
    if not 1 <= args.port <= 65535:
        return f"--port {args.port}: a port is a number from 1 to 65535"
    if args.concurrency < 1:
        return f"--concurrency {args.concurrency}: at least 1 search must run at a time"
    if getattr(args, "watch", None) is not None:
        if args.catalog is None:
            return "--watch syncs a catalog: give --catalog DIR too"
        if not args.watch >= 1:
            return f"--watch {args.watch:g}: sync at most once a second"
    if not 1 <= args.page_size <= MAX_PAGE_SIZE:
        return f"--page-size {args.page_size}: pick from 1 to {MAX_PAGE_SIZE} products per page"
    return port_busy(args.host, args.port)


def port_busy(host: str, port: int) -> str | None:
    """Why we cannot listen on host:port (taken, or not an address of this machine), or None."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"--host {host}: unknown address ({exc.strerror})"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no conflict
        try:
            probe.bind(address)
        except OSError as exc:
            return f"cannot serve on {host}:{port}: {exc.strerror or exc} (another app on that port? pick --port)"
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python app.py", description="The shoplens web app: search by photo, "
                                     "browse by category.")
    add_store_args(parser)
    parser.add_argument("--catalog", type=Path, default=None,
                        help="index this catalog folder (or CSV manifest) into the index first, then serve")
    parser.add_argument("--layout", default="auto", help="catalog layout for --catalog (default: detect)")
    parser.add_argument("--encoder", default=None, help="encoder for --catalog (default: the index's, else the default)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--share", action="store_true", help="also make a temporary public link (needs internet)")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help=f"other requests (browsing, details) run at once (default {CONCURRENCY}); searches are "
                             "batched and admitted many at a time")
    parser.add_argument("--page-size", type=int, default=PAGE_SIZE, help=f"products per browse page (default {PAGE_SIZE})")
    parser.add_argument("--watch", type=float, nargs="?", const=WATCH_SECONDS, default=None, metavar="SECONDS",
                        help=f"with --catalog: sync the catalog again every SECONDS (default {WATCH_SECONDS:g}) while "
                             "serving; products that left it are removed")
    return parser


def sync_first(args) -> int:
    """Index --catalog into the index with the indexer's own code (progress on the console)."""
    index_args = argparse.Namespace(catalog=args.catalog, index=args.index, qdrant_url=args.qdrant_url,
                                    milvus_uri=args.milvus_uri,
                                    collection=args.collection, layout=args.layout, encoder=args.encoder, fit=None,
                                    batch_size=32, prune=False, download=False, json=False, quiet=False, text="auto",
                                    no_colours=False)
    print(f"shoplens: indexing {args.catalog} ...", flush=True)
    return cmd_index(index_args)


def start_watching(app: WebApp, args) -> None:
    """--watch: start the timer that syncs --catalog into the served index (any store). An app that serves no
    index (its page says why) cannot sync into it: refused in one line rather than silently not watching."""
    if args.watch is None:
        return
    if app.live is None:
        raise UserError(f"--watch cannot sync {args.catalog}: the index could not be opened (the page served says "
                        "why); fix that and start the app again")
    app.watcher = Watcher(app.live, args.catalog, args.watch, args.layout).start()
    print(f"shoplens: watching {args.catalog} (a sync every {args.watch:g} s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of app.py."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise here
    args = build_parser().parse_args(argv)
    problem = check_options(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        if args.catalog is not None:
            sync_first(args)
        app = create(args.index, args.qdrant_url, args.collection, args.page_size, milvus_uri=args.milvus_uri)
        start_watching(app, args)
        launch(app, args.host, args.port, args.share, args.concurrency)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the port is taken, the address is not ours
        print(f"error: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("shoplens: stopped", file=sys.stderr)
    return 0
