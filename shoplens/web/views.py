"""What the page shows, as plain data: captions, detail tables, filter choices, safe image paths.

Kept free of Gradio so it can be tested and reused on its own.
"""

from __future__ import annotations

import html
from pathlib import Path

from shoplens.store import Hit

# Payload keys that mean nothing to a merchandiser (hashes) or would point off-site.
HIDDEN_FIELDS = {"content_hash", "image_url", "image", "colour_vector", "tuning_hash"}
# The order details are listed in; any other field follows alphabetically.
FIRST_FIELDS = ["title", "product_id", "category", "sub_category", "product_type", "article_type", "gender", "colour",
                "usage", "season", "year", "image_path"]


def label(field: str) -> str:
    """'product_type' -> 'Product type'."""
    text = field.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def safe_image(root: Path | None, rel_path: str) -> Path | None:
    """The product photo under the catalog root, or None if it is missing or lies outside the root.

    The relative path comes from the index, not from the page, but a manifest can name absolute paths
    or `..`; resolving and checking keeps every served file inside the root.
    """
    if root is None or not rel_path:
        return None
    root = root.resolve()
    try:
        path = (root / rel_path).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


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
    return title[:80] + ("\n" + " · ".join(facts) if facts else "")


def result_row(hit: Hit, rank: int) -> dict:
    """One result for API callers: rank, id, score (ranks the list), similarity (image cosine to the query
    photo, None for words alone), title, category and every metadata field."""
    p = {k: v for k, v in hit.payload.items() if k not in HIDDEN_FIELDS}
    similarity = None if hit.similarity is None else round(hit.similarity, 4)
    return {"rank": rank, "id": hit.product_id, "score": round(hit.score, 4), "similarity": similarity,
            "title": p.get("title", ""),
            "category": p.get("category", ""), "metadata": p}


def details_html(hit: Hit, score: float | None = None, similarity: float | None = None) -> str:
    """An escaped HTML table of everything the index knows about a product."""
    payload = {k: v for k, v in hit.payload.items() if k not in HIDDEN_FIELDS and v not in ("", None)}
    keys = [k for k in FIRST_FIELDS if k in payload] + sorted(k for k in payload if k not in FIRST_FIELDS)
    title = html.escape(str(payload.get("title") or hit.product_id))
    rows = "".join(f"<tr><th>{html.escape(label(k))}</th><td>{html.escape(str(payload[k]))}</td></tr>"
                   for k in keys if k != "title")
    facts = ([f"score {score:.3f}"] if score is not None else []) + (
        [f"image {similarity:.0%} similar"] if similarity is not None else [])
    similar = f"<p class='sl-score'>{' · '.join(facts)}</p>" if facts else ""
    return f"<div class='sl-details'><h3>{title}</h3>{similar}<table>{rows}</table></div>"


def facet_choices(values: list[tuple[str, int]]) -> list[tuple[str, str]]:
    """[('Men', 12)] -> [('Men (12)', 'Men')]: the dropdown shows counts, the store gets the value."""
    return [(f"{value} ({count:,})", value) for value, count in values if value != ""]


def status_line(count: int, seconds: float, what: str = "results") -> str:
    """'12 results in 23 ms'."""
    if count == 0:
        return f"No {what} match: try fewer filters."
    return f"**{count}** {what} in **{seconds * 1000:.0f} ms**"
