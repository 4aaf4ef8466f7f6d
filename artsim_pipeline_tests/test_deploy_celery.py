"""The Celery profile for real: redis on 127.0.0.1, two ``dagster-celery`` workers, two batches at once.

The workers are started the way the README says (``dagster-celery worker start`` with
``artsim_pipeline/deploy/celery-worker.yaml``, concurrency 1, queues ``dagster,gpu``: one comma-separated
``-q``, as Celery takes only the last of several ``-Q``) over one shared Dagster instance (the deploy
``dagster.yaml`` on a real PostgreSQL server when one is installed), with the pool limits of
``deploy/tags.py``; two batch runs with ``ARTSIM_EXECUTOR=celery`` send their steps through the broker.
Both batches are materialized, the embedding steps went through the ``gpu`` queue one at a time (the
``gpu`` pool), and steps ran on both workers. Skips when ``redis-server`` is not installed.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import DagsterInstance

from artsim_pipeline.config import Settings
from artsim_pipeline.definitions import build_definitions
from artsim_pipeline.deploy.tags import POOL_LIMITS
from artsim_pipeline_tests.deploy_services import (
    DEPLOY, REPO, PostgresServer, RedisServer, deploy_home, lake_env, materialize, postgres_bin, redis_bin,
    sqlite_home, wait_all,
)
from artsim_pipeline_tests.support import materializations

pytestmark = pytest.mark.slow

BATCH = ["image_cache", "face_crops", "embeddings_mobilenet_v2"]
SUBMITTED = re.compile(r'Submitting celery task for step "(?P<step>[^"]+)" to queue "(?P<queue>[^"]+)"')


class CeleryWorkers:
    """``dagster-celery worker start`` processes (each in its own process group); stopped on exit."""

    def __init__(self, names: list[str], env: dict, log_dir: Path) -> None:
        cli = Path(sys.executable).with_name("dagster-celery")
        self.logs = [open(log_dir / f"worker-{name}.log", "wb") for name in names]
        self.procs = [
            subprocess.Popen([str(cli), "worker", "start", "-A", "dagster_celery.app", "-y",
                              str(DEPLOY / "celery-worker.yaml"), "-n", name, "-q", "dagster,gpu",
                              "--", "--concurrency=1"],
                             cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            for name, log in zip(names, self.logs)
        ]
        self.log_paths = [log_dir / f"worker-{name}.log" for name in names]

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc, path in zip(self.procs, self.log_paths):
                assert proc.poll() is None, f"{path.name} exited:\n{path.read_text(errors='replace')[-2000:]}"
            if all(" ready." in path.read_text(errors="replace") for path in self.log_paths):
                return
            time.sleep(0.5)
        raise AssertionError("celery workers did not become ready")

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for log in self.logs:
            log.close()


def celery_steps(instance, run_id: str) -> tuple[dict[str, str], dict[str, str]]:
    """step key -> the queue it was sent to, and -> the Celery worker (hostname) that ran it (engine events)."""
    queues, workers = {}, {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or not event.is_engine_event:
            continue
        sent = SUBMITTED.match(event.message or "")
        if sent:
            queues[sent["step"]] = sent["queue"]
        metadata = event.engine_event_data.metadata if event.engine_event_data else {}
        if "Celery worker" in metadata:
            workers[event.step_key] = metadata["Celery worker"].value
    return queues, workers


def step_interval(instance, run_id: str, step: str) -> tuple[float, float]:
    """When ``step`` started and succeeded in ``run_id``."""
    times = {r.dagster_event.event_type_value: r.timestamp for r in instance.all_logs(run_id)
             if r.dagster_event is not None and r.dagster_event.step_key == step}
    return times["STEP_START"], times["STEP_SUCCESS"]


@pytest.fixture
def shared_instance(tmp_path, monkeypatch):
    """``(DAGSTER_HOME, its environment)`` shared by the runs and the workers: the deploy profile on a real
    PostgreSQL server when one is installed, else SQLite with the same pools; pool limits from the table."""
    bindir = postgres_bin()
    if bindir is None:
        home = sqlite_home(tmp_path)
        yield home, {}
        return
    with PostgresServer(bindir) as server:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        yield deploy_home(tmp_path / "dagster_home"), server.env()


def test_two_batches_on_two_celery_workers(tmp_path, shared_instance):
    if redis_bin() is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server); no Celery broker")
    home, instance_env = shared_instance
    env_vars = lake_env(tmp_path, paintings=6, batch_size=3, models=("mobilenet_v2",))
    with DagsterInstance.from_config(str(home)) as instance:
        for pool, limit in POOL_LIMITS.items():
            instance.event_log_storage.set_concurrency_slots(pool, limit)
        build_definitions(Settings.from_env(env_vars)).resolve_job_def("artsim_catalog").execute_in_process(
            instance=instance)
        batches = sorted(instance.get_dynamic_partitions("image_batches"))
    assert batches == ["batch-00000", "batch-00001"]

    with RedisServer(tmp_path) as redis:
        env = os.environ | env_vars | instance_env | {"ARTSIM_EXECUTOR": "celery", "DAGSTER_HOME": str(home), "OMP_NUM_THREADS": "1",
                                       "ARTSIM_CELERY_BROKER": redis.url, "ARTSIM_CELERY_BACKEND": redis.url,
                                       # `dagster-celery worker start` runs `celery` from PATH
                                       "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        workers = CeleryWorkers(["w1", "w2"], env, tmp_path)
        try:
            workers.wait_ready()
            logs = [tmp_path / f"{batch}.log" for batch in batches]
            wait_all([materialize(BATCH, batch, env, log) for batch, log in zip(batches, logs)], logs, timeout=300)
        finally:
            workers.close()

    with DagsterInstance.from_config(str(home)) as instance:
        for name in BATCH:
            assert sorted({r.partition_key for r in materializations(instance, name)}) == batches, name
        runs = [r for r in instance.get_runs() if r.tags.get("dagster/partition") in batches]
        assert len(runs) == 2 and all(r.is_success for r in runs)
        ran_on = {}
        for run in runs:
            queues, steps = celery_steps(instance, run.run_id)
            assert queues == {"image_cache": "dagster", "face_crops": "dagster", "embeddings_mobilenet_v2": "gpu"}
            assert set(steps) == set(BATCH), steps  # every step ran in a worker
            ran_on |= {(run.tags["dagster/partition"], step): worker for step, worker in steps.items()}
        # the `gpu` pool (limit 1) kept the two runs' embedding steps apart, across workers
        (a_start, a_end), (b_start, b_end) = sorted(step_interval(instance, r.run_id, BATCH[-1]) for r in runs)
        assert a_end <= b_start
    assert {worker.split("@")[0] for worker in ran_on.values()} == {"w1", "w2"}, ran_on
