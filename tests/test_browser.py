"""The web app in a real browser: Playwright driving Debian's Chromium (never a downloaded one).

Screenshots go to tests/artifacts/ (git-ignored) so a person can look at what the test saw.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from conftest import REPO
from shoplens.web.serve import create, launch

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "tests" / "artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 20_000

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install -y chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(shop_index):
    app = create(shop_index, page_size=4)
    url = launch(app, host="127.0.0.1", port=free_port(), block=False, quiet=True)
    yield url
    app.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as pw:
        # A persistent context is how Playwright takes a fresh --user-data-dir of our own.
        context = pw.chromium.launch_persistent_context(str(profile), executable_path=str(CHROMIUM), args=FLAGS,
                                                        headless=True, viewport={"width": 1280, "height": 900})
        yield context
        context.close()


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.wait_for_timeout(400)  # let Gradio's fade-in of new results finish
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 5_000
    return path


def test_search_details_more_like_then_browse_pages(browser, app_url, shop_index):
    from playwright.sync_api import expect

    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app_url)
    expect(page.get_by_text("Find products by photo")).to_be_visible()

    # Upload a photo: results appear as a gallery with captions and the search time.
    query = Path(shop_index).parent / "catalog" / "photos" / "tops" / "trm.jpg"
    page.locator("#photo input[type=file]").set_input_files(str(query))
    results = page.locator("#results .thumbnail-item")
    expect(results).to_have_count(12)
    expect(page.locator("#status")).to_contain_text(re.compile(r"12 results in \d+ ms"))
    expect(page.locator("#results")).to_contain_text("Red top for men")
    shot(page, "1-search-results")

    # A result's details, then "More like this" from its stored vector.
    results.nth(1).click()
    details = page.locator("#details").first
    expect(details).to_be_visible()
    expect(details).to_contain_text("Category")
    expect(details).to_contain_text("% similar")
    shot(page, "2-result-details")
    details.get_by_role("button", name="More like this").click()
    expect(page.locator("#status")).to_contain_text("more like")
    expect(results).to_have_count(12)
    expect(details).to_be_hidden()
    shot(page, "3-more-like-this")

    # Browse a category and page through it.
    page.get_by_role("tab", name="Browse by category").click()
    page.locator("#browse-value input").click()
    page.get_by_role("option", name="Shoes (8)").click()
    products = page.locator("#browse .thumbnail-item")
    expect(products).to_have_count(4)
    expect(page.locator("#page")).to_contain_text("page 1 of 2")
    first_page = products.all_inner_texts()
    page.get_by_role("button", name="Next →").click()
    expect(page.locator("#page")).to_contain_text("page 2 of 2")
    expect(products).to_have_count(4)
    assert products.all_inner_texts() != first_page
    shot(page, "4-browse-page-2")
    page.get_by_role("button", name="← Previous").click()
    expect(page.locator("#page")).to_contain_text("page 1 of 2")

    # A product's details and its look-alikes.
    products.first.click()
    browse_details = page.locator("#browse-details").first
    expect(browse_details).to_be_visible()
    browse_details.get_by_role("button", name="Find similar").click()
    expect(page.locator("#similar .thumbnail-item")).to_have_count(12)
    shot(page, "5-find-similar")
    page.close()


def test_phone_width_and_bad_upload(browser, app_url, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page()
    page.set_viewport_size({"width": 390, "height": 844})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app_url)
    bad = tmp_path / "not-a-photo.jpg"
    bad.write_text("this is not a photo")
    page.locator("#photo input[type=file]").set_input_files(str(bad))
    expect(page.locator("#status")).to_contain_text("can't be used")
    expect(page.get_by_text("Traceback")).to_have_count(0)
    # Nothing wider than the phone: no sideways scrolling.
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390 + 2, width
    shot(page, "6-phone-bad-upload")
    page.close()
