"""Ranking metrics on hand-checked rankings, scalar vs vectorised forms, leave-one-out evaluation, random baseline."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from artsim_pipeline.core.metrics import (
    average_precision,
    average_precision_at_k,
    average_precision_rows,
    drop_self,
    evaluate_retrieval,
    precision_at_k,
    random_baseline,
    rank_rows,
    rank_with_ties,
    recall_at_k,
    topk_metrics,
)

# ranks:        1     2      3     4      5
RANKED = [True, False, True, False, False]


def test_precision_and_recall_by_hand() -> None:
    assert precision_at_k(RANKED, 1) == 1.0
    assert precision_at_k(RANKED, 3) == pytest.approx(2 / 3)
    assert precision_at_k(RANKED, 10) == pytest.approx(2 / 10)  # denominator K, not list length
    assert recall_at_k(RANKED, 4, 3) == pytest.approx(2 / 4)
    assert recall_at_k(RANKED, 2, 10) == 1.0


def test_average_precision_at_k_by_hand() -> None:
    # hits at ranks 1 and 3: precision 1/1 and 2/3
    assert average_precision_at_k(RANKED, 3, 2) == pytest.approx((1 + 2 / 3) / 2)
    # n_relevant=4 > K=3: divide by min(K, n_relevant)=3
    assert average_precision_at_k(RANKED, 3, 4) == pytest.approx((1 + 2 / 3) / 3)
    # K=1 with many relevant: a hit at rank 1 is perfect
    assert average_precision_at_k(RANKED, 1, 50) == 1.0
    # K larger than the relevant count and than the list
    assert average_precision_at_k(RANKED, 10, 2) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision_at_k([False, True], 2, 1) == pytest.approx(0.5)


def test_full_average_precision_by_hand() -> None:
    assert average_precision(RANKED) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(RANKED, 3) == pytest.approx((1 + 2 / 3) / 3)  # one relevant never retrieved
    assert average_precision([False, False, True, True]) == pytest.approx((1 / 3 + 2 / 4) / 2)


def test_empty_relevant_set_is_nan() -> None:
    none = [False, False, False]
    assert math.isnan(recall_at_k(none, 0, 2))
    assert math.isnan(average_precision_at_k(none, 2, 0))
    assert math.isnan(average_precision(none))
    assert precision_at_k(none, 2) == 0.0
    with pytest.raises(ValueError, match="n_relevant"):
        recall_at_k(RANKED, 1, 5)
    with pytest.raises(ValueError, match="k must be"):
        precision_at_k(RANKED, 0)


def test_rank_with_ties() -> None:
    scores = np.array([0.5, 0.9, 0.5, 0.9, np.nan, 0.1])
    ids = np.array([30, 20, 10, 40, 5, 99])
    order = rank_with_ties(scores, ids)
    assert ids[order].tolist() == [20, 40, 10, 30, 99, 5]
    with pytest.raises(ValueError, match="same length"):
        rank_with_ties(scores, ids[:3])


def test_rank_rows_equals_rank_with_ties_row_by_row() -> None:
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 4, size=(30, 25)).astype(np.float64) / 4  # many ties
    scores[rng.random(scores.shape) < 0.05] = np.nan
    ids = rng.permutation(1000)[:25]
    fast = rank_rows(scores, ids)
    assert len({tuple(row) for row in fast}) == 30
    for row, order in zip(scores, fast):
        assert order.tolist() == rank_with_ties(row, ids).tolist()


def test_vectorised_metrics_equal_the_scalar_forms_row_by_row() -> None:
    rng = np.random.default_rng(2)
    rel = rng.random((40, 12)) < 0.3
    rel[0] = False  # no hit retrieved
    n_rel = rel.sum(axis=1) + rng.integers(0, 3, size=40)  # some relevant items never retrieved
    n_rel[n_rel == 0] = 1
    n_rel = n_rel.astype(np.float64)
    for k in (1, 5, 10, 20):  # 20: more than the 12 ranked
        fast = topk_metrics(rel, n_rel, k)
        for i in range(len(rel)):
            assert fast[f"precision@{k}"][i] == precision_at_k(rel[i], k)
            assert fast[f"recall@{k}"][i] == recall_at_k(rel[i], int(n_rel[i]), k)
            assert fast[f"map@{k}"][i] == average_precision_at_k(rel[i], k, int(n_rel[i]))
    full = average_precision_rows(rel, n_rel)
    assert full.tolist() == [average_precision(rel[i], int(n_rel[i])) for i in range(len(rel))]
    assert full[0] == 0.0 and len(set(full.tolist())) > 10
    assert drop_self(np.array([[2, 0, 1], [1, 2, 0]]), np.array([0, 2])).tolist() == [[2, 1], [1, 0]]


def test_evaluate_retrieval_by_hand() -> None:
    # Unit vectors: query 0's cosines are 0.9 (row 1) and 0.5 (rows 2 and 3, a tie the ids break).
    v = np.array([[1.0, 0.0, 0.0], [0.9, np.sqrt(1 - 0.81), 0.0],
                  [0.5, 0.0, np.sqrt(0.75)], [0.5, 0.0, -np.sqrt(0.75)]])
    labels = ["a", "b", "a", None]
    out = evaluate_retrieval(v, labels, ks=(1, 2))
    # query 0 (a): ranking 1(b), 2(a) [tie 0.5 with 3 -> lower id 2 first], 3 -> rel [F, T, F]
    # query 2 (a): cosines 0 -> 0.5, 1 -> 0.45, 3 -> -0.5: ranking 0(a), 1, 3 -> rel [T, F, F]
    # query 1 has no other "b"; 3 has no label
    assert out["n_queries"] == 2 and out["n_items"] == 4 and out["n_labelled"] == 3
    assert out["precision@1"] == pytest.approx((0 + 1) / 2)
    assert out["precision@2"] == pytest.approx((0.5 + 0.5) / 2)
    assert out["recall@2"] == pytest.approx(1.0)
    assert out["map@1"] == pytest.approx((0 + 1) / 2)
    assert out["map@2"] == pytest.approx((0.5 + 1) / 2)
    assert out["map"] == pytest.approx((0.5 + 1) / 2)
    # Reversing the tie-break ids puts row 3 before row 2 for query 0.
    rev = evaluate_retrieval(v, labels, ks=(2,), ids=[3, 2, 1, 0])
    assert rev["precision@2"] == pytest.approx((0 + 0.5) / 2)
    with pytest.raises(ValueError, match="3 labels for 4 items"):
        evaluate_retrieval(v, labels[:3])


def test_evaluate_retrieval_from_vectors() -> None:
    v = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float64)
    labels = ["x", "x", "y", "y"]
    out = evaluate_retrieval(v * 5, labels, ks=(1, 3))  # scale does not matter (cosine)
    assert out["n_queries"] == 4
    assert out["precision@1"] == 1.0 and out["map"] == 1.0 and out["recall@3"] == 1.0
    assert out["precision@3"] == pytest.approx(1 / 3)


def test_evaluate_retrieval_no_queries() -> None:
    out = evaluate_retrieval(np.eye(3), [None, "a", "b"], ks=(1,))
    assert out["n_queries"] == 0 and math.isnan(out["map"])


def test_evaluate_retrieval_is_fast_for_collection_size() -> None:
    rng = np.random.default_rng(0)
    n = 1700
    labels = rng.integers(0, 60, n).astype(str).astype(object)
    labels[::7] = None
    vectors = rng.standard_normal((n, 64))
    start = time.perf_counter()
    out = evaluate_retrieval(vectors, list(labels), ks=(1, 5, 10))
    assert time.perf_counter() - start < 10
    base = random_baseline(list(labels), ks=(1, 5, 10))
    assert out["n_queries"] == base["n_queries"] > 1400
    for key in ("precision@10", "map"):  # random vectors score like a random ranking
        assert out[key] == pytest.approx(base[key], rel=0.3)


def test_random_baseline_hand_values() -> None:
    # for "a" (n=2 of M=19) E[P@1] = 2/19
    only_a = random_baseline(["a", "a", "a"] + ["z%d" % i for i in range(17)], (1,))
    assert only_a["n_queries"] == 3 and only_a["precision@1"] == pytest.approx(2 / 19)
    assert only_a["recall@1"] == pytest.approx(1 / 19)
    # full AP for n=1 of M: mean of 1/rank = H_M / M
    pair = random_baseline(["p", "p", "q", "r"], (1,))
    assert pair["map"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    # n = M: every ranking is perfect
    assert random_baseline(["s"] * 5, (2,))["map@2"] == pytest.approx(1.0)
