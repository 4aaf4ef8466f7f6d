"""The catalog database rule with several workers: one writer of ``catalog.duckdb``, batches never open it.

* The ``catalog`` pool (limit 1) admits one catalog step at a time across runs: while another holder
  has its slot, a catalog run waits and writes nothing; it finishes once the slot is free.
* Batch runs launched at once with the multiprocess executor (one process per step, two models in
  parallel) succeed while this test holds ``catalog.duckdb`` open for writing: DuckDB locks the file
  against every other process, so a batch step that opened it, even read-only, would fail. The file
  is unchanged afterwards and every batch has its vectors.
"""

import hashlib
import os
import threading
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from dagster import DagsterInstance

from artsim_pipeline.config import Settings
from artsim_pipeline.definitions import build_definitions
from artsim_pipeline.deploy.tags import CATALOG_POOL, POOL_LIMITS
from artsim_pipeline_tests.deploy_services import MODELS, lake_env, materialize, sqlite_home, wait_all
from artsim_pipeline_tests.support import materializations


def test_catalog_pool_admits_one_catalog_step_at_a_time(tmp_path):
    env = lake_env(tmp_path, paintings=4, batch_size=2)
    defs = build_definitions(Settings.from_env(env))
    with DagsterInstance.from_config(str(sqlite_home(tmp_path))) as instance:
        instance.event_log_storage.set_concurrency_slots(CATALOG_POOL, POOL_LIMITS[CATALOG_POOL])
        # another run (a catalog refresh elsewhere in the cluster) holds the one slot
        assert instance.event_log_storage.claim_concurrency_slot(CATALOG_POOL, "other-run", "raw_objects").is_claimed
        outcome = {}
        run = threading.Thread(target=lambda: outcome.setdefault(
            "result", defs.resolve_job_def("artsim_catalog").execute_in_process(instance=instance)))
        run.start()
        time.sleep(6)
        assert run.is_alive(), "the catalog run did not wait for the catalog pool"
        assert not materializations(instance, "raw_objects")
        assert not (tmp_path / "lake" / "catalog.duckdb").exists()
        instance.event_log_storage.free_concurrency_slots_for_run("other-run")
        run.join(timeout=120)
        assert not run.is_alive()
        assert outcome["result"].success
        assert len(materializations(instance, "filtered_paintings")) == 1
        info = instance.event_log_storage.get_concurrency_info(CATALOG_POOL)
        assert (info.slot_count, info.active_slot_count) == (1, 0)


def file_state(path: Path) -> tuple[int, str]:
    return path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_concurrent_multiprocess_batch_runs_never_open_the_catalog(tmp_path):
    env_vars = lake_env(tmp_path, paintings=6, batch_size=3)
    home = sqlite_home(tmp_path)
    settings = Settings.from_env(env_vars)
    with DagsterInstance.from_config(str(home)) as instance:
        build_definitions(settings).resolve_job_def("artsim_catalog").execute_in_process(instance=instance)
        batches = sorted(instance.get_dynamic_partitions("image_batches"))
    assert batches == ["batch-00000", "batch-00001"]
    catalog_db = tmp_path / "lake" / "catalog.duckdb"
    before = file_state(catalog_db)
    env = os.environ | env_vars | {"ARTSIM_EXECUTOR": "multiprocess", "DAGSTER_HOME": str(home),
                                   "OMP_NUM_THREADS": "1"}
    select = ["image_cache", "face_crops", *(f"embeddings_{m}" for m in MODELS)]
    writer = duckdb.connect(str(catalog_db))  # held for writing: any other process opening it fails
    try:
        logs = [tmp_path / f"{batch}.log" for batch in batches]
        procs = [materialize(select, batch, env, log) for batch, log in zip(batches, logs)]
        wait_all(procs, logs, timeout=600)
    finally:
        writer.close()
    assert file_state(catalog_db) == before

    with DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_run_records()
        batch_runs = [r for r in runs if r.dagster_run.tags.get("dagster/partition") in batches]
        assert len(batch_runs) == 2 and all(r.dagster_run.is_success for r in batch_runs)
        # the two runs were in progress at the same time
        (a_start, a_end), (b_start, b_end) = [(r.start_time, r.end_time) for r in batch_runs]
        assert a_start < b_end and b_start < a_end
        for run in batch_runs:  # each step in its own process
            events = instance.all_logs(run.dagster_run.run_id)
            assert any("multiprocess executor" in (e.message or "") for e in events), run.dagster_run.run_id
        for name in select:
            assert sorted({r.partition_key for r in materializations(instance, name)}) == batches, name
    paintings = pd.read_parquet(tmp_path / "lake" / "tables" / "filtered_paintings.parquet")
    for model in MODELS:
        vectors = pd.concat(pd.read_parquet(tmp_path / "lake" / "embeddings" / model / f"{b}.parquet") for b in batches)
        assert sorted(vectors.loc[vectors["variant"] == "full", "objectid"]) == sorted(paintings["objectid"])
