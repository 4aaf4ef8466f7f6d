"""Per-batch image assets: ``image_cache`` (IIIF downloads) and ``face_crops`` (MTCNN face regions).

Both read the batch's paintings from ``tables/filtered_paintings.parquet`` and write only their own
per-batch Parquet files (never ``catalog.duckdb``), so several batches can run at once.
Torch is imported inside ``face_crops`` only: steps that need no model start fast.
"""

import time
from pathlib import Path

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
)

from ..automation import BATCH_ENTRY, batch_step, retry_failed_images
from ..code_versions import code_version
from ..config import Settings
from ..core import catalog
from ..core.lake_reads import catalog_paintings, usable_images
from ..core.storage import read_parquet
from ..core.image_cache import ImageCacheOptions, ImageJob, cache_images, invalidate_changed_images
from ..core.image_status import USABLE, BatchFailedError, check_failure_share, summarize_status, write_status
from ..partitions import image_batches
from ..resources import ArtsimRuntimeResource, NgaSourceResource, lake_for
from ..deploy import tags
from . import checks
from .common import OWNERS, lake_path, progress_logger, share_cores

NO_FAILED_IMAGES = "no_failed_images"


def batch_paintings(lake, batch: str) -> pd.DataFrame:
    """The paintings of ``batch`` (ordered by objectid) from ``tables/filtered_paintings.parquet``."""
    return catalog_paintings(lake, batch=batch)


def image_assets(settings: Settings) -> list:
    """``image_cache`` and ``face_crops`` for ``settings``."""
    lake = lake_for(settings)
    image_cache = _image_cache_asset(settings, lake)
    face_crops = _face_crops_asset(settings, lake, image_cache)
    return [image_cache, face_crops]


def _image_cache_asset(settings: Settings, lake):
    """``image_cache`` (per batch) with its two checks."""

    @asset(
        partitions_def=image_batches,
        deps=["image_batch"],
        code_version=code_version("image_cache", settings),
        pool=tags.pool("image_cache"), op_tags=tags.op_tags("image_cache"),
        group_name="images",
        kinds={"parquet", "jpeg"},
        owners=OWNERS,
        automation_condition=(BATCH_ENTRY | retry_failed_images(settings.refresh_cron)).with_label(
            "new or changed batch, new code, or retry of failed images"),
        check_specs=[AssetCheckSpec(
            NO_FAILED_IMAGES, asset="image_cache", partitions_def=image_batches,
            description="Every image of the batch is cached or deliberately skipped (too small); failed "
            "downloads are retried by the next run (or the automation at ARTSIM_REFRESH_CRON).",
        ), checks.spec(
            checks.FAILURE_SHARE, "image_cache", partitions_def=image_batches,
            description="At most ARTSIM_MAX_FAILURE_SHARE of the batch's images failed; above it the batch's faces "
            "and embeddings are not redone (they keep their last good files) and the other batches and the "
            "collection go on without it (blocking).",
        )],
        description="IIIF images of one batch cached under `images/` in the lake (one JPEG per image uuid), with a "
        "per-image status table (`image_status/`, one Parquet file per batch).",
    )
    def image_cache(
        context: AssetExecutionContext, artsim: ArtsimRuntimeResource, nga_source: NgaSourceResource
    ) -> MaterializeResult:
        return _cache_batch(context, artsim, nga_source, settings, lake)

    return image_cache


def _cache_batch(context: AssetExecutionContext, artsim: ArtsimRuntimeResource, nga_source: NgaSourceResource,
                 settings: Settings, lake) -> MaterializeResult:
    """Download (or keep) the batch's images, write its status table; the result with both checks."""
    batch = context.partition_key
    run_settings = artsim.apply(settings)
    members = batch_paintings(lake, batch)
    jobs = [ImageJob(int(r.objectid), str(r.uuid), r.iiifurl) for r in members.itertuples()]
    versions = {str(r.uuid): f"{r.iiifurl}|{r.image_modified}" for r in members.itertuples()}
    status_path = lake.image_status_path(batch)
    previous = read_parquet(status_path) if status_path.is_file() else None
    changed = invalidate_changed_images(lake, previous, versions)
    options = ImageCacheOptions.from_settings(run_settings, mirror_images_dir=nga_source.source(artsim).mirror_images_dir)
    status = cache_images(jobs, lake, options)
    status["source_version"] = status["uuid"].astype(str).map(versions)
    write_status(status, status_path)
    summary = summarize_status(status)
    context.log.info(f"{batch}: {summary}")
    try:  # over the limit: the blocking check fails (the batch's faces and embeddings keep their last good files)
        check_failure_share(status, run_settings.max_failure_share)
        too_many = None
    except BatchFailedError as exc:
        too_many = str(exc)
        context.log.error(f"{batch}: {too_many}")
    return _image_cache_result(lake, status, summary, changed, status_path, run_settings.max_failure_share, too_many)


def _image_cache_result(lake, status: pd.DataFrame, summary: dict, changed, status_path, max_failure_share: float,
                        too_many: str | None) -> MaterializeResult:
    """``image_cache``'s materialization: its numbers, both check results (``too_many``: why the failure share
    check fails, or None) and the batch's data version."""
    failed = status[status["status"] == "failed"]
    return MaterializeResult(
        metadata={
            **{key: MetadataValue.int(summary[key]) for key in ("total", "ok", "cached", "skipped_small", "failed", "bytes")},
            "images_per_s": MetadataValue.float(round(summary["images_per_s"] or 0.0, 2)),
            "seconds": MetadataValue.float(round(summary["wall_seconds"] or 0.0, 2)),
            "failure_kinds": MetadataValue.json(summary["failure_kinds"]),
            "changed_upstream": MetadataValue.int(len(changed)),
            "failure_share": MetadataValue.float(round(len(failed) / len(status), 4) if len(status) else 0.0),
            "status_table": lake_path(lake, status_path),
        },
        check_results=[AssetCheckResult(
            check_name=NO_FAILED_IMAGES,
            passed=failed.empty,
            severity=AssetCheckSeverity.WARN,
            metadata={
                "failed": MetadataValue.int(len(failed)),
                "failed_objectids": MetadataValue.text(", ".join(map(str, failed["objectid"].head(50))) or "none"),
            },
        ), checks.failure_share_result(len(failed), len(status), max_failure_share, too_many)],
        # "ok" and "cached" are the same stored image: the version must not change between them
        data_version=DataVersion(
            catalog.frame_fingerprint(
                status.assign(stored=status["status"].isin(USABLE)), ["objectid", "uuid", "stored", "bytes", "source_version"]
            )
        ),
    )


def _face_crops_asset(settings: Settings, lake, image_cache):
    """``face_crops`` (per batch, after ``image_cache``)."""

    @asset(
        partitions_def=image_batches,
        deps=[image_cache],
        code_version=code_version("face_crops", settings),
        group_name="images",
        kinds={"pytorch", "parquet"},
        owners=OWNERS,
        automation_condition=batch_step(),
        description="MTCNN faces per image of one batch: count, probabilities, union box and crop box "
        "(`faces/`, one Parquet file per batch).",
    )
    def face_crops(context: AssetExecutionContext, artsim: ArtsimRuntimeResource) -> MaterializeResult:
        return _detect_batch_faces(context, artsim, settings, lake)

    return face_crops


def _detect_batch_faces(context: AssetExecutionContext, artsim: ArtsimRuntimeResource, settings: Settings,
                        lake) -> MaterializeResult:
    """MTCNN over the batch's usable images; the faces table written, its numbers and data version."""
    # torch (core.faces, core.models) here: every step's process loads the definitions; only face_crops needs torch
    from ..core.faces import FaceDetector, detect_faces_in_files, write_faces
    from ..core.models import resolve_device

    batch = context.partition_key
    run_settings = artsim.apply(settings)  # the one settings object below: this run's knobs included
    started = time.perf_counter()
    usable = usable_images(lake, batch)
    paths = [Path(p) for p in usable["path"]]
    threads = share_cores(context, run_settings.executor)
    detector = FaceDetector(
        threshold=run_settings.face_threshold,
        margin=run_settings.face_margin,
        max_side=run_settings.face_max_side,
        device=resolve_device(run_settings.device),
        num_threads=threads,
    )
    faces = detect_faces_in_files(paths, detector, progress=progress_logger(context, batch))
    faces.insert(0, "uuid", usable["uuid"].to_numpy())
    faces.insert(0, "objectid", usable["objectid"].to_numpy())
    write_faces(faces, lake.faces_path(batch))
    seconds = time.perf_counter() - started
    with_faces = int((faces["face_count"] > 0).sum())
    return MaterializeResult(
        metadata={
            "images": MetadataValue.int(len(faces)),
            "images_with_faces": MetadataValue.int(with_faces),
            "faces": MetadataValue.int(int(faces["face_count"].sum())),
            "seconds": MetadataValue.float(round(seconds, 2)),
            "images_per_s": MetadataValue.float(round(len(faces) / seconds, 2) if seconds else 0.0),
            "torch_threads": MetadataValue.int(threads),
            "parquet": lake_path(lake, lake.faces_path(batch)),
        },
        data_version=DataVersion(catalog.frame_fingerprint(faces, [c for c in faces.columns if c != "path"])),
    )
