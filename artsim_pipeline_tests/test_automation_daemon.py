"""The README's one action, as a user takes it: a fresh lake, an empty ``DAGSTER_HOME``, a real
``dagster-webserver`` + ``dagster-daemon``, and only ``artsim_automation`` turned on (the Automation page's
``startSensor`` mutation).

The automation must observe NGA, materialize the catalog, every batch, then the collection, with no
failed run; the collection must not start before the catalog and every batch exist. Every run it launches
carries the ``artsim/launched_by=artsim_automation`` tag, and the catalog's views over the batch files
exist at the end.
"""

import time

import duckdb
import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

from artsim_pipeline.automation import AUTOMATION_RUN_TAGS
from artsim_pipeline_tests.dagster_processes import (INSTANCE_YAML, SENSOR_SELECTOR, SENSOR_STATE, START_SENSOR,
                                                      Dagster, runs_and_logs, seven_painting_env, wait_for)
from artsim_pipeline_tests.support import materializations

pytestmark = pytest.mark.slow

BATCHES = ["batch-00000", "batch-00001", "batch-00002"]
BATCH_ASSETS = ["image_cache", "face_crops", "embeddings_mobilenet_v2"]
COLLECTION = ["batch_views", "pca_model", "faiss_index", "eval_report", "eval_study", "collection_map"]
SENSORS = """query ($r: RepositorySelector!) { sensorsOrError(repositorySelector: $r) {
  ... on Sensors { results { name } } } }"""
UNFINISHED = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
              DagsterRunStatus.STARTED]


def test_turning_on_the_automation_brings_a_fresh_lake_all_the_way_up(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    lake = tmp_path / "lake"  # does not exist yet
    env = seven_painting_env(tmp_path, lake, home)
    dagster = Dagster(env, tmp_path)
    try:
        dagster.wait_ready()
        repository = {key: SENSOR_SELECTOR[key] for key in ("repositoryName", "repositoryLocationName")}
        sensors = dagster.gql(SENSORS, r=repository)["sensorsOrError"]["results"]
        # one sensor covers every asset, the source included: no default sensor to find and turn on as well
        # (artsim_run_health, on by default, only fails runs whose worker is gone: it requests nothing)
        assert sorted(s["name"] for s in sensors) == ["artsim_automation", "artsim_run_health"], sensors

        started_at = time.monotonic()
        started = dagster.gql(START_SENSOR, s=SENSOR_SELECTOR)["startSensor"]
        assert started["__typename"] == "Sensor", started
        with DagsterInstance.from_config(str(home)) as instance:
            def failed_runs():
                return instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.FAILURE]))

            def settled():
                assert not failed_runs(), [(r.run_id, r.asset_selection) for r in failed_runs()]
                done = all(materializations(instance, name) for name in COLLECTION)
                return done and not instance.get_runs(RunsFilter(statuses=UNFINISHED))

            wait_for(settled, 600, "the automation to bring the lake up",
                     explain=lambda: runs_and_logs(instance, [tmp_path / "daemon.log"], lines=60))
            seconds = time.monotonic() - started_at
            assert dagster.gql(SENSOR_STATE, s=SENSOR_SELECTOR)["sensorOrError"]["sensorState"]["status"] == "RUNNING"

            observed = instance.fetch_observations(AssetKey("nga_opendata"), limit=10).records
            assert observed, "nga_opendata was never observed"
            for name in ("raw_objects", "filtered_paintings"):
                assert len(materializations(instance, name)) == 1, name
            batch_ids, batch_done = [], 0.0
            for name in BATCH_ASSETS:
                records = materializations(instance, name)
                assert sorted(r.partition_key for r in records) == BATCHES, name
                batch_ids += [r.storage_id for r in records]
                batch_done = max(batch_done, *(r.timestamp for r in records))
            catalog_id = materializations(instance, "filtered_paintings")[0].storage_id
            assert min(batch_ids) > catalog_id  # batches after the catalog
            for name in COLLECTION:
                records = materializations(instance, name)
                assert len(records) == 1, (name, len(records))  # once, after every batch
                assert records[0].storage_id > max(batch_ids), name

            runs = instance.get_runs()
            assert runs and not failed_runs()
            for run in runs:
                assert run.tags.get("artsim/launched_by") == AUTOMATION_RUN_TAGS["artsim/launched_by"], run.tags
            # the collection ran in one run, which started only after every batch had finished
            collection_runs = {r.run_id for r in runs if AssetKey("pca_model") in (r.asset_selection or ())}
            assert len(collection_runs) == 1
            for name in ("faiss_index", "eval_report", "eval_study", "collection_map"):
                assert materializations(instance, name)[0].run_id in collection_runs, name
            starts = instance.get_records_for_run(next(iter(collection_runs)), of_type=DagsterEventType.RUN_START)
            assert starts.records[0].timestamp > batch_done  # (storage ids are per run on SQLite)
    finally:
        dagster.close()

    with duckdb.connect(str(lake / "catalog.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM image_status").fetchone()[0] == 7
        assert con.execute("SELECT count(*) FROM face_crops").fetchone()[0] == 7
    print(f"fresh lake up from the automation in {seconds:.0f} s")
