"""Other writers of the same Dagster instance, as ``artsim run`` meets them: the automation's runs (launched by
the daemon) and another ``artsim run``.

Before ``artsim run`` materializes a stage (the catalog, one batch, the collection) it

* takes the stage's lock (:class:`StageLock`: a file lock under ``DAGSTER_HOME``, released by the system when
  its process ends, killed or not), so two ``artsim run`` never compute the same stage at once;
* waits for the in-progress runs (queued or running) of other writers that target the same assets, and
  the same batch (:func:`overlapping_runs`: the run's asset selection and its ``dagster/partition`` tag);

saying in one line which lock or run it waits for and why, for at most ``wait_s`` seconds: then it stops
with :class:`WriterBusy` (one line: what is still running, and to run again later) rather than compute the
stage twice. The runner then re-checks what still needs to run (see :mod:`artsim_pipeline.runner`).

A run of a killed ``artsim run`` is failed by the waiting runner (``on_poll``), a run of a dead daemon
worker by run monitoring and the ``artsim_run_health`` sensor, so the wait ends with its writer. The
automation evaluates its conditions and then queues its runs: a run it queues in the moment between this
check and the start of ``artsim run``'s own run is not seen (its conditions, ``~in_progress``, hold off
the other way round once ``artsim run``'s run is recorded).
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from dagster import AssetKey, DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter

IN_PROGRESS = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
               DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
PARTITION_TAG = "dagster/partition"
RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")
LAUNCHED_BY_TAG = "artsim/launched_by"  # "<host>:<pid>" of an `artsim run`, or "artsim_automation"
POLL_S = 2.0
#: How long ``artsim run`` waits for another writer's stage before it stops (seconds).
WRITER_WAIT_S = 30 * 60


def _bound(wait_s: float) -> str:
    return f"{wait_s:g} s" if wait_s < 60 else f"{wait_s / 60:g} min"


class WriterBusy(RuntimeError):
    """Another writer still materializes a stage after the wait: one line naming it and what to do."""


def _targets(run: DagsterRun, keys: set[AssetKey], partition: str | None,
             job_assets: Callable[[str], set[AssetKey] | None]) -> bool:
    """True when ``run`` materializes one of ``keys`` (of batch ``partition``, when given)."""
    selection = run.asset_selection or job_assets(run.job_name)
    if selection is not None and not set(selection) & keys:
        return False
    if partition is None:
        return True
    if PARTITION_TAG in run.tags:
        return run.tags[PARTITION_TAG] == partition
    start, end = (run.tags.get(tag) for tag in RANGE_TAGS)
    if start and end:  # a backfill's range of batches (their keys sort in order: batch-00003)
        return start <= partition <= end
    return True  # a run of batch assets with no partition named: assume it may be this one


def overlapping_runs(instance: DagsterInstance, keys: list[AssetKey], partition: str | None, own_tag: str,
                     job_assets: Callable[[str], set[AssetKey] | None], updated_since: float | None = None
                     ) -> list[DagsterRun]:
    """Other writers' runs that target ``keys`` (and ``partition``): those in progress, or with
    ``updated_since`` (a timestamp) those of any status recorded since then (of a batch: those tagged with it,
    so that this runner's own runs of other batches are not read again for each batch)."""
    if updated_since is None:
        runs_filter = RunsFilter(statuses=IN_PROGRESS)
    else:
        runs_filter = RunsFilter(updated_after=datetime.fromtimestamp(updated_since, timezone.utc),
                                 tags={PARTITION_TAG: partition} if partition else None)
    return [run for run in instance.get_runs(runs_filter)
            if run.tags.get(LAUNCHED_BY_TAG) != own_tag and _targets(run, set(keys), partition, job_assets)]


def describe_run(run: DagsterRun) -> str:
    """``run 1a2b3c4d (artsim_automation, STARTED)``: short id, who launched it, its status."""
    owner = run.tags.get(LAUNCHED_BY_TAG, "launched from the UI or a schedule")
    if owner.rpartition(":")[2].isdigit():
        owner = f"`artsim run` {owner}"
    return f"run {run.run_id[:8]} ({owner}, {run.status.value})"


class StageLock:
    """An exclusive lock on one stage (``<directory>/<name>.lock``); the file names the holder."""

    def __init__(self, directory: Path, name: str) -> None:
        self.path = directory / f"{name}.lock"
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{socket.gethostname()}:{os.getpid()}".encode(), 0)
        self._fd = fd
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None


def wait_for_writers(instance: DagsterInstance, lock: StageLock | None, keys: list[AssetKey],
                     partition: str | None, *, own_tag: str, job_assets: Callable[[str], set[AssetKey] | None],
                     what: str, wait_s: float, echo: Callable[[str], None],
                     on_poll: Callable[[], object] = lambda: None) -> bool:
    """Take ``lock``, then wait until no other writer's run targets ``keys`` / ``partition``; True when it
    waited. Raises :class:`WriterBusy` after ``wait_s`` seconds (the lock released)."""
    deadline = time.monotonic() + wait_s
    waited = False
    if lock is not None and not lock.try_acquire():
        waited = True
        echo(f"{what}: waiting for another `artsim run` ({lock.holder()}) materializing it, "
             f"up to {_bound(wait_s)}")
        while not lock.try_acquire():
            if time.monotonic() >= deadline:
                raise WriterBusy(f"another `artsim run` ({lock.holder()}) still materializes {what} after "
                                 f"{_bound(wait_s)}; not computing it twice: run `artsim run` again once it ends")
            time.sleep(POLL_S)
    announced: set[str] = set()
    try:
        while True:
            on_poll()
            runs = overlapping_runs(instance, keys, partition, own_tag, job_assets)
            if not runs:
                return waited
            for run in runs:
                if run.run_id not in announced:
                    announced.add(run.run_id)
                    echo(f"{what}: waiting for {describe_run(run)}, which materializes it too, "
                         f"up to {_bound(wait_s)}")
            waited = True
            if time.monotonic() >= deadline:
                raise WriterBusy(f"{', '.join(describe_run(r) for r in runs)} still materializes {what} after "
                                 f"{_bound(wait_s)}; not computing it twice: run `artsim run` again once it "
                                 "ends (the Dagster UI's Runs page shows it)")
            time.sleep(POLL_S)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
