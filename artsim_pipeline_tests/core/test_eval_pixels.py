"""Pixel metrics: hand values of RMSE/SSIM, grayscale loading, the cache, pixels (not vectors) compared."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from artsim_pipeline.core.evaluation import GrayCache, load_gray, pixel_evaluation, pixel_rmse, pixel_ssim


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


def _write(path, array):
    Image.fromarray(array).save(path)
    return path


def test_pixel_metrics_use_pixels_not_vectors(tmp_path):
    rng = np.random.default_rng(0)
    pattern = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    other = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    paths = [
        _write(tmp_path / "a.png", pattern),
        _write(tmp_path / "a_copy.png", pattern),  # same pixels, different vector
        _write(tmp_path / "b.png", other),
        _write(tmp_path / "c.png", 255 - pattern),  # identical vector to b, different pixels
    ]
    vectors = np.array([[1.0, 0.0, 0.0], [0.9, 0.3, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    cache = GrayCache(size=64)
    result = pixel_evaluation(vectors, np.array([1, 2, 3, 4]), paths, n_queries=10, top=1, size=64, cache=cache)
    assert list(result.query_ids) == [1, 2, 3, 4]
    assert result.result_ids[:, 0].tolist() == [2, 1, 4, 3]
    assert result.rmse[0, 0] == 0.0 and result.ssim[0, 0] == pytest.approx(1.0)
    assert result.rmse[1, 0] == 0.0 and result.ssim[1, 0] == pytest.approx(1.0)
    # identical vectors, different pixels: the metric sees the pixels
    b, c = load_gray(paths[2], 64), load_gray(paths[3], 64)
    assert result.rmse[2, 0] == pytest.approx(pixel_rmse(b, c)) and result.rmse[2, 0] > 0.1
    assert result.ssim[2, 0] == pytest.approx(pixel_ssim(b, c)) and result.ssim[2, 0] < 0.9
    assert len(result.random_rmse) == 4 and np.all(result.random_pairs[:, 0] != result.random_pairs[:, 1])
    assert cache.loads == 4  # each image decoded once
    summary = result.summary()
    assert summary["n_pairs"] == 4 and summary["n_random_pairs"] == 4 and summary["image_size"] == 64
    assert summary["mean_rmse"] == pytest.approx(np.mean(result.rmse))
    again = pixel_evaluation(vectors, np.array([1, 2, 3, 4]), paths, n_queries=10, top=1, size=64)
    assert np.array_equal(again.random_pairs, result.random_pairs)  # seeded


def test_gray_cache_is_lossless(tmp_path):
    path = _write(tmp_path / "x.png", np.random.default_rng(1).integers(0, 256, (30, 20, 3), dtype=np.uint8))
    cache = GrayCache(size=32)
    assert np.array_equal(cache.get(path), load_gray(path, 32))
