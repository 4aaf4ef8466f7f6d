"""Fusion: collection-fitted standardisation, block balance, PCA cap, persistence, validation."""

from __future__ import annotations

import numpy as np
import pytest

from artsim_pipeline.core.fusion import FusionModel, fit_fusion, load_fusion, save_fusion, transform


def _blocks(n: int = 60, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "wide": (rng.standard_normal((n, 40)) * 5 + 3).astype(np.float32),
        "narrow": (rng.standard_normal((n, 12)) * 0.1 - 1).astype(np.float32),
    }


def test_output_is_float32_unit_rows_and_deterministic() -> None:
    blocks = _blocks()
    a = transform(fit_fusion(blocks, n_components=8), blocks)
    b = transform(fit_fusion(blocks, n_components=8), blocks)
    assert a.dtype == np.float32 and a.shape == (60, 8)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(a, b)


def test_standardisation_uses_collection_statistics_not_per_vector() -> None:
    blocks = _blocks()
    model = fit_fusion(blocks, use_pca=False, block_balance=False)
    x = np.concatenate([blocks["narrow"], blocks["wide"]], axis=1).astype(np.float64)  # sorted model order
    np.testing.assert_allclose(model.mean, x.mean(axis=0))
    np.testing.assert_allclose(model.scale, x.std(axis=0))

    one = {name: arr[3:4] for name, arr in blocks.items()}
    single = transform(model, one)[0]
    expected = (x[3] - x.mean(axis=0)) / x.std(axis=0)
    np.testing.assert_allclose(single, expected / np.linalg.norm(expected), atol=1e-5)
    # A row's output does not depend on which other rows are transformed with it.
    np.testing.assert_allclose(single, transform(model, blocks)[3], atol=1e-6)
    # ... and is not what per-vector scaling (the old bug) gives.
    per_vector = (x[3] - x[3].mean()) / x[3].std()
    assert not np.allclose(single, per_vector / np.linalg.norm(per_vector), atol=1e-2)


def test_block_balance_divides_each_block_by_sqrt_dim() -> None:
    blocks = _blocks()
    balanced = fit_fusion(blocks, use_pca=False, block_balance=True)
    np.testing.assert_allclose(balanced.block_weights[:12], 1 / np.sqrt(12))
    np.testing.assert_allclose(balanced.block_weights[12:], 1 / np.sqrt(40))
    # Each model then carries the same mean squared norm (1) over the collection.
    x = np.concatenate([blocks["narrow"], blocks["wide"]], axis=1).astype(np.float64)
    z = (x - balanced.mean) / balanced.scale * balanced.block_weights
    assert np.mean(np.sum(z[:, :12] ** 2, axis=1)) == pytest.approx(1.0)
    assert np.mean(np.sum(z[:, 12:] ** 2, axis=1)) == pytest.approx(1.0)
    plain = fit_fusion(blocks, use_pca=False, block_balance=False)
    np.testing.assert_array_equal(plain.block_weights, 1.0)


def test_pca_components_capped_by_collection_and_features() -> None:
    small = _blocks(n=20)
    assert transform(fit_fusion(small), small).shape == (20, 19)  # n_samples - 1
    big = _blocks(n=200)
    model = fit_fusion(big)  # 52 features < 512
    assert model.output_dim == 52 and model.options["n_components"] == 52
    assert model.options["n_components_requested"] == 512
    assert np.all(np.diff(model.explained_variance_ratio) <= 1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        fit_fusion(_blocks(n=1))


def test_zero_variance_dimension_gets_unit_scale() -> None:
    blocks = _blocks()
    blocks["wide"][:, 5] = 7.0
    model = fit_fusion(blocks, n_components=6)
    assert model.scale[12 + 5] == 1.0
    out = transform(model, blocks)
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize("whiten", [False, True])
def test_save_load_roundtrip_gives_identical_outputs(tmp_path, whiten: bool) -> None:
    blocks = _blocks()
    model = fit_fusion(blocks, n_components=10, whiten=whiten)
    path = tmp_path / "fusion.npz"
    save_fusion(model, path)
    loaded = load_fusion(path)
    assert isinstance(loaded, FusionModel)
    assert loaded.model_names == model.model_names and loaded.dims == model.dims
    assert loaded.options == model.options
    np.testing.assert_array_equal(transform(loaded, blocks), transform(model, blocks))
    assert [p.name for p in tmp_path.iterdir()] == ["fusion.npz"]  # no temp files left


def test_whiten_changes_output() -> None:
    blocks = _blocks()
    a = transform(fit_fusion(blocks, n_components=10, whiten=False), blocks)
    b = transform(fit_fusion(blocks, n_components=10, whiten=True), blocks)
    assert not np.allclose(a, b)


def test_transform_validates_models_and_dims() -> None:
    blocks = _blocks()
    model = fit_fusion(blocks, n_components=5)
    with pytest.raises(ValueError, match="narrow"):
        transform(model, {"wide": blocks["wide"]})
    with pytest.raises(ValueError, match="wide.*expected dim 40"):
        transform(model, {"wide": blocks["wide"][:, :39], "narrow": blocks["narrow"]})
    with pytest.raises(ValueError, match="rows"):
        transform(model, {"wide": blocks["wide"][:5], "narrow": blocks["narrow"][:4]})
    bad = dict(blocks, wide=blocks["wide"].copy())
    bad["wide"][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        transform(model, bad)
    # extra models are ignored
    assert transform(model, dict(blocks, other=np.zeros((60, 3)))).shape == (60, 5)


def test_fingerprint_is_a_deterministic_content_hash(tmp_path) -> None:
    """Generations and data versions use it: same fit -> same hash (unlike the .npz bytes, which carry
    the write time); a different fit or option -> another hash; it survives save/load."""
    import io

    from artsim_pipeline.core.fusion import fusion_fingerprint

    blocks = _blocks()
    model = fit_fusion(blocks, n_components=6)
    assert fusion_fingerprint(model) == fusion_fingerprint(fit_fusion(blocks, n_components=6))
    assert fusion_fingerprint(model) != fusion_fingerprint(fit_fusion(blocks, n_components=5))
    assert fusion_fingerprint(model) != fusion_fingerprint(fit_fusion(_blocks(seed=1), n_components=6))
    assert fusion_fingerprint(model) != fusion_fingerprint(fit_fusion(blocks, n_components=6, whiten=True))
    path = tmp_path / "fusion.npz"
    save_fusion(model, path)
    assert fusion_fingerprint(load_fusion(path)) == fusion_fingerprint(model)
    assert fusion_fingerprint(load_fusion(io.BytesIO(path.read_bytes()))) == fusion_fingerprint(model)  # a buffer


def test_beyond_max_rows_the_fit_uses_a_seeded_sample_and_transforms_every_row() -> None:
    from artsim_pipeline.core.fusion import fit_rows

    blocks = _blocks(n=300)
    sampled = fit_fusion(blocks, n_components=8, max_rows=100)
    rows = fit_rows(300, 100)
    assert rows.size == 100 and np.all(np.diff(rows) > 0) and np.array_equal(rows, fit_rows(300, 100))
    # the same fit as on exactly those rows, recorded as a sample of 300
    on_rows = fit_fusion({k: v[rows] for k, v in blocks.items()}, n_components=8)
    np.testing.assert_array_equal(sampled.mean, on_rows.mean)
    np.testing.assert_array_equal(sampled.pca_components, on_rows.pca_components)
    assert sampled.options["n_samples_fitted"] == 100 and sampled.options["n_samples_seen"] == 300
    assert transform(sampled, blocks).shape == (300, 8)
    # at or below the threshold every row is used and nothing new is recorded
    full = fit_fusion(blocks, n_components=8, max_rows=300)
    assert fit_rows(300, 300) is None and "n_samples_seen" not in full.options
    assert full.options["n_samples_fitted"] == 300
    assert not np.array_equal(full.mean, sampled.mean)


def test_transform_in_chunks_gives_the_rows_of_one_pass(monkeypatch) -> None:
    import artsim_pipeline.core.fusion as fusion_mod

    blocks = _blocks(n=101)
    model = fit_fusion(blocks, n_components=8)
    whole = transform(model, blocks)
    monkeypatch.setattr(fusion_mod, "TRANSFORM_CHUNK", 16)
    chunked = transform(model, blocks)
    assert chunked.shape == whole.shape == (101, 8) and chunked.dtype == np.float32
    np.testing.assert_allclose(chunked, whole, atol=1e-6)
    # blocks of different lengths are still the one-pass error (naming a model and both row counts)
    bad = dict(blocks, narrow=blocks["narrow"][:50])
    with pytest.raises(ValueError, match="model 'wide': has 101 rows, expected 50"):
        transform(model, bad)
