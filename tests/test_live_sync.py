"""Serving while the catalog changes: concurrent first queries, syncs handed to a running app, read-only use
beside it, thumbnails."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import make_shop_catalog
from shoplens.catalog import read_catalog
from shoplens.encoders import create_encoder
from shoplens.index.sync import sync_catalog
from shoplens.query.search import Searcher
from shoplens.store import open_store


@pytest.fixture
def small_index(tmp_path) -> Path:
    """A tiny-encoder index of the 24-product shop catalog (no text: fast), in a fresh folder per test."""
    catalog = make_shop_catalog(tmp_path / "catalog")
    with open_store(tmp_path / "index") as store:
        sync_catalog(read_catalog(catalog), store, create_encoder("tiny"), progress=False, text=None)
    return tmp_path / "index"


def test_first_queries_arriving_together_all_succeed(small_index):
    # 16 threads hit a freshly opened Searcher at the same instant, several times over: before the fix some
    # of them loaded the shard a second time and failed on the first load's WAL lock (WouldBlock).
    for _ in range(4):
        searcher = Searcher.open(small_index)
        searcher.store._shard = None  # as a fresh process: nothing loaded yet (open() may have read the tuning)
        start = threading.Barrier(16)
        errors, counts = [], []

        def query():
            start.wait()
            try:
                counts.append(searcher.store.count())
            except Exception as exc:  # noqa: BLE001 - collected and asserted on below
                errors.append(str(exc))

        threads = [threading.Thread(target=query) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        searcher.close()
        assert errors == []
        assert counts == [24] * 16  # make_shop_catalog: 3 categories x 4 colours x 2 genders


def test_a_searcher_sees_writes_made_through_the_same_store(small_index):
    # The app's Searcher and its in-process sync share one shard object: what is written is found at once.
    searcher = Searcher.open(small_index)
    vec = np.zeros(48, np.float32)
    vec[0] = 1.0
    from shoplens.store import PointData, point_id

    searcher.store.upsert([PointData(point_id("new-one"), vec, {"product_id": "new-one"})])
    assert searcher.store.count() == 25
    assert searcher.store.search(vec, 1)[0].payload["product_id"] == "new-one"
    searcher.close()


# --- an indexer beside a serving app ---

import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import stat  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from conftest import REPO, make_product_photo  # noqa: E402
from shoplens.index.channel import SOCKET_NAME, Channel, ChannelError, connect, request  # noqa: E402
from shoplens.store import point_id  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*argv, entry="indexer.py", **kwargs) -> subprocess.CompletedProcess:
    command = [sys.executable, entry, *map(str, argv)] if entry.endswith(".py") else [sys.executable, "-m", entry,
                                                                                      *map(str, argv)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, **kwargs)


@pytest.fixture
def serving(small_index):
    """The app serving small_index on 127.0.0.1 (its channel open); always shut down."""
    from shoplens.web.serve import create, launch

    app = create(small_index, page_size=4)
    assert app.live is not None
    launch(app, host="127.0.0.1", port=free_port(), block=False, quiet=True)
    yield app
    app.close()


def add_product(catalog: Path, pid: str, colour, rel: str) -> None:
    make_product_photo(catalog / rel, colour, "round")
    with open(catalog / "products.csv", "a") as fh:
        fh.write(f"{pid},{rel},Cyan bag,Bags,Cyan,Men\n")


def drop_product(catalog: Path, pid: str) -> None:
    lines = (catalog / "products.csv").read_text().splitlines()
    (catalog / "products.csv").write_text("\n".join(l for l in lines if not l.startswith(f"{pid},")) + "\n")


def test_the_channel_is_the_owners_only(serving, small_index):
    mode = os.stat(small_index / SOCKET_NAME).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    serving.close()
    assert not (small_index / SOCKET_NAME).exists()  # removed when the app stops


def test_another_uid_is_refused(small_index, monkeypatch):
    import shoplens.index.channel as channel

    ran = []
    server = Channel(small_index, {"sync": lambda args, reply: ran.append(1)}).start()
    try:
        monkeypatch.setattr(channel.os, "getuid", lambda: 10 ** 6)  # as if the peer were another user
        with pytest.raises(ChannelError, match="owner's processes only"):
            request(connect(small_index), "sync", {})
        assert ran == []
    finally:
        server.close()


def test_indexer_hands_the_sync_to_the_serving_app(serving, small_index, tmp_path):
    catalog = tmp_path / "catalog"
    add_product(catalog, "zz", (10, 200, 200), "photos/new/zz.jpg")
    drop_product(catalog, "trm")  # the red top for men
    done = run_cli(catalog, "--index", small_index, "--prune")
    assert done.returncode == 0, done.stderr
    # 24 products + zz - trm: zz added, trm removed, 23 untouched (the same line a direct run prints).
    assert done.stdout.startswith("added 1, updated 0, unchanged 23, removed 1, failed 0, ")
    assert "runs this sync" in done.stderr and "indexing: 100%" in done.stderr  # the app's bar, on our stderr
    store = serving.searcher.store
    assert store.count() == 24
    assert not store.retrieve([point_id("trm")])
    # The new photo finds itself first, through the app's own searcher (searches never stopped).
    results = serving.searcher.search_image(catalog / "photos/new/zz.jpg", k=1, crop="off")
    assert results.hits[0].product_id == "zz"
    # The allow-list follows: the new photo may be served, the withdrawn one no more.
    assert serving.photos.find("photos/new/zz.jpg") is not None
    assert serving.photos.find("photos/tops/trm.jpg") is None


def test_json_summary_through_the_app(serving, small_index, tmp_path):
    done = run_cli(tmp_path / "catalog", "--index", small_index, "--json", "--quiet")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["added"], summary["updated"], summary["unchanged"], summary["removed"]) == (0, 0, 24, 0)
    assert "indexing" not in done.stderr  # --quiet: no bar


def test_read_only_commands_beside_the_app(serving, small_index, tmp_path, monkeypatch):
    # The app (this process) makes the snapshots: record which, so another run's in the shared /tmp don't count.
    made, real = [], tempfile.mkdtemp

    def recording(*args, **kwargs):
        made.append(Path(real(*args, **kwargs)))
        return str(made[-1])

    monkeypatch.setattr(tempfile, "mkdtemp", recording)
    info = run_cli("info", "--index", small_index, "--json", entry="shoplens")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["count"] == 24
    found = run_cli("search", tmp_path / "catalog/photos/bags/bgw.jpg", "--index", small_index, "-k", "1",
                    "--crop", "off", "--json", entry="shoplens")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["results"][0]["id"] == "bgw"
    snapshots = [p for p in made if p.name.startswith("shoplens-snapshot-")]
    assert len(snapshots) == 2 and not any(p.exists() for p in snapshots)  # one per command, removed by it


def test_second_indexer_waits_for_the_running_sync(serving, small_index, tmp_path):
    serving.live.sync_lock.acquire()  # a sync under way
    proc = subprocess.Popen([sys.executable, "indexer.py", str(tmp_path / "catalog"), "--index", str(small_index)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        seen = ""
        while "another sync is running" not in seen and time.time() < deadline:
            seen += proc.stderr.readline()
        assert "another sync is running in the app" in seen
        assert proc.poll() is None  # waiting, not failed
    finally:
        serving.live.sync_lock.release()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.startswith("added 0, updated 0, unchanged 24")


def test_stale_socket_of_a_dead_app(small_index, tmp_path):
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(small_index / SOCKET_NAME))  # bound, never listening: what a killed app leaves
    dead.close()
    done = run_cli(tmp_path / "catalog", "--index", small_index, "--quiet")
    assert done.returncode == 0, done.stderr
    assert "no longer running; removed it" in done.stderr
    assert done.stdout.startswith("added 0, updated 0, unchanged 24")
    assert not (small_index / SOCKET_NAME).exists()


def test_index_held_by_a_process_that_is_not_an_app(small_index, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, qdrant_edge; s = qdrant_edge.EdgeShard.load(sys.argv[1]);"
                               " print('held', flush=True); sys.stdin.read()", str(small_index / "shard")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        done = run_cli(tmp_path / "catalog", "--index", small_index, "--quiet")
        assert done.returncode == 2
        assert done.stderr.strip().splitlines()[-1].startswith("error: the index at")
        assert "not a serving shoplens app" in done.stderr and "Traceback" not in done.stderr
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_app_that_stops_mid_sync(small_index, tmp_path):
    # An "app" that starts the sync, draws a bit of bar, then dies (its connection closes without a summary).
    def dying(args, reply):
        reply.write("indexing:  10%\r")
        reply._conn.shutdown(socket.SHUT_RDWR)  # as a killed process's socket: closed with no final line
        reply.gone = True
    server = Channel(small_index, {"sync": dying}).start()
    done = run_cli(tmp_path / "catalog", "--index", small_index, "--quiet")
    server.close()
    assert done.returncode == 2
    assert "stopped during the sync" in done.stderr and "run the same command again" in done.stderr
    again = run_cli(tmp_path / "catalog", "--index", small_index, "--quiet")  # no app now: the next run does it
    assert again.returncode == 0 and again.stdout.startswith("added 0, updated 0, unchanged 24")


def files_of(index: Path) -> dict[str, bytes]:
    """Every file of an index folder but the app's socket, with its bytes (the WAL's 32 MB files as a digest)."""
    import hashlib

    return {str(f.relative_to(index)): hashlib.sha256(f.read_bytes()).digest()
            for f in sorted(index.rglob("*")) if f.is_file() and f.name != SOCKET_NAME}


def test_repair_refuses_while_the_app_serves_and_a_check_reads_a_snapshot(serving, small_index):
    """index.json is zeroed under a serving app. Before: `check --repair` restored it (a write beside the app)
    and then failed on the WAL lock; a plain `check` could not open the index at all."""
    (small_index / "index.json").write_bytes(b"\0" * 64)
    before = files_of(small_index)
    done = run_cli("check", "--index", small_index, "--repair", entry="shoplens")
    assert done.returncode == 2 and done.stdout == "", done.stdout + done.stderr
    assert files_of(small_index) == before  # nothing changed: index.json still zeroed, nothing moved aside
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: the index at {small_index} is served by a running shoplens app "
                               f"(pid {os.getpid()}); a repair beside it could lose products, so nothing was changed. "
                               "Stop the app"), lines[0]
    assert serving.searcher.store.count() == 24

    # The plain check reads a snapshot and names the served index, not the copy.
    check = run_cli("check", "--index", small_index, entry="shoplens")
    assert check.returncode == 1, check.stdout + check.stderr
    out = check.stdout.strip().splitlines()
    assert out[0] == (f"damaged: {small_index / 'index.json'}: unreadable index metadata (Expecting value: line 1 "
                      f"column 1 (char 0)); fix: python -m shoplens check --index {small_index} --repair"), out
    assert out[-1] == (f"note: checked a snapshot the app serving {small_index} made between two writes; stop the "
                       "app before repairing")
    assert "shoplens-snapshot-" not in check.stdout
    (small_index / "index.json").write_bytes((small_index / "index.backup.json").read_bytes())
    whole = run_cli("check", "--index", small_index, entry="shoplens")
    assert whole.returncode == 0, whole.stdout + whole.stderr
    assert whole.stdout.splitlines()[0] == f"ok: the index at {small_index} is whole (24 products)"
    assert files_of(small_index) == {**before, "index.json": before["index.backup.json"]}


def test_repair_refuses_while_another_process_holds_the_index(small_index):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, qdrant_edge; s = qdrant_edge.EdgeShard.load(sys.argv[1]);"
                               " print('held', flush=True); sys.stdin.read()", str(small_index / "shard")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        whole = (small_index / "index.json").read_bytes()
        # A repair refuses before anything (before: it restored the zeroed index.json beside the holder).
        # A plain check needs the shard (a whole index.json): it says why it cannot open it.
        for meta, args in ((b"\0" * 64, ("--repair",)), (whole, ())):
            (small_index / "index.json").write_bytes(meta)
            before = files_of(small_index)
            done = run_cli("check", "--index", small_index, *args, entry="shoplens")
            lines = done.stderr.strip().splitlines()
            assert files_of(small_index) == before
            assert done.returncode == 2 and len(lines) == 1, (args, done.stdout + done.stderr)
            assert lines[0].startswith(f"error: the index at {small_index} is held by another process that is not "
                                       "a serving shoplens app"), lines[0]
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_closing_the_channel_ends_its_thread_without_an_exception(small_index, monkeypatch):
    """Before: close() left the accept loop blocked in accept() for ever (26 of 30 rounds), or the loop read
    self._server after close() had set it to None (AttributeError from the shoplens-channel thread)."""
    raised = []
    monkeypatch.setattr(threading, "excepthook", lambda hook: raised.append((hook.thread.name, hook.exc_value)))
    for _ in range(30):
        server = Channel(small_index, {}).start()
        assert request(connect(small_index), "ping")["app"] == "shoplens"
        thread = server._thread
        server.close()
        assert not thread.is_alive()
        assert not (small_index / SOCKET_NAME).exists()
    assert raised == []


# --- writes never come from the web page ---

# Every endpoint the page offers; each only reads the index. A new one must be added here knowingly.
READ_ONLY_ENDPOINTS = {"/search", "/select_result", "/more_like_this", "/browse", "/browse_values", "/next_page",
                       "/previous_page", "/select_product", "/find_similar", "/product", "/show_items", "/pick_item",
                       "/select_item", "/search_text",
                       # the Duplicates view of the Browse tab (issue 21): pages through the index's groups
                       "/duplicates", "/next_group", "/previous_group"}


def test_the_channel_is_not_reachable_through_gradio(serving, small_index):
    import httpx
    from gradio_client import Client

    client = Client(serving.url, download_files=False, verbose=False, analytics_enabled=False)
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert names <= READ_ONLY_ENDPOINTS, names - READ_ONLY_ENDPOINTS
    paths = [getattr(route, "path", "") for route in serving.demo.app.routes]
    assert not [p for p in paths if "sync" in p or "snapshot" in p or "channel" in p]
    sock = small_index / SOCKET_NAME
    meta_before = (small_index / "index.json").read_bytes()
    for url in (f"/gradio_api/file={sock}", f"/gradio_api/file/{sock}", f"/gradio_api/file={small_index}/index.json",
                f"/file={sock}"):
        assert httpx.get(serving.url.rstrip("/") + url, timeout=10).status_code == 404, url
    for op in ("sync", "snapshot", "ping"):
        response = httpx.post(f"{serving.url.rstrip('/')}/gradio_api/call/{op}", json={"data": []}, timeout=10)
        assert not response.is_success, op  # Gradio knows no such function (it answers 500 for unknown names)
    assert (small_index / "index.json").read_bytes() == meta_before
    assert serving.searcher.store.count() == 24


# --- app.py --catalog DIR --watch SECONDS ---

def test_watch_syncs_on_a_timer(serving, tmp_path):
    from shoplens.index.live import Watcher

    catalog = tmp_path / "catalog"
    watcher = Watcher(serving.live, catalog, 0.3).start()
    try:
        add_product(catalog, "zz", (10, 200, 200), "photos/new/zz.jpg")
        # A sync under way now may have read the catalog before; the one after it has read it after.
        wanted = serving.live.syncs + 2
        deadline = time.time() + 30
        while serving.live.syncs < wanted and time.time() < deadline:
            time.sleep(0.2)
        assert serving.searcher.store.count() == 25
        assert serving.searcher.product("zz") is not None
        assert serving.photos.find("photos/new/zz.jpg") is not None
    finally:
        watcher.stop()


def test_watch_survives_a_vanishing_catalog(serving, tmp_path, caplog):
    import logging
    from shoplens.index.live import Watcher

    catalog = tmp_path / "catalog"
    watcher = Watcher(serving.live, catalog, 3600)  # ticks by hand
    hidden = tmp_path / "hidden"
    catalog.rename(hidden)
    with caplog.at_level(logging.INFO, logger="shoplens.index.live"):
        assert watcher.tick() is None
        assert watcher.tick() is None
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "still serving" in warnings[0].getMessage()
        assert len(warnings[0].getMessage().splitlines()) == 1
        assert serving.searcher.store.count() == 24  # nothing removed
        assert serving.searcher.search_image(hidden / "photos/bags/bgw.jpg", k=1, crop="off").hits
        hidden.rename(catalog)
        summary = watcher.tick()
    assert (summary.added, summary.unchanged, summary.removed) == (0, 24, 0)
    assert any("readable again" in r.getMessage() for r in caplog.records)


def test_watch_needs_a_catalog():
    from shoplens.web.serve import build_parser, check_options

    assert "give --catalog" in check_options(build_parser().parse_args(["--watch", "--port", "1"]))
    args = build_parser().parse_args(["--catalog", "x", "--watch", "0.1", "--port", "1"])
    assert "at most once a second" in check_options(args)
    assert build_parser().parse_args(["--catalog", "x", "--watch"]).watch == 60.0


# --- thumbnails ---

def big_photo(path: Path, colour, seed: int) -> Path:
    """An 1800x2400 phone-sized product photo with some texture (so its JPEG is photo-sized)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 40, (2400 // 8, 1800 // 8, 3), dtype=np.uint8)
    img = Image.fromarray(noise).resize((1800, 2400), Image.BILINEAR)
    img.paste(Image.new("RGB", (1000, 1400), colour), (400, 500))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG", quality=90)
    return path


@pytest.fixture
def big_index(tmp_path) -> Path:
    for n, colour in enumerate([(200, 30, 30), (30, 30, 200), (30, 180, 30)]):
        big_photo(tmp_path / "big" / f"p{n}.jpg", colour, n)
    with open_store(tmp_path / "bigindex") as store:
        sync_catalog(read_catalog(tmp_path / "big"), store, create_encoder("tiny"), progress=False, text=None)
    return tmp_path / "bigindex"


def test_galleries_show_thumbnails_and_the_product_its_photo(big_index, tmp_path):
    from PIL import Image
    from shoplens.web.shop import Shop

    shop = Shop(Searcher.open(big_index))
    hits = shop.page(None, None, 0).hits
    tiles = shop.gallery(hits)
    assert len(tiles) == 3
    for (tile, _), hit in zip(tiles, hits):
        tile = Path(tile)
        assert tile.parent.parent == big_index / "thumbs"
        assert tile.name.startswith(hit.payload["content_hash"])
        with Image.open(tile) as im:
            assert im.size == (240, 320)  # 1800x2400 scaled so its longest side is 320
        original = tmp_path / "big" / hit.payload["image_path"]
        assert tile.stat().st_size * 10 < original.stat().st_size
        assert shop.photos.lookup(str(tile)) == tile  # served through the allow-list
        assert shop.photo(hit) == str(original.resolve())  # an opened product shows the full photo
    made = Path(tiles[0][0]).stat().st_mtime_ns
    assert Path(shop.gallery(hits[:1])[0][0]).stat().st_mtime_ns == made  # made once
    assert shop.photos.lookup(str(big_index / "thumbs" / "index.json")) is None
    assert shop.photos.lookup(str(big_index / "index.json")) is None
    shop.searcher.close()


def test_a_replaced_photo_gets_a_new_thumbnail(big_index, tmp_path):
    from shoplens.web.shop import Shop

    live = Shop(Searcher.open(big_index))
    hit = live.product("p0")
    old = Path(live.gallery([hit])[0][0])
    big_photo(tmp_path / "big" / "p0.jpg", (250, 250, 0), 7)  # the shop replaces the photo
    sync_catalog(read_catalog(tmp_path / "big"), live.searcher.store, create_encoder("tiny"), progress=False)
    live.refresh()
    new = Path(live.gallery([live.product("p0")])[0][0])
    assert new != old and new.is_file()
    from PIL import Image

    with Image.open(new) as im:  # the yellow photo, not the red one
        r, g, b = im.convert("RGB").getpixel((120, 160))
    assert r > 200 and g > 200 and b < 80
    live.searcher.close()


def test_a_page_loaded_after_a_sync_shows_the_new_counts_and_values(serving, small_index, tmp_path):
    add_product(tmp_path / "catalog", "zz", (10, 200, 200), "photos/new/zz.jpg")
    make_product_photo(tmp_path / "catalog/photos/hats/hcm.jpg", (10, 200, 200), "round")
    with open(tmp_path / "catalog/products.csv", "a") as fh:
        fh.write("hcm,photos/hats/hcm.jpg,Cyan hat for men,Hats,Cyan,Men\n")
    assert run_cli(tmp_path / "catalog", "--index", small_index, "--quiet").returncode == 0
    load = next(f.fn for f in serving.demo.fns.values() if getattr(f.fn, "__name__", "") == "refreshed")
    out = load()
    header = next(v for v in out.values() if isinstance(v, str))
    assert "**26** products" in header  # 24 + zz + hcm
    colours = next(u["choices"] for u in out.values() if isinstance(u, dict) and
                   any("Cyan" in str(c) for c in u["choices"]))
    assert len(colours) == 5  # Red, Blue, Green, Yellow and the new Cyan
    # The "Browse by category" picker (the category filter's values too): the new category, Hats. Before: the
    # picker was not among the page load's outputs and kept the values the app started with.
    pickers = [sorted(u["choices"]) for u in out.values() if isinstance(u, dict) and
               any("Hats" in str(c) for c in u["choices"])]
    assert pickers == [[("Bags (9)", "Bags"), ("Hats (1)", "Hats"), ("Shoes (8)", "Shoes"), ("Tops (8)", "Tops")]] * 2


def test_the_category_picker_of_a_page_loaded_after_a_sync_lists_a_new_category(small_index, tmp_path):
    """A sync run by the app (its Watcher, as --watch does) adds a product in a new category, Hats. Before: the
    "Browse by category" picker kept the values the app started with, page load after page load."""
    from shoplens.index.live import LiveIndex, Watcher
    from shoplens.web.handlers import Handlers, Update
    from shoplens.web.shop import Shop

    shop = Shop(Searcher.open(small_index), page_size=4, thumbnails=False)
    facets = shop.facets()
    assert shop.browse_field(facets) == "category"  # what ui.build gives the page's "Browse by" to start with
    act = Handlers(shop, ["category", "colour", "gender"], crop="off", browse_default="category")
    live = LiveIndex(small_index, shop.searcher.store, refreshed=shop.refresh)
    try:
        started = [("Bags (8)", "Bags"), ("Shoes (8)", "Shoes"), ("Tops (8)", "Tops")]  # 8 per category
        assert sorted(act.refreshed()["browse_value"].changes["choices"]) == started
        catalog = tmp_path / "catalog"
        make_product_photo(catalog / "photos/hats/hcm.jpg", (10, 200, 200), "round")
        with open(catalog / "products.csv", "a") as fh:
            fh.write("hcm,photos/hats/hcm.jpg,Cyan hat for men,Hats,Cyan,Men\n")
        summary = Watcher(live, catalog, 3600).tick()
        assert (summary.added, summary.unchanged, summary.removed) == (1, 24, 0)
        picker = act.refreshed()["browse_value"]
        assert sorted(picker.changes["choices"]) == sorted(started + [("Hats (1)", "Hats")])
        assert picker == Update(choices=picker.changes["choices"])  # only the choices change (the picker starts empty)
        assert act.browse_values("category")["browse_value"].changes["choices"] == picker.changes["choices"]
        assert act.browse("category", "Hats", False)["page_ids"] == ["hcm"]
    finally:
        live.close()
        shop.searcher.close()


def test_a_photo_smaller_than_a_thumbnail_is_shown_as_it_is(small_index, tmp_path):
    from shoplens.web.shop import Shop

    shop = Shop(Searcher.open(small_index))
    hit = shop.product("bgw")
    assert shop.gallery([hit])[0][0] == str((tmp_path / "catalog/photos/bags/bgw.jpg").resolve())  # 160x200
    assert not (small_index / "thumbs").exists() or not any((small_index / "thumbs").rglob("*.jpg"))
    shop.searcher.close()


def test_app_killed_mid_sync_then_the_next_run_finishes(tmp_path):
    # The real thing: app.py takes the sync, is SIGKILLed halfway, the indexer says so, the next run completes.
    import re
    import signal

    from conftest import PALETTE, make_photo

    colours = list(PALETTE.values())
    for i in range(240):
        make_photo(tmp_path / "catalog" / f"group{i % 4}" / f"item{i:04d}.jpg", colours[i % len(colours)],
                   size=(16 + i % 7, 16))
    catalog, index = read_catalog(tmp_path / "catalog"), tmp_path / "index"
    catalog.products = catalog.products[:8]  # the app needs something to serve
    with open_store(index) as store:
        sync_catalog(catalog, store, create_encoder("tiny"), progress=False)
    env = {**os.environ, "SHOPLENS_PLUGINS": "slow_encoder",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    app = subprocess.Popen([sys.executable, "app.py", "--index", str(index), "--port", str(free_port())], cwd=REPO,
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while not (index / SOCKET_NAME).exists() and time.time() < deadline:
            time.sleep(0.1)
        assert (index / SOCKET_NAME).exists(), "the app did not open its channel"
        cmd = [sys.executable, "indexer.py", str(tmp_path / "catalog"), "--index", str(index), "--batch-size", "8"]
        proc = subprocess.Popen(cmd + ["--encoder", "slow-tiny"], cwd=REPO, env=env, stderr=subprocess.PIPE,
                                stdout=subprocess.PIPE)
        seen, buf = 0, b""
        deadline = time.time() + 90
        while seen < 60 and proc.poll() is None and time.time() < deadline:
            buf = (buf + os.read(proc.stderr.fileno(), 256))[-4096:]
            counts = re.findall(rb"(\d+)/240", buf)
            seen = int(counts[-1]) if counts else 0
        assert proc.poll() is None, "the sync ended before the app could be killed"
        os.kill(app.pid, signal.SIGKILL)
        app.wait()
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 2
        assert b"stopped during the sync" in (buf + err) and b"Traceback" not in err
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
    done = subprocess.run(cmd + ["--encoder", "tiny", "--json", "--quiet"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "no longer running" in done.stderr  # the dead app's socket, removed
    summary = json.loads(done.stdout)
    assert summary["failed"] == 0 and summary["added"] + summary["unchanged"] == 240
    assert summary["unchanged"] >= 8 + 8, "what the app wrote before it was killed was lost"
    with open_store(index) as store:
        ids = [h.product_id for h in store.iterate()]
    assert len(ids) == 240 and len(set(ids)) == 240


def test_a_product_written_mid_sync_shows_its_photo_at_once(small_index, tmp_path):
    from shoplens.store import PointData
    from shoplens.web.shop import Shop

    shop = Shop(Searcher.open(small_index))
    assert len(shop.photos) == 24
    new = make_product_photo(tmp_path / "catalog/photos/new/zz.jpg", (10, 200, 200), "round")
    vec = np.full(48, 0.1, np.float32)
    shop.searcher.store.upsert([PointData(point_id("zz"), vec, {"product_id": "zz", "image_path": "photos/new/zz.jpg"}),
                                PointData(point_id("bad"), vec, {"product_id": "bad", "image_path": "../secret.txt"})])
    assert shop.photo(shop.product("zz")) == str(new.resolve())  # before any refresh of the allow-list
    assert shop.photos.lookup(str(new)) == new.resolve()
    assert shop.photo(shop.product("bad")) == str(shop.placeholder())  # same rules as at start: never out of the root
    assert shop.photos.lookup(str(tmp_path / "secret.txt")) is None
    shop.searcher.close()


def test_a_watch_round_that_would_prune_too_much_logs_it_and_keeps_serving(small_index, tmp_path, caplog):
    """`mv photos/bags x` (a third of the shop) then a watch round. Before: the round pruned every bag from the
    served index (and all of a shop whose photo folder moved away for a minute)."""
    import logging
    import shutil

    from shoplens.index.live import LiveIndex, Watcher

    store = open_store(small_index)
    live = LiveIndex(small_index, store)
    try:
        catalog = tmp_path / "catalog"
        shutil.move(catalog / "photos" / "bags", tmp_path / "bags-away")
        watcher = Watcher(live, catalog, 3600)  # ticks by hand
        with caplog.at_level(logging.INFO, logger="shoplens.index.live"):
            assert watcher.tick() is None
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "would remove 8 of the 24 products" in warnings[0], warnings
        assert "still serving" in warnings[0] and store.count() == 24  # nothing removed
        shutil.move(tmp_path / "bags-away", catalog / "photos" / "bags")
        summary = watcher.tick()
        assert (summary.unchanged, summary.removed) == (24, 0) and store.count() == 24
    finally:
        live.close()
        store.close()
