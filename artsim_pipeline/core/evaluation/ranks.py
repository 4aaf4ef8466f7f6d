"""Exact leave-one-out rankings without sorting each query's whole ranking (plain Python, no Dagster).

The protocol needs, per query, the top few results (top-K metrics, the hybrids' candidates) and where the
*relevant* paintings fall in the full ranking (full-ranking AP). A full ranking of ``N`` paintings is an
indirect sort on two or three keys (``np.lexsort``: score, then id): at 131,072 paintings that is most of
a query's cost. Here, with the same keys and the same order:

* :func:`top_rows` = ``drop_self(np.lexsort(keys), rows)[:, :t]``: the ``t + 1``-th smallest primary key
  (``np.partition``) bounds the candidates, every painting at or below it (ties included) is sorted with
  all the keys, so the prefix is that of the full sort;
* :func:`ranked_relevance` = ``take_along_axis(rel, drop_self(np.lexsort(keys), rows))``: a relevant
  painting's position is the number of paintings before it: a binary search in the sorted primary key
  (``np.sort``, a plain value sort), plus, inside a group of equal primary keys, its place by the other
  keys (lexsort is stable, so index order last); the query's own position is then left out.

``keys`` follow ``np.lexsort``: the last is the primary key; a key may be ``[q, N]`` or ``[N]`` (shared by
the rows, e.g. the ids). ``stable=False`` stands for ``np.argsort``'s default sort (one key, no defined
order among equal values): a row whose needed positions meet equal values falls back to ``np.argsort``
itself. A row with a NaN primary key falls back to the full sort. The results are those of the full
sorts, element for element (``test_evaluation_ranks.py``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..scoring import FINAL_DECIMALS, MetadataTable, ScoringWeights, final_score, metadata_scores, rerank_order


def _row_keys(keys: Sequence[np.ndarray], i: int) -> list[np.ndarray]:
    return [k[i] if k.ndim == 2 else k for k in keys]


def _full_order(row_keys: list[np.ndarray], stable: bool) -> np.ndarray:
    return np.lexsort(row_keys) if stable else np.argsort(row_keys[-1])


def _drop(order: np.ndarray, self_row: int | None) -> np.ndarray:
    return order if self_row is None else order[order != self_row]


def sorted_primary(keys: Sequence[np.ndarray]) -> np.ndarray:
    """Each row's primary key (the last of ``keys``), sorted: what :func:`top_rows` and
    :func:`ranked_relevance` may share instead of a partition and a sort of the same rows."""
    return np.sort(np.asarray(keys[-1]), axis=1)


def top_rows(keys: Sequence[np.ndarray], rows: np.ndarray | None, t: int, stable: bool = True,
             srt: np.ndarray | None = None) -> np.ndarray:
    """``[q, t]``: the first ``t`` of each row's full order (``rows[i]`` left out; ``rows`` None: none).

    ``srt``: :func:`sorted_primary` of ``keys`` when already computed (its values bound the rows, as the
    partition would: the same value at the same place)."""
    keys = [np.asarray(k) for k in keys]
    primary = keys[-1]
    q, n = primary.shape
    extra = 0 if rows is None else 1
    t = min(int(t), n - extra)
    out = np.empty((q, t), dtype=np.int64)
    if t + extra >= n:  # nothing to skip: sort the rows
        for i in range(q):
            out[i] = _drop(_full_order(_row_keys(keys, i), stable), None if rows is None else int(rows[i]))[:t]
        return out
    kth = (np.partition(primary, t + extra - 1, axis=1) if srt is None else srt)[:, t + extra - 1]
    for i in range(q):
        row_keys = _row_keys(keys, i)
        self_row = None if rows is None else int(rows[i])
        cand = np.flatnonzero(row_keys[-1] <= kth[i]) if not np.isnan(kth[i]) else None
        if cand is not None and not stable:
            values = np.sort(row_keys[-1][cand])
            if (values[1:] == values[:-1]).any():
                cand = None
        if cand is None:
            out[i] = _drop(_full_order(row_keys, stable), self_row)[:t]
            continue
        ordered = cand[np.lexsort([k[cand] for k in row_keys])] if stable else cand[np.argsort(row_keys[-1][cand])]
        out[i] = _drop(ordered, self_row)[:t]
    return out


def _first_at(srt: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For values ``v`` present in sorted ``srt``: the first index of each and whether another equals it."""
    by_value = np.argsort(v)  # sorted needles: a much faster binary search (equal ones: any order)
    lo = np.empty(len(v), dtype=np.int64)
    lo[by_value] = np.searchsorted(srt, v[by_value], "left")
    nxt = np.minimum(lo + 1, len(srt) - 1)
    return lo, (lo + 1 < len(srt)) & (srt[nxt] == v)


def _positions(row_keys: list[np.ndarray], srt: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Positions of ``items`` in the row's full lexsort order (``srt``: the row's primary key, sorted)."""
    p = row_keys[-1]
    v = p[items]
    pos, tied = _first_at(srt, v)
    for value in np.unique(v[tied]):
        group = np.flatnonzero(p == value)  # ascending index: lexsort's last tie-break
        rank_of = np.empty(len(group), dtype=np.int64)
        rest = [k[group] for k in row_keys[:-1]]
        rank_of[np.lexsort(rest) if rest else np.arange(len(group))] = np.arange(len(group))
        sel = np.flatnonzero(v == value)
        pos[sel] += rank_of[np.searchsorted(group, items[sel])]
    return pos


def ranked_relevance(keys: Sequence[np.ndarray], rows: np.ndarray, rel: np.ndarray, stable: bool = True,
                     srt: np.ndarray | None = None) -> np.ndarray:
    """``[q, N - 1]`` bool: ``rel [q, N]`` in each row's full order with ``rows[i]`` left out (``srt``:
    :func:`sorted_primary` of ``keys`` when already computed)."""
    keys = [np.asarray(k) for k in keys]
    q, n = keys[-1].shape
    out = np.zeros((q, n - 1), dtype=bool)
    for i in range(q):
        row_keys = _row_keys(keys, i)
        self_row = int(rows[i])
        p = row_keys[-1]
        srt_i = np.sort(p) if srt is None else srt[i]
        items = np.flatnonzero(rel[i])
        items = np.append(items[items != self_row], self_row)
        pos = None
        if not np.isnan(srt_i[-1]):
            if stable:
                pos = _positions(row_keys, srt_i, items)
            else:
                lo, tied = _first_at(srt_i, p[items])
                pos = None if tied.any() else lo
        if pos is None:
            out[i] = rel[i][_drop(_full_order(row_keys, stable), self_row)]
            continue
        mine, self_pos = pos[:-1], pos[-1]
        out[i, mine - (mine > self_pos)] = True
    return out


def visual_depth(ks: Sequence[int], hybrids: Sequence[ScoringWeights | None]) -> int:
    """How many visual results a chunk needs: the largest K and every hybrid's candidates."""
    return max([max(ks)] + [h.n_candidates(k) for h in hybrids if h is not None for k in ks])


def chunk_rankings(sim: np.ndarray, ids: np.ndarray, table: MetadataTable, rows: np.ndarray, method: str,
                   hybrid: ScoringWeights | None, ks: Sequence[int], rng: np.random.Generator, rel: np.ndarray,
                   visual_top: np.ndarray | None, visual_sorted: np.ndarray | None = None,
                   ) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """One chunk of one method: (``rel`` in the full ranking, self left out ``[q, N - 1]``; top-K rows per K).

    The same rankings as :func:`~.protocol._rankings` (its full sorts, the same random draws):
    ``visual_top`` is :func:`top_rows` of the visual order to :func:`visual_depth`, ``visual_sorted`` the
    visual primary key sorted (:func:`sorted_primary` of ``-sim``), when already computed. One sort of a
    row's primary key serves both its top and where its relevant paintings fall.
    """
    if method == "random":
        keys = (rng.random(sim.shape),)
        srt = sorted_primary(keys)
        top = top_rows(keys, rows, max(ks), stable=False, srt=srt)
        return ranked_relevance(keys, rows, rel, stable=False, srt=srt), {k: top[:, :k] for k in ks}
    visual_keys = (ids, -np.asarray(sim))
    if visual_top is None:
        visual_sorted = sorted_primary(visual_keys)
        visual_top = top_rows(visual_keys, rows, visual_depth(ks, [hybrid]), srt=visual_sorted)
    if hybrid is None:
        return ranked_relevance(visual_keys, rows, rel, srt=visual_sorted), {k: visual_top[:, :k] for k in ks}
    final = np.asarray(final_score(sim, metadata_scores(table, rows, hybrid), hybrid), dtype=np.float64)
    tops = {}
    for k in ks:
        cand = visual_top[:, :hybrid.n_candidates(k)]
        sub = rerank_order(np.take_along_axis(final, cand, 1), np.take_along_axis(sim, cand, 1), ids[cand])
        tops[k] = np.take_along_axis(cand, sub, axis=1)[:, :k]
    keys = (ids, -np.asarray(sim), -np.round(final, FINAL_DECIMALS))
    return ranked_relevance(keys, rows, rel), tops


def average_precision_ranked(ranked: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    """:func:`~artsim_pipeline.core.metrics.average_precision_rows` of ``ranked [q, m]``, bit for bit: the
    same terms (``hits so far / rank`` at each hit, 0 elsewhere) in the same array and sum, from the hits
    alone instead of a cumulative sum over every rank."""
    qs, pos = np.nonzero(ranked)  # row-major: ranks ascending within a row
    starts = np.searchsorted(qs, np.arange(len(ranked)))
    terms = np.zeros(ranked.shape, dtype=np.float64)
    terms[qs, pos] = (np.arange(len(pos)) - starts[qs] + 1).astype(np.float64) / (pos + 1)
    return terms.sum(axis=1) / n_rel
