"""The Gradio page: a "Search by photo" tab and a "Browse by category" tab over one Shop.

Handlers are closures over the Shop (opened once per process); everything a user did lives in
gr.State or in the page's components, never in module globals.
"""

from __future__ import annotations

import base64
import binascii
import html
import inspect
import logging
import random

import gradio as gr

from shoplens.errors import UserError
from shoplens.images import ImageError
from shoplens.localise import DEFAULT_CROP
from shoplens.store import StoreError
from shoplens.web.shop import MAX_WORDS, Refused, clean_words, MAX_RESULTS, MAX_UPLOAD_BYTES, Shop, too_large
from shoplens.web.views import details_html, facet_choices, label, md, redact, result_row, status_line

log = logging.getLogger("shoplens.web")

TITLE = "shoplens: find products by photo"
DEFAULT_K = 12
# One clear colour per box drawn on the shopper's photo (the localisers return at most 4).
ITEM_COLOURS = {"Item 1": "#e11d48", "Item 2": "#2563eb", "Item 3": "#16a34a", "Item 4": "#d97706"}
PAGE_SIZE = 24
MAX_PAGE_SIZE = 200
# Gradio keeps every upload and a copy of every photo it showed: every 10 minutes, drop those older than an hour.
CACHE_EXPIRY = (600, 3600)

CSS = """
.sl-header h1 {margin-bottom: 0}
.sl-header p {margin-top: 4px; color: var(--body-text-color-subdued)}
.sl-status p {margin: 2px 0}
.sl-tuning p {margin: 0; font-size: 0.85em; color: var(--body-text-color-subdued)}
.sl-error {color: var(--error-text-color, #b91c1c)}
.sl-details h3 {margin: 0 0 4px 0}
.sl-details .sl-score {margin: 0 0 8px 0; font-weight: 600; color: var(--color-accent)}
.sl-details table {width: 100%; border-collapse: collapse; font-size: 0.92em; border: none !important}
.sl-details table tr, .sl-details table th, .sl-details table td {border: 0 !important; background: none !important}
.sl-details th {text-align: left; padding: 3px 10px 3px 0; color: var(--body-text-color-subdued);
                font-weight: 500; white-space: nowrap; vertical-align: top}
.sl-details td {padding: 3px 0; word-break: break-word}
.sl-details tr + tr {border-top: 1px solid var(--border-color-primary)}
/* Galleries grow with their results instead of scrolling inside a 55vh box. */
.sl-gallery .fixed-height {max-height: none !important; min-height: 0 !important}
.sl-gallery .grid-wrap {overflow-y: visible !important}
/* Each tile: the photo, then its caption in full (title, then category and similarity). */
.sl-gallery .thumbnail-item {display: flex !important; flex-direction: column; height: auto !important;
                             aspect-ratio: auto !important; background: #fff}
.sl-gallery .thumbnail-item > img {height: 190px !important; flex: 0 0 auto; padding: 6px}
.sl-gallery .caption-label {position: static !important; max-width: 100% !important; opacity: 1 !important;
                            white-space: pre-line !important; border: none !important; background: none !important;
                            text-align: left; padding: 4px 8px 8px !important; font-size: 0.82em;
                            line-height: 1.3; color: var(--body-text-color)}
@media (max-width: 640px) {
  .sl-gallery .grid-container {grid-template-columns: repeat(2, minmax(0, 1fr)) !important}
  .sl-gallery .thumbnail-item > img {height: 150px !important}
}
"""


class PhotoInput(gr.Image):
    """gr.Image that hands the handler the stored upload as is, so decoding errors reach our friendly message.

    Gradio's own preprocessing opens the file with PIL first and would turn a non-image into a
    bare "Error". The upload is still checked to lie in Gradio's upload folder before this runs.
    """

    is_template = True  # render with the standard Image component in the browser

    def preprocess(self, payload):
        if payload is None:
            return None
        url = payload.url or ""
        if url.startswith("data:"):
            encoded = url.partition(",")[2]
            if len(encoded) > MAX_UPLOAD_BYTES * 4 // 3 + 4:
                return Refused(too_large(len(encoded) * 3 // 4))  # said so without decoding megabytes
            try:
                return base64.b64decode(encoded, validate=False)
            except (binascii.Error, ValueError):
                return b""
        return payload.path


def friendly(exc: Exception) -> str:
    """A message for the page: what went wrong and what to do, never a traceback."""
    if isinstance(exc, ImageError):
        return f"That photo can't be used: {redact(str(exc))}. Try a JPEG, PNG or WebP photo of a product."
    if isinstance(exc, StoreError):
        log.warning("index error in a request: %s", exc)
        return f"The product index can't be used right now: {redact(str(exc))}"
    if isinstance(exc, UserError):
        return redact(str(exc))
    log.exception("unexpected error in a request")
    return "Something went wrong on our side; the details are in the server log. Please try again."


def error_md(exc: Exception) -> str:
    return f"<p class='sl-error'>⚠️ {md(friendly(exc))}</p>"


def with_signature(fn, names: list[str]):
    """Give a *args handler named parameters, so API callers see (and can pass) photo=, k=, gender=..."""
    fn.__signature__ = inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names])
    return fn


def build(shop: Shop, page_size: int = PAGE_SIZE, cache_expiry: tuple[int, int] = CACHE_EXPIRY) -> gr.Blocks:
    """The whole app for an opened, non-empty index; Gradio's cached files expire after `cache_expiry`."""
    shop.page_size = page_size
    facets = shop.facets()
    fields = [f for f in shop.fields if facets.get(f)]
    browse_default = shop.browse_field(facets)
    examples = shop.example_photos(facets)
    total = shop.count()

    def filters_of(values) -> dict:
        # Dropdown values are matched against the index's own values by Gradio; they only ever
        # become filter values in the store. An API caller may pass one value as a plain string.
        return {f: [v] if isinstance(v, str) else list(v) for f, v in zip(fields, values) if v}

    prompt = ("Upload, paste or take a photo of a product, or type a few words (e.g. “red running shoes”)."
              if shop.has_text else "Upload, paste or take a photo of a product to find look-alikes.")

    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=cache_expiry) as demo:
        how = "by photo or by words" if shop.has_text else "by photo"
        header = gr.Markdown(f"# shoplens\nFind products {how} in a catalog of **{total:,}** products.",
                             elem_classes="sl-header")
        if shop.tuning_line:  # which tuning the index's vectors carry, with its held-out figures
            gr.Markdown(html.escape(shop.tuning_line), elem_id="tuning", elem_classes="sl-tuning")
        with gr.Tabs():
            with gr.Tab("Search by photo", id="search"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=1, min_width=280):
                        photo = PhotoInput(label="Your photo", elem_id="photo", type="filepath", image_mode=None, height=260,
                                           sources=["upload", "clipboard", "webcam"])
                        words = gr.Textbox("", label="…or describe it", elem_id="words", max_length=MAX_WORDS,
                                           visible=shop.has_text, submit_btn=True,
                                           placeholder="red running shoes — with a photo: “but in blue”")
                        search_btn = gr.Button("Search", variant="primary")
                        items_view = gr.AnnotatedImage(label="Products found in your photo", elem_id="items",
                                                       height=260, visible=False, color_map=ITEM_COLOURS)
                        item_pick = gr.Radio([], label="Search with", elem_id="item-pick", visible=False)
                        k = gr.Slider(1, MAX_RESULTS, value=DEFAULT_K, step=1, label="Results to show")
                        dropdowns = [gr.Dropdown(facet_choices(facets[f]), value=[], multiselect=True,
                                                 label=label(f)) for f in fields]
                        if examples:
                            gr.Examples([[p] for p in examples], inputs=[photo], label="Try a catalog photo",
                                        examples_per_page=len(examples))
                    with gr.Column(scale=3, min_width=300):
                        status = gr.Markdown(prompt, label="Status", elem_id="status", elem_classes="sl-status")
                        gallery = gr.Gallery(label="Results", columns=4, height="auto", object_fit="contain",
                                             allow_preview=False, elem_id="results", elem_classes="sl-gallery")
                        with gr.Group(visible=False, elem_id="details") as details_box:
                            with gr.Row():
                                detail_photo = gr.Image(label="Product", interactive=False, height=280,
                                                        min_width=200, scale=1)
                                with gr.Column(scale=2, min_width=240):
                                    detail_info = gr.HTML(label="Details")
                                    more_btn = gr.Button("More like this", variant="primary")
                        selected = gr.Textbox(label="Product id", visible=False)  # the product whose details are shown
                        results_json = gr.JSON(label="Results JSON", visible=False)  # the same results, for API callers
                hits_state = gr.State([])
                items_state = gr.State([])  # Results of the whole photo, then of each product found in it
                picked_state = gr.State({})  # {"photo": the upload, "item": index into items_state}

            with gr.Tab("Browse by category", id="browse"):
                with gr.Row():
                    browse_field = gr.Radio([(label(f), f) for f in fields], value=browse_default,
                                            label="Browse by", visible=len(fields) > 1, scale=2)
                    # Choices change with "Browse by", so the value is checked against the index in browse().
                    browse_value = gr.Dropdown(facet_choices(facets.get(browse_default, [])), value=None,
                                               label=label(browse_default) if browse_default else "Category",
                                               allow_custom_value=True, scale=2, elem_id="browse-value")
                    shuffle = gr.Checkbox(label="Shuffle", value=False, scale=1, min_width=100)
                with gr.Row():
                    prev_btn = gr.Button("← Previous", size="sm", min_width=100)
                    page_md = gr.Markdown("Pick a category to see its products.", label="Page",
                                          elem_id="page", elem_classes="sl-status")
                    next_btn = gr.Button("Next →", size="sm", min_width=100)
                browse_gallery = gr.Gallery(label="Products", columns=6, height="auto", object_fit="contain",
                                            allow_preview=False, elem_id="browse", elem_classes="sl-gallery")
                with gr.Group(visible=False, elem_id="browse-details") as browse_box:
                    with gr.Row():
                        browse_photo = gr.Image(label="Product", interactive=False, height=280, min_width=200,
                                                scale=1)
                        with gr.Column(scale=2, min_width=240):
                            browse_info = gr.HTML(label="Details")
                            similar_btn = gr.Button("Find similar", variant="primary")
                    similar_status = gr.Markdown(label="Status", elem_classes="sl-status")
                    similar_gallery = gr.Gallery(label="Look-alikes", columns=6, height="auto",
                                                 object_fit="contain", allow_preview=False, visible=False,
                                                 elem_id="similar", elem_classes="sl-gallery")
                browse_selected = gr.Textbox(label="Product id", visible=False)
                browse_state = gr.State({})
                page_ids = gr.State([])

        # Search by photo

        result_outputs = [gallery, status, hits_state, results_json, details_box]

        def show_results(results, query: str) -> dict:
            # Every list shows its ranking score, which decreases down it; the image similarity is in the details.
            hits = results.hits
            return {gallery: shop.gallery(hits), hits_state: [[h.product_id, h.score, h.similarity] for h in hits],
                    status: f"{status_line(len(hits), results.seconds)} · {query}",
                    results_json: {"seconds": round(results.seconds, 4),
                                   "results": [result_row(h, i) for i, h in enumerate(hits, 1)]},
                    details_box: gr.update(visible=False)}

        def show_item(items: list, index: int, image) -> dict:
            # One item's results, plus every item's in the JSON: "several items give results per item".
            shown = show_results(items[index], "similar to your photo" if index == 0 else f"similar to item {index}")
            shown[results_json] = {**shown[results_json], "searched": item_name(index),
                                   "items": [item_json(r, i) for i, r in enumerate(items)]}
            return {**shown, picked_state: {"photo": image, "item": index}}

        def search(image, k_value, picked, *values):
            """Search the catalog with a photo (by the crop default: the whole photo, or the best product in it;
            the shopper's pick for this photo wins). Words typed beside the photo refine its results."""
            *values, text = values
            if image is None:
                if clean_words(text) and shop.has_text:
                    return {**search_words(text, k_value, *values), items_state: [], picked_state: {}}
                return {gallery: [], hits_state: [], results_json: {"results": []}, items_state: [],
                        status: prompt, details_box: gr.update(visible=False)}
            try:
                # With crop off the whole photo answers at once; the products in it are found by the next step
                # (find_items), so the localiser never delays the first results.
                items = (shop.search_items(image, k_value, filters_of(values), words=text) if DEFAULT_CROP == "auto"
                         else [shop.search_photo(image, k_value, filters_of(values), words=text)])
            except Exception as exc:  # noqa: BLE001 - every failure becomes a message in the page
                return {gallery: [], hits_state: [], results_json: {"error": friendly(exc)}, status: error_md(exc),
                        details_box: gr.update(visible=False), items_state: []}
            index = (picked or {}).get("item") if (picked or {}).get("photo") == image else None
            if not isinstance(index, int) or not 0 <= index < len(items):
                index = 1 if DEFAULT_CROP == "auto" and len(items) > 1 else 0
            shown = {**show_item(items, index, image), items_state: items}
            if clean_words(text):
                shown[status] += f", refined by “{md(clean_words(text))}”"
            return shown

        def search_words(text, k_value, *values):
            """Search the catalog by words: titles and attributes, keyword and semantic search fused."""
            if not clean_words(text):
                return {status: prompt, gallery: [], hits_state: [], results_json: {"results": []}}
            try:
                results = shop.search_text(clean_words(text), k_value, filters_of(values))
            except Exception as exc:  # noqa: BLE001 - every failure becomes a message in the page
                return {gallery: [], hits_state: [], results_json: {"error": friendly(exc)}, status: error_md(exc),
                        details_box: gr.update(visible=False)}
            return show_results(results, f"matching “{md(clean_words(text))}”")

        filter_names = [f"filter_{f}" for f in fields]
        search_outputs = result_outputs + [items_state, picked_state]
        searched = gr.on([search_btn.click, photo.change, k.release] + [d.input for d in dropdowns],
                         with_signature(search, ["photo", "k", "picked", *filter_names, "words"]),
                         inputs=[photo, k, picked_state, *dropdowns, words], outputs=search_outputs,
                         api_name="search")

        def submit_words(text, image, k_value, picked, *values):
            """Enter in the words box: search by the words, or by the photo refined by them when there is one."""
            return search(image, k_value, picked, *values, text)

        worded = words.submit(with_signature(submit_words, ["words", "photo", "k", "picked", *filter_names]),
                              inputs=[words, photo, k, picked_state, *dropdowns], outputs=search_outputs,
                              api_name="search_text")

        def find_items(image, k_value, picked, *values):
            """The products found in the photo: each one's results, the photo with a box around each, and the
            choice of what to search with. Shows the item the shopper picked for this photo, if any."""
            *values, text, items = values
            if not image:
                return {items_view: gr.update(value=None, visible=False), item_pick: gr.update(visible=False)}
            same = (picked or {}).get("photo") == image
            try:
                if not (same and items):  # called on its own (API): search the whole photo too
                    items = [shop.search_photo(image, k_value, filters_of(values), words=text)]
                if len(items) == 1:
                    items = items + shop.search_boxes(image, k_value, filters_of(values), words=text)
                preview, boxes = shop.preview(image, [r.box for r in items[1:]])
            except Exception as exc:  # noqa: BLE001
                return {status: error_md(exc)}
            index = (picked or {}).get("item", 0) if same else 0
            index = index if isinstance(index, int) and 0 <= index < len(items) else 0
            shown = show_item(items, index, image)
            out = {items_state: items, picked_state: shown[picked_state], results_json: shown[results_json]}
            if index or not same:
                out.update(shown)
            if len(items) < 2:
                return {**out, items_view: gr.update(value=None, visible=False), item_pick: gr.update(visible=False)}
            names = [item_name(i) for i in range(1, len(items))]
            choices = [(name, i) for i, name in enumerate(names, 1)] + [(item_name(0), 0)]  # whole photo last
            return {**out, items_view: gr.update(value=(preview, list(zip(boxes, names))), visible=True),
                    item_pick: gr.update(choices=choices, value=index, visible=True)}

        item_inputs = [photo, k, picked_state, *dropdowns, words, items_state]
        item_outputs = [items_view, item_pick, status, items_state, *result_outputs, picked_state]
        find = with_signature(find_items, ["photo", "k", "picked", *filter_names, "words", "items"])
        searched.then(find, inputs=item_inputs, outputs=item_outputs, api_name="show_items")
        worded.then(find, inputs=item_inputs, outputs=item_outputs, api_visibility="private")

        def pick_item(index, items, image):
            """Show the results of one item (0 = the whole photo) of the last search."""
            if not isinstance(index, int) or not 0 <= index < len(items):
                return {status: "Search with a photo first, then pick a product in it."}
            return show_item(items, index, image)

        pick_outputs = result_outputs + [picked_state]
        item_pick.input(pick_item, inputs=[item_pick, items_state, photo], outputs=pick_outputs, api_name="pick_item")

        def select_item(items, image, evt: gr.SelectData):
            """Clicking a box (or its legend) in the photo shows that product's results."""
            index = evt.index + 1 if isinstance(evt.index, int) else -1
            return {**pick_item(index, items, image), item_pick: index if 0 < index < len(items) else None}

        items_view.select(select_item, inputs=[items_state, photo], outputs=pick_outputs + [item_pick],
                          api_name="select_item")

        def select_result(hits, evt: gr.SelectData):
            """Details of the clicked result."""
            pid, score, *similarity = (hits[evt.index] if isinstance(evt.index, int) and 0 <= evt.index < len(hits)
                                       else ("", 0.0))
            try:
                hit = shop.product(pid)
            except Exception as exc:  # noqa: BLE001
                return {detail_info: error_md(exc), details_box: gr.update(visible=True)}
            if hit is None:
                return {details_box: gr.update(visible=False), selected: ""}
            info = details_html(hit, score, (similarity or [None])[0])
            return {detail_photo: shop.photo(hit), detail_info: info, selected: pid,
                    details_box: gr.update(visible=True)}

        gallery.select(select_result, inputs=[hits_state], outputs=[detail_photo, detail_info, selected, details_box],
                       api_name="select_result", scroll_to_output=True)

        def more_like(product_id, k_value, *values):
            """Products like an indexed one (its stored vector, no re-encoding), with the current filters."""
            try:
                results = shop.more_like(str(product_id or ""), k_value, filters_of(values))
                hit = shop.product(str(product_id))
            except Exception as exc:  # noqa: BLE001
                return {status: error_md(exc)}
            title = (hit.payload.get("title") if hit else None) or product_id
            return show_results(results, f"more like “{md(str(title))}”")

        more_btn.click(with_signature(more_like, ["product_id", "k", *filter_names]),
                       inputs=[selected, k, *dropdowns], outputs=result_outputs, api_name="more_like_this")

        # Browse by category

        browse_outputs = [browse_gallery, page_md, browse_state, page_ids, browse_box, similar_gallery]

        def show_page(state: dict) -> dict:
            try:
                page = shop.page(state.get("field"), state.get("value"), state.get("page", 0), state.get("seed"))
            except Exception as exc:  # noqa: BLE001
                return {page_md: error_md(exc)}
            state = {**state, "page": page.number}
            name = md(str(state.get("value") or "All products"))
            text = (f"**{name}**: page **{page.number + 1}** of **{page.pages}** "
                    f"({page.total:,} products{', shuffled' if state.get('seed') is not None else ''})")
            return {browse_gallery: shop.gallery(page.hits, with_score=False), page_md: text, browse_state: state,
                    page_ids: [h.product_id for h in page.hits], browse_box: gr.update(visible=False),
                    similar_gallery: gr.update(value=[], visible=False)}

        def browse(field, value, shuffled):
            """First page of a category (field = value); shuffled pages come in a random order."""
            if not value and field:
                return {page_md: "Pick a category to see its products.", browse_gallery: [], page_ids: [],
                        browse_state: {}}
            if field and field not in fields:
                return {page_md: "Pick one of the fields offered under “Browse by”."}
            try:
                known = field is None or value in dict(shop.searcher.store.facet(field, limit=1000))
            except Exception as exc:  # noqa: BLE001
                return {page_md: error_md(exc)}
            if not known:
                return {page_md: f"No products in “{md(str(value))}”: pick a category from the list.",
                        browse_gallery: [], page_ids: [], browse_state: {}}
            seed = random.randrange(1 << 30) if shuffled else None
            return show_page({"field": field or None, "value": value or None, "page": 0, "seed": seed})

        def turn(state, step: int):
            if not state:
                return {page_md: "Pick a category first."}
            return show_page({**state, "page": int(state.get("page", 0)) + step})

        def next_page(state):
            """The next page of the category being browsed."""
            return turn(state, 1)

        def previous_page(state):
            """The previous page of the category being browsed."""
            return turn(state, -1)

        def browse_values(field):
            """The values of a field, with counts, for the category picker."""
            try:
                values = facet_choices(shop.searcher.store.facet(field, limit=500)) if field else []
            except Exception as exc:  # noqa: BLE001
                return {page_md: error_md(exc)}
            return {browse_value: gr.update(choices=values, value=None, label=label(field) if field else "Category")}

        browse_field.change(browse_values, inputs=[browse_field], outputs=[browse_value, page_md],
                            api_name="browse_values")
        gr.on([browse_value.input, shuffle.input], browse, inputs=[browse_field, browse_value, shuffle],
              outputs=browse_outputs, api_name="browse")
        next_btn.click(next_page, inputs=[browse_state], outputs=browse_outputs, api_name="next_page")
        prev_btn.click(previous_page, inputs=[browse_state], outputs=browse_outputs, api_name="previous_page")

        def select_product(ids, evt: gr.SelectData):
            """Details of the clicked product."""
            try:
                pid = ids[evt.index] if isinstance(evt.index, int) and 0 <= evt.index < len(ids) else ""
                hit = shop.product(pid)
            except Exception as exc:  # noqa: BLE001
                return {browse_info: error_md(exc), browse_box: gr.update(visible=True)}
            if hit is None:
                return {browse_box: gr.update(visible=False), browse_selected: ""}
            return {browse_photo: shop.photo(hit), browse_info: details_html(hit), browse_selected: pid,
                    browse_box: gr.update(visible=True), similar_status: "",
                    similar_gallery: gr.update(value=[], visible=False)}

        browse_gallery.select(select_product, inputs=[page_ids],
                              outputs=[browse_photo, browse_info, browse_selected, browse_box, similar_status,
                                       similar_gallery], api_name="select_product", scroll_to_output=True)

        def find_similar(product_id):
            """Look-alikes of a product, from its stored vector."""
            try:
                results = shop.more_like(str(product_id or ""), DEFAULT_K)
            except Exception as exc:  # noqa: BLE001
                return {similar_status: error_md(exc), similar_gallery: gr.update(visible=False)}
            return {similar_gallery: gr.update(value=shop.gallery(results.hits), visible=True),
                    similar_status: status_line(len(results.hits), results.seconds, "look-alikes")}

        similar_btn.click(find_similar, inputs=[browse_selected], outputs=[similar_gallery, similar_status],
                          api_name="find_similar")

        def product_details(product_id: str) -> dict:
            """Everything the index holds about one product, as JSON (for API callers)."""
            try:
                hit = shop.product(str(product_id or ""))
            except Exception as exc:  # noqa: BLE001
                return {"error": friendly(exc)}
            return result_row(hit, 1)["metadata"] if hit else {"error": f"no product {product_id!r}"}

        gr.api(product_details, api_name="product")

        def refreshed() -> dict:
            # The index changes under a running app (a sync handed over by the indexer, --watch): each page load
            # shows today's product count and filter values, not those of the day the app started.
            now = shop.facets()
            out = {header: f"# shoplens\nFind products {how} in a catalog of **{shop.count():,}** products."}
            for name, dropdown in zip(fields, dropdowns):
                out[dropdown] = gr.update(choices=facet_choices(now.get(name, [])))
            return out

        demo.load(refreshed, outputs=[header, *dropdowns], api_visibility="private", queue=False)
    return demo


def item_name(index: int) -> str:
    """0 -> 'Whole photo', 1 -> 'Item 1' (the best box), ..."""
    return "Whole photo" if index == 0 else f"Item {index}"


def item_json(results, index: int) -> dict:
    """One item of a search for API callers: its name, box (pixels of the decoded photo) and results."""
    return {"item": index, "name": item_name(index), "box": results.box.as_dict() if results.box else None,
            "results": [result_row(h, i) for i, h in enumerate(results.hits, 1)]}


def build_message(message: str, cache_expiry: tuple[int, int] = CACHE_EXPIRY) -> gr.Blocks:
    """The page shown when there is nothing to search yet (no index, empty index, store unreachable)."""
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=cache_expiry) as demo:
        gr.Markdown("# shoplens", elem_classes="sl-header")
        gr.Markdown(message)
        refresh = gr.Button("Check again", size="sm")
        note = gr.Markdown()
        refresh.click(lambda: "Restart the app once the index is built (`python app.py --index DIR`).",
                      outputs=[note], api_name="check")
    return demo
