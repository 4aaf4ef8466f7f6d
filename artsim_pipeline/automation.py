"""Jobs, schedule and sensors: refresh when NGA opendata changes, then process new or changed batches.

* ``nga_update_sensor`` (hourly) and ``nga_refresh_schedule`` (``ARTSIM_REFRESH_CRON``, daily by
  default) make the same cheap check (HTTP conditional requests / mirror file stats). When the upstream
  version differs from the last one observed, they record it as ``nga_opendata``'s data version and
  request ``catalog_refresh`` (``raw_objects`` → ``filtered_paintings``).
* ``image_batch_sensor`` registers new batch partitions and requests a run for each batch whose assets
  are stale (new batches, changed images, new code or settings), then one run for ``pca_model`` →
  ``faiss_index`` → ``eval_report`` once every batch is fresh. It uses the same
  :class:`~artsim_pipeline.planning.Planner` as ``artsim run``.

All three start stopped; turn them on in the UI (Automation).
"""

import hashlib

from dagster import (
    AddDynamicPartitionsRequest,
    AssetKey,
    AssetObservation,
    AssetSelection,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    schedule,
    sensor,
)

from .config import Settings
from .partitions import IMAGE_BATCHES
from .planning import DATA_VERSION_TAG, Planner, latest_observation_version
from .resources import ArtsimSettingsResource, NgaSourceResource

NGA_OPENDATA = AssetKey("nga_opendata")

catalog_refresh_job = define_asset_job(
    "catalog_refresh",
    selection=AssetSelection.assets("raw_objects", "filtered_paintings"),
    description="Reload the NGA CSVs into DuckDB and rebuild filtered_paintings (assigns new batches).",
)


def _upstream_check(instance, nga_source: NgaSourceResource) -> tuple[str, bool]:
    """(current upstream version, whether it differs from the last observed one)."""
    version = nga_source.source().probe_version()
    return version, version != latest_observation_version(instance, NGA_OPENDATA)


def _observation(version: str) -> AssetObservation:
    return AssetObservation(asset_key=NGA_OPENDATA, tags={DATA_VERSION_TAG: version}, metadata={"version": version})


@sensor(
    job=catalog_refresh_job,
    minimum_interval_seconds=3600,
    default_status=DefaultSensorStatus.STOPPED,
    description="Checks NGA opendata for a new version (cheap conditional requests) and refreshes the catalog.",
)
def nga_update_sensor(context: SensorEvaluationContext, nga_source: NgaSourceResource):
    version, changed = _upstream_check(context.instance, nga_source)
    if not changed:
        return SkipReason(f"NGA opendata unchanged (version {version})")
    return SensorResult(
        run_requests=[RunRequest(run_key=f"nga-{version}")], asset_events=[_observation(version)], cursor=version
    )


def build_refresh_schedule(settings: Settings):
    """The daily catalog refresh at ``ARTSIM_REFRESH_CRON`` (skips when NGA has not changed)."""

    @schedule(
        name="nga_refresh_schedule",
        job=catalog_refresh_job,
        cron_schedule=settings.refresh_cron,
        default_status=DefaultScheduleStatus.STOPPED,
        description="Refreshes the catalog on a schedule when NGA opendata changed.",
    )
    def nga_refresh_schedule(context: ScheduleEvaluationContext, nga_source: NgaSourceResource):
        version, changed = _upstream_check(context.instance, nga_source)
        if not changed:
            return SkipReason(f"NGA opendata unchanged (version {version})")
        context.instance.report_runless_asset_event(_observation(version))
        return RunRequest(run_key=f"nga-{version}")

    return nga_refresh_schedule


@sensor(
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.STOPPED,
    asset_selection=AssetSelection.all() - AssetSelection.assets("raw_objects", "filtered_paintings"),
    description="Materializes new or changed image batches, then the index and the evaluation.",
)
def image_batch_sensor(context: SensorEvaluationContext, artsim: ArtsimSettingsResource):
    planner = Planner(context.repository_def.asset_graph, artsim.settings, context.instance)
    fingerprints = planner.batch_fingerprints()
    known = set(context.instance.get_dynamic_partitions(IMAGE_BATCHES))
    new_keys = [key for key in sorted(fingerprints) if key not in known]
    partition_requests = [AddDynamicPartitionsRequest(IMAGE_BATCHES, new_keys)] if new_keys else []
    run_requests = []
    for batch in sorted(fingerprints):
        stale = planner.stale_batch_assets(batch, fingerprints) if batch in known else planner.partitioned_with_reasons()
        if stale:
            run_requests.append(
                RunRequest(
                    run_key=_run_key(batch, fingerprints[batch], stale),
                    partition_key=batch,
                    asset_selection=[key for key, _ in stale],
                )
            )
    if not run_requests and fingerprints:
        downstream: list[AssetKey] = []  # stale collection assets and everything after them
        for key in planner.order:
            if planner.is_partitioned(key) or planner.is_source(key) or not planner.depends_on_batches(key):
                continue
            after_stale = any(parent in downstream for parent in planner.graph.get(key).parent_keys)
            if after_stale or planner.stale_reason(key) is not None:
                downstream.append(key)
        if downstream:
            run_requests.append(RunRequest(run_key=_run_key("collection", "", [(k, "") for k in downstream]),
                                           asset_selection=downstream))
    if not run_requests and not partition_requests:
        return SkipReason("every batch and the index are up to date")
    return SensorResult(run_requests=run_requests, dynamic_partitions_requests=partition_requests)


def _run_key(batch: str, fingerprint: str, stale: list) -> str:
    digest = hashlib.sha256(repr([(k.to_user_string(), r) for k, r in stale]).encode()).hexdigest()[:10]
    return f"{batch}-{fingerprint}-{digest}"
