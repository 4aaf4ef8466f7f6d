"""``artsim bench drift``'s measure on synthetic blocks: a kept fit drifts more the more paintings changed."""

import numpy as np

from artsim_pipeline.bench.refresh_drift import drift_cell, measure


def _blocks(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(12, 16))
    latent = centres[rng.integers(0, 12, n)] + 0.4 * rng.normal(size=(n, 16))
    return {"a": (latent @ rng.normal(size=(16, 48))).astype(np.float32)}


def test_drift_grows_with_the_changed_share():
    blocks = _blocks(120)
    small, large = drift_cell(blocks, 0.05, 0, dim=60), drift_cell(blocks, 0.4, 0, dim=60)
    assert 0 < large["overlap5"] < small["overlap5"] <= 1.0
    assert drift_cell(blocks, 0.4, 0, dim=60)["overlap5"] == large["overlap5"]  # seeded
    rows = measure(blocks, [60, 120], [0.1], seeds=1, dim=8)
    assert [r["paintings"] for r in rows] == [60, 120] and all(0 < r["overlap5"] <= 1 for r in rows)
