"""The index check's exact top equals exact_topk's, tie for tie (core/evaluation/checks.py)."""

from __future__ import annotations

import numpy as np
import pytest

from artsim_pipeline.core.evaluation import checks
from artsim_pipeline.core.evaluation.checks import exact_top_rows
from artsim_pipeline.core.recall import exact_topk


def integer_vectors(n: int, d: int, seed: int) -> np.ndarray:
    """Small integer coordinates: every product is exact (any chunking) and full of tied scores."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, (n, d)).astype(np.float32)
    if n > 60:
        x[50:60] = x[3]  # duplicates: ties straddle the cut
    return x


@pytest.mark.parametrize("chunk", [1024, 7])
@pytest.mark.parametrize("k", [1, 5, 10, 299, 400])
def test_exact_top_rows_equal_exact_topk_rows(monkeypatch: pytest.MonkeyPatch, chunk: int, k: int) -> None:
    monkeypatch.setattr(checks, "EXACT_CHUNK", chunk)
    x = integer_vectors(300, 6, k)
    rows = np.random.default_rng(1).choice(300, 40, replace=False)
    rows[:3] = [3, 50, 51]
    _, expected = exact_topk(x, x[rows], k, exclude_self=True, query_rows=rows)
    np.testing.assert_array_equal(exact_top_rows(x, rows, k), expected)
    _, every = exact_topk(x, x, k)
    np.testing.assert_array_equal(exact_top_rows(x, np.arange(300), k), every)


def test_exact_top_rows_of_real_valued_vectors() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2500, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rows = np.sort(rng.choice(2500, 300, replace=False))
    _, expected = exact_topk(x, x[rows], 10, exclude_self=True, query_rows=rows)
    np.testing.assert_array_equal(exact_top_rows(x, rows, 10), expected)


def test_exact_top_rows_of_a_tiny_collection() -> None:
    x = integer_vectors(2, 3, 0)
    assert exact_top_rows(x, np.array([0, 1]), 10).tolist() == [[1], [0]]
    assert exact_top_rows(x[:1], np.array([0]), 10).shape == (1, 0)
