"""Ablation vector sets: one row per model's final feature, the fusion steps, and one row per tap set present."""

from __future__ import annotations

import numpy as np

from artsim_pipeline.core.evaluation import ablation_sets
from artsim_pipeline.core.fusion import fit_fusion, tap_blocks, transform


def blocks_with_taps(stats=("mean", "std"), n: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    blocks = {"model_a": rng.normal(size=(n, 6)), "model_b": rng.normal(size=(n, 4))}
    for stat in stats:
        blocks[f"model_a@blocks.3.{stat}"] = rng.normal(size=(n, 5))
        blocks[f"model_b@features.10.{stat}"] = rng.normal(size=(n, 3))
    return blocks


def test_models_alone_use_their_final_block_and_each_tap_set_gets_a_row():
    blocks = blocks_with_taps()
    sets = {name: (description, thunk) for name, description, thunk in ablation_sets(blocks, None, 8, taps="mean")}
    assert list(sets)[:2] == ["model_a alone", "model_b alone"]
    assert np.array_equal(sets["model_a alone"][1](), blocks["model_a"])
    assert [name for name in sets if name.startswith("final")] == [
        "final only", "final + mid mean", "final + mid mean+std"]
    for name, tap_set in (("final only", "none"), ("final + mid mean", "mean"), ("final + mid mean+std", "mean+std")):
        chosen = tap_blocks(blocks, tap_set)
        assert np.array_equal(sets[name][1](), transform(fit_fusion(chosen, n_components=8), chosen)), name
    assert "2 final + 4 tap blocks" in sets["final + mid mean+std"][0]
    # the set the pipeline fuses (ARTSIM_TAPS=mean) reuses the pipeline's fusion, the others are refitted
    assert "the pipeline's own" in sets["final + mid mean"][0] and "refitted" in sets["final only"][0]
    # the pipeline rows fuse the ARTSIM_TAPS blocks: final + mean taps = 6 + 4 + 5 + 3 = 18 dims before PCA
    assert sets["concat (L2 per model)"][1]().shape == (20, 18)


def test_tap_set_rows_whose_taps_are_absent_are_left_out():
    only_mean = [name for name, _, _ in ablation_sets(blocks_with_taps(stats=("mean",)), None, 8)]
    assert "final + mid mean" in only_mean and "final + mid mean+std" not in only_mean
    finals_only = [name for name, _, _ in ablation_sets(blocks_with_taps(stats=()), None, 8)]
    assert not any(name.startswith("final") for name in finals_only)  # an old lake: the rows as before
    assert len(finals_only) == 8


def test_whitening_with_shrinkage_and_power_rows_apply_their_option_to_the_pipelines_blocks():
    blocks = blocks_with_taps(n=40)
    used = tap_blocks(blocks, "mean")
    fused = fit_fusion(used, n_components=8)
    sets = {name: thunk for name, _, thunk in ablation_sets(blocks, fused, 8, taps="mean")}
    shrunk = sets["concat + standardise + whitened PCA 8, shrinkage 30"]()
    expected = fit_fusion(used, n_components=8, whiten=True, whiten_shrink=30.0)
    assert np.allclose(shrunk, transform(expected, used), atol=1e-6)
    assert not np.allclose(shrunk, sets["concat + standardise + whitened PCA 8"](), atol=1e-3)
    powered = {name: np.sign(v) * np.sqrt(np.abs(v)) for name, v in used.items()}
    assert np.allclose(sets["signed sqrt + standardise + PCA 8"](),
                       transform(fit_fusion(powered, n_components=8), powered), atol=1e-6)
