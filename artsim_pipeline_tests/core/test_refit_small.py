"""Issue 32 #6 (fault matrix): a small collection is always refitted, never refreshed on a kept fit.

A PCA with about as many components as paintings spans the paintings it saw; a kept fit then projects the
new ones poorly (``artsim bench drift``). Below ``SMALL_FIT_FACTOR`` times the fit's dimensions the rule refits.
"""

import numpy as np

from artsim_pipeline.core.fusion import fit_fusion, transform
from artsim_pipeline.core.incremental import SMALL_FIT_FACTOR, FitRecord, decide_fit, holdout_residual
from artsim_pipeline.core.index import build_index


def _blocks(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 24))
    mix = np.random.default_rng(99).normal(size=(24, 80))
    return {"a": (latent @ mix + 0.1 * rng.normal(size=(n, 80))).astype(np.float32)}


def _decide(n_fit: int, n_new: int, dim: int):
    old = _blocks(n_fit, seed=1)
    ids = np.arange(1, n_fit + 1, dtype=np.int64)
    fusion = fit_fusion(old, n_components=dim)
    record = FitRecord(mode="full", reason="no_generation", config="c", fit_id="s1", fit_n=n_fit,
                       fit_residual=holdout_residual(old, n_components=dim))
    grown = {k: np.concatenate([v, _blocks(n_new, seed=2)[k]]) for k, v in old.items()}
    all_ids = np.concatenate([ids, np.arange(10_001, 10_001 + n_new)])
    fit, _ = decide_fit(config="c", served_fit=record, served_generation="g1", served_fusion=fusion,
                        served_bundle=build_index(transform(fusion, old), ids), blocks=grown, objectids=all_ids,
                        refit_drift=100.0)
    return fit, fusion.output_dim


def test_a_small_collection_is_refitted_whatever_changed():
    fit, dim = _decide(40, 1, 32)  # 41 paintings, a 32-dimension fit: one new painting
    assert len(range(41)) < SMALL_FIT_FACTOR * dim
    assert (fit.mode, fit.reason) == ("full", "small_collection")


def test_a_collection_well_above_the_fits_dimensions_keeps_it_for_a_small_change():
    fit, dim = _decide(400, 4, 32)  # 404 paintings, 32 dimensions: one percent new
    assert 404 >= SMALL_FIT_FACTOR * dim
    assert (fit.mode, fit.reason) == ("incremental", "small_change")
