"""Catalog assets: the NGA opendata source, ``raw_objects``, ``filtered_paintings`` and ``image_batch``.

``image_batch`` is how Dagster sees batch membership: a partitioned observable asset (one partition per
image batch) whose data version is the batch's fingerprint (member objectids, IIIF URLs, NGA
``modified`` dates, sizes). ``filtered_paintings`` records a new observation of every active batch each
time it runs; only batches whose fingerprint changed become stale downstream, in the UI as in
``artsim run`` and the automation conditions.

Only these catalog assets write ``catalog.duckdb`` (DuckDB allows one writer per file); batch assets
read ``tables/filtered_paintings.parquet`` and write their own Parquet files, so any number of batches
can run at once.
"""

import time
from contextlib import contextmanager
from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetObservation,
    AssetSpec,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    ObserveResult,
    asset,
    asset_check,
    multi_observable_source_asset,
)
from dagster_duckdb import DuckDBResource

from ..code_versions import code_version
from ..config import Settings
from ..core import batches, catalog
from ..core.nga_source import prune_raw_snapshots
from ..core.temp_sweep import sweep_lake_temp_files
from ..core.storage import read_parquet
from ..partitions import IMAGE_BATCHES, image_batches
from ..resources import ArtsimRuntimeResource, NgaSourceResource, lake_for
from ..automation import CATALOG, COLLECTION_ENTRY, source_observation
from ..deploy import tags
from . import checks
from .common import OWNERS, lake_path

DATA_VERSION_TAG = "dagster/data_version"


def batch_versions(lake) -> dict[str, str]:
    """``{batch_key: fingerprint}`` of the active batches in ``tables/filtered_paintings.parquet``."""
    path = lake.filtered_paintings_parquet
    if not path.is_file():
        return {}
    paintings = read_parquet(path, columns=[*batches.FINGERPRINT_COLUMNS, "batch_key"])
    return batches.fingerprints_of(paintings)


def batch_observations(versions: dict[str, str]) -> list[AssetObservation]:
    """One ``image_batch`` observation per batch, carrying its fingerprint as the data version."""
    return [
        AssetObservation(asset_key="image_batch", partition=key, tags={DATA_VERSION_TAG: version},
                         metadata={"fingerprint": version})
        for key, version in sorted(versions.items())
    ]


def _row_count(con, table: str) -> int | None:
    """Rows of ``table``, or None when it does not exist yet (a fresh lake)."""
    exists = catalog.scalar(con, "SELECT count(*) FROM information_schema.tables WHERE table_name = ? AND "
                            "table_schema = 'main' AND table_catalog = current_database()", [table])
    return int(catalog.scalar(con, f"SELECT count(*) FROM {table}")) if exists else None


def _columns(con, table: str) -> list[str]:
    return [row[0] for row in con.execute(f"DESCRIBE {table}").fetchall()]


@contextmanager
def catalog_connection(duckdb: DuckDBResource):
    """``duckdb.get_connection()`` that also closes the connection when the step raises.

    ``DuckDBResource.get_connection`` closes only on success; a failed step (a refused refresh, a bad
    CSV) would keep ``catalog.duckdb`` open, and locked for other processes, until garbage collection.
    A new ``catalog.duckdb`` is created whole first (:func:`~artsim_pipeline.core.catalog.create_catalog_db`).
    """
    catalog.create_catalog_db(Path(duckdb.database))
    with duckdb.get_connection() as con:
        try:
            yield con
        finally:
            con.close()


def catalog_assets(settings: Settings) -> list:
    """The source, the two catalog tables, ``image_batch`` and the catalog checks for ``settings``."""
    lake = lake_for(settings)
    nga_opendata = _nga_opendata_asset(settings, lake)
    raw_objects = _raw_objects_asset(settings, lake)
    filtered_paintings = _filtered_paintings_asset(settings, lake, raw_objects)
    batch_views = _batch_views_asset(settings, lake, filtered_paintings)
    image_batch = _image_batch_asset(lake, filtered_paintings)
    return [
        nga_opendata, raw_objects, filtered_paintings, image_batch, batch_views,
        *_filtered_paintings_checks(settings, filtered_paintings),
    ]


def _nga_opendata_asset(settings: Settings, lake):
    """``nga_opendata``: the NGA opendata source, observed by conditional requests."""

    @multi_observable_source_asset(
        specs=[AssetSpec(
            "nga_opendata",
            group_name="catalog",
            kinds={"csv", "github"},
            # the source setting is its code version: changing ARTSIM_NGA_SOURCE and reloading observes it now
            code_version=code_version("nga_opendata", settings),
            automation_condition=source_observation(settings.refresh_cron),
            description="NGA opendata CSVs upstream. Observing it sends conditional requests (If-None-Match / "
            "If-Modified-Since with the validators of the last download); its data version changes when NGA "
            "publishes new files.",
        )],
    )
    def nga_opendata(nga_source: NgaSourceResource, artsim: ArtsimRuntimeResource):
        source = nga_source.source(artsim)
        yield ObserveResult(asset_key="nga_opendata",
                            data_version=DataVersion(source.probe_version(source.last_validators(lake))))

    return nga_opendata


def _raw_objects_asset(settings: Settings, lake):
    """``raw_objects``: the NGA CSVs loaded into ``catalog.duckdb``."""

    @asset(
        deps=["nga_opendata"],
        code_version=code_version("raw_objects", settings),
        pool=tags.pool("raw_objects"),
        group_name="catalog",
        kinds={"duckdb", "csv"},
        owners=OWNERS,
        automation_condition=CATALOG,
        description="The five NGA CSVs loaded into DuckDB (raw_objects, raw_published_images, ...).",
    )
    def raw_objects(
        context: AssetExecutionContext, nga_source: NgaSourceResource, duckdb: DuckDBResource,
        artsim: ArtsimRuntimeResource,
    ) -> MaterializeResult:
        started = time.perf_counter()
        lake.work_dir.mkdir(parents=True, exist_ok=True)  # the lake root, or a remote lake's catalog.duckdb folder
        source = nga_source.source(artsim)
        snapshot = source.fetch(lake)
        context.log.info(f"NGA snapshot {snapshot.version} from {source.location}")
        with catalog_connection(duckdb) as con:
            counts = catalog.load_raw_tables(con, snapshot)
        pruned = prune_raw_snapshots(lake, artsim.apply(settings).raw_keep, snapshot.version)  # after a good load
        return MaterializeResult(
            metadata={
                "source": source.location,
                "source_version": snapshot.version,
                **{f"rows_{name}": MetadataValue.int(count) for name, count in counts.items()},
                "raw_snapshots_pruned": MetadataValue.text(", ".join(pruned) or "none"),
                "seconds": MetadataValue.float(round(time.perf_counter() - started, 3)),
            },
            data_version=DataVersion(snapshot.version),
        )

    return raw_objects


def _filtered_paintings_asset(settings: Settings, lake, raw_objects):
    """``filtered_paintings`` (after ``raw_objects``) with its two blocking checks."""

    @asset(
        deps=[raw_objects],
        code_version=code_version("filtered_paintings", settings),
        pool=tags.pool("filtered_paintings"),
        group_name="catalog",
        kinds={"duckdb", "parquet"},
        owners=OWNERS,
        automation_condition=CATALOG,
        check_specs=[
            checks.spec(checks.REQUIRED_COLUMNS, "filtered_paintings",
                        "filtered_paintings has every column the batches, search and the evaluation read."),
            checks.spec(checks.NO_SUDDEN_SHRINK, "filtered_paintings",
                        "The refresh drops at most ARTSIM_MAX_SHRINK of the paintings of the last materialization "
                        "(a partial NGA download does that); otherwise the previous table is kept and nothing "
                        "downstream runs. An intended shrink passes with ARTSIM_MAX_SHRINK=1 (or max_shrink in the "
                        "launchpad's artsim resource)."),
        ],
        description="Paintings with a primary open-access IIIF image and an attribution; one SQL query in DuckDB. "
        "Assigns new paintings to image batches (they keep them) and records each batch's version on "
        "`image_batch`. Also written to `tables/filtered_paintings.parquet` with a `batch_key` column. "
        "Rows with a negative or duplicate objectid are kept out and counted (`rejected_*`, table "
        "`filtered_paintings_rejected`). A refresh that drops more than ARTSIM_MAX_SHRINK of the paintings "
        "fails the blocking check `no_sudden_shrink` and keeps the previous table.",
    )
    def filtered_paintings(context: AssetExecutionContext, duckdb: DuckDBResource, artsim: ArtsimRuntimeResource):
        return _refresh_filtered_paintings(context, duckdb, artsim, settings, lake)

    return filtered_paintings


def _refresh_filtered_paintings(context: AssetExecutionContext, duckdb: DuckDBResource,
                                artsim: ArtsimRuntimeResource, settings: Settings, lake) -> MaterializeResult:
    """Rebuild ``filtered_paintings`` (unless the shrink guard refuses), assign batches, record their versions."""
    started = time.perf_counter()
    run_settings = artsim.apply(settings)  # the one settings object below: this run's knobs included
    swept = sweep_lake_temp_files(lake)
    with catalog_connection(duckdb) as con:
        previous = _row_count(con, "filtered_paintings")
        baseline = min(previous, run_settings.limit) if previous is not None and run_settings.limit > 0 else previous
        try:
            rows = catalog.build_filtered_paintings(con, run_settings.min_side, run_settings.limit,
                                                    run_settings.max_shrink)
        except catalog.ShrinkError as refused:
            context.log.error(str(refused))
            return _refused_refresh(con, lake, refused, run_settings.max_shrink, started)
        new_batches = batches.assign_batches(con, run_settings.batch_size)
        batches.attach_batch_keys(con)
        catalog.export_parquet(con, "filtered_paintings", lake.filtered_paintings_parquet)
        summary = catalog.filtered_paintings_summary(con)
        rejected = catalog.rejected_summary(con)
        fingerprint = catalog.table_fingerprint(con, "filtered_paintings")
        columns = _columns(con, "filtered_paintings")
        register_batch_views(con, lake)
    versions = _record_batches(context, lake)
    context.log.info(f"{rows} paintings in {len(versions)} batches ({len(new_batches)} new)")
    if rejected["rejected"]:
        context.log.warning(
            "rows kept out of filtered_paintings: "
            + ", ".join(f"{key.removeprefix('rejected_')}={n}" for key, n in rejected.items() if key != "rejected" and n)
            + " (see table filtered_paintings_rejected)"
        )
    return MaterializeResult(
        metadata={
            **{key: MetadataValue.int(value) for key, value in summary.items()},
            **{key: MetadataValue.int(value) for key, value in rejected.items()},
            "previous_paintings": MetadataValue.int(int(baseline or 0)),
            "stale_temp_files_removed": MetadataValue.int(swept),
            "batches": MetadataValue.int(len(versions)),
            "new_batches": MetadataValue.text(", ".join(new_batches) or "none"),
            "parquet": lake_path(lake, lake.filtered_paintings_parquet),
            "seconds": MetadataValue.float(round(time.perf_counter() - started, 3)),
        },
        data_version=DataVersion(fingerprint),
        check_results=[checks.required_columns_result(columns),
                       checks.shrink_result(baseline, rows, run_settings.max_shrink, refused=False)],
    )


def _record_batches(context: AssetExecutionContext, lake) -> dict[str, str]:
    """Add the new batches as ``image_batch`` partitions and log one observation per active batch; the
    ``{batch_key: fingerprint}`` recorded."""
    versions = batch_versions(lake)
    known = set(context.instance.get_dynamic_partitions(IMAGE_BATCHES))
    to_add = [key for key in versions if key not in known]
    if to_add:
        context.instance.add_dynamic_partitions(IMAGE_BATCHES, to_add)
    for observation in batch_observations(versions):
        context.log_event(observation)
    return versions


def _refused_refresh(con, lake, refused: catalog.ShrinkError, max_shrink: float, started: float) -> MaterializeResult:
    """The shrink guard refused the refresh: the previous table stays (same data version, so nothing
    downstream is stale) and the blocking check fails with the numbers, which stops this run."""
    return MaterializeResult(
        metadata={
            "paintings": MetadataValue.int(int(refused.previous)),
            "offered_paintings": MetadataValue.int(int(refused.new)),
            "kept_previous_table": MetadataValue.bool(True),
            "parquet": lake_path(lake, lake.filtered_paintings_parquet),
            "seconds": MetadataValue.float(round(time.perf_counter() - started, 3)),
        },
        data_version=DataVersion(catalog.table_fingerprint(con, "filtered_paintings")),
        check_results=[checks.required_columns_result(_columns(con, "filtered_paintings")),
                       checks.shrink_result(refused.previous, refused.new, max_shrink, refused=True)],
    )


def register_batch_views(con, lake) -> list[str]:
    """(Re)create the ``image_status`` and ``face_crops`` views over the batch files that exist."""
    views = (("image_status", lake.image_status_dir), ("face_crops", lake.faces_dir))
    return [view for view, directory in views if catalog.register_parquet_view(con, view, directory)]


def _batch_views_asset(settings: Settings, lake, filtered_paintings):
    """``batch_views``: the catalog's views over the batch files (after the batches)."""

    @asset(
        deps=[filtered_paintings, "image_cache", "face_crops"],  # the views live in the catalog it creates
        code_version=code_version("batch_views", settings),
        pool=tags.pool("batch_views"),
        group_name="catalog",
        kinds={"duckdb"},
        owners=OWNERS,
        automation_condition=COLLECTION_ENTRY,
        description="DuckDB views `image_status` (per image: status, reason, bytes, seconds) and `face_crops` in "
        "`catalog.duckdb` over every batch's Parquet files. Batch steps never open `catalog.duckdb` (one writer "
        "per file), so the views are created here, after the batches, under the catalog pool.",
    )
    def batch_views(duckdb: DuckDBResource) -> MaterializeResult:
        with catalog_connection(duckdb) as con:
            created = register_batch_views(con, lake)
        return MaterializeResult(metadata={"views": MetadataValue.text(", ".join(created) or "none yet"),
                                           "view_count": MetadataValue.int(len(created))})

    return batch_views


def _image_batch_asset(lake, filtered_paintings):
    """``image_batch``: the observable batch membership (one partition per batch)."""

    @multi_observable_source_asset(
        specs=[
            AssetSpec(
                "image_batch",
                partitions_def=image_batches,
                deps=[filtered_paintings],
                group_name="catalog",
                kinds={"parquet"},
                description="The paintings of one image batch. Its data version is the batch fingerprint "
                "(objectids, IIIF URLs, NGA modified dates, sizes), recorded by `filtered_paintings`; "
                "observing it recomputes the fingerprints from `tables/filtered_paintings.parquet`.",
            )
        ],
        partitions_def=image_batches,
    )
    def image_batch(context):
        for observation in batch_observations(batch_versions(lake)):
            context.log_event(observation)

    return image_batch


def _filtered_paintings_checks(settings: Settings, filtered_paintings) -> list:
    """The data checks of ``filtered_paintings`` (unique objectids, IIIF URLs, image sizes)."""

    @asset_check(asset=filtered_paintings, description="objectid is unique")
    def filtered_paintings_objectid_unique(duckdb: DuckDBResource) -> AssetCheckResult:
        with duckdb.get_connection() as con:
            duplicates = catalog.scalar(con, "SELECT count(*) - count(DISTINCT objectid) FROM filtered_paintings")
        return AssetCheckResult(passed=duplicates == 0, metadata={"duplicate_objectids": int(duplicates)})

    @asset_check(asset=filtered_paintings, description="every painting has a IIIF URL")
    def filtered_paintings_iiif_present(duckdb: DuckDBResource) -> AssetCheckResult:
        with duckdb.get_connection() as con:
            missing = catalog.scalar(
                con, "SELECT count(*) FROM filtered_paintings WHERE nullif(trim(iiifurl), '') IS NULL"
            )
        return AssetCheckResult(passed=missing == 0, metadata={"missing_iiif_url": int(missing)})

    @asset_check(asset=filtered_paintings, description="both image sides are at least ARTSIM_MIN_SIDE")
    def filtered_paintings_sizes_respected(duckdb: DuckDBResource) -> AssetCheckResult:
        with duckdb.get_connection() as con:
            too_small = catalog.scalar(
                con, "SELECT count(*) FROM filtered_paintings WHERE least(width, height) < ?", [settings.min_side]
            )
        return AssetCheckResult(
            passed=too_small == 0, metadata={"too_small": int(too_small), "min_side": settings.min_side}
        )

    return [filtered_paintings_objectid_unique, filtered_paintings_iiif_present, filtered_paintings_sizes_respected]
