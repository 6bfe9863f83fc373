"""Equal scores come back in product-id order on every store (issue 19): the same photo listed under several
ids ranks the same in Qdrant Edge, qdrant-client and Milvus, including which of them make the first k."""

from __future__ import annotations

import numpy as np
import pytest

from shoplens.store import PointData, point_id
from stores import STORES

DIM = 8
# Written in an order that is neither the ids' order nor their uuid5 point ids' order.
TWINS = ["sku-07", "sku-03", "sku-11", "sku-01", "sku-05", "sku-10", "sku-02", "sku-09", "sku-04", "sku-08",
         "sku-06", "sku-12"]


def _fill(store):
    rng = np.random.default_rng(5)
    same = rng.normal(size=DIM).astype(np.float32)
    points = [PointData(point_id(pid), same, {"product_id": pid, "colour": "Red"},
                        keywords=([3, 9], [1.0, 1.0])) for pid in TWINS]
    others = rng.normal(size=(30, DIM)).astype(np.float32)
    points += [PointData(point_id(f"other-{i}"), others[i], {"product_id": f"other-{i}", "colour": "Blue"},
                         keywords=([4], [1.0])) for i in range(30)]
    store.create({"encoder": "x", "encoder_version": "1", "dim": DIM, "text": {"dim": 4, "model": "t"}})
    store.upsert(points)
    store.create_keyword_index("colour")
    store.finish()
    return same


@pytest.mark.parametrize("kind", STORES)
def test_equal_scores_rank_by_product_id(make_store, kind):
    store = make_store(kind)
    same = _fill(store)
    by_hand = sorted(TWINS)  # sku-01, sku-02, ... : the product ids' own order
    for k in (1, 5, 12):
        hits = store.search(same, k)
        assert [h.product_id for h in hits] == by_hand[:k], (kind, k)
    assert [h.product_id for h in store.search(same, 5, {"colour": "Red"})] == by_hand[:5]
    # Fifteen asked: the twelve twins (all one score), then the three nearest others, by score.
    hits = store.search(same, 15)
    assert [h.product_id for h in hits[:12]] == by_hand and all(h.score < hits[0].score for h in hits[12:])
    if not store.read_meta().get("words_unavailable"):  # a Milvus 2.3 server has no sparse vectors
        words = store.search_keywords(([3, 9], [1.0, 1.0]), 4)
        assert [h.product_id for h in words] == by_hand[:4], kind
