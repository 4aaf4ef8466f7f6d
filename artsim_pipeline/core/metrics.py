"""Retrieval and pixel metrics (plain Python, no Dagster).

Ranking conventions, used everywhere below:

* a ranking is a boolean array, ``ranked[i]`` = the item at rank ``i + 1`` is relevant;
* ``precision@K`` = hits in the top K / K (K, not the ranking length, even when fewer than K
  items were ranked, so a short list is not rewarded);
* ``recall@K`` = hits in the top K / n_relevant;
* ``AP@K`` = sum of precision@i over the ranks i <= K holding a relevant item, divided by
  ``min(K, n_relevant)``: the most hits the top K can hold. A perfect top K then scores 1.0
  even when there are more than K relevant items (dividing by n_relevant would cap it below 1),
  and finding one relevant item at rank 1 out of many does not (dividing by hits found would);
* ``AP`` (full ranking) = the same sum over the whole ranking divided by n_relevant;
* a query with no relevant item has no defined recall/AP: those functions return NaN and the
  aggregate evaluation leaves such queries out (``n_queries`` counts the ones kept);
* ties in score are broken deterministically by the lower id (:func:`rank_with_ties`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

_NAN = float("nan")
_EVAL_CHUNK = 512


# ---------------------------------------------------------------- single-ranking metrics

def _as_ranked(ranked: Any) -> np.ndarray:
    arr = np.asarray(ranked, dtype=bool)
    if arr.ndim != 1:
        raise ValueError(f"a ranking must be 1-d, got shape {arr.shape}")
    return arr


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def _check_n_relevant(ranked: np.ndarray, n_relevant: int) -> None:
    if n_relevant < int(ranked.sum()):
        raise ValueError(f"n_relevant={n_relevant} is less than the {int(ranked.sum())} relevant items ranked")


def precision_at_k(ranked_relevance: Any, k: int) -> float:
    """Hits in the top ``k`` divided by ``k``."""
    ranked = _as_ranked(ranked_relevance)
    _check_k(k)
    return float(ranked[:k].sum()) / k


def recall_at_k(ranked: Any, n_relevant: int, k: int) -> float:
    """Hits in the top ``k`` divided by ``n_relevant``; NaN when ``n_relevant == 0``."""
    arr = _as_ranked(ranked)
    _check_k(k)
    _check_n_relevant(arr, n_relevant)
    if n_relevant == 0:
        return _NAN
    return float(arr[:k].sum()) / n_relevant


def _precision_at_hits(arr: np.ndarray) -> np.ndarray:
    """precision@i at every rank i (1-based), zero where rank i is not relevant."""
    ranks = np.arange(1, arr.size + 1)
    return np.where(arr, np.cumsum(arr) / ranks, 0.0)


def average_precision_at_k(ranked: Any, k: int, n_relevant: int) -> float:
    """Sum of precision@i over relevant ranks i <= k, / ``min(k, n_relevant)``; NaN when none relevant."""
    arr = _as_ranked(ranked)
    _check_k(k)
    _check_n_relevant(arr, n_relevant)
    if n_relevant == 0:
        return _NAN
    return float(_precision_at_hits(arr[:k]).sum()) / min(k, n_relevant)


def average_precision(ranked_full: Any, n_relevant: int | None = None) -> float:
    """Full-ranking AP: sum of precision@i over relevant ranks / ``n_relevant``.

    ``n_relevant`` defaults to the relevant items in the ranking; relevant items missing from the
    ranking count as never retrieved. NaN when there is no relevant item.
    """
    arr = _as_ranked(ranked_full)
    n = int(arr.sum()) if n_relevant is None else int(n_relevant)
    _check_n_relevant(arr, n)
    if n == 0:
        return _NAN
    return float(_precision_at_hits(arr).sum()) / n


def rank_with_ties(scores: Any, ids: Any) -> np.ndarray:
    """Positions ordered by score descending, equal scores by id ascending (NaN scores last)."""
    s = np.asarray(scores, dtype=np.float64)
    i = np.asarray(ids)
    if s.shape != i.shape or s.ndim != 1:
        raise ValueError(f"scores and ids must be 1-d and the same length, got {s.shape} and {i.shape}")
    return np.lexsort((i, -s))


# ---------------------------------------------------------------- leave-one-out evaluation

def _label_codes(labels: Sequence[Any]) -> np.ndarray:
    """Integer code per label; -1 for None / NaN / empty."""
    codes = np.full(len(labels), -1, dtype=np.int64)
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        if label is None or (isinstance(label, float) and np.isnan(label)):
            continue
        text = str(label)
        if text.strip() == "" or text in ("nan", "None", "<NA>"):
            continue
        codes[i] = seen.setdefault(text, len(seen))
    return codes


def _relevant_counts(codes: np.ndarray, exclude_self: bool) -> np.ndarray:
    """Per item, how many ranked items share its label (0 for unlabelled items)."""
    counts = np.bincount(codes[codes >= 0], minlength=1)
    same = counts[np.maximum(codes, 0)] - (1 if exclude_self else 0)
    return np.where(codes >= 0, same, 0)


def _ranking_metrics(rel: np.ndarray, n_rel: np.ndarray, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-query metrics from relevance rows ``rel [q, m]`` (rank order) and ``n_rel [q]`` (> 0)."""
    m = rel.shape[1]
    cum = np.cumsum(rel, axis=1, dtype=np.float64)
    prec_hits = np.where(rel, cum / np.arange(1, m + 1), 0.0)
    ap_cum = np.cumsum(prec_hits, axis=1)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        col = min(k, m) - 1
        hits = cum[:, col] if col >= 0 else np.zeros(len(n_rel))
        apk = ap_cum[:, col] if col >= 0 else np.zeros(len(n_rel))
        out[f"precision@{k}"] = hits / k
        out[f"recall@{k}"] = hits / n_rel
        out[f"map@{k}"] = apk / np.minimum(k, n_rel)
    out["map"] = (ap_cum[:, -1] if m else np.zeros(len(n_rel))) / n_rel
    return out


def _result(sums: dict[str, float], n_queries: int, n_items: int, n_labelled: int, ks: Sequence[int]) -> dict[str, Any]:
    result: dict[str, Any] = {"n_items": n_items, "n_labelled": n_labelled, "n_queries": n_queries, "ks": list(ks)}
    for key, total in sums.items():
        result[key] = total / n_queries if n_queries else _NAN
    return result


def _metric_keys(ks: Sequence[int]) -> list[str]:
    keys = [f"{name}@{k}" for k in ks for name in ("precision", "recall", "map")]
    return keys + ["map"]


def evaluate_retrieval(
    data: np.ndarray,
    labels: Sequence[Any],
    ks: Sequence[int] = (1, 5, 10),
    exclude_self: bool = True,
    *,
    is_similarity: bool = False,
    ids: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Leave-one-out retrieval quality: each labelled item queries all the others.

    ``data`` is an ``[N, d]`` embedding matrix (rows are L2-normalised here, so scores are cosine)
    or, with ``is_similarity=True``, an ``[N, N]`` similarity matrix. An item is relevant to a
    query when their labels are equal. Queries with a missing label or no other item sharing it
    are skipped. Ties are broken by ``ids`` (default: row number). Returns the mean
    ``precision@K``, ``recall@K``, ``map@K`` for each K, full-ranking ``map``, and ``n_queries``.
    """
    for k in ks:
        _check_k(k)
    x = np.asarray(data, dtype=np.float64)
    n = x.shape[0]
    if is_similarity:
        if x.shape != (n, n):
            raise ValueError(f"a similarity matrix must be square, got {x.shape}")
        sim_all = x
    else:
        if x.ndim != 2:
            raise ValueError(f"embeddings must be 2-d [N, d], got {x.shape}")
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        sim_all = None
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} items")
    tie_ids = np.arange(n) if ids is None else np.asarray(ids)
    codes = _label_codes(labels)
    n_rel_all = _relevant_counts(codes, exclude_self)
    queries = np.flatnonzero(n_rel_all > 0)

    sums = dict.fromkeys(_metric_keys(ks), 0.0)
    for start in range(0, len(queries), _EVAL_CHUNK):
        rows = queries[start:start + _EVAL_CHUNK]
        sim = sim_all[rows] if sim_all is not None else x[rows] @ x.T
        order = np.lexsort((np.broadcast_to(tie_ids, sim.shape), -sim), axis=1)
        if exclude_self:
            keep = order != rows[:, None]
            order = order[keep].reshape(len(rows), n - 1)
        rel = codes[order] == codes[rows][:, None]
        for key, values in _ranking_metrics(rel, n_rel_all[rows].astype(np.float64), ks).items():
            sums[key] += float(values.sum())
    return _result(sums, len(queries), n, int((codes >= 0).sum()), ks)


def random_baseline(
    labels: Sequence[Any],
    ks: Sequence[int] = (1, 5, 10),
    seed: int = 0,
    *,
    exclude_self: bool = True,
    method: str = "analytic",
    n_trials: int = 200,
) -> dict[str, Any]:
    """Expected :func:`evaluate_retrieval` values when the ranking is a uniform random permutation.

    ``method="analytic"`` (default) uses the closed forms; with n relevant among M candidates and
    ``L = min(K, M)``: E[P@K] = n·L/(M·K), E[R@K] = L/M, and since E[rel_i·rel_j] is n/M (i = j) or
    n(n-1)/(M(M-1)) (i != j), E[sum of precision@i at hits up to rank L] =
    n/M·H_L + n(n-1)/(M(M-1))·(L - H_L) with H_L the L-th harmonic number (AP@K divides it by
    min(K, n), AP uses L = M and divides by n). ``method="simulate"`` averages ``n_trials`` random
    rankings per query drawn with ``seed`` (a check on the formulas).
    """
    for k in ks:
        _check_k(k)
    if method not in ("analytic", "simulate"):
        raise ValueError(f"method must be 'analytic' or 'simulate', got {method!r}")
    codes = _label_codes(labels)
    n_items = len(codes)
    m = n_items - (1 if exclude_self else 0)
    n_rel_all = _relevant_counts(codes, exclude_self)
    queries = np.flatnonzero(n_rel_all > 0)
    sizes, n_queries_per_size = np.unique(n_rel_all[queries], return_counts=True)

    sums = dict.fromkeys(_metric_keys(ks), 0.0)
    rng = np.random.default_rng(seed)
    for size, weight in zip(sizes.astype(np.float64), n_queries_per_size):
        if method == "analytic":
            values = _expected_random(size, m, ks)
        else:
            ranks = rng.random((n_trials, m)).argsort(axis=1)
            rel = ranks < size
            per_trial = _ranking_metrics(rel, np.full(n_trials, size), ks)
            values = {key: float(v.mean()) for key, v in per_trial.items()}
        for key, value in values.items():
            sums[key] += weight * value
    return _result(sums, len(queries), n_items, int((codes >= 0).sum()), ks)


def _expected_random(n: float, m: int, ks: Sequence[int]) -> dict[str, float]:
    """Closed-form expected metrics for ``n`` relevant items among ``m`` randomly ordered ones."""
    pair = n * (n - 1) / (m * (m - 1)) if m > 1 else 0.0

    def hit_precision_sum(length: int) -> float:
        harmonic = float(np.sum(1.0 / np.arange(1, length + 1)))
        return n / m * harmonic + pair * (length - harmonic)

    out: dict[str, float] = {}
    for k in ks:
        length = min(k, m)
        out[f"precision@{k}"] = n * length / (m * k)
        out[f"recall@{k}"] = length / m
        out[f"map@{k}"] = hit_precision_sum(length) / min(k, n)
    out["map"] = hit_precision_sum(m) / n
    return out


# ---------------------------------------------------------------- pixel metrics

def load_gray(path: Path | str, size: int = 256) -> np.ndarray:
    """Image as grayscale float32 ``[size, size]`` in [0, 1] (resized bilinearly, aspect not kept)."""
    from PIL import Image, ImageOps

    from .storage import readable

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
    from skimage.metrics import structural_similarity

    x, y = _check_pair(a, b)
    side = min(x.shape)
    if side < 3:
        raise ValueError(f"SSIM needs images at least 3x3, got {x.shape}")
    win = min(7, side if side % 2 else side - 1)
    return float(structural_similarity(x, y, data_range=1.0, win_size=win))
