"""Pixel similarity of search results (plain Python, no Dagster).

Compares *pixels*, not vectors: the query and each of its top visual results as 256x256 grayscale
in [0, 1] (resized bilinearly, aspect not kept), root-mean-square difference (RMSE, 0 = identical)
and structural similarity (SSIM, 1 = identical), against as many random pairs of distinct
paintings drawn with the same seed.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageOps

from ..recall import exact_topk
from ..metrics import l2_rows
from ..storage import lake_path, readable

PIXEL_QUERIES = 300
PIXEL_TOP = 5
PIXEL_SIZE = 256


def load_gray(path: Path | str, size: int = PIXEL_SIZE) -> np.ndarray:
    """Image as grayscale float32 ``[size, size]`` in [0, 1] (resized bilinearly, aspect not kept)."""
    with Image.open(readable(path)) as img:
        gray = ImageOps.exif_transpose(img).convert("L").resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(gray, dtype=np.float32) / 255.0
def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {x.shape} vs {y.shape}")
    if x.ndim != 2:
        raise ValueError(f"expected 2-d grayscale images, got shape {x.shape}")
    return x, y


def pixel_rmse(a: np.ndarray, b: np.ndarray) -> float:
    """Root-mean-square pixel difference of two [0, 1] grayscale images (0 = identical, max 1)."""
    x, y = _check_pair(a, b)
    return float(np.sqrt(np.mean((x - y) ** 2)))


def pixel_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean structural similarity of two [0, 1] grayscale images (1 = identical).

    skimage's 7x7 uniform window; for images smaller than 7 pixels a side, the largest odd window
    that fits (at least 3).
    """
    # scikit-image here: re-ranking imports core.evaluation at query time; only the SSIM needs it
    from skimage.metrics import structural_similarity

    x, y = _check_pair(a, b)
    side = min(x.shape)
    if side < 3:
        raise ValueError(f"SSIM needs images at least 3x3, got {x.shape}")
    win = min(7, side if side % 2 else side - 1)
    return float(structural_similarity(x, y, data_range=1.0, win_size=win))


class GrayCache:
    """Grayscale ``[size, size]`` images by path, kept as uint8 (lossless for ``load_gray``'s /255)."""

    def __init__(self, size: int = PIXEL_SIZE) -> None:
        self.size = size
        self._cache: dict[str, np.ndarray] = {}
        self.loads = 0

    def get(self, path: Path | str) -> np.ndarray:
        key = str(path)
        if key not in self._cache:
            gray = load_gray(path, self.size)
            self._cache[key] = np.round(gray * 255.0).astype(np.uint8)
            self.loads += 1
        return self._cache[key].astype(np.float32) / 255.0  # exactly load_gray's values


def _pair_metrics(cache: GrayCache, pairs: list[tuple[Path, Path]], workers: int) -> tuple[np.ndarray, np.ndarray]:
    """(RMSE, SSIM) per pair; NaN where an image is missing."""
    grays: dict[str, np.ndarray | None] = {}
    for a, b in pairs:  # decode serially (fills the cache once per image)
        for path in (a, b):
            if str(path) not in grays:
                grays[str(path)] = cache.get(path) if lake_path(path).is_file() else None

    def one(pair: tuple[Path, Path]) -> tuple[float, float]:
        a, b = grays[str(pair[0])], grays[str(pair[1])]
        if a is None or b is None:
            return float("nan"), float("nan")
        return pixel_rmse(a, b), pixel_ssim(a, b)

    with ThreadPoolExecutor(max_workers=workers) as pool:  # skimage/scipy release the GIL
        values = list(pool.map(one, pairs))
    arr = np.array(values, dtype=np.float64).reshape(len(pairs), 2)
    return arr[:, 0], arr[:, 1]


@dataclass
class PixelResult:
    """Pixel RMSE/SSIM of queries vs their top visual results, and of random pairs."""

    query_ids: np.ndarray  # [q]
    result_ids: np.ndarray  # [q, top]
    rmse: np.ndarray  # [q, top]
    ssim: np.ndarray  # [q, top]
    random_pairs: np.ndarray  # [p, 2] objectids
    random_rmse: np.ndarray  # [p]
    random_ssim: np.ndarray  # [p]
    n_candidates: int
    seed: int
    size: int
    top: int
    images_loaded: int = 0

    def summary(self) -> dict[str, Any]:
        def mean(a: np.ndarray) -> float:
            return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")

        per_rmse = np.nanmean(self.rmse, axis=1) if self.rmse.size else np.zeros(0)
        per_ssim = np.nanmean(self.ssim, axis=1) if self.ssim.size else np.zeros(0)
        return {
            "n_queries": int(len(self.query_ids)),
            "sample_of": int(self.n_candidates),
            "top": self.top,
            "image_size": self.size,
            "grayscale": True,
            "seed": self.seed,
            "n_pairs": int(np.isfinite(self.rmse).sum()),
            "n_random_pairs": int(np.isfinite(self.random_rmse).sum()),
            "mean_rmse": mean(per_rmse),
            "mean_ssim": mean(per_ssim),
            "random_mean_rmse": mean(self.random_rmse),
            "random_mean_ssim": mean(self.random_ssim),
            "per_query": [
                {"objectid": int(q), "mean_rmse": float(r), "mean_ssim": float(s)}
                for q, r, s in zip(self.query_ids, per_rmse, per_ssim)
            ],
        }


def pixel_evaluation(
    vectors: np.ndarray,
    objectids: np.ndarray,
    image_paths: Sequence[Path],
    n_queries: int = PIXEL_QUERIES,
    top: int = PIXEL_TOP,
    seed: int = 0,
    size: int = PIXEL_SIZE,
    cache: GrayCache | None = None,
    workers: int | None = None,
) -> PixelResult:
    """RMSE/SSIM on grayscale pixels: a seeded sample of queries vs their top visual results.

    The baseline is as many random pairs (distinct paintings, same seed) as query-result pairs.
    """
    x = l2_rows(vectors).astype(np.float32)
    n = x.shape[0]
    ids = np.asarray(objectids, dtype=np.int64)
    cache = cache or GrayCache(size)
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n_queries, n), replace=False)) if n > 1 else np.zeros(0, np.int64)
    if len(sample):
        _, rows = exact_topk(x, x[sample], top, exclude_self=True, query_rows=sample)
    else:
        rows = np.zeros((0, 0), np.int64)
    pairs = [(image_paths[q], image_paths[r]) for q, row in zip(sample, rows) for r in row]
    rmse, ssim = _pair_metrics(cache, pairs, workers)
    shape = rows.shape
    n_random = len(pairs)
    first = rng.integers(0, n, size=n_random) if n > 1 else np.zeros(0, np.int64)
    second = (first + rng.integers(1, n, size=n_random)) % n if n > 1 else np.zeros(0, np.int64)
    random_pairs = [(image_paths[a], image_paths[b]) for a, b in zip(first, second)]
    rand_rmse, rand_ssim = _pair_metrics(cache, random_pairs, workers)
    return PixelResult(
        query_ids=ids[sample],
        result_ids=ids[rows] if rows.size else np.zeros(shape, np.int64),
        rmse=rmse.reshape(shape),
        ssim=ssim.reshape(shape),
        random_pairs=np.stack([ids[first], ids[second]], axis=1) if n_random else np.zeros((0, 2), np.int64),
        random_rmse=rand_rmse,
        random_ssim=rand_ssim,
        n_candidates=n,
        seed=seed,
        size=size,
        top=top,
        images_loaded=cache.loads,
    )
