"""Per-batch image assets: ``image_cache`` (IIIF downloads) and ``face_crops`` (MTCNN face regions)."""

import time

import pandas as pd
from dagster import AssetExecutionContext, DataVersion, MaterializeResult, MetadataValue, asset
from dagster_duckdb import DuckDBResource

from ..core import batches, catalog
from ..core.faces import FaceDetector, detect_faces_in_files, write_faces
from ..core.image_cache import (
    ImageCacheOptions,
    ImageJob,
    cache_images,
    check_failure_share,
    invalidate_changed_images,
    summarize_status,
    write_status,
)
from ..core.models import resolve_device
from ..partitions import image_batches
from ..planning import consumed_version
from ..resources import ArtsimSettingsResource, NgaSourceResource
from .catalog import filtered_paintings
from .versions import CODE_VERSIONS, asset_config_fingerprint

USABLE = ("ok", "cached")


@asset(
    partitions_def=image_batches,
    deps=[filtered_paintings],
    code_version=CODE_VERSIONS["image_cache"],
    group_name="images",
    description="IIIF images of one batch cached under <data_lake>/images/<uuid>.jpg, with a per-image status table.",
)
def image_cache(
    context: AssetExecutionContext, artsim: ArtsimSettingsResource, nga_source: NgaSourceResource, duckdb: DuckDBResource
) -> MaterializeResult:
    batch = context.partition_key
    settings = artsim.settings
    lake = artsim.lake
    with duckdb.get_connection() as con:
        members = batches.batch_members(con, batch)
        fingerprint = batches.batch_fingerprints(con).get(batch, "")
    jobs = [ImageJob(int(r.objectid), str(r.uuid), r.iiifurl) for r in members.itertuples()]
    versions = {str(r.uuid): f"{r.iiifurl}|{r.image_modified}" for r in members.itertuples()}
    status_path = lake.image_status_path(batch)
    previous = pd.read_parquet(status_path) if status_path.is_file() else None
    changed = invalidate_changed_images(lake, previous, versions)
    options = ImageCacheOptions.from_settings(settings, mirror_images_dir=nga_source.source().mirror_images_dir)
    status = cache_images(jobs, lake, options)
    status["source_version"] = status["uuid"].astype(str).map(versions)
    write_status(status, status_path)
    with duckdb.get_connection() as con:
        catalog.register_parquet_view(con, "image_status", status_path.parent)
    summary = summarize_status(status)
    context.log.info(f"{batch}: {summary}")
    check_failure_share(status, settings.max_failure_share)
    return MaterializeResult(
        metadata={
            **{key: MetadataValue.int(summary[key]) for key in ("total", "ok", "cached", "skipped_small", "failed", "bytes")},
            "images_per_s": MetadataValue.float(round(summary["images_per_s"] or 0.0, 2)),
            "seconds": MetadataValue.float(round(summary["wall_seconds"] or 0.0, 2)),
            "failure_kinds": MetadataValue.json(summary["failure_kinds"]),
            "changed_upstream": MetadataValue.int(len(changed)),
            "needs_retry": summary["failed"] > 0,
            "status_table": MetadataValue.path(str(lake.image_status_path(batch))),
            "batch_fingerprint": fingerprint,
            "config_fingerprint": asset_config_fingerprint("image_cache", settings),
        },
        # "ok" and "cached" are the same stored image: the version must not change between them
        data_version=DataVersion(
            catalog.frame_fingerprint(
                status.assign(stored=status["status"].isin(USABLE)), ["objectid", "uuid", "stored", "bytes", "source_version"]
            )
        ),
    )


@asset(
    partitions_def=image_batches,
    deps=[image_cache],
    code_version=CODE_VERSIONS["face_crops"],
    group_name="images",
    description="MTCNN faces per image of one batch: count, probabilities, union box and crop box (Parquet).",
)
def face_crops(
    context: AssetExecutionContext, artsim: ArtsimSettingsResource, duckdb: DuckDBResource
) -> MaterializeResult:
    batch = context.partition_key
    settings = artsim.settings
    lake = artsim.lake
    started = time.perf_counter()
    status = pd.read_parquet(lake.image_status_path(batch))
    usable = status[status["status"].isin(USABLE)].reset_index(drop=True)
    paths = [lake.image_path(uuid) for uuid in usable["uuid"]]
    detector = FaceDetector(
        threshold=settings.face_threshold,
        margin=settings.face_margin,
        max_side=settings.face_max_side,
        device=resolve_device(settings.device),
    )
    faces = detect_faces_in_files(paths, detector)
    faces.insert(0, "uuid", usable["uuid"].to_numpy())
    faces.insert(0, "objectid", usable["objectid"].to_numpy())
    write_faces(faces, lake.faces_path(batch))
    with duckdb.get_connection() as con:
        catalog.register_parquet_view(con, "face_crops", lake.faces_path(batch).parent)
    seconds = time.perf_counter() - started
    with_faces = int((faces["face_count"] > 0).sum())
    return MaterializeResult(
        metadata={
            "images": MetadataValue.int(len(faces)),
            "images_with_faces": MetadataValue.int(with_faces),
            "faces": MetadataValue.int(int(faces["face_count"].sum())),
            "seconds": MetadataValue.float(round(seconds, 2)),
            "images_per_s": MetadataValue.float(round(len(faces) / seconds, 2) if seconds else 0.0),
            "parquet": MetadataValue.path(str(lake.faces_path(batch))),
            **consumed_version(context.instance, "image_cache", batch),
            "config_fingerprint": asset_config_fingerprint("face_crops", settings),
        },
        data_version=DataVersion(catalog.frame_fingerprint(faces, [c for c in faces.columns if c != "path"])),
    )
