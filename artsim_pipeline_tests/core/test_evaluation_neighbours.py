"""The leave-one-out's database side with the IVF search grouped by list equals Augmented.build bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from artsim_pipeline.core import rerank
from artsim_pipeline.core.evaluation import neighbours
from artsim_pipeline.core.evaluation.neighbours import ListOrderSearch, augmented_database, list_order
from artsim_pipeline.core.index import build_index
from artsim_pipeline.core.rerank import Augmented, RerankOptions


def clustered(n: int, d: int, seed: int) -> np.ndarray:
    """Unit vectors around a few centres (uneven lists), with some exact duplicates (tied scores)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((12, d))[rng.integers(0, 12, n)] + 0.6 * rng.standard_normal((n, d))
    x[100:110] = x[7]
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture()
def small_exact_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The IVF path from 400 paintings on (instead of 8,192), so the test stays fast."""
    monkeypatch.setattr(rerank, "EXACT_NEIGHBOURS_MAX", 400)
    monkeypatch.setattr(neighbours, "EXACT_NEIGHBOURS_MAX", 400)


def test_list_order_search_returns_the_plain_search_in_row_order(small_exact_limit: None) -> None:
    import faiss

    x = clustered(2500, 16, 1)
    bundle = build_index(x, np.arange(len(x), dtype=np.int64))
    order = list_order(bundle.index)
    np.testing.assert_array_equal(np.sort(order), np.arange(len(x)))
    assert not np.array_equal(order, np.arange(len(x)))  # the grouping does reorder the queries
    params = faiss.SearchParametersIVF(nprobe=3)
    searcher = ListOrderSearch(bundle.index)
    plain = bundle.index.search(x, 9, params=params)
    grouped = searcher.search(x, 9, params=params)
    for a, b in zip(plain, grouped):
        np.testing.assert_array_equal(a, b)
    some = x[:50]  # any other batch: searched as it comes
    for a, b in zip(bundle.index.search(some, 4, params=params), searcher.search(some, 4, params=params)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("method", ["dba", "dba_qe", "qe"])
def test_augmented_database_equals_augmented_build_bit_for_bit(small_exact_limit: None, method: str) -> None:
    x = clustered(2500, 16, 2)
    options = RerankOptions(method, dba_top=4)
    ours, reference = augmented_database(x, options), Augmented.build(x, options)
    for name in ("x", "database", "rows", "sims"):
        np.testing.assert_array_equal(getattr(ours, name), getattr(reference, name), err_msg=name)
    assert ours.options == reference.options


def test_augmented_database_at_or_below_the_exact_size_is_augmented_build() -> None:
    x = clustered(300, 8, 3)
    options = RerankOptions("dba_qe", dba_top=3)
    ours, reference = augmented_database(x, options), Augmented.build(x, options)
    for name in ("database", "rows", "sims"):
        np.testing.assert_array_equal(getattr(ours, name), getattr(reference, name), err_msg=name)
