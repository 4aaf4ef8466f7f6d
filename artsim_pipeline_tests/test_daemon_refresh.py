"""The UI's truth over a real ``dagster-webserver`` + ``dagster-daemon`` (QueuedRunCoordinator, 4 runs at once).

v1 is fully materialized; the automation is turned on; v2 changes one image of batch 0 and adds a batch; the
catalog assets are re-materialized. Then GraphQL reports exactly batch 0 stale and the new batch missing,
the daemon materializes only those two batches and then the collection assets, and a GraphQL backfill of
every batch finishes green (batch assets never open ``catalog.duckdb``, so concurrent runs cannot collide).
"""

import os

import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, DagsterRunStatus, RunsFilter

from artsim_pipeline.config import Settings
from artsim_pipeline.definitions import build_definitions
from artsim_pipeline.runner import PipelineRunner
from artsim_pipeline_tests.nga_fixtures import Painting, write_mirror
from artsim_pipeline_tests.dagster_processes import (BACKFILL, BACKFILL_STATUS, INSTANCE_YAML, SENSOR_SELECTOR,
                                                      SENSOR_STATE, STALE, START_SENSOR, STOP_SENSOR, Dagster,
                                                      runs_and_logs, wait_for)

pytestmark = pytest.mark.slow

BATCH_ASSETS = ["image_cache", "face_crops", "embeddings_mobilenet_v2"]


def materialized_since(instance, name: str, storage_id: int) -> list:
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(name), after_storage_id=storage_id), limit=1000).records
    return sorted({r.partition_key for r in records}, key=str)


def test_ui_daemon_and_artsim_run_agree_per_batch(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    v1 = [Painting(i, width=96, height=80, artist=f"Painter {i % 2}") for i in range(1, 10)]
    mirror = write_mirror(tmp_path / "mirror", v1)
    env_vars = {"ARTSIM_NGA_SOURCE": str(mirror), "ARTSIM_DATA_LAKE": str(tmp_path / "lake"), "ARTSIM_LIMIT": "0",
                "ARTSIM_MIN_SIDE": "64", "ARTSIM_BATCH_SIZE": "3", "ARTSIM_MODELS": "mobilenet_v2",
                "ARTSIM_WEIGHTS": "random", "ARTSIM_DEVICE": "cpu", "ARTSIM_PCA_DIM": "4"}
    env = os.environ | env_vars | {"DAGSTER_HOME": str(home), "OMP_NUM_THREADS": "1"}
    settings = Settings.from_env(env_vars)
    defs = build_definitions(settings)
    with DagsterInstance.from_config(str(home)) as instance:
        PipelineRunner(defs, settings, instance, echo=lambda _: None).run()  # v1, fully materialized
        dagster = Dagster(env, tmp_path)
        try:
            dagster.wait_ready()
            selector = SENSOR_SELECTOR
            started = dagster.gql(START_SENSOR, s=selector)["startSensor"]
            assert started["__typename"] == "Sensor", started
            wait_for(lambda: dagster.gql(SENSOR_STATE, s=selector)["sensorOrError"]["sensorState"]["ticks"],
                     120, "the automation's first tick")
            wait_for(lambda: not instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.QUEUED, DagsterRunStatus.STARTED,
                                                                        DagsterRunStatus.STARTING])), 180, "first-tick runs")
            before = instance.event_log_storage.get_maximum_record_id()

            # v2: painting 2's image changed (batch 0); paintings 10 and 11 are new (batch 3)
            v2 = [Painting(2, width=96, height=80, artist="Painter 0", modified="2025-06-01")]
            v2 += [p for p in v1 if p.objectid != 2] + [Painting(i, width=96, height=80) for i in (10, 11)]
            write_mirror(mirror, v2)
            defs.resolve_job_def("artsim_catalog").execute_in_process(instance=instance)
            partitions = ["batch-00000", "batch-00001", "batch-00002", "batch-00003"]
            node = dagster.gql(STALE, partitions=partitions)["assetNodes"][0]
            assert dict(zip(partitions, node["staleStatusByPartition"])) == {
                "batch-00000": "STALE", "batch-00001": "FRESH", "batch-00002": "FRESH", "batch-00003": "MISSING"}

            # the daemon runs exactly the changed and the new batch, then the collection assets
            wait_for(lambda: materialized_since(instance, "eval_report", before), 420, "the automation's eval_report",
                     explain=lambda: runs_and_logs(instance, [tmp_path / "daemon.log"], lines=60))
            for name in BATCH_ASSETS:
                assert materialized_since(instance, name, before) == ["batch-00000", "batch-00003"], name
            for name in ("pca_model", "faiss_index"):
                assert materialized_since(instance, name, before) == [None], name
            state_id = dagster.gql(SENSOR_STATE, s=selector)["sensorOrError"]["sensorState"]["id"]
            dagster.gql(STOP_SENSOR, id=state_id)
            assert not instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.FAILURE]))

            # a UI backfill of every batch: concurrent runs, green, no DuckDB lock errors
            params = {"partitionNames": partitions, "assetSelection": [{"path": [n]} for n in BATCH_ASSETS]}
            launched = dagster.gql(BACKFILL, p=params)["launchPartitionBackfill"]
            assert launched["__typename"] == "LaunchBackfillSuccess", launched
            status = wait_for(
                lambda: (s := dagster.gql(BACKFILL_STATUS, id=launched["backfillId"])["partitionBackfillOrError"]["status"])
                not in ("REQUESTED", "IN_PROGRESS") and s, 420, "the backfill")
            assert status == "COMPLETED_SUCCESS", status
            failed = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.FAILURE]))
            assert not failed, [r.run_id for r in failed]
        finally:
            dagster.close()
    logs = (tmp_path / "daemon.log").read_bytes().decode(errors="replace")
    assert "Could not set lock" not in logs and "Conflicting lock" not in logs
