"""Executor profiles: how a launched run executes its steps, chosen by ``ARTSIM_EXECUTOR`` at load time.

* ``in_process`` (default): every step in the run's own process, one after another. A batch's steps
  depend on each other and torch already uses every core, so on one machine parallelism comes from
  several runs at once (backfills, the queued run coordinator).
* ``multiprocess``: one process per step on the run's machine (independent steps at once, e.g. the
  embeddings of several models of one batch).
* ``celery``: steps are sent to Celery workers on other machines through ``ARTSIM_CELERY_BROKER``
  (results via ``ARTSIM_CELERY_BACKEND``); embedding steps go to the ``gpu`` queue (:mod:`.tags`).
  Workers: ``dagster-celery worker start -A dagster_celery.app -y artsim_pipeline/deploy/celery-worker.yaml
  -q dagster,gpu`` (several queues: one comma-separated ``-q``), with the same ``DAGSTER_HOME`` (a shared
  instance, e.g. PostgreSQL), the same ``ARTSIM_*`` settings and the same data lake.
* ``k8s``: each step is a Kubernetes Job (``dagster-k8s``), using the run's image; embedding pods ask
  for one GPU (:mod:`.tags`). Runs are launched by the ``K8sRunLauncher`` of a Helm-deployed Dagster.

``artsim run`` always executes in its own process (``execute_in_process``); the setting applies to runs
launched by the webserver, the daemon (automation, backfills) and ``dagster asset materialize``.
Broker and backend URLs are read from the environment when a run starts (never stored in run config).
"""

from __future__ import annotations

from dagster import ExecutorDefinition, in_process_executor, multiprocess_executor

from ..config import EXECUTORS, ConfigError

CELERY_ENV = {"broker": {"env": "ARTSIM_CELERY_BROKER"}, "backend": {"env": "ARTSIM_CELERY_BACKEND"}}


def _require(module: str, executor: str):
    try:
        return __import__(module)
    except ImportError:
        raise ConfigError(
            f"ARTSIM_EXECUTOR={executor} needs {module.replace('_', '-')}: pip install -e '.[deploy]'"
        ) from None


def executor_for(name: str) -> ExecutorDefinition:
    """The executor definition for an ``ARTSIM_EXECUTOR`` value."""
    if name == "in_process":
        return in_process_executor
    if name == "multiprocess":
        return multiprocess_executor
    if name == "celery":
        dagster_celery = _require("dagster_celery", name)
        return dagster_celery.celery_executor.configured(CELERY_ENV, name="artsim_celery")
    if name == "k8s":
        return _require("dagster_k8s", name).k8s_job_executor
    raise ConfigError(f"ARTSIM_EXECUTOR must be one of {', '.join(EXECUTORS)}, got {name!r}")
