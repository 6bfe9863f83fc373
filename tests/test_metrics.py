"""Ranking metrics against values worked out by hand."""

import math

import numpy as np
import pytest

from shoplens.quality import metrics

# Ranking [hit, miss, hit, miss, miss] with 3 relevant items in the catalog.
REL = [1, 0, 1, 0, 0]


def test_precision_divides_by_k_even_past_the_end_of_the_list():
    assert metrics.precision_at_k(REL, 3, 1) == 1.0
    assert metrics.precision_at_k(REL, 3, 5) == pytest.approx(2 / 5)
    # Only 5 results but k = 10: the 5 missing ranks count as misses.
    assert metrics.precision_at_k(REL, 3, 10) == pytest.approx(2 / 10)


def test_recall_is_hit_rate():
    assert metrics.recall_at_k(REL, 3, 1) == 1.0
    assert metrics.recall_at_k([0, 0, 0, 1], 1, 1) == 0.0
    assert metrics.recall_at_k([0, 0, 0, 1], 1, 3) == 0.0
    assert metrics.recall_at_k([0, 0, 0, 1], 1, 5) == 1.0


def test_average_precision_by_hand():
    # (P@1 * 1 + P@3 * 1) / min(10, 3) = (1 + 2/3) / 3
    assert metrics.average_precision_at_k(REL, 3, 10) == pytest.approx((1 + 2 / 3) / 3)
    # One relevant item, found at rank 4: P@4 = 1/4, normaliser min(10, 1) = 1.
    assert metrics.average_precision_at_k([0, 0, 0, 1], 1, 10) == pytest.approx(0.25)
    # More relevant items than k, all of the top k relevant: normaliser is k, so 1.
    assert metrics.average_precision_at_k([1] * 10, 50, 10) == pytest.approx(1.0)
    # The relevant item at rank 11 is outside the top 10.
    assert metrics.average_precision_at_k([0] * 10 + [1], 1, 10) == 0.0


def test_ndcg_by_hand():
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    ideal = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert metrics.ndcg_at_k(REL, 3, 10) == pytest.approx(dcg / ideal)
    assert metrics.ndcg_at_k([0, 0, 0, 1], 1, 10) == pytest.approx(1 / math.log2(5))
    assert metrics.ndcg_at_k([1] * 10, 50, 10) == pytest.approx(1.0)


def test_empty_ranking_scores_zero():
    for fn in (metrics.precision_at_k, metrics.recall_at_k, metrics.average_precision_at_k, metrics.ndcg_at_k):
        assert fn([], 2, 10) == 0.0


def test_no_relevant_item_is_nan_and_left_out_of_the_averages():
    rel = np.array([[1, 0], [0, 0], [0, 1]], dtype=bool)
    n = np.array([1, 0, 1])
    scores = metrics.per_query(rel, n, ks=(1, 2))
    assert np.isnan(scores["precision@1"][1]) and np.isnan(scores["map@2"][1])
    summary = metrics.summarise(scores)
    assert summary["queries"] == 2 and summary["no_relevant"] == 1
    assert summary["precision@1"] == 0.5  # (1 + 0) / 2, the unmatched query is not a zero
    assert summary["hit@2"] == 1.0
    assert summary["map@2"] == pytest.approx((1 + 0.5) / 2)


def test_summary_when_no_query_has_a_relevant_item():
    summary = metrics.summarise(metrics.per_query(np.zeros((2, 3), bool), [0, 0], ks=(1,)))
    assert summary == {"queries": 0, "no_relevant": 2, "precision@1": None, "hit@1": None, "map@1": None,
                       "ndcg@1": None}


def test_vectorised_equals_one_query_at_a_time():
    rng = np.random.default_rng(0)
    rel = rng.random((20, 10)) < 0.3
    n = rel.sum(axis=1) + rng.integers(0, 4, 20)
    batch = metrics.per_query(rel, n)
    for i in range(20):
        assert batch["map@10"][i] == pytest.approx(metrics.average_precision_at_k(rel[i], n[i], 10), nan_ok=True)
        assert batch["ndcg@10"][i] == pytest.approx(metrics.ndcg_at_k(rel[i], n[i], 10), nan_ok=True)


def test_ndcg_agrees_with_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    truth = (rng.random((30, 40)) < 0.2).astype(float)
    truth[:, 0] = 1  # every query has a relevant item
    scores = rng.random((30, 40))  # no ties
    order = np.argsort(-scores, axis=1)
    rel = np.take_along_axis(truth, order, axis=1).astype(bool)
    ours = metrics.ndcg_at_k(rel, truth.sum(axis=1), 10)
    for i in range(30):
        assert ours[i] == pytest.approx(sklearn_metrics.ndcg_score(truth[i:i + 1], scores[i:i + 1], k=10))


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError):
        metrics.precision_at_k(np.zeros((3, 5), bool), [1, 2], 5)
