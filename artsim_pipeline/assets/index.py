"""``pca_model`` (standardise + PCA per variant) and ``faiss_index`` (IVF-Flat / Flat, cosine).

Both read the active batches and paintings from ``tables/filtered_paintings.parquet`` (never
``catalog.duckdb``). Heavy imports (FAISS, torch via the embedding reader) happen when they run.

What search serves changes as one unit: ``pca_model`` only *stages* its fitted fusions
(``index/staging/``, named by ``index/STAGED``), which search never reads; ``faiss_index`` builds the
indexes with exactly those fusions and publishes fusions + indexes of every variant as one new
generation directory, then swaps the ``index/CURRENT`` pointer (:mod:`artsim_pipeline.core.index`).
A failure or a kill anywhere before that swap leaves the served generation untouched. With fewer
than 2 paintings nothing is fitted or published: the last good generation stays served.
Each variant's bundle is built by the recipe shared with the benchmarks, :mod:`artsim_pipeline.core.index_recipe`.
"""

import hashlib
import json
import time
from dataclasses import replace

from dagster import AssetExecutionContext, AssetsDefinition, DataVersion, MaterializeResult, MetadataValue, asset
from PIL import Image

from ..automation import COLLECTION, COLLECTION_ENTRY
from ..code_versions import code_version
from ..config import Settings
from ..core.collection import collection_digest
from ..core.fusion import block_models, fit_fusion, fusion_fingerprint, transform, with_projection
from ..core.generations import (REQUIRED_VARIANT, current_generation_id, load_staged_fusions, publish_generation,
                                  stage_fusions)
from ..core.head import load_head
from ..core.identify import CALIBRATION_FILE, load_calibration
from ..core.identify_measure import calibrate_collection
from ..core.incremental import FitRecord, decide_fit, holdout_residual
from ..core.index_recipe import NOTHING, build_index_bundle, load_served_generation, served_version
from ..core.search_loaders import load_checked_models
from ..core.storage import read_parquet
from ..deploy import tags
from ..core.lake import DataLake
from ..core.lake_reads import current_collection
from ..resources import ArtsimRuntimeResource, lake_for
from . import checks
from .common import OWNERS
from .similarity_head import similarity_head_assets

#: Part of both assets' code versions: a lake written with the old index format (``index/fusion_*.npz``,
#: ``index/<variant>/``) is rebuilt into a generation by the next run. (Its keyword stays ``layout=``: the
#: name is hashed into the code versions, so renaming it would make every lake's index stale.)
INDEX_FORMAT = "generations-1"


def index_assets(settings: Settings, embedding_assets: list[AssetsDefinition]) -> list[AssetsDefinition]:
    """``pca_model`` and ``faiss_index`` over the selected models' embeddings."""
    lake = lake_for(settings)

    pca_config = code_version("pca_model", settings, layout=INDEX_FORMAT)

    @asset(
        deps=["filtered_paintings", *embedding_assets],  # reads the catalog's Parquet and every batch's embeddings
        pool=tags.pool("pca_model"),
        code_version=pca_config,
        group_name="index",
        kinds={"scikitlearn", "numpy"},
        owners=OWNERS,
        automation_condition=COLLECTION_ENTRY,
        description="Per variant (full, face): the models' final and mid-level (ARTSIM_TAPS) features concatenated, "
        "standardised with collection statistics, balanced per block and reduced by PCA (≤ ARTSIM_PCA_DIM). "
        "Refitted on code or setting changes and when the paintings new since the last fit pass ARTSIM_REFIT_SHARE "
        "or drift past ARTSIM_REFIT_DRIFT; otherwise the served fit is kept and faiss_index only adds the new "
        "paintings. Staged for faiss_index; search only sees it once faiss_index publishes it with the index.",
    )
    def pca_model(context: AssetExecutionContext, artsim: ArtsimRuntimeResource) -> MaterializeResult:
        return _pca_model(context, settings, artsim, lake, pca_config)

    heads = similarity_head_assets(settings, pca_model)

    @asset(
        deps=[pca_model, *heads],
        pool=tags.pool("faiss_index"),
        code_version=code_version("faiss_index", settings, layout=INDEX_FORMAT, head=bool(heads)),
        group_name="index",
        kinds={"faiss"},
        owners=OWNERS,
        automation_condition=COLLECTION,
        check_specs=[checks.spec(
            checks.RECALL_AT_10, "faiss_index",
            "The new index finds at least ARTSIM_MIN_RECALL of the exact top 10 (IVF probes against exact search), "
            "measured before it is published: below it, nothing is published and search keeps the last good "
            "generation (blocking).")],
        description="FAISS inner-product index (IVF-Flat, or Flat when small) over the fused, L2-normalised "
        "vectors of each variant (the full variant through similarity_head when ARTSIM_EPOCHS is set); ids are "
        "objectids. Published with its fusion as one index generation (a folder under `index/generations`, "
        "served through `index/CURRENT`) once its recall@10 passes the check.",
    )
    def faiss_index(context: AssetExecutionContext, artsim: ArtsimRuntimeResource) -> MaterializeResult:
        return _faiss_index(context, settings, artsim, lake, heads=bool(heads))

    return [pca_model, *heads, faiss_index]


# ---------------------------------------------------------------- pca_model

def _pca_model(context, settings: Settings, artsim: ArtsimRuntimeResource, lake: DataLake,
               pca_config: str) -> MaterializeResult:
    """Decide the fit (kept or refitted), fit when refitting, stage the fusions for ``faiss_index``."""
    started = time.perf_counter()
    run_settings = artsim.apply(settings)  # the one settings object below: this run's knobs included
    collection = current_collection(lake, run_settings.models, run_settings.taps)
    metadata: dict[str, object] = {}
    counts = {variant: len(vectors) for variant, vectors in collection.items()}
    for variant, n in counts.items():
        metadata[f"{variant}_images"] = MetadataValue.int(n)
    fit, fusions = _decide(context, lake, pca_config, run_settings, collection, heads=run_settings.epochs > 0)
    if fit is not None and fit.mode == "full":
        fit, fusions = _fit_full(run_settings, collection, fit, metadata)
    for variant, fusion in fusions.items():
        explained = float(fusion.explained_variance_ratio.sum()) if fusion.explained_variance_ratio is not None else 1.0
        metadata[f"{variant}_input_dim"] = MetadataValue.int(fusion.n_features)
        metadata[f"{variant}_output_dim"] = MetadataValue.int(fusion.output_dim)
        metadata[f"{variant}_explained_variance"] = MetadataValue.float(round(explained, 4))
    if fit is not None and REQUIRED_VARIANT in fusions:
        version = _stage(lake, fit, fusions, counts, collection, metadata)
    else:  # nothing to fit: stage nothing, so the served generation is left as it is
        served, _ = served_version(lake)
        metadata["served_generation"] = served or "none"
        context.log.warning(f"{counts.get(REQUIRED_VARIANT, 0)} painting(s) with vectors: no fusion fitted; "
                            f"search keeps serving generation {served or '(none)'}")
        version = NOTHING
    context.log.info(json.dumps({k: getattr(v, "value", v) for k, v in metadata.items()}))
    return MaterializeResult(
        metadata={
            **metadata,
            "models": ", ".join(run_settings.models),
            "seconds": MetadataValue.float(round(time.perf_counter() - started, 2)),
        },
        data_version=DataVersion(version),
    )


def _decide(context, lake: DataLake, pca_config: str, run_settings: Settings, collection: dict, heads: bool):
    """(fit record, fusions to stage): the served fusions when the refresh is incremental, else {}."""
    full = collection.get(REQUIRED_VARIANT)
    if full is None or len(full) < 2:
        return None, {}
    served = _served_generation(context, lake)
    fusion = served.fusions.get(REQUIRED_VARIANT) if served is not None else None
    if fusion is not None and fusion.projection is not None:
        heads = True  # the served fit carries a learned head: a refit replaces it
    fit, _ = decide_fit(
        config=pca_config,
        served_fit=FitRecord.from_json(served.manifest.get("fit")) if served is not None else None,
        served_generation=served.id if served is not None else None,
        served_fusion=fusion,
        served_bundle=served.bundles.get(REQUIRED_VARIANT) if served is not None else None,
        blocks=full.blocks, objectids=full.objectids,
        refit_share=run_settings.refit_share, refit_drift=run_settings.refit_drift, head=heads,
    )
    if fit.mode == "incremental":
        wanted = {variant for variant, vectors in collection.items() if len(vectors) >= 2}
        if not wanted <= set(served.fusions):  # e.g. the first face crops: fit every variant afresh
            return replace(fit, mode="full", reason="new_variant", fit_id=None, since_fit=0,
                           fit_n=len(full)), {}
        return fit, {variant: served.fusions[variant] for variant in wanted}
    return fit, {}


def _fit_full(settings: Settings, collection: dict, fit, metadata: dict) -> tuple[object, dict]:
    """(fit with its held-out residual, {variant: fusion}): every variant with 2+ paintings fitted afresh."""
    fusions = {}
    for variant, vectors in collection.items():
        if len(vectors) >= 2:
            fusions[variant] = fit_fusion(vectors.blocks, n_components=settings.pca_dim)
    if REQUIRED_VARIANT in fusions:  # the drift baseline of later refreshes
        baseline = holdout_residual(collection[REQUIRED_VARIANT].blocks, settings.pca_dim)
        fit = replace(fit, fit_residual=round(baseline, 6))
        metadata["heldout_residual"] = MetadataValue.float(round(baseline, 4))
    return fit, fusions


def _stage(lake: DataLake, fit, fusions: dict, counts: dict, collection: dict, metadata: dict) -> str:
    """Stage ``fusions`` for ``faiss_index`` (named in ``metadata``); the data version of what it will index."""
    metadata.update(_fit_metadata(fit))
    stage = stage_fusions(lake, fusions, counts, fit=fit.to_json())
    metadata["staged"] = stage
    # the version is what faiss_index will index: the fusions and the vectors they apply to (not
    # how the fit was decided), so re-running on the same input keeps it and a kept fit with new
    # vectors changes it
    content = {v: [fusion_fingerprint(f), collection_digest(collection[v])] for v, f in sorted(fusions.items())}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- faiss_index

def _faiss_index(context, settings: Settings, artsim: ArtsimRuntimeResource, lake: DataLake,
                 heads: bool) -> MaterializeResult:
    """Index every variant with the staged fusions; publish them as one generation when recall@10 passes."""
    run_settings = artsim.apply(settings)  # the one settings object below: this run's knobs included
    collection = current_collection(lake, run_settings.models, run_settings.taps)
    staged = load_staged_fusions(lake)
    fit = FitRecord.from_json(staged.manifest.get("fit")) if staged is not None else None
    served = None
    if fit is not None and fit.mode == "incremental":
        if fit.base_generation == current_generation_id(lake):
            served = _served_generation(context, lake)
        else:  # another generation was published since pca_model decided: index afresh with the staged fit
            context.log.warning(f"the served generation is no longer {fit.base_generation}: the index is "
                                "rebuilt with the staged fusion instead of updated")
    metadata: dict[str, object] = {}
    parts = _index_variants(run_settings, lake, collection, staged, served, heads, metadata)

    min_recall = run_settings.min_recall
    recall = float(parts[REQUIRED_VARIANT][1].info.get("recall_at_10", 1.0)) if REQUIRED_VARIANT in parts else None
    if recall is not None:
        metadata["recall_at_10"] = MetadataValue.float(round(recall, 4))
    if recall is not None and recall < min_recall:  # not published: the served generation stays
        version = _keep_served(context, lake, metadata, f"recall@10 {recall:.3f} < ARTSIM_MIN_RECALL="
                               f"{min_recall:g}: not published", error=True)
    elif REQUIRED_VARIANT in parts:
        version = _publish(context, run_settings, lake, parts, staged, fit, served, metadata)
    elif len(collection.get(REQUIRED_VARIANT, ())) >= 2:
        raise RuntimeError(
            f"no staged {REQUIRED_VARIANT} fusion in {lake.staging_dir} for {len(collection[REQUIRED_VARIANT])} "
            "paintings; materialize pca_model first (search keeps serving the current generation)"
        )
    else:  # fewer than 2 paintings: keep serving the last good generation
        version = _keep_served(context, lake, metadata, "fewer than 2 paintings with vectors: no index built")
    published = recall is not None and recall >= min_recall
    return MaterializeResult(metadata=metadata, data_version=DataVersion(version),
                             check_results=[checks.recall_result(recall, min_recall, published)])


def _index_variants(settings: Settings, lake: DataLake, collection: dict, staged, served, heads: bool,
                    metadata: dict) -> dict:
    """``{variant: (fusion, bundle)}``: each variant with a staged fusion and 2+ paintings indexed (the served
    bundle updated when there is one of the same width), its numbers added to ``metadata``."""
    parts = {}
    for variant, vectors in collection.items():
        fusion = staged.fusions.get(variant) if staged is not None else None
        if fusion is not None and heads and variant == REQUIRED_VARIANT:
            fusion = with_projection(fusion, staged_head(lake, staged.stage).weight)
        if fusion is None or len(vectors) < 2:
            metadata[f"{variant}_size"] = MetadataValue.int(0)
            continue
        fused = transform(fusion, vectors.blocks)
        base = served.bundles.get(variant) if served is not None else None
        if base is not None and base.index.d != fusion.output_dim:
            base = None  # another width: built afresh
        # with the re-ranking's augmented vectors and what explains each match, stored with the index
        bundle, delta = build_index_bundle(fused, vectors.objectids, fusion.model_names, vectors.blocks,
                                           settings.rerank_options, base=base)
        if delta is not None:
            metadata[f"{variant}_update"] = f"+{delta.n_new} new, {delta.n_changed} changed, -{delta.removed} gone"
        metadata[f"{variant}_augmentation_s"] = bundle.info["augmentation"]["seconds"]
        metadata[f"{variant}_explanation_s"] = bundle.info["explanation"]["seconds"]
        parts[variant] = (fusion, bundle)
        for key in ("index_type", "nlist", "nprobe", "recall_at_10"):
            if key in bundle.info:
                value = bundle.info[key]
                metadata[f"{variant}_{key}"] = (MetadataValue.float(round(value, 4)) if isinstance(value, float)
                                                else value)
        metadata[f"{variant}_size"] = MetadataValue.int(len(vectors))
    return parts


def _publish(context, settings: Settings, lake: DataLake, parts: dict, staged, fit, served, metadata: dict) -> str:
    """Publish ``parts`` (with the fit record and the identification calibration) as the served generation;
    its data version."""
    extra: dict[str, object] = {"staged_fusion": staged.stage}
    if fit is not None:
        if fit.mode == "full":
            fit = replace(fit, fit_id=staged.stage)
        extra["fit"] = fit.to_json()
        metadata.update(_fit_metadata(fit))
    # identification: the collection's own simulated photos give the threshold (core/identify.py); an
    # incremental refresh keeps the fit and with it the served calibration (minutes of photos saved)
    kept = _kept_calibration(lake, fit.base_generation) if served is not None else None
    files, facts = kept or _identify_calibration(context, settings, lake, *parts[REQUIRED_VARIANT])
    metadata.update(facts)
    result = publish_generation(lake, parts, extra=extra, files=files)
    metadata["generation"] = result.generation
    metadata["previous_generation"] = result.previous or "none"
    metadata["swapped"] = result.swapped
    return result.content_hash[:16]


def _keep_served(context, lake: DataLake, metadata: dict, why: str, error: bool = False) -> str:
    """Publish nothing: the served generation stays (named in ``metadata`` and the log); its data version."""
    served_id, version = served_version(lake)
    metadata["generation"] = served_id or "none"
    metadata["swapped"] = False
    (context.log.error if error else context.log.warning)(
        f"{why}; search keeps serving generation {served_id or '(none)'}")
    return version


def _served_generation(context, lake: DataLake):
    """The served generation, or None (none yet, or unreadable: then the next fit is a full one)."""
    return load_served_generation(lake, unreadable=lambda exc: context.log.warning(
        f"the served index generation cannot be read ({exc}); fitting afresh"))


def _kept_calibration(lake: DataLake, generation: str) -> tuple[dict, dict] | None:
    """The served generation's identification calibration carried into an incremental refresh (same fit, so the
    same score scale), as ({file: bytes}, metadata); None when it has none (or a damaged one): calibrate anew."""
    calibration, _ = load_calibration(lake, generation)
    if calibration is None or not calibration.current:  # none, damaged, or made by an older method
        return None
    return {CALIBRATION_FILE: calibration.to_bytes()}, {
        "identify_calibration": f"kept from {generation} (incremental refresh: the same fit)",
        "identify_threshold": round(calibration.threshold, 4), "identify_seconds": 0.0}


def _identify_calibration(context, settings: Settings, lake: DataLake, fusion, bundle) -> tuple[dict, dict]:
    """({calibration file name: bytes} or {}, materialization metadata): the identification calibration of the
    full index (simulated photos of a sample of its paintings through the real backbones). A failure is logged
    and the generation is published without it (search then answers without a verdict, with a note)."""
    # torch (core.models) here: every step's process loads the definitions; only the calibration needs torch
    from ..core.models import resolve_device

    started = time.perf_counter()
    try:
        catalog = read_parquet(lake.filtered_paintings_parquet, columns=["objectid", "uuid"])
        uuids = {int(o): str(u) for o, u in zip(catalog["objectid"], catalog["uuid"]) if u is not None}

        def image_of(objectid: int):
            path = lake.image_path(uuids[objectid]) if objectid in uuids else None
            if path is None or not path.is_file():
                return None
            with Image.open(path) as image:
                return image.convert("RGB")

        models, precision = load_checked_models(lake, block_models(fusion.model_names), settings.weights,
                                                resolve_device(settings.device), settings.precision)
        calibration = calibrate_collection(bundle, fusion, models, precision, image_of)
    except Exception as exc:  # noqa: BLE001 - the index is served without a verdict rather than not at all
        context.log.warning(f"identification calibration failed ({type(exc).__name__}: {exc}); the generation "
                            "is published without it")
        return {}, {"identify_calibration": f"failed: {type(exc).__name__}"}
    facts = {"identify_threshold": round(calibration.threshold, 4), "identify_margin_weight": calibration.margin_weight,
             "identify_photos": int(calibration.stats["photos"]),
             "identify_recall": calibration.stats["recall"], "identify_false_rate": calibration.stats["false_rate"],
             "identify_by_geometry": calibration.stats.get("by_geometry", 0.0),
             "identify_min_inliers": float(calibration.geometry_threshold or 0),
             "identify_seconds": round(time.perf_counter() - started, 2)}
    context.log.info(f"identification calibration: {json.dumps(facts, default=str)}")
    return {CALIBRATION_FILE: calibration.to_bytes()}, facts


def _fit_metadata(fit) -> dict[str, object]:
    """The fit decision as materialization metadata (the UI shows why a refresh refitted or not)."""
    out: dict[str, object] = {"fit_mode": fit.mode, "fit_reason": fit.reason,
                              "since_fit": MetadataValue.int(int(fit.since_fit))}
    if fit.share is not None:
        out["new_share_since_fit"] = MetadataValue.float(float(fit.share))
    if fit.drift is not None:
        out["drift"] = MetadataValue.float(float(fit.drift))
    return out


def staged_head(lake: DataLake, stage: str):
    """``similarity_head``'s output, checked to be trained on the staged fusion ``stage``."""
    if not lake.similarity_head_path.is_file():
        raise RuntimeError(f"no similarity head at {lake.similarity_head_path}; materialize similarity_head first")
    head = load_head(lake.similarity_head_path)
    if head.info.get("stage") != stage:
        raise RuntimeError(f"{lake.similarity_head_path} was trained on staged fusion {head.info.get('stage')!r}, "
                           f"not the staged {stage!r}; materialize similarity_head again")
    return head
