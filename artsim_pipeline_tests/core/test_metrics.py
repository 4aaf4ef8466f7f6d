"""Ranking metrics on hand-checked rankings, leave-one-out evaluation, random baseline, pixel metrics."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from PIL import Image

from artsim_pipeline.core.metrics import (
    average_precision,
    average_precision_at_k,
    evaluate_retrieval,
    load_gray,
    pixel_rmse,
    pixel_ssim,
    precision_at_k,
    random_baseline,
    rank_with_ties,
    recall_at_k,
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


def _vectors_for(rows: list[list[float]]) -> np.ndarray:
    return np.asarray(rows, dtype=np.float64)


def test_evaluate_retrieval_by_hand() -> None:
    # Similarity matrix with a tie; ids break it.
    sim = np.array(
        [
            [1.0, 0.9, 0.5, 0.5],
            [0.9, 1.0, 0.2, 0.1],
            [0.5, 0.2, 1.0, 0.3],
            [0.5, 0.1, 0.3, 1.0],
        ]
    )
    labels = ["a", "b", "a", None]
    out = evaluate_retrieval(sim, labels, ks=(1, 2), is_similarity=True)
    # query 0 (a): ranking 1(b), 2(a) [tie 0.5 with 3 -> lower id 2 first], 3 -> rel [F, T, F]
    # query 2 (a): ranking 0(a), 3, 1 -> rel [T, F, F]; query 1 has no other "b"; 3 has no label
    assert out["n_queries"] == 2 and out["n_items"] == 4 and out["n_labelled"] == 3
    assert out["precision@1"] == pytest.approx((0 + 1) / 2)
    assert out["precision@2"] == pytest.approx((0.5 + 0.5) / 2)
    assert out["recall@2"] == pytest.approx(1.0)
    assert out["map@1"] == pytest.approx((0 + 1) / 2)
    assert out["map@2"] == pytest.approx((0.5 + 1) / 2)
    assert out["map"] == pytest.approx((0.5 + 1) / 2)
    # Reversing the tie-break ids puts row 3 before row 2 for query 0.
    rev = evaluate_retrieval(sim, labels, ks=(2,), is_similarity=True, ids=[3, 2, 1, 0])
    assert rev["precision@2"] == pytest.approx((0 + 0.5) / 2)


def test_evaluate_retrieval_from_vectors_and_without_self_exclusion() -> None:
    v = _vectors_for([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]])
    labels = ["x", "x", "y", "y"]
    out = evaluate_retrieval(v * 5, labels, ks=(1, 3))  # scale does not matter (cosine)
    assert out["n_queries"] == 4
    assert out["precision@1"] == 1.0 and out["map"] == 1.0 and out["recall@3"] == 1.0
    assert out["precision@3"] == pytest.approx(1 / 3)
    kept = evaluate_retrieval(v, labels, ks=(1,), exclude_self=False)
    assert kept["precision@1"] == 1.0 and kept["map"] == 1.0  # self ranks first and counts as relevant


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


def test_random_baseline_analytic_matches_simulation() -> None:
    labels = ["a"] * 3 + ["b"] * 6 + ["c"] * 1 + [None] * 2 + ["d"] * 8
    ks = (1, 3, 5, 30)
    analytic = random_baseline(labels, ks)
    simulated = random_baseline(labels, ks, seed=3, method="simulate", n_trials=20000)
    assert analytic["n_queries"] == 17
    for key in analytic:
        if key not in ("ks",):
            assert simulated[key] == pytest.approx(analytic[key], abs=0.01), key
    # hand value: for "a" (n=2 of M=19) E[P@1] = 2/19
    only_a = random_baseline(["a", "a", "a"] + ["z%d" % i for i in range(17)], (1,))
    assert only_a["n_queries"] == 3 and only_a["precision@1"] == pytest.approx(2 / 19)
    assert only_a["recall@1"] == pytest.approx(1 / 19)
    # full AP for n=1 of M: mean of 1/rank = H_M / M
    pair = random_baseline(["p", "p", "q", "r"], (1,))
    assert pair["map"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)


def test_pixel_metrics_hand_values() -> None:
    a = np.zeros((2, 2))
    b = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert pixel_rmse(a, a) == 0.0
    assert pixel_rmse(a, b) == pytest.approx(math.sqrt(0.5))
    assert pixel_rmse(np.zeros((4, 4)), np.full((4, 4), 0.25)) == pytest.approx(0.25)
    c1 = 0.01**2
    const_a, const_b = np.full((8, 8), 0.2), np.full((8, 8), 0.6)
    # constant images: luminance term only, (2*mu_a*mu_b + C1) / (mu_a^2 + mu_b^2 + C1)
    assert pixel_ssim(const_a, const_b) == pytest.approx((2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1))
    rng = np.random.default_rng(0)
    img = rng.random((32, 32))
    assert pixel_ssim(img, img) == pytest.approx(1.0)
    assert pixel_ssim(img, 1 - img) < 0
    assert pixel_ssim(np.full((5, 5), 0.5), np.full((5, 5), 0.5)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shape"):
        pixel_rmse(a, np.zeros((3, 3)))


def test_load_gray(tmp_path) -> None:
    rgb = np.zeros((40, 60, 3), dtype=np.uint8)
    rgb[:, 30:] = 255
    path = tmp_path / "half.png"
    Image.fromarray(rgb).save(path)
    gray = load_gray(path, size=16)
    assert gray.dtype == np.float32 and gray.shape == (16, 16)
    assert gray.min() == 0.0 and gray.max() == 1.0
    assert gray[:, :7].max() == 0.0 and gray[:, 9:].min() == 1.0
    assert load_gray(path).shape == (256, 256)
    assert pixel_rmse(load_gray(path), load_gray(path)) == 0.0
