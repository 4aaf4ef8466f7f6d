"""Re-ranking with the collection's own neighbourhoods: α-query expansion and database-side augmentation.

Plain Python (numpy + FAISS, no Dagster, no training). Every vector is L2-normalised (cosine = inner
product); ``w(s) = max(s, 0) ** alpha`` weighs a neighbour by its similarity.

* **Database-side augmentation** (DBA, :func:`augment`): each painting's vector is replaced, once, when the
  index is built, by ``normalise(x_j + sum_{i in N_m(j)} w(x_j . x_i) x_i)``, ``N_m(j)`` its ``m``
  (``ARTSIM_RERANK_DBA_TOP``) nearest *other* paintings. Stored with the index (``augmented-<v>.npy`` in
  the bundle: float32 ``[N, d]``, rows in the bundle's id order, sha256 in its manifest), so serving
  costs one more ``N x d`` array (2 KB a painting at 512 d) and no neighbour search.
* **α-query expansion** (QE, :func:`expand`): the query ``q`` is replaced by
  ``normalise(q + sum_{i in top n} w(q . v_i) v_i)`` over its ``n`` (``ARTSIM_RERANK_QE_TOP``) best
  database vectors ``v_i`` (augmented ones under ``dba_qe``), then the database is scored again.

Methods (``ARTSIM_RERANK``, :data:`METHODS`): ``none`` (cosine, as before), ``qe``, ``dba`` (raw query
against the augmented database), ``dba_qe``. The score a method gives is a cosine between unit vectors, so
the metadata re-rank (0.7 visual + 0.3 metadata, :mod:`~artsim_pipeline.core.scoring`) stays on top as is.

**Honest leave-one-out** (:class:`LeaveOneOut`): when a painting of the collection is the query, it must
not shape the database it is compared with. Its own row is left out (as always), and every augmented row
whose ``N_m`` contains it is recomputed without it (its ``m + 1``-th neighbour moves up): exactly the
database the collection minus that painting would have built. Only those rows change (about ``m`` per
query), so a chunk of queries costs one matrix product plus a few row fixes.
:func:`loo_scores_one` is the scalar reference it is tested against (it rebuilds the augmented database
without the query from scratch).

Neighbour tables (:func:`neighbour_table`) are exact up to :data:`EXACT_NEIGHBOURS_MAX` paintings (one
``N x N`` product in chunks: about a second at 8,192). Beyond, they come from an IVF index (the served one
when the index is built) probing at most :data:`NEIGHBOUR_NPROBE` lists. That is fewer than search uses:
augmentation only smooths each vector with its neighbours, and it keeps the build near linear. At 131,072
synthetic paintings the search's own nprobe (335 of 1,448 lists) took 305 s; capped, it takes seconds
(``artsim bench scale``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import faiss
import numpy as np

from .index import build_index
from .recall import check_vectors, exact_topk

METHODS = ("none", "qe", "dba", "dba_qe")
#: Exact neighbour search (one N x N product in chunks) up to this many paintings; an IVF search beyond.
EXACT_NEIGHBOURS_MAX = 8_192
#: Lists an IVF neighbour search for the augmentation probes at most (module doc).
NEIGHBOUR_NPROBE = 16


@dataclass(frozen=True)
class RerankOptions:
    """One re-ranking configuration (the settings ``ARTSIM_RERANK*``)."""

    method: str = "none"
    dba_top: int = 3  # m: neighbours merged into each database vector
    qe_top: int = 3  # n: best results merged into the query
    alpha: float = 3.0  # w(s) = max(s, 0) ** alpha

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"re-ranking method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if int(self.dba_top) < 1 or int(self.qe_top) < 1:
            raise ValueError(f"dba_top and qe_top must be >= 1, got {self.dba_top}, {self.qe_top}")
        if not np.isfinite(self.alpha) or self.alpha < 0:
            raise ValueError(f"alpha must be a finite number >= 0, got {self.alpha}")

    @property
    def uses_dba(self) -> bool:
        return self.method in ("dba", "dba_qe")

    @property
    def uses_qe(self) -> bool:
        return self.method in ("qe", "dba_qe")

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method}
        if self.uses_dba:
            out["dba_top"] = int(self.dba_top)
        if self.uses_qe:
            out["qe_top"] = int(self.qe_top)
        if self.method != "none":
            out["alpha"] = float(self.alpha)
        return out

    @property
    def label(self) -> str:
        """Short name, e.g. ``dba_qe(m=3,n=3,a=3)``."""
        parts = [f"m={self.dba_top}"] if self.uses_dba else []
        parts += [f"n={self.qe_top}"] if self.uses_qe else []
        parts += [f"a={self.alpha:g}"] if self.method != "none" else []
        return self.method + (f"({','.join(parts)})" if parts else "")


def weights(sims: np.ndarray, alpha: float) -> np.ndarray:
    """``max(s, 0) ** alpha`` (alpha 0: every neighbour counts 1)."""
    return np.maximum(np.asarray(sims, dtype=np.float64), 0.0) ** float(alpha)


def _unit(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(norm > 0, norm, 1.0)


def neighbour_table(x: np.ndarray, width: int, index: Any = None, nprobe: int | None = None,
                    ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``width`` nearest other rows: ``(rows int64 [N, w], sims float32 [N, w])``, best first.

    Exact up to :data:`EXACT_NEIGHBOURS_MAX` rows (ties to the lower row). Beyond, from ``index`` (a
    FAISS inner-product index over ``x`` keyed by ``ids``; one is built when None) searched with
    ``min(nprobe, NEIGHBOUR_NPROBE)`` lists; a short row (IVF found fewer) is padded with its last neighbour
    (a row that found none keeps itself at similarity 0, which adds nothing).
    """
    x = check_vectors(x)
    n = x.shape[0]
    width = min(int(width), n - 1)
    if width < 1:
        return np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32)
    if n <= EXACT_NEIGHBOURS_MAX:
        sims, rows = exact_topk(x, x, width)
        return rows, sims
    if index is None:
        bundle = build_index(x, np.arange(n, dtype=np.int64))
        index, nprobe, ids = bundle.index, bundle.info.get("nprobe"), bundle.ids
    ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    params = faiss.SearchParametersIVF(nprobe=min(int(nprobe), NEIGHBOUR_NPROBE)) if nprobe else None
    sims, found = index.search(x, width + 1, params=params)
    order = np.argsort(ids)
    rows = np.where(found >= 0, order[np.searchsorted(ids, np.maximum(found, 0), sorter=order)], -1)
    # drop the row itself (not always first when ties) and the misses, keeping the rank order; pad short rows
    keep = (rows >= 0) & (rows != np.arange(n)[:, None])
    first = np.argsort(~keep, axis=1, kind="stable")[:, :width]
    rows, sims = np.take_along_axis(rows, first, axis=1), np.take_along_axis(sims, first, axis=1)
    count = np.minimum(keep.sum(axis=1), width)
    last = np.minimum(np.arange(width)[None, :], np.maximum(count - 1, 0)[:, None])
    rows, sims = np.take_along_axis(rows, last, axis=1), np.take_along_axis(sims, last, axis=1)
    none = count == 0
    rows[none], sims[none] = np.arange(n)[none][:, None], 0.0
    return rows.astype(np.int64), sims.astype(np.float32)


def augment(x: np.ndarray, rows: np.ndarray, sims: np.ndarray, alpha: float) -> np.ndarray:
    """DBA of every row: ``normalise(x_j + sum_i w(s_ji) x_{rows[j, i]})`` (float32 [N, d]), all columns of ``rows``."""
    x = np.asarray(x, dtype=np.float32)
    out = x.astype(np.float64, copy=True)
    w = weights(sims, alpha)
    for col in range(rows.shape[1]):
        out += w[:, col:col + 1] * x[rows[:, col]]
    return _unit(out).astype(np.float32)


def augment_row(x: np.ndarray, j: int, rows: np.ndarray, sims: np.ndarray, alpha: float, m: int,
                without: int | None = None) -> np.ndarray:
    """DBA of row ``j`` from its first ``m`` neighbours in ``rows``/``sims`` (best first), ``without`` skipped."""
    keep = rows != without if without is not None else np.ones(len(rows), dtype=bool)
    nb, s = rows[keep][:m], sims[keep][:m]
    v = x[j].astype(np.float64) + (weights(s, alpha)[:, None] * x[nb].astype(np.float64)).sum(axis=0)
    return _unit(v).astype(np.float32)


def expand(query: np.ndarray, database: np.ndarray, scores: np.ndarray, top: int, alpha: float,
           exclude: np.ndarray | None = None) -> np.ndarray:
    """α-QE of ``query [q, d]``: ``normalise(q + sum_{i in top} w(s_i) database_i)`` over each row's ``top``
    best ``scores [q, N]`` (ties to the lower column; ``exclude [q]``: a column each row may not pick)."""
    s = np.array(scores, dtype=np.float64, copy=True)
    if exclude is not None:
        s[np.arange(len(s)), exclude] = -np.inf
    top = min(int(top), s.shape[1])
    best = np.argsort(-s, axis=1, kind="stable")[:, :top]
    w = weights(np.take_along_axis(s, best, axis=1), alpha)
    v = np.asarray(query, dtype=np.float64) + np.einsum("qt,qtd->qd", w, database[best].astype(np.float64))
    return _unit(v).astype(np.float32)


@dataclass
class Augmented:
    """The database side of a collection: raw vectors, their neighbour table and (DBA) augmented vectors."""

    x: np.ndarray  # float32 [N, d] raw (L2-normalised)
    database: np.ndarray  # float32 [N, d]: augmented under DBA, else x itself
    rows: np.ndarray  # int64 [N, m + 1] neighbour rows (one spare for the leave-one-out recomputation)
    sims: np.ndarray  # float32 [N, m + 1]
    options: RerankOptions

    @classmethod
    def build(cls, x: np.ndarray, options: RerankOptions, index: Any = None, nprobe: int | None = None,
              ids: np.ndarray | None = None) -> "Augmented":
        x = check_vectors(x)
        if not options.uses_dba:
            empty = np.zeros((len(x), 0), np.int64)
            return cls(x, x, empty, empty.astype(np.float32), options)
        rows, sims = neighbour_table(x, options.dba_top + 1, index, nprobe, ids)
        database = augment(x, rows[:, :options.dba_top], sims[:, :options.dba_top], options.alpha)
        return cls(x, database, rows, sims, options)


class LeaveOneOut:
    """Re-ranked scores of collection rows as queries, the query never shaping the database (module doc)."""

    def __init__(self, augmented: Augmented) -> None:
        self.aug = augmented
        opts = augmented.options
        n = len(augmented.x)
        self.touched: list[np.ndarray] = [np.zeros(0, np.int64)] * n
        if opts.uses_dba and augmented.rows.shape[1]:
            m = min(opts.dba_top, augmented.rows.shape[1])
            owners = np.repeat(np.arange(n), m)
            members = augmented.rows[:, :m].ravel()
            order = np.argsort(members, kind="stable")
            members, owners = members[order], owners[order]
            starts = np.searchsorted(members, np.arange(n + 1))
            self.touched = [owners[starts[q]:starts[q + 1]] for q in range(n)]

    def scores(self, rows: np.ndarray) -> np.ndarray:
        """``float32 [len(rows), N]``: query ``rows[i]`` against the database without it (its own column
        is whatever the raw product gives; callers drop self, as the protocol does)."""
        aug, opts = self.aug, self.aug.options
        rows = np.asarray(rows, dtype=np.int64)
        q = aug.x[rows]
        if opts.method == "none":
            return q @ aug.x.T
        s = q @ aug.database.T
        fixes = [self._fixed_rows(int(r)) for r in rows]
        for i, (cols, vecs) in enumerate(fixes):
            if len(cols):
                s[i, cols] = vecs @ q[i]
        if not opts.uses_qe:
            return s
        # α-QE: the best other rows of the corrected scores, with their corrected vectors
        s_pick = s.astype(np.float64, copy=True)
        s_pick[np.arange(len(rows)), rows] = -np.inf
        top = min(opts.qe_top, s.shape[1] - 1)
        from .evaluation.ranks import top_rows  # (here: core.evaluation imports this module)

        best = top_rows((-s_pick,), None, top)  # = np.argsort(-s_pick, kind="stable")[:, :top], no full sort
        neigh = aug.database[best].astype(np.float64)
        for i, (cols, vecs) in enumerate(fixes):
            if len(cols):
                hit = np.isin(best[i], cols)
                if hit.any():
                    where = {int(c): t for t, c in enumerate(cols)}
                    for t in np.flatnonzero(hit):
                        neigh[i, t] = vecs[where[int(best[i, t])]]
        w = weights(np.take_along_axis(s_pick, best, axis=1), opts.alpha)
        v = _unit(q.astype(np.float64) + np.einsum("qt,qtd->qd", w, neigh)).astype(np.float32)
        out = v @ aug.database.T
        for i, (cols, vecs) in enumerate(fixes):
            if len(cols):
                out[i, cols] = vecs @ v[i]
        return out

    def _fixed_rows(self, q: int) -> tuple[np.ndarray, np.ndarray]:
        """The augmented rows that contained ``q`` and their vectors recomputed without it."""
        aug, opts = self.aug, self.aug.options
        cols = self.touched[q]
        if not len(cols):
            return cols, np.zeros((0, aug.x.shape[1]), np.float32)
        vecs = np.stack([augment_row(aug.x, int(j), aug.rows[j], aug.sims[j], opts.alpha, opts.dba_top, without=q)
                         for j in cols])
        return cols, vecs


def loo_scores_one(x: np.ndarray, q: int, options: RerankOptions) -> np.ndarray:
    """Scalar reference of :meth:`LeaveOneOut.scores` for one query row: the collection without row ``q``
    is augmented from scratch (exact neighbours), ``x[q]`` is expanded against it, and the scores come back
    in the full collection's columns (column ``q``: ``-inf``)."""
    x = np.asarray(x, dtype=np.float32)
    others = np.delete(np.arange(len(x)), q)
    rest = x[others]
    database = rest
    if options.uses_dba:
        sims, rows = exact_topk(rest, rest, options.dba_top)
        database = augment(rest, rows, sims, options.alpha)
    query = x[q][None]
    s = query @ database.T
    if options.uses_qe:
        query = expand(query, database, s, options.qe_top, options.alpha)
        s = query @ database.T
    out = np.full(len(x), -np.inf, np.float32)
    out[others] = s[0]
    return out


def rescore(query: np.ndarray, raw: np.ndarray, database: np.ndarray, options: RerankOptions,
            exclude: int | None = None) -> np.ndarray:
    """Re-ranked scores of one served query over its candidates (``raw``/``database``: the candidates' raw
    and augmented vectors, ``[c, d]``); ``exclude``: a candidate row QE may not pick (the query painting
    itself, as in the leave-one-out protocol)."""
    q = np.asarray(query, dtype=np.float32)[None]
    if options.method == "none":
        return (q @ raw.T)[0]
    base = database if options.uses_dba else raw
    s = q @ base.T
    if options.uses_qe and len(base) > (exclude is not None):
        q = expand(q, base, s, options.qe_top, options.alpha,
                   None if exclude is None else np.asarray([exclude]))
        s = q @ base.T
    return s[0]


def augment_bundle(bundle: Any, vectors: np.ndarray, objectids: np.ndarray, options: RerankOptions) -> Any:
    """``bundle`` with its database-side augmented vectors (rows in ``bundle.ids`` order) and
    ``info["augmentation"]`` = ``{dba_top, alpha, neighbours: exact|ivf, seconds}``.

    ``vectors`` (rows = ``objectids``) are the vectors the bundle indexes; beyond
    :data:`EXACT_NEIGHBOURS_MAX` the neighbours come from the bundle's own index (nprobe capped, module doc).
    """
    started = time.perf_counter()
    objectids = np.asarray(objectids, dtype=np.int64)
    ids = np.asarray(bundle.ids, dtype=np.int64)
    order = np.argsort(objectids)
    pos = order[np.searchsorted(objectids, ids, sorter=order)]
    if not np.array_equal(objectids[pos], ids):
        raise ValueError("augment_bundle: the vectors are not those of the bundle's objectids")
    x = check_vectors(np.asarray(vectors)[pos])
    aug = Augmented.build(x, replace(options, method="dba"), bundle.index, bundle.info.get("nprobe"), ids)
    info = dict(bundle.info)
    info["augmentation"] = {"dba_top": int(options.dba_top), "alpha": float(options.alpha),
                            "neighbours": ("exact" if len(x) <= EXACT_NEIGHBOURS_MAX else
                                           f"ivf (nprobe {min(int(bundle.info.get('nprobe') or 0), NEIGHBOUR_NPROBE)})"),
                            "seconds": round(time.perf_counter() - started, 3)}
    return replace(bundle, info=info, augmented=aug.database)


#: A served query re-ranks at least this many FAISS candidates (more when k asks for more).
SERVE_DEPTH = 100


class ServedDatabase:
    """Re-ranking of a served index's candidates (one variant of a generation).

    The candidates are the index's top ``max(SERVE_DEPTH, wanted)`` by cosine; their raw vectors come
    from the index, their augmented ones from ``bundle.augmented``. The re-ranked top can differ from a
    re-ranking of the whole collection only by a painting outside those candidates.
    """

    def __init__(self, bundle: Any) -> None:
        self.bundle = bundle
        self.ids = np.asarray(bundle.ids, dtype=np.int64)
        self.order = np.argsort(self.ids)

    @property
    def has_augmented(self) -> bool:
        return self.bundle.augmented is not None

    def depth(self, wanted: int, options: RerankOptions) -> int:
        return int(wanted) if options.method == "none" else max(int(wanted), SERVE_DEPTH)

    def rescore(self, query: np.ndarray, cand_ids: np.ndarray, options: RerankOptions,
                exclude_id: int | None = None) -> np.ndarray:
        """Re-ranked scores of ``cand_ids`` for ``query`` (``exclude_id``: the query painting, which QE
        does not merge into the query, as in the leave-one-out protocol)."""
        cand_ids = np.asarray(cand_ids, dtype=np.int64)
        if not len(cand_ids):
            return np.zeros(0, np.float32)
        raw = self.bundle.index.reconstruct_batch(cand_ids)
        database = raw
        if options.uses_dba and self.has_augmented:
            rows = self.order[np.searchsorted(self.ids, cand_ids, sorter=self.order)]
            database = self.bundle.augmented[rows]
        exclude = None
        if exclude_id is not None:
            hit = np.flatnonzero(cand_ids == int(exclude_id))
            exclude = int(hit[0]) if hit.size else None
        return rescore(query, raw, database, options, exclude)
