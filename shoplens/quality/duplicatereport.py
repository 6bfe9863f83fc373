"""The duplicates report: every group of listings that show the same photo, largest first, with a flag where
the listings disagree (same photo, another title, type, colour or price): the catalog errors a merchandiser
fixes first. `python -m shoplens duplicates` prints it, or writes it as JSON or CSV; the app's Browse tab
pages through it.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from shoplens.index.duplicates import (DEFAULT_THRESHOLD, GROUP_FIELD, META_KEY, Verifier, check_threshold,
                                       find_components, has_groups, order_key)
from shoplens.store import Store, StoreError

# Fields whose values must agree between listings of one photo; the first of each tuple the catalog has counts.
AGREE = (("title",), ("product_type", "article_type", "type"), ("colour",), ("price", "selling_price"))


@dataclass
class Group:
    """A duplicate group: its id, listings (payloads, by product id) and the fields they disagree on."""

    id: str
    listings: list[dict]
    disagree: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.listings)


def disagreements(listings: list[dict]) -> list[str]:
    """The AGREE fields whose values differ between the listings (spaces and case ignored)."""
    out = []
    for names in AGREE:
        name = next((n for n in names if any(n in p for p in listings)), None)
        if name is not None and len({" ".join(str(p.get(name, "")).lower().split()) for p in listings}) > 1:
            out.append(name)
    return out


def no_groups_message(store: Store) -> str:
    where = f" {store.cli_args()}" if store.cli_args() else ""
    return (f"the index at {store.location} was built before duplicate groups existed; the next indexer run adds "
            f"them (python indexer.py CATALOG{where}); search works without them meanwhile")


def find_groups(store: Store, threshold: float | None = None) -> list[Group]:
    """Every group of two or more listings, largest first (then by group id). With a `threshold` other than the
    index's, the groups are worked out again from the stored signatures (nothing is written)."""
    meta = store.require_meta()
    if not has_groups(meta):
        raise StoreError(no_groups_message(store))
    payloads = store.states()
    indexed = (meta.get(META_KEY) or {}).get("threshold", DEFAULT_THRESHOLD)
    if threshold is not None and check_threshold(threshold) != indexed:
        members = find_components(store, payloads, sorted(payloads), Verifier(threshold=threshold))
        by_group: dict[str, list[str]] = {}
        for pid, group in members.items():
            lead = min((str(payloads[m].get("product_id", "")) for m in group), key=order_key)
            by_group[lead] = group
    else:
        by_group = {}
        for pid, payload in payloads.items():
            by_group.setdefault(str(payload.get(GROUP_FIELD) or payload.get("product_id", "")), []).append(pid)
    groups = []
    for gid, pids in by_group.items():
        if len(set(pids)) < 2:
            continue
        listings = sorted((payloads[p] for p in set(pids)), key=lambda p: order_key(str(p.get("product_id", ""))))
        groups.append(Group(gid, listings, disagreements(listings)))
    groups.sort(key=lambda g: (-g.size, order_key(g.id)))
    return groups


def report_fields(meta: dict) -> list[str]:
    """The category fields a report shows for each listing."""
    return [f for f in meta.get("filter_fields", []) if f not in ("title",)]


def as_json(groups: list[Group], fields: list[str], location: str, threshold: float) -> dict:
    return {"index": location, "threshold": threshold, "groups": len(groups),
            "listings": sum(g.size for g in groups),
            "disagreeing_groups": sum(1 for g in groups if g.disagree),
            "duplicate_groups": [{"group": g.id, "size": g.size, "disagree": g.disagree,
                                  "listings": [row(p, fields) for p in g.listings]} for g in groups]}


def row(payload: dict, fields: list[str]) -> dict:
    return {"id": str(payload.get("product_id", "")), "title": str(payload.get("title", "")),
            **{f: str(payload.get(f, "")) for f in fields}, "image_path": str(payload.get("image_path", ""))}


def as_csv(groups: list[Group], fields: list[str]) -> str:
    """One line per listing: its group, the group's size and disagreements, then the listing's fields."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["group", "size", "disagree", "id", "title", *fields, "image_path"])
    for g in groups:
        for p in g.listings:
            writer.writerow([g.id, g.size, ";".join(g.disagree), *row(p, fields).values()])
    return out.getvalue()


def as_text(groups: list[Group], fields: list[str]) -> str:
    lines = [f"{len(groups)} duplicate groups, {sum(g.size for g in groups)} listings; "
             f"{sum(1 for g in groups if g.disagree)} groups disagree (same photo, another "
             "title/type/colour/price)"]
    for g in groups:
        flag = f"  DISAGREE: {', '.join(g.disagree)}" if g.disagree else ""
        lines.append(f"\ngroup {g.id} ({g.size} listings){flag}")
        for p in g.listings:
            r = row(p, fields)
            cats = " / ".join(r[f] for f in fields if r[f])
            lines.append(f"  {r['id']:<12} {r['title'][:50]:<50} {cats:<40} {r['image_path']}")
    return "\n".join(lines)
