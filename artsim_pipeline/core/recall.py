"""Measured recall: exact top-k (the ground truth), neighbour recall, and the IVF ``nprobe`` tuning (plain Python).

Apart from :mod:`artsim_pipeline.core.index` (building, searching and storing indexes) because the evaluation's
index check, the pixel study and the benchmarks use the exact search and the recall without any index.

* :func:`exact_topk`: exact inner-product top-k by chunked matrix products, ties broken by the lower row,
  optionally leaving each query's own row out.
* :func:`neighbour_recall`: mean share of the true top-k ids found.
* :func:`tune_nprobe` / :func:`predicted_recalls`: the smallest ``nprobe`` whose recall@10 on up to
  ``MAX_RECALL_QUERIES`` of the collection's own vectors reaches the target (0.99).
"""

from __future__ import annotations

import faiss
import numpy as np

RECALL_K = 10
MAX_RECALL_QUERIES = 1000
DEFAULT_TARGET_RECALL = 0.99
_QUERY_CHUNK = 1024


def check_vectors(vectors: np.ndarray, what: str = "vectors") -> np.ndarray:
    """``vectors`` as a C-contiguous float32 [n, d] array; a ValueError naming ``what`` if empty or not finite."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{what}: expected a non-empty 2-d array [n, d], got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what}: contains NaN or infinite values")
    return x


def neighbour_recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over rows of ``|found_row ∩ truth_row| / k`` (ids; ``-1`` never matches)."""
    found = np.asarray(found)
    truth = np.asarray(truth)
    if truth.size == 0:
        return 1.0
    hits = [np.intersect1d(f[f >= 0], t[t >= 0]).size for f, t in zip(found, truth)]
    return float(np.sum(hits) / truth.size)


def tune_nprobe(
    ivf: faiss.IndexIVF,
    vectors: np.ndarray,
    ids: np.ndarray,
    *,
    target_recall: float = DEFAULT_TARGET_RECALL,
    k: int = RECALL_K,
    max_queries: int = MAX_RECALL_QUERIES,
    seed: int = 0,
) -> tuple[int, float, int]:
    """Smallest nprobe with recall@k >= target on a sample of the collection: (nprobe, recall, n_queries).

    IVF-Flat finds a true neighbour exactly when its list is among the ``nprobe`` lists closest to the
    query (distances inside a list are exact), so one coarse ranking gives the recall of every nprobe
    at once (:func:`predicted_recalls`): the smallest that meets the target is taken, then measured by
    one real search (the recall reported). Should that measurement fall short (ties at the k-th score),
    doubling then bisection by real searches from there decides, as before; valid because recall only
    grows with nprobe (more lists probed is a superset of candidates). Cost: one search of every
    centroid per query instead of ~15 searches of a growing share of the collection.
    """
    n = vectors.shape[0]
    k = min(k, n)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(max_queries, n), replace=False))
    queries = vectors[rows]
    _, truth_rows = exact_topk(vectors, queries, k, exclude_self=False)
    truth = ids[truth_rows]

    cache: dict[int, float] = {}

    def recall_for(nprobe: int) -> float:
        if nprobe not in cache:
            params = faiss.SearchParametersIVF(nprobe=nprobe)
            _, found = ivf.search(queries, k, params=params)
            cache[nprobe] = neighbour_recall(found, truth)
        return cache[nprobe]

    nlist = int(ivf.nlist)
    predicted = predicted_recalls(ivf, queries, vectors[truth_rows.ravel()].reshape(*truth_rows.shape, -1))
    meets = np.flatnonzero(predicted >= target_recall)
    first = int(meets[0]) + 1 if meets.size else nlist
    if recall_for(first) >= target_recall or first == nlist:
        if first == 1 or recall_for(first - 1) < target_recall:
            return first, recall_for(first), len(rows)
    low, high = (first, min(2 * first, nlist)) if recall_for(first) < target_recall else (0, first)
    while high < nlist and recall_for(high) < target_recall:
        low, high = high, min(2 * high, nlist)
    if recall_for(high) >= target_recall:
        while high - low > 1:
            mid = (low + high) // 2
            if recall_for(mid) >= target_recall:
                high = mid
            else:
                low = mid
    return high, recall_for(high), len(rows)


def predicted_recalls(ivf: faiss.IndexIVF, queries: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Recall@k of the IVF index at every nprobe 1..nlist (entry ``p - 1``), for ``queries`` [q, d] whose true
    top-k are ``neighbours`` [q, k, d]: the share of true neighbours whose list ranks below ``p`` among the
    query's closest centroids (the list a vector lives in is the quantizer's nearest centroid, as when added)."""
    q, k = neighbours.shape[:2]
    nlist = int(ivf.nlist)
    if q == 0 or k == 0:
        return np.ones(nlist)
    _, order = ivf.quantizer.search(np.ascontiguousarray(queries, dtype=np.float32), nlist)  # [q, nlist] by closeness
    rank = np.empty_like(order)
    rank[np.arange(q)[:, None], order] = np.arange(nlist)[None, :]  # rank[query, list]
    _, lists = ivf.quantizer.search(np.ascontiguousarray(neighbours.reshape(q * k, -1), dtype=np.float32), 1)
    found_at = rank[np.repeat(np.arange(q), k), lists[:, 0]]  # nprobe - 1 at which each neighbour is found
    counts = np.bincount(found_at, minlength=nlist)
    return np.cumsum(counts) / float(q * k)


def exact_topk(
    vectors: np.ndarray,
    queries: np.ndarray,
    k: int,
    exclude_self: bool = True,
    query_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k: ``(scores float32 [q, k'], rows int64 [q, k'])``.

    ``rows`` index into ``vectors``; ties in score are broken by the lower row. With
    ``exclude_self`` query ``i`` is ``vectors[query_rows[i]]`` (default: ``queries`` *is*
    ``vectors``, query i = row i) and that row is left out. ``k' = min(k, available rows)``.
    """
    x = check_vectors(vectors)
    q = check_vectors(np.atleast_2d(queries), "queries")
    if q.shape[1] != x.shape[1]:
        raise ValueError(f"queries have dim {q.shape[1]}, vectors have dim {x.shape[1]}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = x.shape[0]
    self_rows: np.ndarray | None = None
    if exclude_self:
        if query_rows is None:
            if q.shape[0] != n:
                raise ValueError("exclude_self needs query_rows unless queries are the vectors themselves")
            self_rows = np.arange(n)
        else:
            self_rows = np.asarray(query_rows, dtype=np.int64)
    k_eff = min(k, n - (1 if exclude_self else 0))
    if k_eff < 1:
        return np.zeros((q.shape[0], 0), np.float32), np.zeros((q.shape[0], 0), np.int64)

    out_scores = np.empty((q.shape[0], k_eff), np.float32)
    out_rows = np.empty((q.shape[0], k_eff), np.int64)
    for start in range(0, q.shape[0], _QUERY_CHUNK):
        stop = min(start + _QUERY_CHUNK, q.shape[0])
        sim = q[start:stop] @ x.T
        if self_rows is not None:
            sim[np.arange(stop - start), self_rows[start:stop]] = -np.inf
        rows = _topk_rows(sim, k_eff)
        out_rows[start:stop] = rows
        out_scores[start:stop] = np.take_along_axis(sim, rows, axis=1)
    return out_scores, out_rows


def _topk_rows(sim: np.ndarray, k: int) -> np.ndarray:
    """Per row, the columns of the k largest values; ties broken by lower column, deterministically."""
    n = sim.shape[1]
    if k >= n:
        part = np.broadcast_to(np.arange(n), sim.shape).copy()
    else:
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        kth = np.take_along_axis(sim, part, axis=1).min(axis=1)
        tied = np.flatnonzero((sim >= kth[:, None]).sum(axis=1) > k)
        for r in tied:  # a tie straddles the cut: settle it by column order
            part[r] = np.argsort(-sim[r], kind="stable")[:k]
    vals = np.take_along_axis(sim, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    return np.take_along_axis(part, order, axis=1)
