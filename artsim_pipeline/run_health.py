"""Runs whose worker process is gone are failed, so that they are retried and no longer block the automation.

Dagster's run monitoring fails runs stuck STARTING (``start_timeout_seconds``) and, with a launcher that can
check its workers (Docker, Kubernetes, ECS), STARTED runs whose worker died. The local launcher
(``DefaultRunLauncher``: a run worker process per run, started by the code server) cannot: after a killed
daemon and code server its runs would stay STARTED for ever (and the automation, which waits on
``~in_progress``, would never request their batches again). Each run worker records its pid when it starts
(the engine event "Started process for run (pid: N)"); :func:`fail_dead_run_workers` marks failed every
STARTED run whose worker pid no longer exists on this machine. The ``artsim_run_health`` sensor (on by
default, every 30 s) calls it in the daemon; the instance's run retries (:mod:`.instance`) then launch those
runs again, at most ``max_retries`` times.
"""

from __future__ import annotations

import os

from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter


def process_exists(pid: int) -> bool:
    """Whether a process with ``pid`` exists on this machine (signal 0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def worker_pid(instance: DagsterInstance, run_id: str) -> int | None:
    """The pid the run's worker process recorded when it started, or None (an in-process run records none)."""
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        metadata = getattr(entry.dagster_event.event_specific_data, "metadata", None) or {}
        pid = metadata.get("pid")
        if pid is not None:
            return int(getattr(pid, "value", pid))
    return None


def fail_dead_run_workers(instance: DagsterInstance) -> list[str]:
    """Mark as failed the STARTED runs of the local launcher whose worker process is gone; their run ids."""
    if type(instance.run_launcher).__name__ != "DefaultRunLauncher":
        return []  # other launchers run workers elsewhere, and check them themselves
    failed = []
    for run in instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED])):
        pid = worker_pid(instance, run.run_id)
        if pid is None or process_exists(pid):
            continue
        instance.report_run_failed(run, f"its run worker (pid {pid}) is gone (killed, or its daemon or code server "
                                   "was); artsim_run_health marked it failed so that it can be retried")
        failed.append(run.run_id)
    return failed
