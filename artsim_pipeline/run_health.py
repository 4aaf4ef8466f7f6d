"""Runs whose worker process is gone are failed, so that they are retried and no longer block the automation.

Dagster's run monitoring fails runs stuck STARTING (``start_timeout_seconds``) and, with a launcher that can
check its workers (Docker, Kubernetes, ECS), STARTED runs whose worker died. The local launcher
(``DefaultRunLauncher``: a run worker process per run, started by the code server) cannot: after a killed
daemon and code server its runs would stay STARTED for ever (and the automation, which waits on
``~in_progress``, would never request their batches again). Each run worker records its pid when it starts
(the engine event "Started process for run (pid: N)"); :func:`fail_dead_run_workers` marks failed every
STARTED run whose worker pid no longer exists on this machine, or now belongs to a process (or thread: they share
the id space, 32,768 ids on many Linux machines) that started after the worker recorded it. The ``artsim_run_health`` sensor (on by
default, every 30 s) calls it in the daemon; the instance's run retries (:mod:`.instance`) then launch those
runs again, at most ``max_retries`` times.
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter


#: Seconds of slack when comparing a process's start with the moment its run recorded it: the worker starts,
#: then records its pid; ``/proc``'s boot time has whole seconds and follows later clock adjustments. Generous, as
#: a live worker taken for dead would be failed while it runs; an id is not reused within seconds of being taken.
START_SLACK_S = 30.0


def process_exists(pid: int) -> bool:
    """Whether a process with ``pid`` exists on this machine (signal 0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch, from ``/proc``), or None where it cannot be read
    (no such process, or no ``/proc``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime: clock ticks after boot
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def worker_alive(pid: int, recorded_at: float) -> bool:
    """Whether the worker that recorded ``pid`` at ``recorded_at`` still runs: a process with that id exists and
    did not start after the worker recorded it (a reused id belongs to someone else)."""
    if not process_exists(pid):
        return False
    started = process_start_time(pid)
    return started is None or started <= recorded_at + START_SLACK_S


def worker_pid(instance: DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """(pid, when recorded) of the run's worker process, from the event it wrote when it started, or None (an
    in-process run records none)."""
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        metadata = getattr(entry.dagster_event.event_specific_data, "metadata", None) or {}
        pid = metadata.get("pid")
        if pid is not None:
            return int(getattr(pid, "value", pid)), entry.timestamp
    return None


def fail_dead_run_workers(instance: DagsterInstance) -> list[str]:
    """Mark as failed the STARTED runs of the local launcher whose worker process is gone; their run ids."""
    if type(instance.run_launcher).__name__ != "DefaultRunLauncher":
        return []  # other launchers run workers elsewhere, and check them themselves
    failed = []
    for run in instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED])):
        recorded = worker_pid(instance, run.run_id)
        if recorded is None:
            continue
        pid, recorded_at = recorded
        if worker_alive(pid, recorded_at):
            continue
        instance.report_run_failed(run, f"its run worker (pid {pid}) is gone (killed, or its daemon or code server "
                                   "was); artsim_run_health marked it failed so that it can be retried")
        failed.append(run.run_id)
    return failed
