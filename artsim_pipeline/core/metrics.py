"""Ranking metrics (plain Python, no Dagster): each rule once, scalar beside vectorised.

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
* ties in score are broken deterministically by the lower id, NaN scores last.

Each rule has a scalar form (one ranking: :func:`precision_at_k`, :func:`recall_at_k`,
:func:`average_precision_at_k`, :func:`average_precision`, :func:`rank_with_ties`) and the
vectorised form the evaluation protocol uses (one row per query: :func:`topk_metrics`,
:func:`average_precision_rows`, :func:`rank_rows`); the tests hold them equal.
:func:`evaluate_retrieval` is leave-one-out retrieval over plain labels built from the vectorised
forms, and :func:`random_baseline` its closed-form chance level.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

_NAN = float("nan")
_EPS = 1e-12
_EVAL_CHUNK = 512


# ---------------------------------------------------------------- one ranking (scalar forms)

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
    """precision@i at every rank i (1-based), zero where rank i is not relevant (works per row)."""
    cum = np.cumsum(arr, axis=-1, dtype=np.float64)
    return np.where(arr, cum / np.arange(1, arr.shape[-1] + 1), 0.0)


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
    """Positions ordered by score descending, equal scores by id ascending, NaN scores last.

    The one-ranking form of :func:`rank_rows` (plain Python sort, kept as its reference).
    """
    s = np.asarray(scores, dtype=np.float64)
    i = np.asarray(ids)
    if s.shape != i.shape or s.ndim != 1:
        raise ValueError(f"scores and ids must be 1-d and the same length, got {s.shape} and {i.shape}")
    key = [(bool(np.isnan(v)), 0.0 if np.isnan(v) else -float(v), ident) for v, ident in zip(s, i.tolist())]
    return np.array(sorted(range(len(key)), key=key.__getitem__), dtype=np.int64)


# ---------------------------------------------------------------- one row per query (vectorised forms)

def rank_rows(scores: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """:func:`rank_with_ties` for every row of ``scores [q, n]`` at once (``ids [n]`` shared)."""
    scores = np.asarray(scores)
    return np.lexsort((np.broadcast_to(ids, scores.shape), -scores), axis=1)


def drop_self(order: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Ranking ``order [q, n]`` without each query's own position ``rows[i]`` -> ``[q, n - 1]``."""
    keep = order != rows[:, None]
    return order[keep].reshape(len(rows), order.shape[1] - 1)


def topk_metrics(rel: np.ndarray, n_rel: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """``precision@k``, ``recall@k``, ``map@k`` per query from ``rel [q, m]`` (rank order, m may be < k)
    and ``n_rel [q]`` (> 0): :func:`precision_at_k`, :func:`recall_at_k`, :func:`average_precision_at_k`
    row by row."""
    _check_k(k)
    top = rel[:, :k]
    hits = np.cumsum(top, axis=1, dtype=np.float64)[:, -1] if top.shape[1] else np.zeros(len(n_rel))
    prec_sum = _precision_at_hits(top).sum(axis=1)
    return {
        f"precision@{k}": hits / k,
        f"recall@{k}": hits / n_rel,
        f"map@{k}": prec_sum / np.minimum(k, n_rel),
    }


def average_precision_rows(rel: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    """Full-ranking AP per query (:func:`average_precision` row by row)."""
    return _precision_at_hits(rel).sum(axis=1) / n_rel


def metric_keys(ks: Sequence[int]) -> list[str]:
    """The per-query metric names for ``ks``: ``precision@K``, ``recall@K``, ``map@K`` ..., then ``map``."""
    return [f"{name}@{k}" for k in ks for name in ("precision", "recall", "map")] + ["map"]


def l2_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float64; all-zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), _EPS)


def label_codes(labels: Sequence[Any]) -> np.ndarray:
    """Integer code per label (first seen first); -1 for None / NaN / blank."""
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


def _relevant_counts(codes: np.ndarray) -> np.ndarray:
    """Per item, how many *other* items share its label (0 for unlabelled items)."""
    counts = np.bincount(codes[codes >= 0], minlength=1)
    return np.where(codes >= 0, counts[np.maximum(codes, 0)] - 1, 0)


# ---------------------------------------------------------------- leave-one-out over labels

def _result(sums: dict[str, float], n_queries: int, n_items: int, n_labelled: int, ks: Sequence[int]) -> dict[str, Any]:
    result: dict[str, Any] = {"n_items": n_items, "n_labelled": n_labelled, "n_queries": n_queries, "ks": list(ks)}
    for key, total in sums.items():
        result[key] = total / n_queries if n_queries else _NAN
    return result


def evaluate_retrieval(
    vectors: np.ndarray, labels: Sequence[Any], ks: Sequence[int] = (1, 5, 10), *, ids: Sequence[int] | None = None
) -> dict[str, Any]:
    """Leave-one-out retrieval quality: each labelled item queries all the others.

    ``vectors`` is ``[N, d]`` (rows are L2-normalised here, so scores are cosine). An item is
    relevant to a query when their labels are equal; queries with a missing label or no other item
    sharing it are skipped. Ties are broken by ``ids`` (default: row number). Returns the mean
    ``precision@K``, ``recall@K``, ``map@K`` for each K, full-ranking ``map``, and ``n_queries``.
    """
    for k in ks:
        _check_k(k)
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-d [N, d], got {x.shape}")
    n = x.shape[0]
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} items")
    x = l2_rows(x)
    tie_ids = np.arange(n) if ids is None else np.asarray(ids)
    codes = label_codes(labels)
    n_rel_all = _relevant_counts(codes)
    queries = np.flatnonzero(n_rel_all > 0)
    sums = dict.fromkeys(metric_keys(ks), 0.0)
    for start in range(0, len(queries), _EVAL_CHUNK):
        rows = queries[start:start + _EVAL_CHUNK]
        order = drop_self(rank_rows(x[rows] @ x.T, tie_ids), rows)
        rel = codes[order] == codes[rows][:, None]
        n_rel = n_rel_all[rows].astype(np.float64)
        values = {key: v for k in ks for key, v in topk_metrics(rel, n_rel, k).items()}
        values["map"] = average_precision_rows(rel, n_rel)
        for key, v in values.items():
            sums[key] += float(v.sum())
    return _result(sums, len(queries), n, int((codes >= 0).sum()), ks)


def random_baseline(labels: Sequence[Any], ks: Sequence[int] = (1, 5, 10)) -> dict[str, Any]:
    """Expected :func:`evaluate_retrieval` values when the ranking is a uniform random permutation.

    Closed forms: with n relevant among M candidates and ``L = min(K, M)``: E[P@K] = n·L/(M·K),
    E[R@K] = L/M, and since E[rel_i·rel_j] is n/M (i = j) or n(n-1)/(M(M-1)) (i != j),
    E[sum of precision@i at hits up to rank L] = n/M·H_L + n(n-1)/(M(M-1))·(L - H_L) with H_L the
    L-th harmonic number (AP@K divides it by min(K, n), AP uses L = M and divides by n).
    """
    codes = label_codes(labels)
    return random_expectation(_relevant_counts(codes), int((codes >= 0).sum()), ks)


def random_expectation(relevant_counts: np.ndarray, n_labelled: int, ks: Sequence[int] = (1, 5, 10)) -> dict[str, Any]:
    """:func:`random_baseline` from each item's count of *other* relevant items (any binary relevance: an item
    with none is not a query); every other item is a candidate. The expectation of the metrics over every
    query, exact: what any number of simulated random rankings converges to."""
    for k in ks:
        _check_k(k)
    counts = np.asarray(relevant_counts)
    n_items = len(counts)
    sizes, n_queries_per_size = np.unique(counts[counts > 0], return_counts=True)
    sums = dict.fromkeys(metric_keys(ks), 0.0)
    for size, weight in zip(sizes.astype(np.float64), n_queries_per_size):
        for key, value in _expected_random(size, n_items - 1, ks).items():
            sums[key] += weight * value
    return _result(sums, int(n_queries_per_size.sum()), n_items, n_labelled, ks)


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
