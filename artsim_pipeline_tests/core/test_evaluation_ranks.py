"""Rankings without full sorts (core/evaluation/ranks.py) equal the full sorts, element for element."""

from __future__ import annotations

import numpy as np
import pytest

from artsim_pipeline.core.evaluation import ItemMeta, evaluate_methods, protocol
from artsim_pipeline.core.evaluation.protocol import (
    METHODS,
    _rankings,
    leave_one_out,
    method_weights,
    relevant_counts,
    relevant_rows,
)
from artsim_pipeline.core.evaluation.ranks import (
    average_precision_ranked,
    ranked_relevance,
    sorted_primary,
    top_rows,
)
from artsim_pipeline.core.metrics import average_precision_rows, drop_self, topk_metrics
from artsim_pipeline.core.rerank import RerankOptions

from .support import objectids, random_records


def tied_keys(rng: np.random.Generator, q: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three lexsort keys with many ties: coarse primary, coarse secondary, shared ids (not in row order)."""
    primary = rng.integers(0, 7, (q, n)).astype(np.float64) / 7
    secondary = rng.integers(0, 3, (q, n)).astype(np.float32)
    ids = rng.permutation(n) + 100
    return ids, secondary, primary


@pytest.mark.parametrize("n_keys", [1, 2, 3])
def test_top_rows_and_ranked_relevance_equal_the_full_lexsort_with_ties(n_keys: int) -> None:
    rng = np.random.default_rng(n_keys)
    q, n = 12, 300
    keys = tied_keys(rng, q, n)[3 - n_keys:]
    rows = rng.choice(n, q, replace=False)
    rel = rng.random((q, n)) < 0.2
    rel[np.arange(q), rows] = False
    full = drop_self(np.lexsort([np.broadcast_to(k, (q, n)) for k in keys], axis=1), rows)
    for t in (1, 5, 30, n - 1, n + 5):
        np.testing.assert_array_equal(top_rows(keys, rows, t), full[:, :t])
    np.testing.assert_array_equal(top_rows(keys, None, 9),
                                  np.lexsort([np.broadcast_to(k, (q, n)) for k in keys], axis=1)[:, :9])
    np.testing.assert_array_equal(ranked_relevance(keys, rows, rel), np.take_along_axis(rel, full, axis=1))


def test_unstable_sort_and_nan_rows_fall_back_to_the_full_sort() -> None:
    rng = np.random.default_rng(5)
    q, n = 6, 200
    values = rng.random((q, n))
    values[1, :50] = 0.25  # ties: argsort's own order
    values[2, 7] = np.nan
    rows = np.arange(q) * 3
    rel = rng.random((q, n)) < 0.3
    rel[np.arange(q), rows] = False
    full = drop_self(np.argsort(values, axis=1), rows)
    np.testing.assert_array_equal(top_rows((values,), rows, 60, stable=False), full[:, :60])
    np.testing.assert_array_equal(ranked_relevance((values,), rows, rel, stable=False),
                                  np.take_along_axis(rel, full, axis=1))
    scores = rng.random((q, n)).astype(np.float32)
    scores[3, 11] = np.nan
    ids = np.arange(n)
    visual = drop_self(np.lexsort((np.broadcast_to(ids, (q, n)), -scores), axis=1), rows)
    np.testing.assert_array_equal(top_rows((ids, -scores), rows, 20), visual[:, :20])
    np.testing.assert_array_equal(ranked_relevance((ids, -scores), rows, rel), np.take_along_axis(rel, visual, axis=1))


@pytest.mark.parametrize("stable", [True, False])
def test_one_sorted_primary_key_serves_the_top_and_the_ranking_as_their_own_sorts(stable: bool) -> None:
    rng = np.random.default_rng(8)
    q, n = 10, 400
    keys = tied_keys(rng, q, n) if stable else (rng.random((q, n)),)
    if not stable:
        keys[0][2, :60] = 0.5  # ties: argsort's own order
    keys[-1][4, 9] = np.nan  # a NaN row: the full sort
    rows = rng.choice(n, q, replace=False)
    rel = rng.random((q, n)) < 0.25
    rel[np.arange(q), rows] = False
    srt = sorted_primary(keys)
    for t in (1, 10, 30, n - 1):
        np.testing.assert_array_equal(top_rows(keys, rows, t, stable, srt=srt), top_rows(keys, rows, t, stable))
    np.testing.assert_array_equal(ranked_relevance(keys, rows, rel, stable, srt=srt),
                                  ranked_relevance(keys, rows, rel, stable))
    order = np.lexsort([np.broadcast_to(k, (q, n)) for k in keys], axis=1) if stable else np.argsort(keys[0], axis=1)
    np.testing.assert_array_equal(ranked_relevance(keys, rows, rel, stable, srt=srt),
                                  np.take_along_axis(rel, drop_self(order, rows), axis=1))


def reference_methods(x: np.ndarray, meta: ItemMeta, relevance: str, ks: tuple[int, ...], sim_of, seed: int = 0):
    """The protocol's numbers from the full sorts (protocol._rankings), one chunk of every query."""
    counts = relevant_counts(meta, relevance)
    rows = np.flatnonzero(counts > 0)
    rel = relevant_rows(meta, relevance, rows)
    rel[np.arange(len(rows)), rows] = False
    sim = sim_of(rows)
    rng = np.random.default_rng(seed)
    out = {}
    for method in (*METHODS, "random"):
        full, tops = _rankings(sim, meta, rows, method, method_weights(method, relevance), ks, rng)
        values = {}
        for k in ks:
            values.update(topk_metrics(np.take_along_axis(rel, tops[k], axis=1), counts[rows].astype(float), k))
        values["map"] = average_precision_rows(np.take_along_axis(rel, full, axis=1), counts[rows].astype(float))
        out[method] = values
    return out


@pytest.mark.parametrize("product_cells", [None, 240 * 64 * 2, 240 * 20])
@pytest.mark.parametrize("rerank", ["none", "dba_qe"])
@pytest.mark.parametrize("relevance", ["artist", "style"])
def test_evaluate_methods_equals_the_full_sorts_bit_for_bit(relevance: str, rerank: str, product_cells: int | None,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    if product_cells is not None:  # products of 2 chunks, of 1 chunk (fewer rows than a chunk: a chunk)
        monkeypatch.setattr(protocol, "PRODUCT_CELLS", product_cells)
    rng = np.random.default_rng(11)
    n = 240
    x = rng.standard_normal((n, 6))
    x[40:60] = x[0]  # identical paintings: tied scores
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    meta = ItemMeta.from_records(objectids(n), random_records(n, 11))
    ks = (1, 5, 10)
    results = evaluate_methods(x, meta, (*METHODS, "random"), relevance, ks, sample=None, chunk=64,
                               rerank=RerankOptions(rerank))
    loo = leave_one_out(x, RerankOptions(rerank))
    ref = reference_methods(x, meta, relevance, ks, (lambda r: x[r] @ x.T) if loo is None else loo.scores)
    for res in results:
        assert res.n_queries > 0
        for key, values in ref[res.method].items():
            np.testing.assert_array_equal(res.per_query[key], values, err_msg=f"{res.method} {key}")


def test_average_precision_from_the_hits_equals_the_cumulative_sum_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    ranked = rng.random((9, 5000)) < np.linspace(0.001, 0.6, 9)[:, None]
    ranked[4] = False
    n_rel = ranked.sum(axis=1) + rng.integers(0, 4, 9) + 1.0
    np.testing.assert_array_equal(average_precision_ranked(ranked, n_rel), average_precision_rows(ranked, n_rel))


def test_style_relevance_through_the_distinct_style_sets_equals_the_pairwise_bits() -> None:
    n = 300
    meta = ItemMeta.from_records(objectids(n), random_records(n, 4))
    rows = np.arange(0, n, 7)
    assert len(meta.style_sets[0]) < n
    np.testing.assert_array_equal(relevant_rows(meta, "style", rows),
                                  (meta.table.style_bits[rows] @ meta.table.style_bits.T) > 0.5)
    bare = ItemMeta.from_records(objectids(5), [{"artist": "A"}] * 5)
    assert relevant_rows(bare, "style", np.arange(5)).shape == (5, 5)
    assert not relevant_rows(bare, "style", np.arange(5)).any()
