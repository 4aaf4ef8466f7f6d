"""Retrieval evaluation protocol (plain Python, no Dagster).

Leave-one-out: every painting with at least one relevant other painting queries all the others.

* Relevance ``artist``: same normalised artist (``artist_key``, folded and stripped of attribution
  prefixes with :func:`normalize_artist`); paintings without an artist are never queries nor relevant.
* Relevance ``style``: the two paintings share at least one style ("A; B" lists); paintings
  without a style are skipped.
* Metrics (:mod:`artsim_pipeline.core.metrics` conventions): precision@K, recall@K, AP@K over the
  retrieved top K, and full-ranking AP, averaged over the queries; ties in score go to the lower
  objectid.

Methods:

* ``visual``: cosine similarity of the fused vectors, exact (no ANN approximation);
* ``hybrid_no_label``: ``0.7 * visual + 0.3 * metadata`` re-ranking of the top ``3K`` visual
  candidates (same tie rules as :func:`artsim_pipeline.core.scoring.rerank`), *without* the bonus
  of the label being evaluated (no artist bonus under artist relevance, no style bonus under style
  relevance) — the honest hybrid number;
* ``hybrid_all_leaky``: every bonus, including the one that *is* the label: it leaks the answer and
  is only shown to make that visible;
* ``random``: a seeded random permutation per query (the empirical chance level).

Full-ranking AP of a hybrid method re-ranks the whole collection by the hybrid score; the metadata
score of a query against all N paintings is computed vectorised (:func:`metadata_scores`), equal to
:func:`artsim_pipeline.core.scoring.metadata_score` pair by pair.

Pixel metrics compare *pixels*: the query and each of its top visual results as 256x256 grayscale
in [0, 1], RMSE and SSIM, against the same number of random pairs.
"""

from __future__ import annotations

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .fusion import FusionModel, fit_fusion, transform
from .index import exact_topk
from .metrics import load_gray, pixel_rmse, pixel_ssim, random_baseline
from .storage import lake_path
from .scoring import (
    ScoringWeights,
    is_missing,
    medium_words,
    normalize_artist,
    normalize_medium,
    representative_year,
    styles_of,
)

DEFAULT_KS = (1, 5, 10)
CURVE_KS = tuple(range(1, 11))
METHODS = ("visual", "hybrid_no_label", "hybrid_all_leaky")
RELEVANCES = ("artist", "style")
HEADLINE = {"method": "visual", "relevance": "artist", "k": 5}
PIXEL_QUERIES = 300
PIXEL_TOP = 5
PIXEL_SIZE = 256
N_EXAMPLES = 4
RANDOM_TRIALS = 5
RANDOM_WEIGHTS_WARNING = "RANDOM WEIGHTS — meaningless: the backbones were not trained, every number below is noise."
_CHUNK = 256
_EPS = 1e-12


# ---------------------------------------------------------------- per-item metadata, vectorised

def _codes(values: Sequence[str]) -> np.ndarray:
    """Integer code per string; -1 for ``""``."""
    seen: dict[str, int] = {}
    return np.array([seen.setdefault(v, len(seen)) if v else -1 for v in values], dtype=np.int64)


def _bits(sets: Sequence[frozenset[str]]) -> tuple[np.ndarray, list[str]]:
    """``[N, V]`` float32 0/1 membership matrix over the sorted vocabulary of ``sets``."""
    vocab = sorted(set().union(*sets)) if sets else []
    where = {word: j for j, word in enumerate(vocab)}
    bits = np.zeros((len(sets), len(vocab)), dtype=np.float32)
    for i, words in enumerate(sets):
        for word in words:
            bits[i, where[word]] = 1.0
    return bits, vocab


def _shares(bits: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``[len(rows), N]`` bool: row ``rows[i]`` shares at least one member with item j."""
    if bits.shape[1] == 0:
        return np.zeros((len(rows), bits.shape[0]), dtype=bool)
    return (bits[rows] @ bits.T) > 0.5


@dataclass
class ItemMeta:
    """Catalog metadata of N paintings, precomputed for vectorised scoring and relevance."""

    objectids: np.ndarray  # int64 [N], row order of the vectors
    artists: list[str]  # display names (captions)
    artist_labels: np.ndarray  # int [N]: relevance label (normalised artist_key), -1 missing
    artist_bonus: np.ndarray  # int [N]: normalize_artist(artist) for the artist bonus, -1 missing
    style_bits: np.ndarray  # float32 [N, S]
    styles: list[str]  # the style vocabulary
    medium_codes: np.ndarray  # int [N]: normalised medium, -1 missing
    medium_word_bits: np.ndarray  # float32 [N, W]
    years: np.ndarray  # float64 [N]: representative year, NaN missing

    def __len__(self) -> int:
        return int(len(self.objectids))

    @classmethod
    def from_records(cls, objectids: Sequence[int], records: Sequence[Mapping[str, Any]]) -> "ItemMeta":
        """From one metadata mapping per painting (keys as in ``filtered_paintings``)."""
        if len(objectids) != len(records):
            raise ValueError(f"{len(records)} metadata records for {len(objectids)} paintings")
        artists = ["" if is_missing(r.get("artist")) else str(r.get("artist")) for r in records]
        label_source = [
            r.get("artist") if is_missing(r.get("artist_key")) else r.get("artist_key") for r in records
        ]
        style_bits, style_vocab = _bits([styles_of(r.get("style")) for r in records])
        word_bits, _ = _bits([medium_words(r.get("medium")) for r in records])
        years = np.array(
            [np.nan if (y := representative_year(r)) is None else float(y) for r in records], dtype=np.float64
        )
        return cls(
            objectids=np.asarray(objectids, dtype=np.int64),
            artists=artists,
            artist_labels=_codes([normalize_artist(a) for a in label_source]),
            artist_bonus=_codes([normalize_artist(r.get("artist")) for r in records]),
            style_bits=style_bits,
            styles=style_vocab,
            medium_codes=_codes([normalize_medium(r.get("medium")) for r in records]),
            medium_word_bits=word_bits,
            years=years,
        )

    @classmethod
    def from_catalog(cls, objectids: Sequence[int], catalog: pd.DataFrame) -> "ItemMeta":
        """Rows of ``catalog`` (indexed or keyed by ``objectid``) in the order of ``objectids``."""
        table = catalog.set_index("objectid") if "objectid" in catalog.columns else catalog
        ids = [int(i) for i in objectids]
        missing = [i for i in ids if i not in table.index]
        if missing:
            raise ValueError(f"{len(missing)} embedded paintings are not in the catalog, e.g. {missing[:3]}")
        records = table.loc[ids].to_dict("records")
        return cls.from_records(ids, records)

    def subset(self, rows: np.ndarray) -> "ItemMeta":
        rows = np.asarray(rows, dtype=np.int64)
        return ItemMeta(
            objectids=self.objectids[rows],
            artists=[self.artists[i] for i in rows],
            artist_labels=self.artist_labels[rows],
            artist_bonus=self.artist_bonus[rows],
            style_bits=self.style_bits[rows],
            styles=self.styles,
            medium_codes=self.medium_codes[rows],
            medium_word_bits=self.medium_word_bits[rows],
            years=self.years[rows],
        )


def metadata_scores(meta: ItemMeta, rows: np.ndarray, weights: ScoringWeights = ScoringWeights()) -> np.ndarray:
    """``[len(rows), N]`` metadata score of every painting against each query row.

    Equal to :func:`artsim_pipeline.core.scoring.metadata_score` pair by pair (same bonuses, added
    in the same order, so even the float rounding matches).
    """
    rows = np.asarray(rows, dtype=np.int64)
    n = len(meta)
    score = np.zeros((len(rows), n), dtype=np.float64)
    if weights.use_style:
        score += np.where(_shares(meta.style_bits, rows), weights.style, 0.0)
    if weights.use_artist:
        q = meta.artist_bonus[rows][:, None]
        score += np.where((q >= 0) & (q == meta.artist_bonus[None, :]), weights.artist, 0.0)
    qm = meta.medium_codes[rows][:, None]
    exact = (qm >= 0) & (qm == meta.medium_codes[None, :])
    partial = ~exact & _shares(meta.medium_word_bits, rows)
    score += np.where(exact, weights.medium_exact, np.where(partial, weights.medium_partial, 0.0))
    with np.errstate(invalid="ignore"):
        close = np.abs(meta.years[rows][:, None] - meta.years[None, :]) <= weights.date_window_years
    score += np.where(close, weights.date, 0.0)
    return score


def relevant_rows(meta: ItemMeta, relevance: str, rows: np.ndarray) -> np.ndarray:
    """``[len(rows), N]`` bool: item j is relevant to query row ``rows[i]`` (self included)."""
    rows = np.asarray(rows, dtype=np.int64)
    if relevance == "artist":
        q = meta.artist_labels[rows][:, None]
        return (q >= 0) & (q == meta.artist_labels[None, :])
    if relevance == "style":
        return _shares(meta.style_bits, rows)
    raise ValueError(f"relevance must be one of {RELEVANCES}, got {relevance!r}")


def relevant_counts(meta: ItemMeta, relevance: str) -> np.ndarray:
    """Per painting, how many *other* paintings are relevant to it."""
    n = len(meta)
    counts = np.zeros(n, dtype=np.int64)
    for start in range(0, n, _CHUNK):
        rows = np.arange(start, min(start + _CHUNK, n))
        rel = relevant_rows(meta, relevance, rows)
        rel[np.arange(len(rows)), rows] = False
        counts[rows] = rel.sum(axis=1)
    return counts


def no_label_weights(relevance: str, weights: ScoringWeights = ScoringWeights()) -> ScoringWeights:
    """``weights`` without the bonus that equals the relevance label."""
    if relevance == "artist":
        return replace(weights, use_artist=False)
    if relevance == "style":
        return replace(weights, use_style=False)
    raise ValueError(f"relevance must be one of {RELEVANCES}, got {relevance!r}")


def method_weights(method: str, relevance: str, weights: ScoringWeights = ScoringWeights()) -> ScoringWeights | None:
    """Scoring weights of a hybrid method (None for ``visual``/``random``)."""
    if method == "hybrid_no_label":
        return no_label_weights(relevance, weights)
    if method == "hybrid_all_leaky":
        return replace(weights, use_artist=True, use_style=True)
    if method in ("visual", "random"):
        return None
    raise ValueError(f"unknown method {method!r}")


# ---------------------------------------------------------------- leave-one-out protocol

def _l2(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), _EPS)


def _topk_metrics(rel: np.ndarray, n_rel: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """precision/recall/AP@k per query from ``rel [q, m]`` (rank order, m may be < k)."""
    top = rel[:, :k]
    cum = np.cumsum(top, axis=1, dtype=np.float64)
    hits = cum[:, -1] if top.shape[1] else np.zeros(len(n_rel))
    prec_sum = np.where(top, cum / np.arange(1, top.shape[1] + 1), 0.0).sum(axis=1)
    return {
        f"precision@{k}": hits / k,
        f"recall@{k}": hits / n_rel,
        f"map@{k}": prec_sum / np.minimum(k, n_rel),
    }


def _full_ap(rel: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    cum = np.cumsum(rel, axis=1, dtype=np.float64)
    return np.where(rel, cum / np.arange(1, rel.shape[1] + 1), 0.0).sum(axis=1) / n_rel


def _drop_self(order: np.ndarray, rows: np.ndarray) -> np.ndarray:
    keep = order != rows[:, None]
    return order[keep].reshape(len(rows), order.shape[1] - 1)


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

    @property
    def n_queries(self) -> int:
        return int(len(self.query_ids))

    def mean(self, key: str) -> float:
        values = self.per_query[key]
        return float(values.mean()) if len(values) else float("nan")

    def rows(self, ks: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """One row per K: {method, relevance, k, precision_at_k, recall_at_k, map_at_k, map, n_queries, leaks_label}."""
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
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Full ranking ``[q, N-1]`` and the top-K rows per K (query itself left out) for one chunk."""
    ids = meta.objectids
    ids_b = np.broadcast_to(ids, sim.shape)
    if method == "random":
        order = _drop_self(np.argsort(rng.random(sim.shape), axis=1), rows)
    else:
        order = _drop_self(np.lexsort((ids_b, -sim), axis=1), rows)
    if hybrid is None:
        return order, {k: order[:, :k] for k in ks}
    final = hybrid.visual * sim + hybrid.metadata * metadata_scores(meta, rows, hybrid)
    tie_final = np.round(final, 12)  # finals equal up to float rounding count as tied, like rerank()
    tops = {}
    for k in ks:
        cand = order[:, : hybrid.n_candidates(k)]
        sub = np.lexsort(
            (ids[cand], -np.take_along_axis(sim, cand, 1), -np.take_along_axis(tie_final, cand, 1)), axis=1
        )
        tops[k] = np.take_along_axis(cand, sub, axis=1)[:, :k]
    full = _drop_self(np.lexsort((ids_b, -sim, -tie_final), axis=1), rows)
    return full, tops


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
    x = _l2(vectors)
    rows = np.asarray(rows, dtype=np.int64)
    full, tops = _rankings(x[rows] @ x.T, meta, rows, method, method_weights(method, relevance, weights), (k,),
                           np.random.default_rng(0))
    return tops[k], full


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
    chunk: int = _CHUNK,
) -> MethodResult:
    """Leave-one-out evaluation of ``method`` on ``vectors [N, d]`` (row i is ``meta.objectids[i]``).

    Queries are the rows with at least one relevant other row (restricted to ``query_rows`` when
    given). Visual scores are cosine similarities; ties go to the lower objectid. Hybrid methods:
    for each K the top ``weights.n_candidates(K)`` visual results are re-ranked by
    ``visual * 0.7 + metadata * 0.3`` (rounded to 12 decimals, then visual desc, then objectid asc,
    like :func:`rerank`); the full-ranking AP re-ranks every painting the same way.
    """
    ks = tuple(int(k) for k in ks)
    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be >= 1, got {ks}")
    x = _l2(vectors)
    n = x.shape[0]
    if len(meta) != n:
        raise ValueError(f"metadata for {len(meta)} paintings, vectors for {n}")
    hybrid = method_weights(method, relevance, weights)
    ids = meta.objectids
    counts = relevant_counts(meta, relevance)
    candidates = counts > 0
    if query_rows is not None:
        mask = np.zeros(n, dtype=bool)
        mask[np.asarray(query_rows, dtype=np.int64)] = True
        candidates &= mask
    queries = np.flatnonzero(candidates)
    per_query: dict[str, list[np.ndarray]] = {}
    rng = np.random.default_rng(seed)
    for start in range(0, len(queries), chunk):
        rows = queries[start:start + chunk]
        q = len(rows)
        sim = x[rows] @ x.T
        rel_all = relevant_rows(meta, relevance, rows)
        rel_all[np.arange(q), rows] = False
        n_rel = counts[rows].astype(np.float64)
        full, tops = _rankings(sim, meta, rows, method, hybrid, ks, rng)
        out = {}
        for k in ks:
            out.update(_topk_metrics(np.take_along_axis(rel_all, tops[k], axis=1), n_rel, k))
        out["map"] = _full_ap(np.take_along_axis(rel_all, full, axis=1), n_rel)
        for key, values in out.items():
            per_query.setdefault(key, []).append(values)
    empty = np.zeros(0, dtype=np.float64)
    return MethodResult(
        method=method,
        relevance=relevance,
        ks=ks,
        query_ids=ids[queries],
        per_query={key: np.concatenate(per_query.get(key, [empty])) for key in [*_metric_keys(ks), "map"]},
        leaks_label=method == "hybrid_all_leaky",
        n_candidates=n - 1,
    )


def _metric_keys(ks: Sequence[int]) -> list[str]:
    return [f"{name}@{k}" for k in ks for name in ("precision", "recall", "map")]


def random_rows(meta: ItemMeta, relevance: str, ks: Sequence[int] = DEFAULT_KS, seed: int = 0) -> list[dict[str, Any]]:
    """Chance level of each metric: exact expectation for artist relevance, seeded simulation for style."""
    if relevance == "artist":
        labels = [int(c) if c >= 0 else None for c in meta.artist_labels]
        base = random_baseline(labels, ks=ks, seed=seed)
        estimate, n_queries = "analytic", int(base["n_queries"])
        values = {key: float(base[key]) for key in [*_metric_keys(ks), "map"]}
    else:
        trials = [evaluate_method(np.ones((len(meta), 1)), meta, "random", relevance, ks, seed=seed + t)
                  for t in range(RANDOM_TRIALS)]
        estimate, n_queries = f"simulated, {RANDOM_TRIALS} permutations per query", trials[0].n_queries
        values = {key: float(np.mean([t.mean(key) for t in trials])) for key in [*_metric_keys(ks), "map"]}
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
            "estimate": estimate,
        }
        for k in ks
    ]


# ---------------------------------------------------------------- vector sets for the ablations

def concat_l2(blocks: Mapping[str, np.ndarray]) -> np.ndarray:
    """Plain concatenation of the L2-normalised per-model vectors (sorted model order)."""
    return np.concatenate([_l2(blocks[name]) for name in sorted(blocks)], axis=1)


def ablation_sets(
    blocks: Mapping[str, np.ndarray], pipeline_fusion: FusionModel | None, pca_dim: int
) -> list[tuple[str, str, Callable[[], np.ndarray]]]:
    """(name, description, vectors thunk) for each vector set compared under visual/artist."""
    blocks = {name: np.asarray(v) for name, v in blocks.items()}
    fused = pipeline_fusion or fit_fusion(dict(blocks), n_components=pca_dim)
    pca_n = fused.output_dim if fused.pca_components is not None else pca_dim
    sets: list[tuple[str, str, Callable[[], np.ndarray]]] = [
        (f"{name} alone", f"{name} raw vectors, L2-normalised", (lambda v=blocks[name]: v)) for name in sorted(blocks)
    ]
    sets += [
        ("concat (L2 per model)", "per-model L2-normalised vectors concatenated; no standardisation, no PCA",
         lambda: concat_l2(blocks)),
        ("concat + standardise", "concatenated, standardised per dimension, block-balanced; no PCA",
         lambda: transform(fit_fusion(dict(blocks), use_pca=False), blocks)),
        (f"concat + standardise + PCA {pca_n} (pipeline)",
         "the pipeline's fusion" + (" (fusion file)" if pipeline_fusion is not None else " (refitted)"),
         lambda: transform(fused, blocks)),
        (f"concat + standardise + whitened PCA {pca_n}", "as the pipeline, PCA components whitened",
         lambda: transform(_whitened(fused, blocks), blocks)),
    ]
    return sets


def _whitened(fused: FusionModel, blocks: Mapping[str, np.ndarray]) -> FusionModel:
    """The same fit with whitened components (the PCA is identical; only ``transform`` differs)."""
    if fused.pca_components is None:
        return fit_fusion(dict(blocks), whiten=True)
    return replace(fused, options={**fused.options, "whiten": True})


# ---------------------------------------------------------------- pixel metrics

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
    x = _l2(vectors).astype(np.float32)
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


# ---------------------------------------------------------------- the whole evaluation

@dataclass
class VariantInput:
    """One variant's vectors: model blocks (rows = objectids, sorted) and the fitted fusion, if any."""

    objectids: np.ndarray
    uuids: np.ndarray
    blocks: dict[str, np.ndarray]
    fusion: FusionModel | None = None


@dataclass
class EvaluationResult:
    """The JSON-ready report plus arrays the plots need."""

    report: dict[str, Any]
    methods: list[MethodResult] = field(default_factory=list)
    random: list[dict[str, Any]] = field(default_factory=list)
    curves: dict[str, dict[int, float]] = field(default_factory=dict)
    pixel: PixelResult | None = None
    examples: list[dict[str, Any]] = field(default_factory=list)
    uuids: dict[int, str] = field(default_factory=dict)


def _fused(variant: VariantInput, pca_dim: int) -> tuple[np.ndarray, dict[str, Any]]:
    fusion = variant.fusion
    source = "fusion file"
    if fusion is None:
        fusion = fit_fusion(dict(variant.blocks), n_components=pca_dim)
        source = "refitted (no fusion file)"
    return transform(fusion, variant.blocks), {"source": source, **fusion.options, "models": list(fusion.model_names)}


def _sorted_variant(variant: VariantInput) -> VariantInput:
    order = np.argsort(variant.objectids, kind="stable")
    if np.all(order == np.arange(len(order))):
        return variant
    return VariantInput(
        variant.objectids[order], variant.uuids[order], {m: v[order] for m, v in variant.blocks.items()}, variant.fusion
    )


def _examples(
    vectors: np.ndarray, meta: ItemMeta, uuids: np.ndarray, n: int = N_EXAMPLES, top: int = 5
) -> list[dict[str, Any]]:
    """A few deterministic queries (evenly spaced by objectid among labelled ones) with their top results."""
    labelled = np.flatnonzero(meta.artist_labels >= 0)
    if len(labelled) < 2:
        return []
    picks = labelled[np.unique(np.linspace(0, len(labelled) - 1, min(n, len(labelled))).round().astype(int))]
    scores, rows = exact_topk(_l2(vectors).astype(np.float32), _l2(vectors[picks]).astype(np.float32), top,
                              exclude_self=True, query_rows=picks)
    out = []
    for q, row, score in zip(picks, rows, scores):
        out.append({
            "objectid": int(meta.objectids[q]),
            "uuid": str(uuids[q]),
            "artist": meta.artists[q],
            "results": [
                {
                    "objectid": int(meta.objectids[r]),
                    "uuid": str(uuids[r]),
                    "artist": meta.artists[r],
                    "score": float(s),
                    "same_artist": bool(meta.artist_labels[r] == meta.artist_labels[q]),
                }
                for r, s in zip(row, score)
            ],
        })
    return out


def _face_comparison(
    full: VariantInput, full_vectors: np.ndarray, face: VariantInput | None, meta_full: ItemMeta,
    ks: Sequence[int], pca_dim: int,
) -> dict[str, Any]:
    """Visual/artist P@K of the full vs the face variant over the paintings that have a face vector."""
    if face is None or len(face.objectids) < 2:
        return {"available": False, "reason": "fewer than 2 paintings with a face vector"}
    face = _sorted_variant(face)
    pos = {int(o): i for i, o in enumerate(full.objectids)}
    keep = np.array([int(o) in pos for o in face.objectids])
    face_ids = face.objectids[keep]
    rows_full = np.array([pos[int(o)] for o in face_ids], dtype=np.int64)
    face_vectors, face_fusion = _fused(
        VariantInput(face_ids, face.uuids[keep], {m: v[keep] for m, v in face.blocks.items()}, face.fusion), pca_dim
    )
    sub_meta = meta_full.subset(rows_full)
    results = {
        "face variant, face subset": evaluate_method(face_vectors, sub_meta, "visual", "artist", ks),
        "full variant, face subset": evaluate_method(full_vectors[rows_full], sub_meta, "visual", "artist", ks),
        "full variant, all paintings as candidates": evaluate_method(
            full_vectors, meta_full, "visual", "artist", ks, query_rows=rows_full
        ),
    }
    rows = []
    for name, res in results.items():
        row = {"name": name, "n_queries": res.n_queries, "n_candidates": res.n_candidates, "map": res.mean("map")}
        row.update({f"precision_at_{k}": res.mean(f"precision@{k}") for k in ks})
        rows.append(row)
    return {
        "available": True,
        "n_paintings_with_face": int(len(face_ids)),
        "face_fusion": face_fusion,
        "note": "queries: paintings with a face vector and another painting by the same artist among the candidates; "
                "the first two rows rank only the face subset, so they compare like with like",
        "rows": rows,
    }


def evaluate_collection(
    full: VariantInput,
    catalog: pd.DataFrame,
    image_path: Callable[[str], Path],
    *,
    face: VariantInput | None = None,
    models: Sequence[str] = (),
    weights_setting: str = "pretrained",
    pca_dim: int = 512,
    ks: Sequence[int] = DEFAULT_KS,
    pixel_queries: int = PIXEL_QUERIES,
    seed: int = 0,
    scoring: ScoringWeights = ScoringWeights(),
    index_check: Callable[[np.ndarray, np.ndarray, int], np.ndarray] | None = None,
    settings: Mapping[str, Any] | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> EvaluationResult:
    """Run the whole protocol on the collection; return the report (see :mod:`reports` for the files).

    ``catalog`` has one row per painting (``filtered_paintings`` columns); ``image_path(uuid)`` gives
    the cached image. ``index_check(vectors, objectids, k)`` (optional) returns the served index's
    top-k objectids per painting (self excluded) so the report can compare it with exact search.

    ``log`` gets a short line per step with the stage's count and the elapsed seconds, e.g.
    ``eval: methods 3/8: hybrid_all_leaky/artist in 4.2s, 9.8s elapsed``; stages are ``methods``
    (each method x relevance, then the random baseline of that relevance), ``ablations``,
    ``face vs full``, ``pixel metrics`` and ``index check`` (one line each), then
    ``eval: done in <s>s``.
    """
    started = time.perf_counter()
    ks = tuple(sorted(set(int(k) for k in ks)))
    if 5 not in ks:
        raise ValueError(f"the headline uses K=5; ks must include 5, got {ks}")
    full = _sorted_variant(full)
    if len(full.objectids) < 2:
        raise ValueError(f"need at least 2 embedded paintings to evaluate, got {len(full.objectids)}")
    meta = ItemMeta.from_catalog(full.objectids, catalog)
    vectors, fusion_info = _fused(full, pca_dim)
    curve_ks = tuple(sorted(set(CURVE_KS) | set(ks)))
    timings: dict[str, float] = {}

    def timed(
        stage: str, name: str, fn: Callable[[], Any], done: int = 1, total: int = 1, key: str | None = None,
        detail: Callable[[Any], str] | None = None,
    ) -> Any:
        """Run one step of ``stage``; log ``eval: <stage> <done>/<total>: <name> in <s>s, <s>s elapsed``."""
        step = time.perf_counter()
        value = fn()
        seconds = timings[key or name] = round(time.perf_counter() - step, 2)
        what = stage if (total, name) == (1, stage) else f"{stage} {done}/{total}: {name}"
        extra = f" ({detail(value)})" if detail is not None else ""
        log(f"eval: {what} in {seconds:.1f}s{extra}, {time.perf_counter() - started:.1f}s elapsed")
        return value

    relevances = [r for r in RELEVANCES if (relevant_counts(meta, r) > 0).any()]
    skipped = [r for r in RELEVANCES if r not in relevances]
    ablation_list = ablation_sets(full.blocks, full.fusion, pca_dim)
    n_runs = len(relevances) * (len(METHODS) + 1)  # + the random baseline of each relevance
    log(f"eval: {len(full.objectids)} paintings, {vectors.shape[1]}-d fused vectors from {fusion_info['source']}; "
        f"relevances {', '.join(relevances) or 'none'}; {n_runs} method runs, {len(ablation_list)} ablations, "
        f"pixel metrics on {min(pixel_queries, len(full.objectids))} queries; "
        f"{time.perf_counter() - started:.1f}s elapsed")
    methods: list[MethodResult] = []
    random_rows_all: list[dict[str, Any]] = []
    curves: dict[str, dict[int, float]] = {}
    run = 0
    for relevance in relevances:
        for method in METHODS:
            run += 1
            res = timed("methods", f"{method}/{relevance}",
                        lambda: evaluate_method(vectors, meta, method, relevance, curve_ks, scoring, seed=seed),
                        run, n_runs)
            methods.append(res)
            curves[f"{method}/{relevance}"] = {k: res.mean(f"precision@{k}") for k in curve_ks}
        run += 1
        rand = timed("methods", f"random/{relevance}", lambda: random_rows(meta, relevance, curve_ks, seed=seed),
                     run, n_runs)
        curves[f"random/{relevance}"] = {row["k"]: row["precision_at_k"] for row in rand}
        random_rows_all += [row for row in rand if row["k"] in ks]

    head = next((m for m in methods if m.method == "visual" and m.relevance == "artist"), None)

    ablations = []
    for i, (name, description, thunk) in enumerate(ablation_list, start=1):
        def ablation(thunk: Callable[[], np.ndarray] = thunk) -> tuple[np.ndarray, MethodResult]:
            vec = thunk()
            return vec, evaluate_method(vec, meta, "visual", "artist", ks)

        vec, res = timed("ablations", name, ablation, i, len(ablation_list), key=f"ablation {name}")
        row = {"name": name, "description": description, "dim": int(vec.shape[1]), "n_queries": res.n_queries,
               "map": res.mean("map")}
        row.update({f"precision_at_{k}": res.mean(f"precision@{k}") for k in ks})
        row.update({f"map_at_{k}": res.mean(f"map@{k}") for k in ks})
        ablations.append(row)

    face_cmp = timed("face vs full", "face vs full", lambda: _face_comparison(full, vectors, face, meta, ks, pca_dim))

    paths = [image_path(str(u)) for u in full.uuids]
    pixel = timed("pixel metrics", "pixel metrics",
                  lambda: pixel_evaluation(vectors, full.objectids, paths, pixel_queries, PIXEL_TOP, seed),
                  detail=lambda p: f"{p.rmse.size} query-result pairs + {len(p.random_rmse)} random pairs, "
                                   f"{p.images_loaded} images decoded")
    pixel_summary = pixel.summary()

    index_rows = None
    if index_check is not None:
        kmax = max(ks)
        found = timed("index check", "index check", lambda: index_check(vectors, full.objectids, kmax))
        index_rows = _index_check_rows(found, full.objectids, meta, ks, vectors)

    random_head = next((r for r in random_rows_all if r["relevance"] == "artist" and r["k"] == 5), {})

    def headline_value(key: str) -> float:
        return head.mean(key) if head is not None else float("nan")

    headline = {
        "method": HEADLINE["method"],
        "relevance": HEADLINE["relevance"],
        "k": HEADLINE["k"],
        "precision_at_k": headline_value("precision@5"),
        "recall_at_k": headline_value("recall@5"),
        "map_at_k": headline_value("map@5"),
        "map": headline_value("map"),
        "random_precision_at_k": random_head.get("precision_at_k", float("nan")),
        "random_map": random_head.get("map", float("nan")),
        "precision_at_k_ci95": _ci95(head.per_query["precision@5"]) if head is not None else float("nan"),
        "map_ci95": _ci95(head.per_query["map"]) if head is not None else float("nan"),
        "mean_rmse": pixel_summary["mean_rmse"],
        "mean_ssim": pixel_summary["mean_ssim"],
        "n_queries": head.n_queries if head is not None else 0,
        "n_paintings": int(len(full.objectids)),
        "models": list(models) or sorted(full.blocks),
        "weights": weights_setting,
    }
    if weights_setting == "random":
        headline["warning"] = RANDOM_WEIGHTS_WARNING
    report = {
        "headline": headline,
        "methods": [row for m in methods for row in m.rows(ks)],
        "random_baseline": random_rows_all,
        "skipped_relevances": {
            r: "no painting has another relevant painting (e.g. no styles in the catalog)" for r in skipped
        },
        "ablations": ablations,
        "face_vs_full": face_cmp,
        "pixel": pixel_summary,
        "index_check": index_rows,
        "settings": {
            **dict(settings or {}),
            "models": list(models) or sorted(full.blocks),
            "weights": weights_setting,
            "pca_dim": int(pca_dim),
            "ks": list(ks),
            "seed": int(seed),
            "variant": "full",
            "fusion": fusion_info,
            "scoring": {k: v for k, v in scoring.__dict__.items()},
            "protocol": "leave-one-out over every painting with a non-empty relevant set; exact cosine ranking; "
                        "ties to the lower objectid",
        },
        "timings_s": {**timings, "total": round(time.perf_counter() - started, 2)},
    }
    log(f"eval: done in {report['timings_s']['total']:.1f}s")
    return EvaluationResult(
        report=report,
        methods=methods,
        random=random_rows_all,
        curves=curves,
        pixel=pixel,
        examples=_examples(vectors, meta, full.uuids),
        uuids={int(o): str(u) for o, u in zip(full.objectids, full.uuids)},
    )


def _ci95(values: np.ndarray) -> float:
    """Half-width of the normal 95% interval of a mean over queries."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float("nan")
    return float(1.96 * values.std(ddof=1) / np.sqrt(len(values)))


def _index_check_rows(
    found: np.ndarray, objectids: np.ndarray, meta: ItemMeta, ks: Sequence[int], vectors: np.ndarray
) -> dict[str, Any]:
    """Served index vs exact search: neighbour overlap and same-artist precision@K."""
    kmax = max(ks)
    x = _l2(vectors).astype(np.float32)
    _, exact_rows = exact_topk(x, x, kmax)
    exact_ids = objectids[exact_rows]
    pos = {int(o): i for i, o in enumerate(objectids)}
    labels = meta.artist_labels
    queries = np.flatnonzero(relevant_counts(meta, "artist") > 0)
    out: dict[str, Any] = {"n_queries": int(len(queries))}
    for k in ks:
        overlap = [len(set(found[i, :k].tolist()) & set(exact_ids[i, :k].tolist())) / k for i in range(len(objectids))]
        hits = [
            sum(1 for o in found[i, :k] if o >= 0 and labels[pos[int(o)]] == labels[i]) / k for i in queries
        ]
        out[f"recall_vs_exact_at_{k}"] = float(np.mean(overlap))
        out[f"precision_at_{k}"] = float(np.mean(hits)) if hits else float("nan")
    return out


def fingerprint(values: Mapping[str, Any]) -> str:
    """Short stable hash of a JSON-able mapping (for data versions)."""
    import json

    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]
