"""The leave-one-out retrieval protocol (plain Python, no Dagster).

Every painting with at least one relevant other painting queries all the others; beyond 5,000 such
paintings, a seeded sample of 2,000 of them does (:class:`~.sampling.QuerySample`), each still ranked
against the whole collection, so the cost stays linear in the collection.

* Relevance ``artist``: same normalised artist (``artist_key``, folded and stripped of attribution
  prefixes with :func:`~artsim_pipeline.core.scoring.normalize_artist`); paintings without an
  artist are never queries nor relevant.
* Relevance ``style``: the two paintings share at least one style ("A; B" lists); paintings
  without a style are skipped.
* Metrics (:mod:`artsim_pipeline.core.metrics`, their one home): precision@K, recall@K, AP@K over
  the retrieved top K, and full-ranking AP, averaged over the queries; ties in score go to the
  lower objectid.

Methods:

* ``visual``: cosine similarity of the fused vectors, exact (no ANN approximation);
* ``hybrid_no_label``: ``0.7 * visual + 0.3 * metadata`` re-ranking of the top ``3K`` visual
  candidates (the order of :func:`~artsim_pipeline.core.scoring.rerank`), *without* the bonus of
  the label being evaluated (no artist bonus under artist relevance, no style bonus under style
  relevance) — the honest hybrid number;
* ``hybrid_all_leaky``: every bonus, including the one that *is* the label: it leaks the answer and
  is only shown to make that visible;
* ``random``: a seeded random permutation per query (the simulated chance level; the report gives its exact
  expectation, :func:`random_rows`, which the tests hold to the simulation).

Full-ranking AP of a hybrid method re-ranks the whole collection by the hybrid score, with the
vectorised metadata score (:func:`~artsim_pipeline.core.scoring.metadata_scores`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import time

import numpy as np
import pandas as pd

from ..metrics import (
    _relevant_counts,
    drop_self,
    l2_rows,
    metric_keys,
    random_expectation,
    rank_rows,
    topk_metrics,
)
from ..scoring import (
    MetadataTable,
    ScoringWeights,
    final_score,
    is_missing,
    metadata_scores,
    normalize_artist,
    rerank_order,
    shares,
    text_codes,
)
from ..blas import one_blas_thread
from ..rerank import LeaveOneOut, RerankOptions
from .neighbours import augmented_database
from .ranks import average_precision_ranked, chunk_rankings, sorted_primary, top_rows, visual_depth
from .sampling import QuerySample

DEFAULT_KS = (1, 5, 10)
METHODS = ("visual", "hybrid_no_label", "hybrid_all_leaky")
RELEVANCES = ("artist", "style")
CHUNK = 256
#: At most this many [queries x collection] cells per chunk: 256 query rows up to 4,096 paintings, fewer
#: beyond, so a chunk's arrays stay small (the numbers do not depend on the chunking).
CHUNK_CELLS = 256 * 4_096
#: The similarities of several chunks come from one product call (256 query rows up to 32,768 paintings, 64
#: at 131,072): each call reads the whole database, a chunk's rankings want arrays that stay in the cache.
PRODUCT_CELLS = 256 * 32_768


@dataclass
class ItemMeta:
    """Catalog metadata of N paintings: relevance labels plus the precomputed metadata-score table."""

    objectids: np.ndarray  # int64 [N], row order of the vectors
    artists: list[str]  # display names (captions)
    artist_keys: list[str]  # normalised artist_key (the artist relevance label), "" missing
    artist_labels: np.ndarray  # int [N]: code of artist_keys, -1 missing
    table: MetadataTable  # for metadata_scores; its style_bits also give style relevance

    def __len__(self) -> int:
        return int(len(self.objectids))

    @classmethod
    def from_records(cls, objectids: Sequence[int], records: Sequence[Mapping[str, Any]]) -> "ItemMeta":
        """From one metadata mapping per painting (keys as in ``filtered_paintings``)."""
        if len(objectids) != len(records):
            raise ValueError(f"{len(records)} metadata records for {len(objectids)} paintings")
        keys = [normalize_artist(r.get("artist") if is_missing(r.get("artist_key")) else r.get("artist_key"))
                for r in records]
        return cls(
            objectids=np.asarray(objectids, dtype=np.int64),
            artists=["" if is_missing(r.get("artist")) else str(r.get("artist")) for r in records],
            artist_keys=keys,
            artist_labels=text_codes(keys),
            table=MetadataTable.from_records(records),
        )

    @classmethod
    def from_catalog(cls, objectids: Sequence[int], catalog: pd.DataFrame) -> "ItemMeta":
        """Rows of ``catalog`` (indexed or keyed by ``objectid``) in the order of ``objectids``."""
        table = catalog.set_index("objectid") if "objectid" in catalog.columns else catalog
        ids = [int(i) for i in objectids]
        missing = [i for i in ids if i not in table.index]
        if missing:
            raise ValueError(f"{len(missing)} embedded paintings are not in the catalog, e.g. {missing[:3]}")
        return cls.from_records(ids, table.loc[ids].to_dict("records"))

    @functools.cached_property
    def style_sets(self) -> tuple[np.ndarray, np.ndarray]:
        """The distinct rows of ``table.style_bits`` and each painting's row among them."""
        return self.table.style_sets

    @functools.cached_property
    def counts(self) -> dict[str, np.ndarray]:
        """:func:`relevant_counts` per relevance, once computed (read-only arrays)."""
        return {}

    def subset(self, rows: np.ndarray) -> "ItemMeta":
        rows = np.asarray(rows, dtype=np.int64)
        return ItemMeta(
            objectids=self.objectids[rows],
            artists=[self.artists[i] for i in rows],
            artist_keys=[self.artist_keys[i] for i in rows],
            artist_labels=self.artist_labels[rows],
            table=self.table.subset(rows),
        )


def relevant_rows(meta: ItemMeta, relevance: str, rows: np.ndarray) -> np.ndarray:
    """``[len(rows), N]`` bool: item j is relevant to query row ``rows[i]`` (self included)."""
    rows = np.asarray(rows, dtype=np.int64)
    if relevance == "artist":
        q = meta.artist_labels[rows][:, None]
        return (q >= 0) & (q == meta.artist_labels[None, :])
    if relevance == "style":  # between the distinct style sets, then spread to the paintings (the same bits)
        sets, inverse = meta.style_sets
        return shares(sets, inverse[rows])[:, inverse]
    raise ValueError(f"relevance must be one of {RELEVANCES}, got {relevance!r}")


def relevant_counts(meta: ItemMeta, relevance: str) -> np.ndarray:
    """Per painting, how many *other* paintings are relevant to it (:func:`relevant_rows` without self).

    Linear in the collection: artist labels are counted; paintings with the same set of styles share
    with the same others, so style relevance is counted between the distinct style sets.
    """
    if relevance not in RELEVANCES:
        raise ValueError(f"relevance must be one of {RELEVANCES}, got {relevance!r}")
    if relevance not in meta.counts:
        counts = _artist_counts(meta) if relevance == "artist" else _style_counts(meta)
        counts.setflags(write=False)  # shared by every caller of this ItemMeta
        meta.counts[relevance] = counts
    return meta.counts[relevance]


def _artist_counts(meta: ItemMeta) -> np.ndarray:
    return _relevant_counts(meta.artist_labels).astype(np.int64)


def _style_counts(meta: ItemMeta) -> np.ndarray:
    bits = meta.table.style_bits
    if bits.shape[1] == 0 or len(bits) == 0:
        return np.zeros(len(bits), dtype=np.int64)
    sets, inverse = meta.style_sets
    sizes = np.bincount(inverse, minlength=len(sets))
    per_set = np.zeros(len(sets), dtype=np.int64)
    for start in range(0, len(sets), CHUNK):
        rows = np.arange(start, min(start + CHUNK, len(sets)))
        per_set[rows] = shares(sets, rows).astype(np.int64) @ sizes
    has_style = sets.any(axis=1)
    return (per_set - has_style)[inverse]


def method_weights(method: str, relevance: str, weights: ScoringWeights = ScoringWeights()) -> ScoringWeights | None:
    """Scoring weights of a hybrid method (None for ``visual``/``random``); ``hybrid_no_label`` drops
    the bonus that equals the relevance label."""
    if relevance not in RELEVANCES:
        raise ValueError(f"relevance must be one of {RELEVANCES}, got {relevance!r}")
    if method == "hybrid_no_label":
        return replace(weights, use_artist=False) if relevance == "artist" else replace(weights, use_style=False)
    if method == "hybrid_all_leaky":
        return replace(weights, use_artist=True, use_style=True)
    if method in ("visual", "random"):
        return None
    raise ValueError(f"unknown method {method!r}")


@dataclass
class MethodResult:
    """Per-query metrics of one method under one relevance."""

    method: str
    relevance: str
    ks: tuple[int, ...]
    query_ids: np.ndarray  # objectids of the queries
    per_query: dict[str, np.ndarray]  # "precision@K", "recall@K", "map@K", "map"
    leaks_label: bool = False
    n_candidates: int = 0
    n_eligible: int | None = None  # queries with a relevant item, before sampling (None: as many as queried)
    seconds: float = 0.0  # its time; the similarities and visual ranking it shares count for the first method

    @property
    def n_queries(self) -> int:
        return int(len(self.query_ids))

    @property
    def n_eligible_queries(self) -> int:
        return self.n_queries if self.n_eligible is None else int(self.n_eligible)

    def mean(self, key: str) -> float:
        values = self.per_query[key]
        return float(values.mean()) if len(values) else float("nan")

    def rows(self, ks: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """One row per K: {method, relevance, k, precision_at_k, recall_at_k, map_at_k, map, n_queries,
        n_eligible_queries, leaks_label} (``n_queries`` evaluated of ``n_eligible_queries``)."""
        return [
            {
                "method": self.method,
                "relevance": self.relevance,
                "k": int(k),
                "precision_at_k": self.mean(f"precision@{k}"),
                "recall_at_k": self.mean(f"recall@{k}"),
                "map_at_k": self.mean(f"map@{k}"),
                "map": self.mean("map"),
                "n_queries": self.n_queries,
                "n_eligible_queries": self.n_eligible_queries,
                "leaks_label": self.leaks_label,
            }
            for k in (ks or self.ks)
        ]


def _rankings(
    sim: np.ndarray,
    meta: ItemMeta,
    rows: np.ndarray,
    method: str,
    hybrid: ScoringWeights | None,
    ks: Sequence[int],
    rng: np.random.Generator,
    visual: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Full ranking ``[q, N-1]`` and the top-K rows per K (query itself left out) for one chunk.

    ``visual``: the chunk's visual ranking (``drop_self(rank_rows(sim))``) when already computed.
    """
    ids = meta.objectids
    if method == "random":
        order = drop_self(np.argsort(rng.random(sim.shape), axis=1), rows)
    else:
        order = visual if visual is not None else drop_self(rank_rows(sim, ids), rows)
    if hybrid is None:
        return order, {k: order[:, :k] for k in ks}
    final = final_score(sim, metadata_scores(meta.table, rows, hybrid), hybrid)
    tops = {}
    for k in ks:
        cand = order[:, : hybrid.n_candidates(k)]
        sub = rerank_order(np.take_along_axis(final, cand, 1), np.take_along_axis(sim, cand, 1), ids[cand])
        tops[k] = np.take_along_axis(cand, sub, axis=1)[:, :k]
    return drop_self(rerank_order(final, sim, ids), rows), tops


def ranked_rows(
    vectors: np.ndarray,
    meta: ItemMeta,
    rows: Sequence[int],
    method: str = "visual",
    relevance: str = "artist",
    k: int = 5,
    weights: ScoringWeights = ScoringWeights(),
) -> tuple[np.ndarray, np.ndarray]:
    """What ``method`` returns for query ``rows``: (top-k rows ``[q, k]``, full ranking ``[q, N-1]``)."""
    x = l2_rows(vectors)
    rows = np.asarray(rows, dtype=np.int64)
    full, tops = _rankings(x[rows] @ x.T, meta, rows, method, method_weights(method, relevance, weights), (k,),
                           np.random.default_rng(0))
    return tops[k], full


def leave_one_out(vectors: np.ndarray, rerank: RerankOptions | None) -> LeaveOneOut | None:
    """The honest leave-one-out re-scoring of ``vectors [N, d]`` under ``rerank`` (None for ``none``)."""
    if rerank is None or rerank.method == "none":
        return None
    return LeaveOneOut(augmented_database(l2_rows(vectors), rerank))  # the rows evaluate_methods ranks with


def evaluate_method(
    vectors: np.ndarray,
    meta: ItemMeta,
    method: str = "visual",
    relevance: str = "artist",
    ks: Sequence[int] = DEFAULT_KS,
    weights: ScoringWeights = ScoringWeights(),
    *,
    query_rows: np.ndarray | None = None,
    seed: int = 0,
    chunk: int = CHUNK,
    sample: QuerySample | None = QuerySample(),
    rerank: RerankOptions | None = None,
) -> MethodResult:
    """Leave-one-out evaluation of ``method`` on ``vectors [N, d]`` (row i is ``meta.objectids[i]``).

    Queries are the rows with at least one relevant other row (restricted to ``query_rows`` when
    given), or ``sample``'s seeded sample of them when there are more than ``sample.full_up_to``
    (None: always all); each query ranks the whole collection. ``seed`` seeds the ``random``
    method's permutations. Visual scores are cosine similarities; ties go to the lower objectid. Hybrid methods:
    for each K the top ``weights.n_candidates(K)`` visual results are re-ranked in the order of
    :func:`~artsim_pipeline.core.scoring.rerank`; the full-ranking AP re-ranks every painting the same way.
    ``rerank`` (:mod:`~artsim_pipeline.core.rerank`) replaces the visual scores by the re-ranked ones of the
    honest leave-one-out (the query never shapes the database side); None or ``none``: plain cosine. A
    :class:`~artsim_pipeline.core.rerank.LeaveOneOut` already built for ``vectors`` (:func:`leave_one_out`)
    is used as it is, so several relevances share one neighbour table.
    """
    return evaluate_methods(vectors, meta, (method,), relevance, ks, weights, query_rows=query_rows, seed=seed,
                            chunk=chunk, sample=sample, rerank=rerank)[0]


def evaluate_methods(
    vectors: np.ndarray,
    meta: ItemMeta,
    methods: Sequence[str] = METHODS,
    relevance: str = "artist",
    ks: Sequence[int] = DEFAULT_KS,
    weights: ScoringWeights = ScoringWeights(),
    *,
    query_rows: np.ndarray | None = None,
    seed: int = 0,
    chunk: int = CHUNK,
    sample: QuerySample | None = QuerySample(),
    rerank: RerankOptions | LeaveOneOut | None = None,
) -> list[MethodResult]:
    """:func:`evaluate_method` for each of ``methods`` on the same queries, one pass over them: the
    similarities, relevance and visual ranking of a chunk of queries are computed once for all the
    methods (the numbers are those of separate calls, bit for bit)."""
    ks = tuple(int(k) for k in ks)
    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be >= 1, got {ks}")
    methods = tuple(methods)
    if len(set(methods)) != len(methods):
        raise ValueError(f"each method once, got {methods}")
    loo = rerank if isinstance(rerank, LeaveOneOut) else None
    x = l2_rows(vectors) if loo is None else None  # a LeaveOneOut holds the rows it scores with
    n = len(vectors)
    if len(meta) != n:
        raise ValueError(f"metadata for {len(meta)} paintings, vectors for {n}")
    hybrids = {method: method_weights(method, relevance, weights) for method in methods}
    counts = relevant_counts(meta, relevance)
    candidates = counts > 0
    if query_rows is not None:
        mask = np.zeros(n, dtype=bool)
        mask[np.asarray(query_rows, dtype=np.int64)] = True
        candidates &= mask
    eligible = np.flatnonzero(candidates)
    queries = eligible if sample is None else sample.rows(eligible, meta.objectids)
    chunk = max(1, min(int(chunk), CHUNK_CELLS // max(n, 1)))
    loo = loo if loo is not None else leave_one_out(x, rerank)
    depth = visual_depth(ks, list(hybrids.values()))
    per_query: dict[str, dict[str, list[np.ndarray]]] = {method: {} for method in methods}
    seconds = dict.fromkeys(methods, 0.0)
    rng = np.random.default_rng(seed)
    batch = chunk * max(1, PRODUCT_CELLS // max(n, 1) // chunk)  # whole chunks per product call
    with one_blas_thread():
        for first in range(0, len(queries), batch):
            started = time.perf_counter()
            batch_rows = queries[first:first + batch]
            sims = x[batch_rows] @ x.T if loo is None else loo.scores(batch_rows)
            if methods:  # shared: counted for the first method
                seconds[methods[0]] += time.perf_counter() - started
            for start in range(0, len(batch_rows), chunk):
                rows, sim = batch_rows[start:start + chunk], sims[start:start + chunk]
                passes = _chunk_pass(sim, meta, relevance, counts, rows, hybrids, ks, depth, rng)
                for method, (out, spent) in passes.items():
                    for key, values in out.items():
                        per_query[method].setdefault(key, []).append(values)
                    seconds[method] += spent
    empty = np.zeros(0, dtype=np.float64)
    return [
        MethodResult(
            method=method,
            relevance=relevance,
            ks=ks,
            query_ids=meta.objectids[queries],
            per_query={key: np.concatenate(per_query[method].get(key, [empty])) for key in metric_keys(ks)},
            leaks_label=method == "hybrid_all_leaky",
            n_candidates=n - 1,
            n_eligible=int(len(eligible)),
            seconds=seconds[method],
        )
        for method in methods
    ]


def _chunk_pass(sim: np.ndarray, meta: ItemMeta, relevance: str, counts: np.ndarray, rows: np.ndarray,
                hybrids: Mapping[str, ScoringWeights | None], ks: tuple[int, ...], depth: int,
                rng: np.random.Generator) -> dict[str, tuple[dict[str, np.ndarray], float]]:
    """One chunk of queries (``sim``: their similarities) through every method: {method: (per-query metrics,
    seconds)}; the relevance and visual ranking it shares count for the first method."""
    started = time.perf_counter()
    rel_all = relevant_rows(meta, relevance, rows)
    rel_all[np.arange(len(rows)), rows] = False
    n_rel = counts[rows].astype(np.float64)
    visual = visual_sorted = None  # the visual ranking's top and sorted key, shared by the methods (ranks.py)
    passes = {}
    for method, hybrid in hybrids.items():
        if method != "random" and visual is None:
            visual_sorted = sorted_primary((-sim,))
            visual = top_rows((meta.objectids, -sim), rows, depth, srt=visual_sorted)
        ranked, tops = chunk_rankings(sim, meta.objectids, meta.table, rows, method, hybrid, ks, rng, rel_all,
                                      None if method == "random" else visual, visual_sorted)
        out = {}
        for k in ks:
            out.update(topk_metrics(np.take_along_axis(rel_all, tops[k], axis=1), n_rel, k))
        out["map"] = average_precision_ranked(ranked, n_rel)
        now = time.perf_counter()
        passes[method], started = (out, now - started), now
    return passes


def random_rows(meta: ItemMeta, relevance: str, ks: Sequence[int] = DEFAULT_KS) -> list[dict[str, Any]]:
    """Chance level of each metric: its exact expectation under a uniformly random ranking, over every eligible
    query (:func:`~artsim_pipeline.core.metrics.random_expectation` of the relevant counts; for style as for
    artist: it depends only on how many paintings are relevant to each query, so no ranking is simulated)."""
    labelled = meta.artist_labels >= 0 if relevance == "artist" else meta.table.style_bits.any(axis=1)
    base = random_expectation(relevant_counts(meta, relevance), int(labelled.sum()), ks)
    n_queries = int(base["n_queries"])
    values = {key: float(base[key]) for key in metric_keys(ks)}
    return [
        {
            "method": "random",
            "relevance": relevance,
            "k": int(k),
            "precision_at_k": values[f"precision@{k}"],
            "recall_at_k": values[f"recall@{k}"],
            "map_at_k": values[f"map@{k}"],
            "map": values["map"],
            "n_queries": n_queries,
            "n_eligible_queries": n_queries,
            "estimate": "analytic",
        }
        for k in ks
    ]
