"""The whole evaluation of a collection, in order (plain Python, no Dagster).

:func:`evaluate` runs, for one :class:`EvaluationRequest` (the collection and the options), on the
pipeline's fused full-variant vectors:

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

from ..generations import REQUIRED_VARIANT
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


#: What a step that only ``eval_study`` runs reports in ``eval_report`` (``study=False``).
IN_STUDY = {"available": False, "reason": "measured by eval_study (on code or setting changes, its cron, or on demand)"}


def _no_log(_message: str) -> None:
    """The default ``log``: says nothing."""


@dataclass(frozen=True)
class EvaluationRequest:
    """One evaluation's whole input: what to evaluate (the collection) and how (the options).

    Inputs: ``full`` (the fused full-variant vectors), ``catalog`` (one row per painting,
    ``filtered_paintings`` columns), ``image_path(uuid)`` (the cached image), ``face`` (the face-crop
    variant, optional) and ``index_check(vectors, objectids, k)`` (optional: the served index's top-k
    objectids per painting, self excluded, so the report can compare it with exact search; beyond
    ``query_sample.full_up_to`` paintings it is called on the sampled paintings' rows only).

    Options: ``query_sample`` (default: :class:`.sampling.QuerySample` seeded with ``seed``) says which
    paintings query; ``taps`` (``ARTSIM_TAPS``) names the blocks a fusion refitted here uses (None: every
    block); ``epochs`` (``ARTSIM_EPOCHS``) is the learned head's budget (0: the head is off and the held-out
    evaluation uses :data:`.learned.EVAL_EPOCHS`); ``rerank`` is the re-ranking step 1 applies;
    ``settings`` are copied into the report's ``settings`` block; ``study`` runs the whole study (else
    steps 1 and 5 only).

    ``log`` gets a short line per step with the stage's count and the elapsed seconds, e.g.
    ``eval: methods 3/8: hybrid_all_leaky/artist in 4.2s, 9.8s elapsed``; stages are ``methods``
    (each method x relevance, then the random baseline of that relevance), ``ablations``,
    ``face vs full``, ``pixel metrics`` and ``index check`` (one line each), ``learned head`` (one
    line per split and one for the stage), then ``eval: done in <s>s``.
    """

    full: VariantInput
    catalog: pd.DataFrame
    image_path: Callable[[str], Path]
    face: VariantInput | None = None
    index_check: Callable[[np.ndarray, np.ndarray, int], np.ndarray] | None = None
    models: Sequence[str] = ()
    weights_setting: str = "pretrained"
    pca_dim: int = 512
    ks: Sequence[int] = DEFAULT_KS
    pixel_queries: int = PIXEL_QUERIES
    seed: int = 0
    scoring: ScoringWeights = ScoringWeights()
    taps: str | None = None
    epochs: int = 0
    settings: Mapping[str, Any] | None = None
    log: Callable[[str], None] = _no_log
    study: bool = True
    query_sample: QuerySample | None = None
    rerank: RerankOptions = RerankOptions()


def evaluate_collection(full: VariantInput, catalog: pd.DataFrame, image_path: Callable[[str], Path],
                        **options: Any) -> EvaluationResult:
    """:func:`evaluate` with the request's fields as arguments (the inputs first, the rest by keyword)."""
    return evaluate(EvaluationRequest(full, catalog, image_path, **options))


@dataclass
class _Run:
    """One evaluation under way: the request, what every step shares, and the steps' timings."""

    request: EvaluationRequest
    started: float
    ks: tuple[int, ...]
    full: VariantInput  # sorted by objectid
    meta: ItemMeta
    sample: QuerySample
    vectors: np.ndarray
    fusion_info: dict[str, Any]
    relevances: list[str]
    ablation_list: list[Any]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def curve_ks(self) -> tuple[int, ...]:
        return tuple(sorted(set(CURVE_KS) | set(self.ks)))

    @property
    def n_method_runs(self) -> int:
        return len(self.relevances) * (len(METHODS) + 1)  # + the random baseline of each relevance

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def log(self, message: str) -> None:
        self.request.log(message)

    def timed(self, stage: str, name: str, fn: Callable[[], Any], done: int = 1, total: int = 1,
              key: str | None = None, detail: Callable[[Any], str] | None = None) -> Any:
        """Run one step of ``stage``; log ``eval: <stage> <done>/<total>: <name> in <s>s, <s>s elapsed``."""
        step = time.perf_counter()
        value = fn()
        seconds = self.timings[key or name] = round(time.perf_counter() - step, 2)
        what = stage if (total, name) == (1, stage) else f"{stage} {done}/{total}: {name}"
        extra = f" ({detail(value)})" if detail is not None else ""
        self.log(f"eval: {what} in {seconds:.1f}s{extra}, {self.elapsed():.1f}s elapsed")
        return value


@dataclass
class _MethodRuns:
    """Step 1's results: every method x relevance, the random baseline's rows at ``ks``, precision curves."""

    methods: list[MethodResult] = field(default_factory=list)
    random: list[dict[str, Any]] = field(default_factory=list)
    curves: dict[str, dict[int, float]] = field(default_factory=dict)

    def headline_method(self) -> MethodResult | None:
        return next((m for m in self.methods if m.method == "visual" and m.relevance == "artist"), None)

    def headline_random(self) -> dict[str, Any]:
        return next((r for r in self.random if r["relevance"] == "artist" and r["k"] == 5), {})


def evaluate(request: EvaluationRequest) -> EvaluationResult:
    """Run the whole protocol on the collection (:class:`EvaluationRequest`); return the report (see
    :mod:`artsim_pipeline.core.reports` for the files)."""
    run = _start(request)
    runs = _method_runs(run)
    ablations = _ablation_rows(run) if request.study else []
    face_cmp = _face_comparison(run) if request.study else dict(IN_STUDY)
    pixel = _pixel_metrics(run) if request.study else None
    index_rows = _index_check(run) if request.index_check is not None else None
    learned = run.timed("learned head", "learned head", lambda: evaluate_learned(
        unprojected_vectors(run.full, run.vectors), run.meta, request.epochs, log=request.log,
    )) if request.study else dict(IN_STUDY)
    reranking = run.timed("reranking", "reranking", lambda: evaluate_reranking(
        run.vectors, run.meta, request.rerank, sample=run.sample, log=request.log,
    )) if request.study else dict(IN_STUDY)
    pixel_summary = pixel.summary() if pixel is not None else None
    report = {
        "study": bool(request.study),
        "headline": _headline(run, runs, pixel_summary),
        "methods": [row for m in runs.methods for row in m.rows(run.ks)],
        "random_baseline": runs.random,
        "skipped_relevances": {
            r: "no painting has another relevant painting (e.g. no styles in the catalog)"
            for r in RELEVANCES if r not in run.relevances
        },
        "ablations": ablations,
        "face_vs_full": face_cmp,
        "pixel": pixel_summary,
        "index_check": index_rows,
        "learned": learned,
        "reranking": reranking,
        "settings": _settings_block(run),
        "timings_s": {**run.timings, "total": round(run.elapsed(), 2)},
    }
    run.log(f"eval: done in {report['timings_s']['total']:.1f}s")
    return EvaluationResult(
        report=report, methods=runs.methods, random=runs.random, curves=runs.curves, pixel=pixel,
        examples=examples(run.vectors, run.meta, run.full.uuids) if request.study else [],
        uuids={int(o): str(u) for o, u in zip(run.full.objectids, run.full.uuids)},
    )


def _start(request: EvaluationRequest) -> _Run:
    """Check the request, sort and fuse the vectors, read the relevances; log the plan."""
    started = time.perf_counter()
    ks = tuple(sorted(set(int(k) for k in request.ks)))
    if 5 not in ks:
        raise ValueError(f"the headline uses K=5; ks must include 5, got {ks}")
    full = sorted_variant(request.full)
    if len(full.objectids) < 2:
        raise ValueError(f"need at least 2 embedded paintings to evaluate, got {len(full.objectids)}")
    meta = ItemMeta.from_catalog(full.objectids, request.catalog)
    sample = request.query_sample if request.query_sample is not None else QuerySample(seed=request.seed)
    vectors, fusion_info = fused_vectors(full, request.pca_dim, request.taps)
    run = _Run(
        request=request, started=started, ks=ks, full=full, meta=meta, sample=sample, vectors=vectors,
        fusion_info=fusion_info, relevances=[r for r in RELEVANCES if (relevant_counts(meta, r) > 0).any()],
        ablation_list=ablation_sets(full.blocks, full.fusion, request.pca_dim, request.taps) if request.study else [],
    )
    plan = (f"{len(run.ablation_list)} ablations, pixel metrics on "
            f"{min(request.pixel_queries, len(full.objectids))} queries"
            if request.study else "the study (ablations, pixels, learned head) is eval_study's")
    run.log(f"eval: {len(full.objectids)} paintings, {vectors.shape[1]}-d fused vectors from "
            f"{fusion_info['source']}; relevances {', '.join(run.relevances) or 'none'}; {run.n_method_runs} "
            f"method runs, {plan}; {run.elapsed():.1f}s elapsed")
    return run


def _method_runs(run: _Run) -> _MethodRuns:
    """Step 1: every method x relevance, then the random baseline of that relevance (one log line each)."""
    request, curve_ks, out = run.request, run.curve_ks, _MethodRuns()
    done = 0
    reranked = leave_one_out(run.vectors, request.rerank)  # one neighbour table for every relevance
    for relevance in run.relevances:
        # the methods of one relevance in one pass (shared similarities and visual ranking); one line each
        for res in evaluate_methods(run.vectors, run.meta, METHODS, relevance, curve_ks, request.scoring,
                                    seed=request.seed, sample=run.sample, rerank=reranked or request.rerank):
            done += 1
            name = f"{res.method}/{relevance}"
            run.timings[name] = round(res.seconds, 2)
            run.log(f"eval: methods {done}/{run.n_method_runs}: {name} in {res.seconds:.1f}s, "
                    f"{run.elapsed():.1f}s elapsed")
            out.methods.append(res)
            out.curves[name] = {k: res.mean(f"precision@{k}") for k in curve_ks}
        done += 1
        rand = run.timed("methods", f"random/{relevance}",
                         lambda: random_rows(run.meta, relevance, curve_ks),
                         done, run.n_method_runs)
        out.curves[f"random/{relevance}"] = {row["k"]: row["precision_at_k"] for row in rand}
        out.random += [row for row in rand if row["k"] in run.ks]
    return out


def _ablation_rows(run: _Run) -> list[dict[str, Any]]:
    """Step 2: each ablation's vectors under visual search, artist relevance (one row each)."""
    rows = []
    for i, (name, description, thunk) in enumerate(run.ablation_list, start=1):
        def ablation(thunk: Callable[[], np.ndarray] = thunk) -> tuple[np.ndarray, MethodResult]:
            vec = thunk()
            return vec, evaluate_method(vec, run.meta, "visual", "artist", run.ks, sample=run.sample)

        vec, res = run.timed("ablations", name, ablation, i, len(run.ablation_list), key=f"ablation {name}")
        row = {"name": name, "description": description, "dim": int(vec.shape[1]), "n_queries": res.n_queries,
               "map": res.mean("map")}
        row.update({f"precision_at_{k}": res.mean(f"precision@{k}") for k in run.ks})
        row.update({f"map_at_{k}": res.mean(f"map@{k}") for k in run.ks})
        rows.append(row)
    return rows


def _face_comparison(run: _Run) -> dict[str, Any]:
    """Step 3: full painting vs face crop."""
    request = run.request
    return run.timed("face vs full", "face vs full", lambda: face_comparison(
        run.full, run.vectors, request.face, run.meta, run.ks, request.pca_dim, request.taps))


def _pixel_metrics(run: _Run) -> PixelResult:
    """Step 4: pixel RMSE/SSIM of the top results against random pairs."""
    request, full = run.request, run.full
    paths = [request.image_path(str(u)) for u in full.uuids]
    return run.timed("pixel metrics", "pixel metrics",
                     lambda: pixel_evaluation(run.vectors, full.objectids, paths, request.pixel_queries, PIXEL_TOP,
                                              request.seed),
                     detail=lambda p: f"{p.rmse.size} query-result pairs + {len(p.random_rmse)} random pairs, "
                                      f"{p.images_loaded} images decoded")


def _index_check(run: _Run) -> list[dict[str, Any]]:
    """Step 5: the served index vs exact search, on every painting or on the query sample's paintings."""
    index_check, full, vectors, kmax = run.request.index_check, run.full, run.vectors, max(run.ks)
    checked = run.sample.rows(np.arange(len(full.objectids)), full.objectids)
    if len(checked) == len(full.objectids):
        found = run.timed("index check", "index check", lambda: index_check(vectors, full.objectids, kmax))
        return index_check_rows(found, full.objectids, run.meta, run.ks, vectors)
    found = run.timed("index check", "index check",
                      lambda: index_check(vectors[checked], full.objectids[checked], kmax))
    return index_check_rows(found, full.objectids, run.meta, run.ks, vectors, rows=checked)


def _headline(run: _Run, runs: _MethodRuns, pixel_summary: dict[str, Any] | None) -> dict[str, Any]:
    """The headline: visual search, same artist, K = 5, with the chance level and the pixel means."""
    request, head, random_head = run.request, runs.headline_method(), runs.headline_random()

    def headline_value(key: str) -> float:
        return head.mean(key) if head is not None else float("nan")

    headline = {
        "method": HEADLINE["method"],
        "relevance": HEADLINE["relevance"],
        "k": HEADLINE["k"],
        "rerank": request.rerank.label,
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
        "n_paintings": int(len(run.full.objectids)),
        "models": list(request.models) or sorted(run.full.blocks),
        "weights": request.weights_setting,
    }
    if request.weights_setting == "random":
        headline["warning"] = RANDOM_WEIGHTS_WARNING
    elif run.full.fusion is not None and run.full.fusion.projection is not None:
        headline["warning"] = SERVED_HEAD_WARNING
    return headline


def _settings_block(run: _Run) -> dict[str, Any]:
    """The report's ``settings``: the request's settings, then what this evaluation used."""
    request, sample = run.request, run.sample
    return {
        **dict(request.settings or {}),
        "models": list(request.models) or sorted(run.full.blocks),
        "weights": request.weights_setting,
        "pca_dim": int(request.pca_dim),
        "ks": list(run.ks),
        "seed": int(request.seed),
        "variant": REQUIRED_VARIANT,
        "fusion": run.fusion_info,
        "scoring": {k: v for k, v in request.scoring.__dict__.items()},
        "rerank": request.rerank.describe(),
        "protocol": "leave-one-out over every painting with a non-empty relevant set (beyond "
                    f"{sample.full_up_to:,} of them, a seeded sample of {sample.size:,}); each query ranks the "
                    "whole collection by exact cosine, re-ranked as `rerank` says (the query never shapes the "
                    "database side); ties to the lower objectid",
        "query_sample": sample.describe(),
    }


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
