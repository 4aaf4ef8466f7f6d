"""Descriptor pooling and normalisation options (core/descriptors.py), the fusion's whitening with shrinkage,
and how the descriptor study builds an option's blocks (bench/descriptor.py)."""

import numpy as np
import pytest
import torch

from artsim_pipeline.bench.descriptor import Option, cost, option_blocks
from artsim_pipeline.core import descriptors as desc
from artsim_pipeline.core.fusion import fit_fusion, fusion_fingerprint, load_fusion, save_fusion, transform


def _maps(seed=0, shape=(3, 4, 7, 7)):
    return torch.from_numpy(np.random.default_rng(seed).random(shape).astype(np.float32))


def test_gem_lies_between_the_mean_and_the_maximum_and_is_the_mean_at_p_1():
    x = _maps()
    mean, high = x.mean(dim=(2, 3)), x.amax(dim=(2, 3))
    assert torch.allclose(desc.gem(x, p=1.0), mean, atol=1e-6)
    g = desc.gem(x)
    assert torch.all(g > mean) and torch.all(g < high)
    assert torch.allclose(desc.gem(x, p=200.0), high, rtol=0.05)


def test_rmac_regions_cover_the_map_and_stay_inside_it():
    regions = desc.rmac_regions(7, 9)
    assert (1, 8) != regions[0][:2] and regions[0] == (0, 7, 1, 8)  # level 1: the centred 7x7 square
    assert len(regions) == 1 + 4 + 9
    for y0, y1, x0, x1 in regions:
        assert 0 <= y0 < y1 <= 7 and 0 <= x0 < x1 <= 9 and y1 - y0 == x1 - x0


def test_rmac_sums_normalised_region_maxima_and_ignores_a_mirror():
    x = _maps(1, (3, 4, 8, 8))  # 8x8: every level's windows are evenly placed, so a mirror maps them onto each other
    out = desc.rmac(x)
    n_regions = len(desc.rmac_regions(8, 8))
    assert out.shape == (3, 4)
    assert torch.all(out.norm(dim=1) <= n_regions + 1e-4) and torch.all(out.norm(dim=1) > 1.0)
    assert torch.allclose(desc.rmac(torch.flip(x, dims=(3,))), out, atol=1e-5)  # the regions are symmetric
    assert not torch.allclose(out / out.norm(dim=1, keepdim=True),
                              desc.gem(x) / desc.gem(x).norm(dim=1, keepdim=True), atol=1e-3)


def test_gram_is_the_channel_covariance_upper_triangle():
    x = _maps(2, (2, 3, 5, 4))
    g = desc.gram(x).numpy()
    assert g.shape == (2, 6)
    for i in range(2):
        cov = np.cov(x[i].reshape(3, -1).numpy(), bias=True)
        assert np.allclose(g[i], cov[np.triu_indices(3)], atol=1e-6)


def test_pool_final_names_its_poolings():
    x = _maps()
    assert torch.allclose(desc.pool_final(x, "gap"), x.mean(dim=(2, 3)))
    assert torch.allclose(desc.pool_final(x, "gem"), desc.gem(x))
    with pytest.raises(ValueError, match="pooling must be one of gap, gem, rmac"):
        desc.pool_final(x, "max")


def test_power_normalise_keeps_the_sign_and_checks_the_power():
    assert np.allclose(desc.power_normalise(np.array([4.0, -9.0, 0.0]), 0.5), [2.0, -3.0, 0.0])
    with pytest.raises(ValueError, match="power must be in"):
        desc.power_normalise(np.ones(2), 0.0)


def test_average_variants_averages_the_blocks_every_variant_has():
    out = desc.average_variants([{"a": np.ones((2, 3)), "b": np.zeros((2, 1))}, {"a": 3 * np.ones((2, 3))}])
    assert set(out) == {"a"} and np.allclose(out["a"], 2.0) and out["a"].dtype == np.float32


def _blocks(n=60, seed=0):
    rng = np.random.default_rng(seed)
    scales = np.linspace(5.0, 0.1, 24)
    return {"m1": rng.normal(size=(n, 24)) * scales, "m2": rng.normal(size=(n, 8))}


def test_whitening_with_shrinkage_lies_between_whitened_and_unwhitened(tmp_path):
    blocks = _blocks()
    plain, white = fit_fusion(blocks, n_components=10), fit_fusion(blocks, n_components=10, whiten=True)
    shrunk = fit_fusion(blocks, n_components=10, whiten=True, whiten_shrink=1.0)
    huge = fit_fusion(blocks, n_components=10, whiten=True, whiten_shrink=1e9)
    assert "whiten_shrink" not in white.options and shrunk.options["whiten_shrink"] == 1.0
    assert fusion_fingerprint(shrunk) != fusion_fingerprint(white)
    x_plain, x_white, x_shrunk = (transform(f, blocks) for f in (plain, white, shrunk))
    assert np.allclose(transform(huge, blocks), x_plain, atol=1e-5)  # infinite shrinkage: no whitening
    assert not np.allclose(x_shrunk, x_white, atol=1e-3) and not np.allclose(x_shrunk, x_plain, atol=1e-3)
    save_fusion(shrunk, tmp_path / "fusion.npz")
    assert np.array_equal(transform(load_fusion(tmp_path / "fusion.npz"), blocks), x_shrunk)
    with pytest.raises(ValueError, match="whiten_shrink must be >= 0"):
        fit_fusion(blocks, whiten=True, whiten_shrink=-1.0)


def _features():
    def model(value):
        return {"final.gap": np.full((2, 3), value), "final.gem": np.full((2, 3), 2 * value),
                "early.gram": np.full((2, 6), value), "blocks.3.mean": np.full((2, 4), value),
                "seconds_per_image": np.array(0.1 * value)}

    return {"orig": {"a": model(1.0)}, "flip": {"a": model(3.0)}, "scale0.5": {"a": model(1.0)}}


def test_an_option_picks_its_pooling_variants_and_blocks_under_the_pipelines_names():
    features = _features()
    today = option_blocks(features, Option("today"))
    assert set(today) == {"a", "a@blocks.3.mean"} and np.allclose(today["a"], 1.0)
    both = option_blocks(features, Option("gem flip gram", pooling="gem", variants=("orig", "flip"), gram=True))
    assert set(both) == {"a", "a@blocks.3.mean", "a@early.gram"}
    assert np.allclose(both["a"], 4.0) and np.allclose(both["a@blocks.3.mean"], 2.0)
    powered = option_blocks(features, Option("power", variants=("flip",), power=0.5))
    assert np.allclose(powered["a"], np.sqrt(3.0))


def test_an_options_cost_counts_its_forward_passes():
    row = cost(_features(), Option("x", variants=("orig", "flip", "scale0.5")))
    assert row["forward_work_ratio"] == 2.25 and row["embed_time_ratio"] == pytest.approx(5.0)


def _collection(n_artists=9, per_artist=6, seed=0):
    """Features of two input variants for a collection whose artists are clusters in the final block only."""
    from artsim_pipeline.core.evaluation.protocol import ItemMeta

    rng = np.random.default_rng(seed)
    n = n_artists * per_artist
    artist = np.repeat(np.arange(n_artists), per_artist)
    centres = rng.normal(size=(n_artists, 16)) * 3.0
    final = centres[artist] + rng.normal(size=(n, 16))
    noise = rng.normal(size=(n, 16)) * 3.0  # what the flip variant sees: the clusters drowned
    features = {
        "orig": {"a": {"final.gap": final, "final.gem": final, "blocks.3.mean": rng.normal(size=(n, 4)),
                       "seconds_per_image": np.array(0.1)}},
        "flip": {"a": {"final.gap": final + noise, "final.gem": final + noise,
                       "blocks.3.mean": rng.normal(size=(n, 4)), "seconds_per_image": np.array(0.1)}},
    }
    records = [{"artist": f"Artist {a}", "artist_key": f"artist {a}"} for a in artist]
    return features, ItemMeta.from_records(list(range(1, n + 1)), records)


def test_the_study_measures_each_option_against_today_on_the_same_queries():
    from artsim_pipeline.bench.descriptor import markdown, study

    features, meta = _collection()
    options = [Option("today"), Option("gem", pooling="gem"), Option("flip", variants=("orig", "flip")),
               Option("scale", variants=("orig", "scale0.75"))]
    lines: list[str] = []
    rows = study(features, meta, pca_dim=8, options=options, log=lines.append)
    assert [row["name"] for row in rows] == ["today", "gem", "flip"]  # scale0.75 was not extracted
    assert any("scale: skipped" in line for line in lines)
    today, gem, flip = rows
    assert today["delta_precision_at_5"] == 0.0 and today["delta_heldout_map_ci95"] == 0.0
    assert gem["precision_at_5"] == today["precision_at_5"]  # the same final block: the same numbers
    assert today["heldout_precision_at_5"] > 0.5 and today["n_queries"] == 54 and today["n_heldout_queries"] == 54
    # the flipped variant's noise blurs the clusters: the option loses, and the paired delta says so
    assert flip["delta_precision_at_5"] < 0 and flip["precision_at_5"] < today["precision_at_5"]
    assert flip["forward_work_ratio"] == 2.0 and "per_query" not in flip
    assert markdown(rows).count("\n") == 2 + 3


def test_an_options_cost_uses_the_back_to_back_times_when_given():
    row = cost(_features(), Option("x", variants=("orig", "flip")), times={"orig": 0.2, "flip": 0.1})
    assert row["embed_time_ratio"] == 1.5 and row["embed_seconds_per_image"] == pytest.approx(0.3)
