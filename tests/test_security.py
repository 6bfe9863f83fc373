"""Hostile input against the web app: what it serves, what it renders, what it decodes, what it says (issue 14).

Every check goes through a real app on 127.0.0.1 (HTTP or gradio_client) where it can; the catalogs here hold
the kind of files a shop's folder really holds beside its photos (the manifest, a .env, notes, links).
"""

from __future__ import annotations

import csv
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from gradio.data_classes import FileData
from PIL import Image

from shoplens.images import ImageError, load_image
from shoplens.web import shop as shop_module
from shoplens.web import serve as serve_module
from shoplens.web.photos import Photos
from shoplens.web.serve import create, main
from shoplens.web.shop import MAX_UPLOAD_PIXELS, Shop
from shoplens.web.ui import PhotoInput
from shoplens.web.views import md, redact
from conftest import REPO, make_product_photo, make_shop_catalog
from test_app import huge_png, serve
from test_browser import browser  # noqa: F401  (a fixture; it skips, or fails in CI, without Chromium)

from gradio_client import Client, handle_file  # noqa: E402

SECRET = "not-for-the-web"
XSS_TITLE = "<img src=x onerror=alert(1)>"
MD_TITLE = "**bold** [click](http://evil.example)"
XSS_CATEGORY = "<b>Evil</b>"


def index_catalog(manifest: Path, index: Path) -> Path:
    from shoplens.catalog import read_catalog
    from shoplens.encoders import create_encoder
    from shoplens.index.sync import sync_catalog
    from shoplens.store import open_store

    with open_store(index) as store:
        sync_catalog(read_catalog(manifest), store, create_encoder("tiny"), progress=False)
    return index


def add_rows(manifest: Path, rows: list[dict]) -> None:
    with open(manifest, "a", newline="") as fh:
        csv.DictWriter(fh, fieldnames=["id", "path", "title", "category", "colour", "gender"]).writerows(rows)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A shop catalog with secrets beside its photos, hostile titles, and its app; always shut down."""
    base = tmp_path_factory.mktemp("hostile")
    root = make_shop_catalog(base / "catalog")
    (root / ".env").write_text(f"API_KEY={SECRET}")
    (root / "photos" / "tops" / "notes.txt").write_text(SECRET)
    outside = make_product_photo(base / "private" / "holiday.jpg", (1, 2, 3), "square")
    (root / "photos" / "tops" / "link.jpg").symlink_to(outside)  # a link out of the catalog, not a product
    make_product_photo(root / "photos" / "tops" / "xss.jpg", (200, 10, 200), "square")
    make_product_photo(root / "photos" / "tops" / "mdx.jpg", (10, 200, 200), "square")
    add_rows(root / "products.csv", [
        {"id": "xss", "path": "photos/tops/xss.jpg", "title": XSS_TITLE, "category": XSS_CATEGORY,
         "colour": "Red", "gender": "Men"},
        {"id": "mdx", "path": "photos/tops/mdx.jpg", "title": MD_TITLE, "category": "Tops", "colour": "Blue",
         "gender": "Women"}])
    index = index_catalog(root / "products.csv", base / "index")
    app = create(index, page_size=4)
    assert app.searcher is not None
    serve(app)
    yield app, root, outside
    app.close()


@pytest.fixture(scope="module")
def client(hostile) -> Client:
    return Client(hostile[0].url, download_files=False, verbose=False, analytics_enabled=False)


def fetch(url: str, path: str, route: str = "file=") -> httpx.Response:
    return httpx.get(url.rstrip("/") + "/gradio_api/" + route + quote(path, safe="/"), timeout=10)


# --- files: the indexed photos and nothing else ---

def test_only_indexed_photos_are_served(hostile):
    app, root, outside = hostile
    photo = root / "photos" / "tops" / "trm.jpg"
    ok = fetch(app.url, str(photo))
    assert ok.status_code == 200 and ok.content[:2] == b"\xff\xd8" and ok.headers["content-type"] == "image/jpeg"
    refused = [root / ".env", root / "products.csv", root / "photos" / "tops" / "notes.txt",
               root / "photos" / "tops" / "link.jpg", outside, root.parent / "secret.txt", Path("/etc/passwd"),
               root / "photos", root]
    for path in refused:
        for route in ("file=", "file/"):
            response = fetch(app.url, str(path), route)
            assert response.status_code == 404, (path, route, response.status_code)
            assert SECRET.encode() not in response.content and b"not for the web" not in response.content
    # `..` and friends: the server decodes %2E%2E to `..`; the path is checked after normalising and resolving.
    for tricky in [f"{root}/photos/%2E%2E/.env", f"{root}/photos/tops/%2E%2E/%2E%2E/products.csv",
                   f"{root}/photos/tops/trm.jpg/../../../.env", f"{root}//.env", "http://127.0.0.1:1/x"]:
        response = httpx.get(app.url.rstrip("/") + "/gradio_api/file=" + tricky, timeout=10)
        assert response.status_code == 404, (tricky, response.status_code)


def test_photos_shown_by_the_app_still_load(hostile, client):
    app, root, _ = hostile
    gallery, page, *_ = client.predict("category", "Tops", False, api_name="/browse")
    assert len(gallery) == 4
    for item in gallery:
        response = httpx.get(item["image"]["url"], timeout=10)  # Gradio's cached copy of the photo
        assert response.status_code == 200 and response.content[:2] == b"\xff\xd8"


def test_a_manifest_with_absolute_paths_does_not_serve_its_folder(tmp_path):
    # The manifest sits in a home folder and names its photos by absolute path, as in the issue.
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text(f"-----BEGIN KEY----- {SECRET}")
    (home / ".kaggle").mkdir()
    (home / ".kaggle" / "kaggle.json").write_text(f'{{"key": "{SECRET}"}}')
    pictures = tmp_path / "pictures"  # outside the manifest's folder: indexed by absolute path
    photos = [make_product_photo(pictures / f"p{i}.jpg", (40 * i, 100, 200 - 40 * i), "round") for i in range(4)]
    make_product_photo(pictures / "unlisted.jpg", (1, 1, 1), "round")
    with open(home / "products.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "path", "title", "category"])
        writer.writerows([[f"p{i}", str(p), f"Product {i}", "Bags" if i % 2 else "Shoes"] for i, p in enumerate(photos)])
    app = create(index_catalog(home / "products.csv", tmp_path / "index"))
    assert app.searcher is not None
    serve(app)
    try:
        for path in [home / ".ssh" / "id_rsa", home / ".kaggle" / "kaggle.json", home / "products.csv",
                     pictures / "unlisted.jpg"]:
            response = fetch(app.url, str(path))
            assert response.status_code == 404 and SECRET.encode() not in response.content, path
        assert fetch(app.url, str(photos[1])).status_code == 200  # listed: served, that one file
        assert app.allowed_paths == [str(pictures.resolve())]  # Gradio may copy from there; the gate serves
        # Each product shows its own photo, not the "no photo" tile.
        client = Client(app.url, download_files=False, verbose=False, analytics_enabled=False)
        gallery, *_ = client.predict("category", "Bags", False, api_name="/browse")
        shown = [httpx.get(item["image"]["url"], timeout=10).content for item in gallery]
        assert sorted(shown) == sorted([photos[1].read_bytes(), photos[3].read_bytes()])
        details = client.predict("p1", api_name="/product")  # and no server path comes back
        assert details["image_path"] == "p1.jpg" and str(tmp_path) not in str(details)
        results = client.predict(photo=handle_file(str(photos[2])), k=4, api_name="/search")[2]
        assert results["results"] and str(tmp_path) not in str(results)
    finally:
        app.close()


def test_the_allow_list_resolves_links_when_asked(tmp_path):
    root = tmp_path / "root"
    make_product_photo(root / "a" / "p.jpg", (10, 20, 30), "wide")
    make_product_photo(root / "a" / "q.jpg", (10, 20, 30), "wide")
    (tmp_path / "private.jpg").write_bytes((root / "a" / "q.jpg").read_bytes())
    photos = Photos(root, ["a/p.jpg", "a/q.jpg", "../private.jpg", ""])
    assert photos.find("a/p.jpg") == (root / "a" / "p.jpg").resolve()
    assert photos.lookup(str(root / "a" / ".." / "a" / "p.jpg")) == (root / "a" / "p.jpg").resolve()
    assert photos.find("../private.jpg") is None  # indexed, but outside the catalog
    assert photos.lookup(str(root / "a")) is None and photos.lookup(str(root)) is None
    # A photo swapped for a link out of the catalog after indexing is no longer served.
    (root / "a" / "q.jpg").unlink()
    (root / "a" / "q.jpg").symlink_to(tmp_path / "private.jpg")
    assert photos.find("a/q.jpg") is None and photos.lookup(str(root / "a" / "q.jpg")) is None
    # An absolute photo is allowed as that one file; a link named like a photo to a secret is not.
    (tmp_path / "id_rsa").write_text(SECRET)
    (tmp_path / "fake.jpg").symlink_to(tmp_path / "id_rsa")
    absolute = Photos(root, [str(tmp_path / "private.jpg"), str(tmp_path / "fake.jpg")])
    assert absolute.find(str(tmp_path / "private.jpg")) == (tmp_path / "private.jpg").resolve()
    assert absolute.find(str(tmp_path / "fake.jpg")) is None and absolute.lookup(str(tmp_path / "id_rsa")) is None
    assert absolute.folders() == [str(tmp_path.resolve())]
    assert photos.folders() == [str((root / "a").resolve())]


# --- catalog text is shown, never rendered ---

def test_catalog_text_is_escaped_in_statuses_and_headers(hostile, client):
    _, status, _ = client.predict(product_id="xss", k=3, api_name="/more_like_this")
    assert "<img" not in status and "&lt;img src=x onerror=alert\\(1\\)&gt;" in status
    _, status, _ = client.predict(product_id="mdx", k=3, api_name="/more_like_this")
    assert "**bold**" not in status and "](http" not in status and "\\*\\*bold\\*\\*" in status
    gallery, page, *_ = client.predict("category", XSS_CATEGORY, False, api_name="/browse")
    assert len(gallery) == 1 and "<b>" not in page and "&lt;b&gt;Evil&lt;/b&gt;" in page
    _, status, _ = client.predict(product_id=XSS_TITLE, api_name="/more_like_this")  # echoed in the error
    assert "<img" not in status and "not in the index" in status
    assert gallery[0]["caption"].startswith(XSS_TITLE)  # a caption is plain text: shown as typed


def test_hostile_titles_show_as_text_in_a_browser(browser, hostile):
    from playwright.sync_api import expect

    expect.set_options(timeout=20_000)
    app, root, _ = hostile
    page = browser.new_page()
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.set_default_timeout(20_000)
    page.goto(app.url)
    page.locator("#photo input[type=file]").set_input_files(str(root / "photos" / "tops" / "xss.jpg"))
    results = page.locator("#results .thumbnail-item")
    expect(results.first).to_contain_text(XSS_TITLE)  # the caption, as typed
    results.first.click()
    details = page.locator("#details").first
    expect(details).to_contain_text(XSS_TITLE)
    details.get_by_role("button", name="More like this").click()
    expect(page.locator("#status")).to_contain_text(f"more like “{XSS_TITLE}”")
    page.get_by_role("tab", name="Browse by category").click()
    page.locator("#browse-value input").click()
    page.get_by_role("option", name=f"{XSS_CATEGORY} (1)").click()
    expect(page.locator("#page")).to_contain_text(f"{XSS_CATEGORY}: page 1 of 1")
    assert page.locator("img[src='x'], #page b, #status a").count() == 0 and dialogs == []
    page.close()


def test_markdown_escaping_by_hand():
    assert md("a <b> & c") == "a &lt;b&gt; &amp; c"
    assert md("[x](javascript:alert(1))") == "\\[x\\]\\(javascript\\:alert\\(1\\)\\)"
    assert md("two\nlines  **here**") == "two lines \\*\\*here\\*\\*"
    assert redact("cannot open /srv/shop/index/shard/wal: busy") == "cannot open …/wal: busy"


# --- no server paths in API output ---

def test_api_output_names_photos_relative_to_the_catalog(hostile, client):
    app, root, _ = hostile
    details = client.predict("trm", api_name="/product")
    assert details["image_path"] == "photos/tops/trm.jpg"
    results = client.predict(photo=handle_file(str(root / "photos" / "tops" / "trm.jpg")), k=3, api_name="/search")[2]
    assert results["results"][0]["metadata"]["image_path"] == "photos/tops/trm.jpg"
    assert str(root) not in str(results) and str(root) not in str(details)


# --- decoding: bounded pixels, bounded concurrency, a clear message ---

def big_png(path: Path, size=(6000, 6600)) -> Path:
    Image.new("1", size, 1).save(path, optimize=True)  # a few KB that decode to 40 megapixels
    return path


def test_a_huge_png_is_refused_with_a_clear_message(client, tmp_path):
    photo = big_png(tmp_path / "huge.png")
    assert photo.stat().st_size < 64 * 1024
    gallery, status, results = client.predict(photo=handle_file(str(photo)), api_name="/search")
    assert gallery == [] and "6000x6600 pixels" in status and "too large" in status and "16 megapixels" in status
    assert "error" in results


def test_the_pixel_budget_is_checked_from_the_header(tmp_path):
    # 5000x4000 (20 MP) claimed by a header with almost no pixel data: refused for its size, not as corrupt.
    data = huge_png(tmp_path / "claims.png", 5000, 4000).read_bytes()
    with pytest.raises(ImageError, match="5000x4000 pixels .* too large"):
        load_image(data, name="photo", budget=MAX_UPLOAD_PIXELS)
    # A JPEG is judged by the size its draft scale decodes to: 6000x4000 on paper, 3000x2000 decoded.
    Image.new("RGB", (6000, 4000), (90, 30, 30)).save(tmp_path / "phone.jpg", quality=80)
    assert load_image(tmp_path / "phone.jpg", draft_size=1024, budget=MAX_UPLOAD_PIXELS).size == (3000, 2000)


def test_uploads_are_kept_small_and_decoded_a_few_at_a_time(hostile, tmp_path, monkeypatch):
    app = hostile[0]
    shop = Shop(app.searcher)
    Image.new("RGB", (3000, 2400), (20, 120, 60)).save(tmp_path / "big.png")
    assert shop.read_upload(str(tmp_path / "big.png")).size == (1500, 1200)  # kept: short side 1024..2047
    running, peak, lock = [0], [0], threading.Lock()
    real = shop_module.load_image

    def slow_load(*args, **kwargs):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.15)
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(shop_module, "load_image", slow_load)
    small = str(tmp_path / "small.jpg")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(small)
    threads = [threading.Thread(target=shop.read_upload, args=(small,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == shop_module.DECODE_SLOTS == 2


def test_a_huge_data_url_is_reported_as_too_large(hostile):
    encoded = "A" * (50 * 1024 * 1024 * 4 // 3)
    payload = PhotoInput(type="filepath").preprocess(FileData(path="paste.png", url="data:image/png;base64," + encoded))
    with pytest.raises(ImageError, match=r"50\.0 MB; the limit is 10 MB"):
        Shop(hostile[0].searcher).read_upload(payload)


# --- Gradio's upload cache expires ---

def test_uploads_and_cached_photos_expire(hostile, tmp_path):
    shutil.copytree(hostile[0].searcher.store.location, tmp_path / "index",  # the module's app holds its index
                    ignore=shutil.ignore_patterns(".shoplens-app.sock"))
    app = create(tmp_path / "index", cache_expiry=(1, 3))
    url = serve(app)
    try:
        upload = httpx.post(url.rstrip("/") + "/gradio_api/upload", timeout=10,
                            files={"files": ("mine.jpg", b"\xff\xd8 not really a photo", "image/jpeg")})
        uploaded = Path(upload.json()[0])
        assert uploaded.exists()
        client = Client(url, download_files=False, verbose=False, analytics_enabled=False)
        gallery, *_ = client.predict("category", "Bags", False, api_name="/browse")
        copies = [Path(item["image"]["path"]) for item in gallery]  # Gradio's copies of the photos shown
        assert len(copies) == 8 and all(p.exists() for p in copies)
        deadline = time.time() + 20
        while (uploaded.exists() or sum(p.exists() for p in copies) > 1) and time.time() < deadline:
            time.sleep(0.5)
        # The example photos' copies stay for the page's life: one Bags photo may be one of them.
        assert not uploaded.exists() and sum(p.exists() for p in copies) <= 1
    finally:
        app.close()


# --- smaller defects ---

def test_a_filter_given_as_a_string_is_one_value(hostile, client):
    root = hostile[1]
    results = client.predict(photo=handle_file(str(root / "photos" / "tops" / "trm.jpg")), k=6,
                             filter_gender="Women", api_name="/search")[2]["results"]
    assert len(results) == 6 and {r["metadata"]["gender"] for r in results} == {"Women"}


def test_a_second_app_on_a_served_index_says_it_is_in_use(hostile):
    app = create(hostile[0].searcher.store.location)
    assert app.searcher is None
    url = serve(app)
    try:
        config = httpx.get(url.rstrip("/") + "/config", timeout=10).text
        assert "in use by another process" in config and "No products to search yet" not in config
    finally:
        app.close()


@pytest.mark.parametrize("args, expected", [
    (["--port", "70000"], "--port 70000"),
    (["--port", "0"], "--port 0"),
    (["--concurrency", "0"], "--concurrency 0"),
    (["--page-size", "0"], "--page-size 0"),
])
def test_bad_app_options_are_one_line_and_exit_2(tmp_path, capsys, args, expected):
    assert main(["--index", str(tmp_path / "none"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {expected}") and "\n" not in err and "Traceback" not in err


def test_a_busy_port_is_one_line_and_exit_2(shop_index):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run([sys.executable, "app.py", "--index", str(shop_index), "--port", str(port)],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, (out.returncode, out.stderr[-500:])
    assert out.stderr.strip().startswith(f"error: cannot serve on 127.0.0.1:{port}") and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_no_warm_up_starts_when_the_port_is_taken(hostile, monkeypatch):
    # Exiting while ONNX loads its weights in the warm-up thread aborts the process (SIGABRT after the
    # message): the warm-up may only start once the server listens. Raced here on a port taken under launch.
    started = []
    monkeypatch.setattr(serve_module, "warm_up", lambda searcher: started.append(searcher))
    app = create(hostile[0].searcher.store.location)  # the busy page: no searcher, so use a stand-in one
    app.searcher = hostile[0].searcher
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(OSError):
            serve_module.launch(app, port=busy.getsockname()[1], block=False, quiet=True)
    assert started == []
