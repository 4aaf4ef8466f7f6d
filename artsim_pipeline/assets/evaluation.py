"""``eval_report`` (per refresh) and ``eval_study`` (the study): retrieval quality of the current index,
written to ``reports/``."""

import numpy as np
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)

from ..automation import COLLECTION, REFRESH_TAG, STUDY, STUDY_CRON
from ..code_versions import code_version
from ..config import Settings
from ..core.evaluation import EvaluationRequest, VariantInput, evaluate, report_fingerprint
from ..core.fusion import block_models
from ..core.generations import NoGenerationError, REQUIRED_VARIANT, load_generation
from ..core.lake import lake_for
from ..core.lake_reads import catalog_paintings, current_collection
from ..core.index_recipe import index_searcher
from . import checks
from .common import OWNERS, lake_path, progress_logger

CATALOG_COLUMNS = ["objectid", "uuid", "title", "artist", "artist_key", "style", "beginyear", "endyear",
                   "displaydate", "medium"]
STUDY_ASSET = "eval_study"
REPORTED_SETTINGS = ("models", "weights", "pca_dim", "precision", "min_side", "limit", "image_size")
HEADLINE_FLOATS = ("precision_at_k", "recall_at_k", "map_at_k", "map", "random_precision_at_k", "random_map",
                   "mean_rmse", "mean_ssim")
#: The learned head on held-out artists: report key -> metadata key.
LEARNED_FLOATS = {"precision_at_5_pca": "heldout_precision_at_5_pca",
                  "precision_at_5_learned": "heldout_precision_at_5_learned",
                  "map_pca": "heldout_map_pca", "map_learned": "heldout_map_learned"}


def _served_generation(lake, models):
    """The generation search serves (fusions + indexes of one publish), or None when there is none or
    it was built with other models than ``models`` (then the report refits and skips the index check)."""
    try:
        generation = load_generation(lake)
    except (NoGenerationError, ValueError):
        return None
    if set(block_models(generation.fusions[REQUIRED_VARIANT].model_names)) != set(models):
        return None
    return generation


def _evaluate(context: AssetExecutionContext, settings: Settings, lake, study: bool) -> MaterializeResult:
    """One evaluation of the served collection: the per-refresh report or the study (``study``)."""
    # matplotlib (core.reports) here: every step's process loads the definitions; only the report draws
    from ..core import reports

    name = STUDY_ASSET if study else "eval_report"
    collection = current_collection(lake, settings.models)  # every stored block: the tap-set ablations
    catalog = catalog_paintings(lake, columns=CATALOG_COLUMNS)
    served = _served_generation(lake, settings.models)  # resolved once: fusions and the checked index agree
    variants = {}
    for variant, vectors in collection.items():
        fusion = served.fusions.get(variant) if served is not None else None
        variants[variant] = VariantInput(vectors.objectids, vectors.uuids, vectors.blocks, fusion)
    values = settings.as_dict()
    result = evaluate(EvaluationRequest(
        variants[REQUIRED_VARIANT],
        catalog,
        lake.image_path,
        face=variants.get("face"),
        models=settings.models,
        weights_setting=settings.weights,
        pca_dim=settings.pca_dim,
        index_check=index_searcher(served.bundles.get(REQUIRED_VARIANT) if served is not None else None),
        taps=settings.taps,
        epochs=settings.epochs,
        settings={key: values[key] for key in REPORTED_SETTINGS},
        log=progress_logger(context, name),
        study=study,
        rerank=settings.rerank_options,
    ))
    files = reports.write_report(result, lake.reports_dir, lake.image_path, name=name)
    report = result.report
    headline = report["headline"]
    if settings.weights == "random":
        context.log.warning(headline["warning"])
    metadata: dict[str, object] = {
        key: MetadataValue.float(round(float(headline[key]), 4)) for key in HEADLINE_FLOATS
        if np.isfinite(float(headline[key]))  # pixel RMSE/SSIM: the study's
    }
    metadata.update({
        "headline": f"{headline['method']} / same {headline['relevance']} / K={headline['k']}",
        "rerank": headline["rerank"],
        "n_queries": MetadataValue.int(int(headline["n_queries"])),
        "n_paintings": MetadataValue.int(int(headline["n_paintings"])),
        "weights": headline["weights"],
        "models": ", ".join(headline["models"]),
        "report": MetadataValue.md(reports.markdown_with_plots(report, files)),
        "methods": methods_table(report),
        **{f"plot_{key}": lake_path(lake, path) for key, path in sorted(files.plots.items())},
        "report_json": lake_path(lake, files.json),
        "report_markdown": lake_path(lake, files.markdown),
        "seconds": MetadataValue.float(round(float(report["timings_s"]["total"]), 2)),
    })
    learned = report["learned"]
    if learned.get("available"):
        metadata.update({key_name: MetadataValue.float(round(float(learned[key]), 4))
                         for key, key_name in LEARNED_FLOATS.items()})
    if headline.get("warning"):
        metadata["warning"] = headline["warning"]
    check_results = []
    if not study:
        k, precision = int(headline["k"]), float(headline["precision_at_k"])
        previous = _previous_precision(context, name)
        check_results = [checks.above_chance_result(precision, float(headline["random_precision_at_k"]), k),
                         checks.quality_drop_result(precision, previous, settings.max_quality_drop, k)]
    return MaterializeResult(metadata=metadata, data_version=DataVersion(report_fingerprint(report)),
                             check_results=check_results)


_METHOD_COLUMNS = (("method", "string"), ("relevance", "string"), ("k", "int"), ("precision_at_k", "float"),
                   ("recall_at_k", "float"), ("map_at_k", "float"), ("map", "float"), ("n_queries", "int"))


def methods_table(report: dict) -> MetadataValue:
    """Every method's (and the random baseline's) retrieval numbers as a table the asset page shows."""
    rows = [*report["methods"], *({**r, "method": f"random ({r.get('estimate', '')})"} for r in report["random_baseline"])]
    cast = {"string": str, "int": int, "float": lambda v: round(float(v), 4)}
    records = [TableRecord({name: cast[kind](row[name]) for name, kind in _METHOD_COLUMNS if row.get(name) is not None})
               for row in rows]
    return MetadataValue.table(records, schema=TableSchema([TableColumn(name, kind) for name, kind in _METHOD_COLUMNS]))


def _previous_precision(context: AssetExecutionContext, name: str) -> float | None:
    """The headline P@K of the previous report (its materialization's metadata), or None."""
    event = context.instance.get_latest_materialization_event(AssetKey(name))
    value = event.asset_materialization.metadata.get("precision_at_k") if event is not None else None
    return float(value.value) if value is not None else None


def evaluation_assets(settings: Settings) -> list[AssetsDefinition]:
    """``eval_report`` (every refresh) and ``eval_study`` (code or setting changes, its cron, on demand),
    both downstream of ``faiss_index``."""
    lake = lake_for(settings)

    @asset(
        deps=["faiss_index"],
        code_version=code_version("eval_report", settings),
        group_name="evaluation",
        kinds={"python", "json"},
        owners=OWNERS,
        automation_condition=COLLECTION,
        check_specs=[
            checks.spec(checks.ABOVE_CHANCE, "eval_report", "Same-artist P@5 of the served search is above the "
                        "random baseline (the index finds similar paintings).", blocking=False),
            checks.spec(checks.NO_QUALITY_DROP, "eval_report", "A warning when P@5 fell more than "
                        "ARTSIM_MAX_QUALITY_DROP below the previous report.", blocking=False),
        ],
        description="Per refresh, in seconds: leave-one-out retrieval quality (same artist / same style; P@K, R@K, "
        "mAP@K, mAP with 95% intervals) of visual and hybrid search against a random baseline, and the served "
        "index against exact search. Writes reports/eval_report.{json,md} and precision plots. The ablations, the "
        "learned head, face crops and pixel RMSE/SSIM are eval_study's.",
    )
    def eval_report(context: AssetExecutionContext) -> MaterializeResult:
        return _evaluate(context, settings, lake, study=False)

    @asset(
        name=STUDY_ASSET,
        deps=["faiss_index"],
        code_version=code_version(STUDY_ASSET, settings),
        group_name="evaluation",
        kinds={"python", "pytorch", "json"},
        owners=OWNERS,
        automation_condition=STUDY,
        tags={REFRESH_TAG: "study"},
        description="The study (minutes): everything eval_report measures plus the fusion ablations (per backbone, "
        "tap sets, PCA/whitening), the learned similarity head on held-out artists, full painting vs face crop, "
        f"pixel RMSE/SSIM of the top results and example plots. Runs when it is missing, when its code or an "
        f"output-shaping setting changes, at {STUDY_CRON} (UTC, automation) and on demand (Materialize); not on "
        "every new batch, so between runs it shows stale. Writes reports/eval_study.{json,md} and its plots.",
    )
    def eval_study(context: AssetExecutionContext) -> MaterializeResult:
        return _evaluate(context, settings, lake, study=True)

    return [eval_report, eval_study]
