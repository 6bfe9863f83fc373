"""The Gradio page: a "Search by photo" tab and a "Browse by category" tab over one Shop.

`build()` lays out the components and wires each event to a method of shoplens.web.handlers.Handlers, which
does the work without Gradio; `adapt` turns the named outputs a method returns into component updates.
Everything a user did lives in gr.State or in the page's components, never in module globals.
"""

from __future__ import annotations

import base64
import binascii
import html
import inspect
from typing import Callable

import gradio as gr

from shoplens.web.handlers import DEFAULT_K, Handlers, Update
from shoplens.web.shop import MAX_WORDS, Refused, MAX_RESULTS, MAX_UPLOAD_BYTES, Shop, too_large
from shoplens.web.views import facet_choices, label

TITLE = "shoplens: find products by photo"
# One clear colour per box drawn on the shopper's photo (the localisers return at most 4).
ITEM_COLOURS = {"Item 1": "#e11d48", "Item 2": "#2563eb", "Item 3": "#16a34a", "Item 4": "#d97706"}
PAGE_SIZE = 24
MAX_PAGE_SIZE = 200
# Gradio keeps every upload and a copy of every photo it showed: every 10 minutes, drop those older than an hour.
CACHE_EXPIRY = (600, 3600)
# Searches (photo, words, the products in a photo) share one limit, a few per core: enough in flight at once for
# the Shop's encoder batch (shoplens.query.batcher) to gather several photos per call, few enough that the
# handlers' Python work (decode, colour profile, search, gallery) does not thrash two cores. With 128 at once,
# 16 clients on two loaded cores got about 0.85x the searches/s of 8 at once (interleaved A/B; about even when
# the cores were quieter); the rest wait in Gradio's queue (QUEUE_SIZE in shoplens.web.serve), in order. Past
# the Shop's own bound (shoplens.web.shop.MAX_PHOTO_SEARCHES, for callers that bypass this queue) a search
# answers "busy, try again in a moment" in the page.
SEARCH_SLOTS = 8
SEARCHING = {"concurrency_limit": SEARCH_SLOTS, "concurrency_id": "search"}

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


def with_signature(fn, names: list[str]):
    """Give a *args handler named parameters, so API callers see (and can pass) photo=, k=, gender=..."""
    fn.__signature__ = inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names])
    return fn


def updates(shown: dict, outputs: dict) -> dict:
    """A handler's named outputs (shoplens.web.handlers) as updates of the components `outputs` names."""
    return {outputs[name]: gr.update(**value.changes) if isinstance(value, Update) else value
            for name, value in shown.items()}


def adapt(method: Callable[..., dict], outputs: dict, names: list[str], filters_at: int | None = None,
          filters: int = 0):
    """`method` as a Gradio event handler: the event's inputs in, its named outputs turned into updates.

    From position `filters_at`, the `filters` dropdowns' values reach `method` as one list. `names` are the
    parameters API callers see (and can pass): photo=, k=, filter_gender=...
    """
    def handler(*args):
        if filters_at is not None:
            end = filters_at + filters
            args = (*args[:filters_at], list(args[filters_at:end]), *args[end:])
        return updates(method(*args), outputs)

    handler.__name__, handler.__doc__ = method.__name__, method.__doc__
    return with_signature(handler, names)


def build(shop: Shop, page_size: int = PAGE_SIZE, cache_expiry: tuple[int, int] = CACHE_EXPIRY) -> gr.Blocks:
    """The whole app for an opened, non-empty index; Gradio's cached files expire after `cache_expiry`."""
    shop.page_size = page_size
    facets = shop.facets()
    fields = [f for f in shop.fields if facets.get(f)]
    browse_default = shop.browse_field(facets)
    examples = shop.example_photos(facets)
    act = Handlers(shop, fields, browse_default=browse_default)

    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=cache_expiry) as demo:
        header = gr.Markdown(act.header(shop.count()), elem_classes="sl-header")
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
                        every = gr.Checkbox(label="Show every listing", value=False, elem_id="all-listings",
                                            info="off: a product listed several times with the same photo is one "
                                                 "result, labelled with how many listings it stands for")
                        dropdowns = [gr.Dropdown(facet_choices(facets[f]), value=[], multiselect=True,
                                                 label=label(f)) for f in fields]
                        if examples:
                            gr.Examples([[p] for p in examples], inputs=[photo], label="Try a catalog photo",
                                        examples_per_page=len(examples))
                    with gr.Column(scale=3, min_width=300):
                        status = gr.Markdown(act.prompt, label="Status", elem_id="status", elem_classes="sl-status")
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
                    browse_every = gr.Checkbox(label="Every listing", value=False, scale=1, min_width=120,
                                               elem_id="browse-all-listings")
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
                with gr.Accordion("Duplicates: listings that show the same photo", open=False,
                                  elem_id="duplicates") as dup_box:
                    with gr.Row():
                        dup_prev = gr.Button("← Previous group", size="sm", min_width=100)
                        dup_page = gr.Markdown("Open to page through the groups, largest first.", label="Group",
                                               elem_id="dup-page", elem_classes="sl-status")
                        dup_next = gr.Button("Next group →", size="sm", min_width=100)
                    dup_gallery = gr.Gallery(label="Listings", columns=6, height="auto", object_fit="contain",
                                             allow_preview=False, elem_id="dup-gallery", elem_classes="sl-gallery")
                    dup_info = gr.HTML(label="Listings")
                dup_state = gr.State(0)

        # Each handler's named outputs (shoplens.web.handlers.OUTPUTS) and the components showing them.
        out = {"gallery": gallery, "status": status, "hits": hits_state, "json": results_json, "details": details_box,
               "detail_photo": detail_photo, "detail_info": detail_info, "selected": selected,
               "items": items_state, "picked": picked_state, "items_view": items_view, "item_pick": item_pick,
               "browse_gallery": browse_gallery, "page": page_md, "browse_state": browse_state, "page_ids": page_ids,
               "browse_value": browse_value, "browse_box": browse_box, "browse_photo": browse_photo,
               "browse_info": browse_info, "browse_selected": browse_selected, "similar_status": similar_status,
               "similar_gallery": similar_gallery, "header": header, "dup_gallery": dup_gallery,
               "dup_page": dup_page, "dup_info": dup_info, "dup_state": dup_state,
               **{f"filter_{f}": d for f, d in zip(fields, dropdowns)}}
        n = len(fields)
        filter_names = [f"filter_{f}" for f in fields]

        # Search by photo

        result_outputs = [gallery, status, hits_state, results_json, details_box]
        search_outputs = result_outputs + [items_state, picked_state]
        searched = gr.on([search_btn.click, photo.change, k.release, every.input] + [d.input for d in dropdowns],
                         adapt(act.search, out, ["photo", "k", "picked", *filter_names, "words", "all_listings"], 3,
                               n),
                         inputs=[photo, k, picked_state, *dropdowns, words, every], outputs=search_outputs,
                         api_name="search", **SEARCHING)
        worded = words.submit(adapt(act.submit_words, out, ["words", "photo", "k", "picked", *filter_names,
                                                            "all_listings"], 4, n),
                              inputs=[words, photo, k, picked_state, *dropdowns, every], outputs=search_outputs,
                              api_name="search_text", **SEARCHING)

        item_inputs = [photo, k, picked_state, *dropdowns, words, items_state, every]
        item_outputs = [items_view, item_pick, status, items_state, *result_outputs, picked_state]
        find = adapt(act.find_items, out, ["photo", "k", "picked", *filter_names, "words", "items", "all_listings"],
                     3, n)
        searched.then(find, inputs=item_inputs, outputs=item_outputs, api_name="show_items", **SEARCHING)
        worded.then(find, inputs=item_inputs, outputs=item_outputs, api_visibility="private", **SEARCHING)

        pick_outputs = result_outputs + [picked_state]
        item_pick.input(adapt(act.pick_item, out, ["index", "items", "image"]),
                        inputs=[item_pick, items_state, photo], outputs=pick_outputs, api_name="pick_item")

        def select_item(items, image, evt: gr.SelectData):
            """Clicking a box (or its legend) in the photo shows that product's results."""
            return updates(act.select_item(items, image, evt.index), out)

        items_view.select(select_item, inputs=[items_state, photo], outputs=pick_outputs + [item_pick],
                          api_name="select_item")

        def select_result(hits, evt: gr.SelectData):
            """Details of the clicked result."""
            return updates(act.select_result(hits, evt.index), out)

        gallery.select(select_result, inputs=[hits_state], outputs=[detail_photo, detail_info, selected, details_box],
                       api_name="select_result", scroll_to_output=True)
        more_btn.click(adapt(act.more_like, out, ["product_id", "k", *filter_names, "all_listings"], 2, n),
                       inputs=[selected, k, *dropdowns, every], outputs=result_outputs, api_name="more_like_this")

        # Browse by category

        browse_outputs = [browse_gallery, page_md, browse_state, page_ids, browse_box, similar_gallery]
        browse_field.change(adapt(act.browse_values, out, ["field"]), inputs=[browse_field],
                            outputs=[browse_value, page_md], api_name="browse_values")
        gr.on([browse_value.input, shuffle.input, browse_every.input],
              adapt(act.browse, out, ["field", "value", "shuffled", "all_listings"]),
              inputs=[browse_field, browse_value, shuffle, browse_every], outputs=browse_outputs, api_name="browse")
        next_btn.click(adapt(act.next_page, out, ["state"]), inputs=[browse_state], outputs=browse_outputs,
                       api_name="next_page")
        prev_btn.click(adapt(act.previous_page, out, ["state"]), inputs=[browse_state], outputs=browse_outputs,
                       api_name="previous_page")

        def select_product(ids, evt: gr.SelectData):
            """Details of the clicked product."""
            return updates(act.select_product(ids, evt.index), out)

        browse_gallery.select(select_product, inputs=[page_ids],
                              outputs=[browse_photo, browse_info, browse_selected, browse_box, similar_status,
                                       similar_gallery], api_name="select_product", scroll_to_output=True)
        similar_btn.click(adapt(act.find_similar, out, ["product_id"]), inputs=[browse_selected],
                          outputs=[similar_gallery, similar_status], api_name="find_similar")

        dup_outputs = [dup_page, dup_gallery, dup_info, dup_state]
        dup_box.expand(adapt(act.duplicates_page, out, ["number"]), inputs=[dup_state], outputs=dup_outputs,
                       api_name="duplicates")
        dup_next.click(adapt(act.next_group, out, ["number"]), inputs=[dup_state], outputs=dup_outputs,
                       api_name="next_group")
        dup_prev.click(adapt(act.previous_group, out, ["number"]), inputs=[dup_state], outputs=dup_outputs,
                       api_name="previous_group")

        def product_details(product_id: str) -> dict:
            """Everything the index holds about one product, as JSON (for API callers)."""
            return act.product_details(product_id)

        gr.api(product_details, api_name="product")
        demo.load(adapt(act.refreshed, out, []), outputs=[header, *dropdowns, browse_value], api_visibility="private",
                  queue=False)
    return demo


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
