"""The whole evaluation of a collection, in order (plain Python, no Dagster).

:func:`evaluate_collection` runs, on the pipeline's fused full-variant vectors:

1. the leave-one-out protocol (:mod:`.protocol`) for every method x relevance, plus the chance level,
   on every eligible query up to 5,000 of them, else on a seeded sample of 2,000 (:mod:`.sampling`);
   the headline's ``n_queries`` / ``n_eligible_queries`` and ``settings.query_sample`` say which;
2. the ablations (:mod:`.ablations`), visual search under artist relevance;
3. full painting vs face crop (:func:`.checks.face_comparison`);
4. pixel RMSE/SSIM of the top results (:mod:`.pixels`);
5. the served index vs exact search (:func:`.checks.index_check_rows`), when given, on every painting
   up to 5,000 paintings, else on the same rule's sample of the paintings;
6. the learned similarity head on held-out artists (:mod:`.learned`), trained and measured on the
   fused vectors without the head a served fusion may carry;
7. the re-ranking study (:mod:`.reranking`): every option's parameters chosen on held-out artists, then
   measured on all queries;

and returns the JSON-ready report (files: :mod:`artsim_pipeline.core.reports`). The headline is
visual search, same artist, K = 5: precision@5 and full-ranking mAP with their 95% intervals. Step 1
ranks with the configured re-ranking (``rerank``, ``ARTSIM_RERANK``; honest leave-one-out), as search
does; the headline's ``rerank`` names it.

``study=False`` (``eval_report``, on every refresh) runs steps 1 and 5 only: seconds, and what a
refresh must re-check. ``study=True`` (``eval_study``: on code or setting changes, its cron, or on
demand) runs everything. A step that did not run reports ``{"available": False, "reason": ...}``
(``ablations``: an empty list; ``pixel``: None).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..rerank import RerankOptions
from ..scoring import ScoringWeights
from .ablations import ablation_sets
from .checks import (
    VariantInput,
    examples,
    face_comparison,
    fused_vectors,
    index_check_rows,
    sorted_variant,
    unprojected_vectors,
)
from .learned import evaluate_learned
from .pixels import PIXEL_QUERIES, PIXEL_TOP, PixelResult, pixel_evaluation
from .reranking import evaluate_reranking
from .protocol import (
    DEFAULT_KS,
    METHODS,
    RELEVANCES,
    ItemMeta,
    MethodResult,
    evaluate_method,
    evaluate_methods,
    leave_one_out,
    random_rows,
    relevant_counts,
)
from .sampling import QuerySample

CURVE_KS = tuple(range(1, 11))
HEADLINE = {"method": "visual", "relevance": "artist", "k": 5}
RANDOM_WEIGHTS_WARNING = "RANDOM WEIGHTS — meaningless: the backbones were not trained, every number below is noise."
SERVED_HEAD_WARNING = ("the served index uses the learned similarity head, trained on these same artist labels: "
                       "the numbers below are optimistic; the `learned` block (held-out artists) is the fair measure.")
#: Report blocks whose numbers make the report's data version (timings and paths left out).
VERSIONED_KEYS = ("headline", "methods", "ablations", "pixel", "learned", "reranking")


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
    taps: str | None = None,
    epochs: int = 0,
    settings: Mapping[str, Any] | None = None,
    log: Callable[[str], None] = lambda _msg: None,
    study: bool = True,
    query_sample: QuerySample | None = None,
    rerank: RerankOptions = RerankOptions(),
) -> EvaluationResult:
    """Run the whole protocol on the collection; return the report (see :mod:`reports` for the files).

    ``catalog`` has one row per painting (``filtered_paintings`` columns); ``image_path(uuid)`` gives
    the cached image. ``index_check(vectors, objectids, k)`` (optional) returns the served index's
    top-k objectids per painting (self excluded) so the report can compare it with exact search; beyond
    ``query_sample.full_up_to`` paintings it is called on the sampled paintings' rows only.
    ``query_sample`` (default: :class:`.sampling.QuerySample` seeded with ``seed``) says which
    paintings query.
    ``taps`` (``ARTSIM_TAPS``) names the blocks a fusion refitted here uses (None: every block);
    ``epochs`` (``ARTSIM_EPOCHS``) is the learned head's budget (0: the head is off and the
    held-out evaluation uses :data:`.learned.EVAL_EPOCHS`).

    ``log`` gets a short line per step with the stage's count and the elapsed seconds, e.g.
    ``eval: methods 3/8: hybrid_all_leaky/artist in 4.2s, 9.8s elapsed``; stages are ``methods``
    (each method x relevance, then the random baseline of that relevance), ``ablations``,
    ``face vs full``, ``pixel metrics`` and ``index check`` (one line each), ``learned head`` (one
    line per split and one for the stage), then
    ``eval: done in <s>s``.
    """
    started = time.perf_counter()
    ks = tuple(sorted(set(int(k) for k in ks)))
    if 5 not in ks:
        raise ValueError(f"the headline uses K=5; ks must include 5, got {ks}")
    full = sorted_variant(full)
    if len(full.objectids) < 2:
        raise ValueError(f"need at least 2 embedded paintings to evaluate, got {len(full.objectids)}")
    meta = ItemMeta.from_catalog(full.objectids, catalog)
    sample = query_sample if query_sample is not None else QuerySample(seed=seed)
    vectors, fusion_info = fused_vectors(full, pca_dim, taps)
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
    ablation_list = ablation_sets(full.blocks, full.fusion, pca_dim, taps) if study else []
    n_runs = len(relevances) * (len(METHODS) + 1)  # + the random baseline of each relevance
    plan = (f"{len(ablation_list)} ablations, pixel metrics on {min(pixel_queries, len(full.objectids))} queries"
            if study else "the study (ablations, pixels, learned head) is eval_study's")
    log(f"eval: {len(full.objectids)} paintings, {vectors.shape[1]}-d fused vectors from {fusion_info['source']}; "
        f"relevances {', '.join(relevances) or 'none'}; {n_runs} method runs, {plan}; "
        f"{time.perf_counter() - started:.1f}s elapsed")
    methods: list[MethodResult] = []
    random_rows_all: list[dict[str, Any]] = []
    curves: dict[str, dict[int, float]] = {}
    run = 0
    reranked = leave_one_out(vectors, rerank)  # one neighbour table for every relevance
    for relevance in relevances:
        # the methods of one relevance in one pass (shared similarities and visual ranking); one line each
        for res in evaluate_methods(vectors, meta, METHODS, relevance, curve_ks, scoring, seed=seed, sample=sample,
                                    rerank=reranked or rerank):
            run += 1
            name = f"{res.method}/{relevance}"
            timings[name] = round(res.seconds, 2)
            log(f"eval: methods {run}/{n_runs}: {name} in {res.seconds:.1f}s, "
                f"{time.perf_counter() - started:.1f}s elapsed")
            methods.append(res)
            curves[name] = {k: res.mean(f"precision@{k}") for k in curve_ks}
        run += 1
        rand = timed("methods", f"random/{relevance}",
                     lambda: random_rows(meta, relevance, curve_ks, seed=seed, sample=sample),
                     run, n_runs)
        curves[f"random/{relevance}"] = {row["k"]: row["precision_at_k"] for row in rand}
        random_rows_all += [row for row in rand if row["k"] in ks]

    head = next((m for m in methods if m.method == "visual" and m.relevance == "artist"), None)

    ablations = []
    for i, (name, description, thunk) in enumerate(ablation_list, start=1):
        def ablation(thunk: Callable[[], np.ndarray] = thunk) -> tuple[np.ndarray, MethodResult]:
            vec = thunk()
            return vec, evaluate_method(vec, meta, "visual", "artist", ks, sample=sample)

        vec, res = timed("ablations", name, ablation, i, len(ablation_list), key=f"ablation {name}")
        row = {"name": name, "description": description, "dim": int(vec.shape[1]), "n_queries": res.n_queries,
               "map": res.mean("map")}
        row.update({f"precision_at_{k}": res.mean(f"precision@{k}") for k in ks})
        row.update({f"map_at_{k}": res.mean(f"map@{k}") for k in ks})
        ablations.append(row)

    in_study = {"available": False, "reason": "measured by eval_study (on code or setting changes, its cron, or on demand)"}
    pixel = None
    pixel_summary: dict[str, Any] | None = None
    face_cmp: dict[str, Any] = dict(in_study)
    if study:
        face_cmp = timed("face vs full", "face vs full",
                         lambda: face_comparison(full, vectors, face, meta, ks, pca_dim, taps))
        paths = [image_path(str(u)) for u in full.uuids]
        pixel = timed("pixel metrics", "pixel metrics",
                      lambda: pixel_evaluation(vectors, full.objectids, paths, pixel_queries, PIXEL_TOP, seed),
                      detail=lambda p: f"{p.rmse.size} query-result pairs + {len(p.random_rmse)} random pairs, "
                                       f"{p.images_loaded} images decoded")
        pixel_summary = pixel.summary()

    index_rows = None
    if index_check is not None:
        kmax = max(ks)
        checked = sample.rows(np.arange(len(full.objectids)), full.objectids)
        if len(checked) == len(full.objectids):
            found = timed("index check", "index check", lambda: index_check(vectors, full.objectids, kmax))
            index_rows = index_check_rows(found, full.objectids, meta, ks, vectors)
        else:
            found = timed("index check", "index check",
                          lambda: index_check(vectors[checked], full.objectids[checked], kmax))
            index_rows = index_check_rows(found, full.objectids, meta, ks, vectors, rows=checked)

    learned = dict(in_study)
    if study:
        learned = timed("learned head", "learned head",
                        lambda: evaluate_learned(unprojected_vectors(full, vectors), meta, epochs, log=log))

    reranking = dict(in_study)
    if study:
        reranking = timed("reranking", "reranking",
                          lambda: evaluate_reranking(vectors, meta, rerank, sample=sample, log=log))

    random_head = next((r for r in random_rows_all if r["relevance"] == "artist" and r["k"] == 5), {})

    def headline_value(key: str) -> float:
        return head.mean(key) if head is not None else float("nan")

    headline = {
        "method": HEADLINE["method"],
        "relevance": HEADLINE["relevance"],
        "k": HEADLINE["k"],
        "rerank": rerank.label,
        "precision_at_k": headline_value("precision@5"),
        "recall_at_k": headline_value("recall@5"),
        "map_at_k": headline_value("map@5"),
        "map": headline_value("map"),
        "random_precision_at_k": random_head.get("precision_at_k", float("nan")),
        "random_map": random_head.get("map", float("nan")),
        "precision_at_k_ci95": _ci95(head.per_query["precision@5"]) if head is not None else float("nan"),
        "map_ci95": _ci95(head.per_query["map"]) if head is not None else float("nan"),
        "mean_rmse": pixel_summary["mean_rmse"] if pixel_summary else float("nan"),
        "mean_ssim": pixel_summary["mean_ssim"] if pixel_summary else float("nan"),
        "n_queries": head.n_queries if head is not None else 0,
        "n_eligible_queries": head.n_eligible_queries if head is not None else 0,
        "n_paintings": int(len(full.objectids)),
        "models": list(models) or sorted(full.blocks),
        "weights": weights_setting,
    }
    if weights_setting == "random":
        headline["warning"] = RANDOM_WEIGHTS_WARNING
    elif full.fusion is not None and full.fusion.projection is not None:
        headline["warning"] = SERVED_HEAD_WARNING
    report = {
        "study": bool(study),
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
        "learned": learned,
        "reranking": reranking,
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
            "rerank": rerank.describe(),
            "protocol": "leave-one-out over every painting with a non-empty relevant set (beyond "
                        f"{sample.full_up_to:,} of them, a seeded sample of {sample.size:,}); each query ranks the "
                        "whole collection by exact cosine, re-ranked as `rerank` says (the query never shapes the "
                        "database side); ties to the lower objectid",
            "query_sample": sample.describe(),
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
        examples=examples(vectors, meta, full.uuids) if study else [],
        uuids={int(o): str(u) for o, u in zip(full.objectids, full.uuids)},
    )


def _ci95(values: np.ndarray) -> float:
    """Half-width of the normal 95% interval of a mean over queries."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float("nan")
    return float(1.96 * values.std(ddof=1) / np.sqrt(len(values)))


def fingerprint(values: Mapping[str, Any]) -> str:
    """Short stable hash of a JSON-able mapping (for data versions)."""
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def report_fingerprint(report: Mapping[str, Any]) -> str:
    """:func:`fingerprint` of the report's numbers (:data:`VERSIONED_KEYS`), without training times."""
    values = {key: report.get(key) for key in VERSIONED_KEYS}
    learned = values.get("learned")
    if isinstance(learned, dict):
        values["learned"] = {
            **{k: v for k, v in learned.items() if k != "train_seconds"},
            "splits": [{k: v for k, v in row.items() if k != "train_seconds"} for row in learned.get("splits", [])],
        }
    return fingerprint(values)
