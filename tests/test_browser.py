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

ARTIFACTS = REPO / "tests" / "artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 20_000

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
def browser(chromium, tmp_path_factory):
    """A headless Chromium on a profile of its own (skips, or fails under SHOPLENS_REQUIRE_BROWSER, without one)."""
    from playwright import sync_api

    # expect()'s own timeout (5 s by default) is process-wide: set here, so that these tests do not wait 5 s or
    # 20 s depending on which test a worker happened to run before them.
    sync_api.expect.set_options(timeout=TIMEOUT_MS)
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as pw:
        # A persistent context is how Playwright takes a fresh --user-data-dir of our own.
        context = pw.chromium.launch_persistent_context(str(profile), executable_path=str(chromium), args=FLAGS,
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
    expect(page.get_by_text("Find products by photo or by words")).to_be_visible()

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


@pytest.fixture(scope="module")
def handmade_app(tmp_path_factory):
    """The app on an index of the hand-made products, whose shoppers' photos hold several of them."""
    from handmade import build_index

    app = create(build_index(tmp_path_factory.mktemp("handmade-browser")))
    launch(app, host="127.0.0.1", port=free_port(), block=False, quiet=True)
    yield app
    app.close()


def test_multi_item_photo_shows_boxes_then_results_of_the_picked_item(browser, handmade_app, tmp_path):
    from playwright.sync_api import expect

    from handmade import MULTI, MULTI_SEED, shopper_photo
    from shoplens.localise import DEFAULT_CROP

    photo, _truth = shopper_photo(MULTI, seed=MULTI_SEED)
    photo.save(tmp_path / "shelf.jpg", quality=92)
    # What each item should show, from the same search run in-process.
    items = handmade_app.searcher.search_items(photo, k=12)
    titles = [r.hits[0].payload["title"] for r in items]
    assert len(items) >= 4

    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(handmade_app.url)
    page.locator("#photo input[type=file]").set_input_files(str(tmp_path / "shelf.jpg"))

    # The photo comes back with a box per product, and a choice of what to search with.
    legend = page.locator("#items .legend-item")
    expect(legend).to_have_count(len(items) - 1, timeout=TIMEOUT_MS)  # the first search loads the localiser
    expect(legend.first).to_have_text("Item 1")
    picker = page.locator("#item-pick")
    expect(picker).to_contain_text("Whole photo")
    first = page.locator("#results .thumbnail-item").first
    shown = 1 if DEFAULT_CROP == "auto" else 0
    expect(first).to_contain_text(titles[shown])
    shot(page, "7-items-found")

    # Pick the second product: its results follow.
    picker.get_by_text("Item 2", exact=True).click()
    expect(page.locator("#status")).to_contain_text("similar to item 2")
    expect(first).to_contain_text(titles[2])
    shot(page, "8-item-2-results")

    # Clicking a box's legend in the photo picks that product too; "Whole photo" goes back to all of it.
    legend.nth(2).click()
    expect(page.locator("#status")).to_contain_text("similar to item 3")
    expect(first).to_contain_text(titles[3])
    expect(picker.get_by_label("Item 3")).to_be_checked()
    picker.get_by_text("Whole photo", exact=True).click()
    expect(page.locator("#status")).to_contain_text("similar to your photo")
    expect(first).to_contain_text(titles[0])
    page.close()


def test_search_by_words_then_refine_a_photo(browser, app_url, shop_index):
    from playwright.sync_api import expect

    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app_url)
    # Words alone: typed, then Enter.
    box = page.locator("#words textarea")
    box.fill("yellow bag")
    box.press("Enter")
    expect(page.locator("#status")).to_contain_text("matching “yellow bag”")
    expect(page.locator("#results .thumbnail-item").first).to_contain_text(re.compile(r"Yellow bag for (wo)?men"))
    shot(page, "7-words")
    # A photo of the red men's top, refined by "blue top": blue tops come first.
    query = Path(shop_index).parent / "catalog" / "photos" / "tops" / "trm.jpg"
    box.fill("")  # words left in the box would refine the photo's results
    page.locator("#photo input[type=file]").set_input_files(str(query))
    expect(page.locator("#results .thumbnail-item").first).to_contain_text("Red top for men")
    box.fill("blue top")
    box.press("Enter")
    expect(page.locator("#results .thumbnail-item").first).to_contain_text(re.compile(r"Blue top for (wo)?men"))
    shot(page, "8-photo-plus-words")
    page.close()
