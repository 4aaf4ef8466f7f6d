"""A killed daemon no longer leaves the lake half built (issues 32.1, 32.2), with the instance artsim writes.

A fresh lake, a real webserver + daemon over a ``DAGSTER_HOME`` holding artsim's ``dagster.yaml``
(:mod:`artsim_pipeline.instance`), ``artsim_automation`` turned on; while a batch run is STARTED the daemon's
whole process tree (its code server and run workers) is killed with SIGKILL and a new daemon started. Run
monitoring fails the orphaned runs (none stays STARTED), run retries launch them again, and the lake comes
all the way up (the collection materialized) with no manual step.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from artsim_pipeline.instance import ensure_instance_config
from artsim_pipeline_tests.dagster_processes import (SENSOR_SELECTOR, START_SENSOR, Dagster, runs_and_logs,
                                                      seven_painting_env, wait_for)
from artsim_pipeline_tests.support import REPO, materializations

pytestmark = pytest.mark.slow

COLLECTION = ["pca_model", "faiss_index", "eval_report"]
UNFINISHED = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
              DagsterRunStatus.STARTED]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def test_the_lake_comes_up_after_the_daemon_and_its_runs_are_killed(tmp_path):
    home = tmp_path / "dagster_home"
    assert ensure_instance_config(home)
    env = seven_painting_env(tmp_path, tmp_path / "lake", home)
    dagster = Dagster(env, tmp_path)
    try:
        dagster.wait_ready()
        assert dagster.gql(START_SENSOR, s=SENSOR_SELECTOR)["startSensor"]["__typename"] == "Sensor"
        with DagsterInstance.from_config(str(home)) as instance:
            def batch_run_started():
                return [r for r in instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED]))
                        if "dagster/partition" in r.tags]

            killed = wait_for(batch_run_started, 300, "a batch run to start", interval=0.5)
            daemon = dagster.procs[1]
            tree = descendants(daemon.pid)
            for pid in [daemon.pid, *tree]:  # the daemon, its code server and the run workers, at once
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            daemon.wait(timeout=30)
            dagster.procs[1] = subprocess.Popen(
                [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", "workspace.yaml"], cwd=REPO,
                env=env, stdout=dagster.logs[1], stderr=subprocess.STDOUT)

            def lake_up():
                done = all(materializations(instance, name) for name in COLLECTION)
                return done and not instance.get_runs(RunsFilter(statuses=UNFINISHED))

            wait_for(lake_up, 900, "the lake to come up after the daemon was killed", interval=5,
                     explain=lambda: f"restarted daemon's exit code: {dagster.procs[1].poll()} (None: running)\n"
                     + runs_and_logs(instance, [tmp_path / "daemon.log"], lines=80))
            for run in killed:  # failed by run monitoring (not STARTED for ever), then retried
                assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE, run.run_id
                retries = instance.get_runs(RunsFilter(tags={"dagster/parent_run_id": run.run_id}))
                partition = run.tags["dagster/partition"]
                assert retries or any(r.partition_key == partition for r in materializations(instance, "image_cache"))
            for name in ("image_cache", "embeddings_mobilenet_v2"):  # every batch (a killed step may have
                # finished before the kill, and its retry then materializes it again: once or twice, never none)
                assert sorted({r.partition_key for r in materializations(instance, name)}) == [
                    "batch-00000", "batch-00001", "batch-00002"], name
    finally:
        dagster.close()
