"""What the page shows, as plain data: captions, detail tables, filter choices, safe image paths.

Kept free of Gradio so it can be tested and reused on its own.
"""

from __future__ import annotations

import html
import os
import re

from shoplens.index.duplicates import GROUP_FIELD
from shoplens.query.collapse import LISTINGS, listings_line
from shoplens.store import Hit

# Payload keys that mean nothing to a merchandiser (hashes) or would point off-site.
HIDDEN_FIELDS = {"content_hash", "image_url", "image", "colour_vector", "tuning_hash", "dup_sig", "duplicate_size",
                 "duplicate_lead", "listings"}
# The order details are listed in; any other field follows alphabetically.
FIRST_FIELDS = ["title", "product_id", "category", "sub_category", "product_type", "article_type", "gender", "colour",
                "usage", "season", "year", "image_path"]


# Characters Markdown (or Gradio's $$ maths) would act on, `:` and `.` included (bare links); `&` and `<` are
# made entities first.
MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|~$>:])")
# An absolute path of two parts or more, as the store or the decoder may quote one in an error.
ABSOLUTE_PATH = re.compile(r"(?<![\w.~])/(?:[^\s/'\"`]+/)+([^\s/'\"`]*)")


def md(text: str) -> str:
    """Catalog or user text made inert inside Markdown/HTML: entities for & < >, backslashes for Markdown
    punctuation, one line. Gradio sanitises script away, but `<img>`, `**bold**` or a link would still show."""
    flat = " ".join(str(text).split())
    return MARKDOWN_SPECIALS.sub(r"\\\1", html.escape(flat, quote=False))


def redact(message: str) -> str:
    """An error message for the page with server paths cut to their last part (`…/index.json`)."""
    return ABSOLUTE_PATH.sub(lambda m: "…/" + m.group(1), message)


def public_path(image_path: str) -> str:
    """A photo's path as the page may show it: catalog-relative as indexed, or just the file name when the
    manifest gave an absolute server path."""
    text = str(image_path or "")
    return os.path.basename(text) if os.path.isabs(text) else text


def public(payload: dict) -> dict:
    """A product's payload for the page and API callers: no hashes, no server paths."""
    shown = {k: v for k, v in payload.items() if k not in HIDDEN_FIELDS}
    if "image_path" in shown:
        shown["image_path"] = public_path(shown["image_path"])
    return shown


def label(field: str) -> str:
    """'product_type' -> 'Product type'."""
    text = field.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def caption(hit: Hit, with_score: bool = True) -> str:
    """The title, then the category and (for searches) the ranking score on a second line.

    The ranking score, not the image similarity: it is what the list is ordered by, so it decreases
    down every list (after colour re-ranking and with words too); the similarity is in the details."""
    p = hit.payload
    title = str(p.get("title") or p.get("product_id") or "untitled")
    group = p.get("product_type") or p.get("article_type") or p.get("category")
    facts = [str(group)] if group else []
    if with_score:
        facts.append(f"score {hit.score:.3f}")
    if listings_line(hit):  # one tile for a group of duplicate listings
        facts.append(listings_line(hit))
    return title[:80] + ("\n" + " · ".join(facts) if facts else "")


def result_row(hit: Hit, rank: int) -> dict:
    """One result for API callers: rank, id, score (ranks the list), similarity (image cosine to the query
    photo, None for words alone), title, category and every metadata field."""
    p = public(hit.payload)
    similarity = None if hit.similarity is None else round(hit.similarity, 4)
    row = {"rank": rank, "id": hit.product_id, "score": round(hit.score, 4), "similarity": similarity,
           "title": p.get("title", ""),
           "category": p.get("category", ""), "metadata": p}
    if hit.payload.get(LISTINGS) is not None:  # its duplicate group and every listing of it
        row.update(group=str(hit.payload.get(GROUP_FIELD) or hit.product_id),
                   listings=[{**m, "image_path": public_path(m.get("image_path", ""))}
                             for m in hit.payload[LISTINGS]])
    return row


def details_html(hit: Hit, score: float | None = None, similarity: float | None = None) -> str:
    """An escaped HTML table of everything the index knows about a product."""
    payload = {k: v for k, v in public(hit.payload).items() if v not in ("", None)}
    keys = [k for k in FIRST_FIELDS if k in payload] + sorted(k for k in payload if k not in FIRST_FIELDS)
    title = html.escape(str(payload.get("title") or hit.product_id))
    rows = "".join(f"<tr><th>{html.escape(label(k))}</th><td>{html.escape(str(payload[k]))}</td></tr>"
                   for k in keys if k != "title")
    facts = ([f"score {score:.3f}"] if score is not None else []) + (
        [f"image {similarity:.0%} similar"] if similarity is not None else [])
    similar = f"<p class='sl-score'>{' · '.join(facts)}</p>" if facts else ""
    return f"<div class='sl-details'><h3>{title}</h3>{similar}<table>{rows}</table>{listings_html(hit)}</div>"


def listings_html(hit: Hit) -> str:
    """Every listing of a product's duplicate group (id and title), or '' for a single listing."""
    listings = hit.payload.get(LISTINGS) or []
    if len(listings) < 2:
        return ""
    items = "".join(f"<li>{html.escape(str(m.get('id', '')))}: {html.escape(str(m.get('title', '')))}</li>"
                    for m in listings)
    return (f"<p class='sl-listings'><b>{len(listings)} listings</b> of the same photo:</p>"
            f"<ul class='sl-listings'>{items}</ul>")


def facet_choices(values: list[tuple[str, int]]) -> list[tuple[str, str]]:
    """[('Men', 12)] -> [('Men (12)', 'Men')]: the dropdown shows counts, the store gets the value."""
    return [(f"{value} ({count:,})", value) for value, count in values if value != ""]


def status_line(count: int, seconds: float, what: str = "results") -> str:
    """'12 results in 23 ms'."""
    if count == 0:
        return f"No {what} match: try fewer filters."
    return f"**{count}** {what} in **{seconds * 1000:.0f} ms**"


def duplicates_html(group) -> str:
    """A table of a duplicate group's listings (shoplens.quality.duplicatereport.Group): id, title, the fields
    that tell listings apart, and the photo; the fields the listings disagree on are marked."""
    names = ["product_id", "title", "product_type", "article_type", "colour", "price", "category", "image_path"]
    names = [n for n in names if any(n in p for p in group.listings)]
    head = "".join(f"<th>{html.escape(label(n))}{' ≠' if n in group.disagree else ''}</th>" for n in names)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(public(p).get(n, '')))}</td>" for n in names) + "</tr>"
                   for p in group.listings)
    return f"<div class='sl-details'><table><tr>{head}</tr>{rows}</table></div>"
