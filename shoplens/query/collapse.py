"""One result per duplicate group: a shopper sees a product once, labelled with how many listings it stands for.

The groups are worked out at indexing (shoplens.index.duplicates) and kept in each product's payload; here a
ranked list keeps the first (best-ranked) hit of each group, so `score` still decreases down the list, and each
kept hit's payload gets `listings`: every listing of its group (id, title, photo), the shown one first.
An index built before groups existed has none: its lists are left as they are.
"""

from __future__ import annotations

from typing import Callable, Sequence

from shoplens.index.duplicates import GROUP_FIELD, SIZE_FIELD, has_groups, order_key
from shoplens.store import Hit, Store

LISTINGS = "listings"  # payload key of a collapsed hit: [{"id", "title", "image_path"}, ...]
MAX_FETCH = 1000  # most candidates read to fill k groups


def group_of(hit: Hit) -> str:
    """The duplicate group of a hit (its own product id when it has none)."""
    return str(hit.payload.get(GROUP_FIELD) or hit.product_id)


def size_of(hit: Hit) -> int:
    """How many listings a hit's group has (1 without groups)."""
    try:
        return max(1, int(hit.payload.get(SIZE_FIELD) or 1))
    except (TypeError, ValueError):
        return 1


def first_of_groups(hits: Sequence[Hit], exclude: Sequence[str] = ()) -> list[Hit]:
    """The first hit of each group, in the hits' order (of listings tied on score, the smallest product id, so
    the same listing stands for its group whatever order the store returns ties in); groups in `exclude` are
    left out."""
    skip = set(exclude)
    at: dict[str, int] = {}
    out: list[Hit] = []
    for hit in hits:
        group = group_of(hit)
        if group in skip:
            continue
        if group not in at:
            at[group] = len(out)
            out.append(hit)
        elif hit.score == out[at[group]].score and order_key(hit.product_id) < order_key(out[at[group]].product_id):
            out[at[group]] = hit
    return out


def with_listings(store: Store, hits: list[Hit]) -> list[Hit]:
    """`hits` with `listings` in each payload: the shown listing first, then the rest of its group by id."""
    groups = sorted({group_of(h) for h in hits if size_of(h) > 1})
    members: dict[str, list[dict]] = {}
    if groups:
        for hit in store.iterate({GROUP_FIELD: groups}):
            members.setdefault(group_of(hit), []).append(listing(hit))
    out = []
    for hit in hits:
        own = listing(hit)
        rest = sorted((m for m in members.get(group_of(hit), []) if m["id"] != own["id"]),
                      key=lambda m: order_key(m["id"]))
        out.append(Hit(hit.id, hit.score, {**hit.payload, LISTINGS: [own, *rest]}, hit.vector, hit.text_vector,
                       hit.similarity))
    return out


def listing(hit: Hit) -> dict:
    """What a result's details say about one listing."""
    return {"id": hit.product_id, "title": str(hit.payload.get("title", "")),
            "image_path": str(hit.payload.get("image_path", ""))}


def collapsed(store: Store, meta: dict, run: Callable[[int], list[Hit]], k: int, all_listings: bool = False,
              exclude: Sequence[str] = ()) -> list[Hit]:
    """The top `k` groups of the ranked list `run(n)` gives for n candidates (`all_listings`: the top k hits,
    every listing). Reads more candidates while duplicates leave fewer than k groups."""
    if all_listings or not has_groups(meta):
        return list(run(k))[:k]
    fetch = min(MAX_FETCH, max(k * 3, k + 10))
    while True:
        hits = list(run(fetch))
        kept = first_of_groups(hits, exclude)
        if len(kept) >= k or len(hits) < fetch or fetch >= MAX_FETCH:
            return with_listings(store, kept[:k])
        fetch = min(MAX_FETCH, fetch * 2)


def listings_line(hit: Hit) -> str:
    """'3 listings' for a hit standing for a group, '' for a single listing."""
    count = len(hit.payload.get(LISTINGS) or ()) or 1
    return f"{count} listings" if count > 1 else ""
