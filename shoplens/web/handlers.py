"""What each action on the page does, as plain functions of plain inputs: no Gradio in sight.

`Handlers` wraps the one Shop of the process. Each method takes what the page's components hold (an upload's
path or bytes, k, the filter dropdowns' values in field order, text, the state a previous action left) and
returns a dict of named outputs holding only what changes: "gallery", "status", "json", ... (OUTPUTS lists
them). A value is what the component shows, or an `Update` when its settings change too (hidden, new
choices). shoplens.web.ui maps the names to its components; this module holds no per-user state: what a
user did comes back in as an argument (hits, items, picked, browse state).
"""

from __future__ import annotations

import logging
import random
from typing import Any, Callable, Sequence

from shoplens.errors import UserError
from shoplens.images import ImageError
from shoplens.localise import DEFAULT_CROP
from shoplens.query.batcher import Busy
from shoplens.query.search import Results
from shoplens.store import Hit, StoreError, point_id
from shoplens.web.shop import Shop, clean_words
from shoplens.web.views import (details_html, duplicates_html, facet_choices, label, md, redact, result_row,
                                status_line)

log = logging.getLogger("shoplens.web")

DEFAULT_K = 12
# The names a handler's dict may use, with what each shows (shoplens.web.ui gives each a component).
OUTPUTS = {
    # Search by photo
    "gallery": "the results' tiles", "status": "the search's status line (Markdown)",
    "hits": "[[product id, score, similarity]] of the results shown (state)",
    "json": "the results for API callers", "details": "the box of the clicked result's details",
    "detail_photo": "the clicked result's photo", "detail_info": "its details (HTML)",
    "selected": "its product id", "items": "Results of the whole photo, then of each product found in it (state)",
    "picked": "{'photo': the upload, 'item': index into items} (state)",
    "items_view": "the photo with a box around each product", "item_pick": "the choice of what to search with",
    # Browse by category
    "browse_gallery": "a category page's tiles", "page": "the page line (Markdown)",
    "browse_state": "{'field', 'value', 'page', 'seed'} of the page shown (state)",
    "page_ids": "the product ids of the page shown (state)", "browse_value": "the category picker",
    "browse_box": "the box of the clicked product's details", "browse_photo": "its photo",
    "browse_info": "its details (HTML)", "browse_selected": "its product id",
    "similar_status": "the look-alikes' status line", "similar_gallery": "the look-alikes' tiles",
    # Duplicates
    "dup_gallery": "a duplicate group's listings side by side", "dup_page": "the group's line (Markdown)",
    "dup_info": "its listings' ids, titles and fields (HTML)", "dup_state": "the group shown, from 0 (state)",
    # Page load
    "header": "the page's title and product count",
}


class Update:
    """A component's new settings, with or without a new value: Update(visible=False), Update(choices=[...])."""

    def __init__(self, **changes: Any):
        self.changes = changes

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Update) and self.changes == other.changes

    def __repr__(self) -> str:
        return f"Update({', '.join(f'{k}={v!r}' for k, v in self.changes.items())})"


HIDDEN = Update(visible=False)


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


def warning_md(message: str) -> str:
    """A message for the page, escaped and marked as an error."""
    return f"<p class='sl-error'>⚠️ {md(message)}</p>"


def error_md(exc: Exception) -> str:
    """friendly(exc) as the page shows it."""
    return warning_md(friendly(exc))


def item_name(index: int) -> str:
    """0 -> 'Whole photo', 1 -> 'Item 1' (the best box), ..."""
    return "Whole photo" if index == 0 else f"Item {index}"


def item_json(results: Results, index: int) -> dict:
    """One item of a search for API callers: its name, box (pixels of the decoded photo) and results."""
    return {"item": index, "name": item_name(index), "box": results.box.as_dict() if results.box else None,
            "results": [result_row(h, i) for i, h in enumerate(results.hits, 1)]}


def new_seed() -> int:
    """A seed for a shuffled category (its pages keep one order while the shopper turns them)."""
    return random.randrange(1 << 30)


class Handlers:
    """The page's actions over one Shop; `fields` are the filter fields the page offers, in dropdown order."""

    def __init__(self, shop: Shop, fields: Sequence[str], crop: str = DEFAULT_CROP,
                 seeds: Callable[[], int] = new_seed, browse_default: str | None = None):
        """`crop`: the searcher's crop default ("auto" searches the products found in the photo at once);
        `seeds`: where shuffled browsing gets its seeds; `browse_default`: the "Browse by" field a loaded page
        starts with (its category picker's values are refreshed on each page load)."""
        self.shop = shop
        self.fields = list(fields)
        self.crop = crop
        self.seeds = seeds
        self.browse_default = browse_default

    # texts of the page

    @property
    def prompt(self) -> str:
        """What the status line says before any search."""
        if self.shop.has_text:
            return "Upload, paste or take a photo of a product, or type a few words (e.g. “red running shoes”)."
        return "Upload, paste or take a photo of a product to find look-alikes."

    def header(self, total: int) -> str:
        """The page's title line with the catalog's size."""
        how = "by photo or by words" if self.shop.has_text else "by photo"
        return f"# shoplens\nFind products {how} in a catalog of **{total:,}** products."

    def filters_of(self, values: Sequence) -> dict:
        """The filter dropdowns' values (in field order) as store filters; empty ones left out."""
        # Dropdown values are matched against the index's own values by Gradio; they only ever
        # become filter values in the store. An API caller may pass one value as a plain string.
        return {f: [v] if isinstance(v, str) else list(v) for f, v in zip(self.fields, values) if v}

    # Search by photo

    def show_results(self, results: Results, query: str) -> dict:
        """A list of results in the gallery, the status line and the JSON; any open details closed."""
        # Every list shows its ranking score, which decreases down it; the image similarity is in the details.
        hits = results.hits
        return {"gallery": self.shop.gallery(hits), "hits": [[h.product_id, h.score, h.similarity] for h in hits],
                "status": f"{status_line(len(hits), results.seconds)} · {query}",
                "json": {"seconds": round(results.seconds, 4),
                         "results": [result_row(h, i) for i, h in enumerate(hits, 1)]},
                "details": HIDDEN}

    def show_item(self, items: list[Results], index: int, image) -> dict:
        """One item's results, plus every item's in the JSON: "several items give results per item"."""
        shown = self.show_results(items[index],
                                  "similar to your photo" if index == 0 else f"similar to item {index}")
        shown["json"] = {**shown["json"], "searched": item_name(index),
                         "items": [item_json(r, i) for i, r in enumerate(items)]}
        return {**shown, "picked": {"photo": image, "item": index}}

    def failed(self, exc: Exception) -> dict:
        """A search that failed: no results, the message in the status line and in the JSON."""
        message = friendly(exc)
        # Busy is no failure of the shopper's photo: a plain line, not the error style.
        status = f"⏳ {md(message[:1].upper() + message[1:])}." if isinstance(exc, Busy) else warning_md(message)
        return {"gallery": [], "hits": [], "json": {"error": message}, "status": status, "details": HIDDEN}

    def search(self, image, k, picked: dict | None, filter_values: Sequence, words: str | None,
               all_listings: bool = False) -> dict:
        """Search the catalog with a photo (by the crop default: the whole photo, or the best product in it;
        the shopper's pick for this photo wins). Words typed beside the photo refine its results. One result
        per group of duplicate listings unless `all_listings`."""
        if image is None:
            if clean_words(words) and self.shop.has_text:
                return {**self.search_words(words, k, filter_values, all_listings), "items": [], "picked": {}}
            return {"gallery": [], "hits": [], "json": {"results": []}, "items": [], "status": self.prompt,
                    "details": HIDDEN}
        filters = self.filters_of(filter_values)
        try:
            # With crop off the whole photo answers at once; the products in it are found by the next step
            # (find_items), so the localiser never delays the first results.
            items = (self.shop.search_items(image, k, filters, words=words, all_listings=all_listings)
                     if self.crop == "auto"
                     else [self.shop.search_photo(image, k, filters, words=words, all_listings=all_listings)])
        except Exception as exc:  # noqa: BLE001 - every failure becomes a message in the page
            return {**self.failed(exc), "items": []}
        wanted = (picked or {}).get("item") if (picked or {}).get("photo") == image else None
        index = wanted
        if not isinstance(index, int) or not 0 <= index < len(items):
            index = 1 if self.crop == "auto" and len(items) > 1 else 0
        shown = {**self.show_item(items, index, image), "items": items}
        if self.crop != "auto" and isinstance(wanted, int) and wanted >= len(items):
            # The boxes come with the next step (find_items): keep the shopper's pick for it to show.
            shown["picked"] = {"photo": image, "item": wanted}
        if clean_words(words):
            shown["status"] += f", refined by “{md(clean_words(words))}”"
        return shown

    def search_words(self, words: str | None, k, filter_values: Sequence, all_listings: bool = False) -> dict:
        """Search the catalog by words: titles and attributes, keyword and semantic search fused."""
        text = clean_words(words)
        if not text:
            return {"status": self.prompt, "gallery": [], "hits": [], "json": {"results": []}}
        try:
            results = self.shop.search_text(text, k, self.filters_of(filter_values), all_listings)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a message in the page
            return self.failed(exc)
        return self.show_results(results, f"matching “{md(text)}”")

    def submit_words(self, words: str | None, image, k, picked: dict | None, filter_values: Sequence,
                     all_listings: bool = False) -> dict:
        """Enter in the words box: search by the words, or by the photo refined by them when there is one."""
        return self.search(image, k, picked, filter_values, words, all_listings)

    def find_items(self, image, k, picked: dict | None, filter_values: Sequence, words: str | None,
                   items: list[Results] | None, all_listings: bool = False) -> dict:
        """The products found in the photo: each one's results, the photo with a box around each, and the
        choice of what to search with. Shows the item the shopper picked for this photo, if any."""
        if not image:
            return {"items_view": Update(value=None, visible=False), "item_pick": HIDDEN}
        same = (picked or {}).get("photo") == image
        filters = self.filters_of(filter_values)
        try:
            if not (same and items):  # called on its own (API): search the whole photo too
                items = [self.shop.search_photo(image, k, filters, words=words, all_listings=all_listings)]
            if len(items) == 1:
                items = items + self.shop.search_boxes(image, k, filters, words=words, all_listings=all_listings)
            preview, boxes = self.shop.preview(image, [r.box for r in items[1:]])
        except Exception as exc:  # noqa: BLE001
            return {"status": self.failed(exc)["status"]}
        index = (picked or {}).get("item", 0) if same else 0
        index = index if isinstance(index, int) and 0 <= index < len(items) else 0
        shown = self.show_item(items, index, image)
        out = {"items": items, "picked": shown["picked"], "json": shown["json"]}
        if index or not same:  # the search before showed the whole photo's results already
            out.update(shown)
        if len(items) < 2:
            return {**out, "items_view": Update(value=None, visible=False), "item_pick": HIDDEN}
        names = [item_name(i) for i in range(1, len(items))]
        choices = [(name, i) for i, name in enumerate(names, 1)] + [(item_name(0), 0)]  # whole photo last
        return {**out, "items_view": Update(value=(preview, list(zip(boxes, names))), visible=True),
                "item_pick": Update(choices=choices, value=index, visible=True)}

    def pick_item(self, index, items: list[Results], image) -> dict:
        """Show the results of one item (0 = the whole photo) of the last search."""
        if not isinstance(index, int) or not 0 <= index < len(items):
            return {"status": "Search with a photo first, then pick a product in it."}
        return self.show_item(items, index, image)

    def select_item(self, items: list[Results], image, clicked) -> dict:
        """Clicking a box (or its legend) in the photo shows that product's results; `clicked` counts the boxes
        from 0."""
        index = clicked + 1 if isinstance(clicked, int) else -1
        return {**self.pick_item(index, items, image), "item_pick": index if 0 < index < len(items) else None}

    def select_result(self, hits: list, clicked) -> dict:
        """Details of the clicked result (`clicked`: its place in the gallery, from 0)."""
        pid, score, *similarity = (hits[clicked] if isinstance(clicked, int) and 0 <= clicked < len(hits)
                                   else ("", 0.0))
        try:
            hit = self.shop.product(pid)
        except Exception as exc:  # noqa: BLE001
            return {"detail_info": error_md(exc), "details": Update(visible=True)}
        if hit is None:
            return {"details": HIDDEN, "selected": ""}
        info = details_html(hit, score, (similarity or [None])[0])
        return {"detail_photo": self.shop.photo(hit), "detail_info": info, "selected": pid,
                "details": Update(visible=True)}

    def more_like(self, product_id, k, filter_values: Sequence, all_listings: bool = False) -> dict:
        """Products like an indexed one (its stored vector, no re-encoding), with the current filters."""
        try:
            results = self.shop.more_like(str(product_id or ""), k, self.filters_of(filter_values), all_listings)
            hit = self.shop.product(str(product_id))
        except Exception as exc:  # noqa: BLE001
            return {"status": error_md(exc)}
        title = (hit.payload.get("title") if hit else None) or product_id
        return self.show_results(results, f"more like “{md(str(title))}”")

    # Browse by category

    def show_page(self, state: dict) -> dict:
        """The page of a category that `state` names (its number forced into range), any open details closed."""
        try:
            page = self.shop.page(state.get("field"), state.get("value"), state.get("page", 0), state.get("seed"),
                                  all_listings=bool(state.get("all_listings")))
        except Exception as exc:  # noqa: BLE001
            return {"page": error_md(exc)}
        state = {**state, "page": page.number}
        name = md(str(state.get("value") or "All products"))
        hidden = f" + {page.hidden:,} more listings of the same photos" if page.hidden else ""
        text = (f"**{name}**: page **{page.number + 1}** of **{page.pages}** "
                f"({page.total:,} products{hidden}{', shuffled' if state.get('seed') is not None else ''})")
        return {"browse_gallery": self.shop.gallery(page.hits, with_score=False), "page": text,
                "browse_state": state, "page_ids": [h.product_id for h in page.hits], "browse_box": HIDDEN,
                "similar_gallery": Update(value=[], visible=False)}

    def browse(self, field: str | None, value: str | None, shuffled: bool, all_listings: bool = False) -> dict:
        """First page of a category (field = value); shuffled pages come in a random order."""
        if not value and field:
            return {"page": "Pick a category to see its products.", "browse_gallery": [], "page_ids": [],
                    "browse_state": {}}
        if field and field not in self.fields:
            return {"page": "Pick one of the fields offered under “Browse by”."}
        try:
            known = field is None or value in dict(self.shop.searcher.store.facet(field, limit=1000))
        except Exception as exc:  # noqa: BLE001
            return {"page": error_md(exc)}
        if not known:
            return {"page": f"No products in “{md(str(value))}”: pick a category from the list.",
                    "browse_gallery": [], "page_ids": [], "browse_state": {}}
        seed = self.seeds() if shuffled else None
        every = {"all_listings": True} if all_listings else {}  # the state names the switch only when it is on
        return self.show_page({"field": field or None, "value": value or None, "page": 0, "seed": seed, **every})

    def turn(self, state: dict | None, step: int) -> dict:
        """The page `step` pages on from the one shown (kept within the category)."""
        if not state:
            return {"page": "Pick a category first."}
        return self.show_page({**state, "page": int(state.get("page", 0)) + step})

    def next_page(self, state: dict | None) -> dict:
        """The next page of the category being browsed."""
        return self.turn(state, 1)

    def previous_page(self, state: dict | None) -> dict:
        """The previous page of the category being browsed."""
        return self.turn(state, -1)

    def browse_values(self, field: str | None) -> dict:
        """The values of a field, with counts, for the category picker."""
        try:
            values = facet_choices(self.shop.searcher.store.facet(field, limit=500)) if field else []
        except Exception as exc:  # noqa: BLE001
            return {"page": error_md(exc)}
        return {"browse_value": Update(choices=values, value=None, label=label(field) if field else "Category")}

    def select_product(self, ids: list[str], clicked) -> dict:
        """Details of the clicked product (`clicked`: its place on the page, from 0)."""
        try:
            pid = ids[clicked] if isinstance(clicked, int) and 0 <= clicked < len(ids) else ""
            hit = self.shop.product(pid)
        except Exception as exc:  # noqa: BLE001
            return {"browse_info": error_md(exc), "browse_box": Update(visible=True)}
        if hit is None:
            return {"browse_box": HIDDEN, "browse_selected": ""}
        return {"browse_photo": self.shop.photo(hit), "browse_info": details_html(hit), "browse_selected": pid,
                "browse_box": Update(visible=True), "similar_status": "",
                "similar_gallery": Update(value=[], visible=False)}

    def find_similar(self, product_id) -> dict:
        """Look-alikes of a product, from its stored vector."""
        try:
            results = self.shop.more_like(str(product_id or ""), DEFAULT_K)
        except Exception as exc:  # noqa: BLE001
            return {"similar_status": error_md(exc), "similar_gallery": HIDDEN}
        return {"similar_gallery": Update(value=self.shop.gallery(results.hits), visible=True),
                "similar_status": status_line(len(results.hits), results.seconds, "look-alikes")}

    # Duplicates (in the Browse tab)

    def duplicates_page(self, number) -> dict:
        """One group of duplicate listings (`number` from 0, largest groups first): the listings' photos side by
        side, and each one's id, title, category fields and photo, with the fields they disagree on."""
        try:
            groups = self.shop.duplicate_groups()
        except Exception as exc:  # noqa: BLE001 - an index built before groups says so in the page
            return {"dup_page": warning_md(friendly(exc)), "dup_gallery": [], "dup_info": "", "dup_state": 0}
        if not groups:
            return {"dup_page": "No duplicate listings: every product has a photo of its own.", "dup_gallery": [],
                    "dup_info": "", "dup_state": 0}
        try:
            index = max(0, min(len(groups) - 1, int(number or 0)))
        except (TypeError, ValueError):
            index = 0
        group = groups[index]
        hits = [Hit(point_id(str(p.get("product_id", ""))), 0.0, p) for p in group.listings]
        flag = (f" · **the listings disagree on {md(', '.join(group.disagree))}**" if group.disagree else "")
        text = (f"Group **{index + 1}** of **{len(groups):,}** ({sum(g.size for g in groups):,} listings in groups): "
                f"**{group.size} listings** of the same photo{flag}")
        return {"dup_page": text, "dup_gallery": self.shop.gallery(hits, with_score=False),
                "dup_info": duplicates_html(group), "dup_state": index}

    def next_group(self, number) -> dict:
        """The next group of duplicate listings."""
        return self.duplicates_page(int(number or 0) + 1)

    def previous_group(self, number) -> dict:
        """The previous group of duplicate listings."""
        return self.duplicates_page(int(number or 0) - 1)

    def product_details(self, product_id) -> dict:
        """Everything the index holds about one product, as JSON (for API callers)."""
        try:
            hit = self.shop.product(str(product_id or ""))
        except Exception as exc:  # noqa: BLE001
            return {"error": friendly(exc)}
        return result_row(hit, 1)["metadata"] if hit else {"error": f"no product {product_id!r}"}

    # Page load

    def refreshed(self) -> dict:
        """Today's product count, filter values ("filter_<field>": new choices) and the category picker's values
        (of the "Browse by" field a page starts with) for a page being loaded."""
        # The index changes under a running app (a sync handed over by the indexer, --watch): each page load
        # shows today's product count and values, not those of the day the app started (the page's own
        # config keeps those).
        now = self.shop.facets()
        out: dict = {"header": self.header(self.shop.count())}
        for name in self.fields:
            out[f"filter_{name}"] = Update(choices=facet_choices(now.get(name, [])))
        if self.browse_default is not None:
            out["browse_value"] = Update(choices=facet_choices(now.get(self.browse_default, [])))
        return out
