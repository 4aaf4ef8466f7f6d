"""Catalog assets: the NGA opendata source, ``raw_objects`` and ``filtered_paintings`` (+ checks)."""


import time

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
    observable_source_asset,
)
from dagster_duckdb import DuckDBResource

from ..core import batches, catalog
from ..partitions import IMAGE_BATCHES
from ..resources import ArtsimSettingsResource, NgaSourceResource
from .versions import CODE_VERSIONS, config_fingerprint


@observable_source_asset(
    description="NGA opendata CSVs upstream; its data version changes when NGA publishes new files.",
    group_name="catalog",
)
def nga_opendata(nga_source: NgaSourceResource) -> DataVersion:
    """Cheap update check: HTTP conditional requests / mirror file stats."""
    return DataVersion(nga_source.source().probe_version())


@asset(
    deps=[nga_opendata],
    code_version=CODE_VERSIONS["raw_objects"],
    group_name="catalog",
    description="The five NGA CSVs loaded into DuckDB (raw_objects, raw_published_images, ...).",
)
def raw_objects(
    context: AssetExecutionContext, artsim: ArtsimSettingsResource, nga_source: NgaSourceResource, duckdb: DuckDBResource
) -> MaterializeResult:
    started = time.perf_counter()
    lake = artsim.lake
    lake.root.mkdir(parents=True, exist_ok=True)
    source = nga_source.source()
    snapshot = source.fetch(lake)
    context.log.info(f"NGA snapshot {snapshot.version} from {source.location}")
    with duckdb.get_connection() as con:
        counts = catalog.load_raw_tables(con, snapshot)
    return MaterializeResult(
        metadata={
            "source": source.location,
            "source_version": snapshot.version,
            **{f"rows_{name}": MetadataValue.int(count) for name, count in counts.items()},
            "seconds": MetadataValue.float(round(time.perf_counter() - started, 3)),
            "config_fingerprint": config_fingerprint("raw_objects", artsim.settings),
        },
        data_version=DataVersion(snapshot.version),
    )


@asset(
    deps=[raw_objects],
    code_version=CODE_VERSIONS["filtered_paintings"],
    group_name="catalog",
    description="Paintings with a primary open-access IIIF image and an attribution; one SQL query in DuckDB. "
    "Assigns new paintings to image batches.",
)
def filtered_paintings(
    context: AssetExecutionContext, artsim: ArtsimSettingsResource, duckdb: DuckDBResource
) -> MaterializeResult:
    started = time.perf_counter()
    settings = artsim.settings
    lake = artsim.lake
    with duckdb.get_connection() as con:
        rows = catalog.build_filtered_paintings(con, settings.min_side, settings.limit)
        new_batches = batches.assign_batches(con, settings.batch_size)
        active = batches.active_batches(con)
        catalog.export_parquet(con, "filtered_paintings", lake.filtered_paintings_parquet)
        summary = catalog.filtered_paintings_summary(con)
        fingerprint = catalog.table_fingerprint(con, "filtered_paintings")
    known = set(context.instance.get_dynamic_partitions(IMAGE_BATCHES))
    to_add = [key for key in active if key not in known]
    if to_add:
        context.instance.add_dynamic_partitions(IMAGE_BATCHES, to_add)
    context.log.info(f"{rows} paintings in {len(active)} batches ({len(new_batches)} new)")
    return MaterializeResult(
        metadata={
            **{key: MetadataValue.int(value) for key, value in summary.items()},
            "batches": MetadataValue.int(len(active)),
            "new_batches": MetadataValue.text(", ".join(new_batches) or "none"),
            "min_side": settings.min_side,
            "limit": settings.limit,
            "parquet": MetadataValue.path(str(lake.filtered_paintings_parquet)),
            "seconds": MetadataValue.float(round(time.perf_counter() - started, 3)),
            "config_fingerprint": config_fingerprint("filtered_paintings", settings),
        },
        data_version=DataVersion(fingerprint),
    )


@asset_check(asset=filtered_paintings, description="objectid is unique")
def filtered_paintings_objectid_unique(duckdb: DuckDBResource) -> AssetCheckResult:
    with duckdb.get_connection() as con:
        duplicates = catalog.scalar(con, "SELECT count(*) - count(DISTINCT objectid) FROM filtered_paintings")
    return AssetCheckResult(passed=duplicates == 0, metadata={"duplicate_objectids": int(duplicates)})


@asset_check(asset=filtered_paintings, description="every painting has a IIIF URL")
def filtered_paintings_iiif_present(duckdb: DuckDBResource) -> AssetCheckResult:
    with duckdb.get_connection() as con:
        missing = catalog.scalar(con, "SELECT count(*) FROM filtered_paintings WHERE nullif(trim(iiifurl), '') IS NULL")
    return AssetCheckResult(passed=missing == 0, metadata={"missing_iiif_url": int(missing)})


@asset_check(asset=filtered_paintings, description="both image sides are at least ARTSIM_MIN_SIDE")
def filtered_paintings_sizes_respected(artsim: ArtsimSettingsResource, duckdb: DuckDBResource) -> AssetCheckResult:
    with duckdb.get_connection() as con:
        too_small = catalog.scalar(
            con, "SELECT count(*) FROM filtered_paintings WHERE least(width, height) < ?", [artsim.min_side]
        )
    return AssetCheckResult(passed=too_small == 0, metadata={"too_small": int(too_small), "min_side": artsim.min_side})
