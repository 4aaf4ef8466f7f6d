"""``artsim run``: materialize what Dagster reports as missing or stale, in dependency order, in process.

There is no planner of artsim's own: the plan is Dagster's stale status (the same resolver the UI's
badges use), per asset and per batch partition, plus the ``no_failed_images`` check of each batch.
It runs the code location's own jobs (``artsim_observe_nga``, ``artsim_catalog``, ``artsim_batch``,
``artsim_collection``), so CLI runs appear under those names in the UI.

What Dagster lacks, and is therefore written here (each with the reason):

* what an asset's automation condition asks beyond "missing or stale" is read from the condition's
  :class:`~artsim_pipeline.automation.RerunRule` (:func:`~artsim_pipeline.automation.rerun_rule`, stated
  once next to the conditions), not restated here: an asset runs with a dependency that runs (stale
  status does not propagate down a batch: when ``image_cache`` re-runs, its batch's ``face_crops`` and
  ``embeddings_*`` run with it); ``pca_model`` and ``batch_views`` run when a batch ran (stale status of
  the collection assets stops tracking partitions past 100 batches,
  ``SKIP_PARTITION_DATA_VERSION_DEPENDENCY_THRESHOLD``); ``eval_study`` shows stale after every refresh,
  as its numbers are of an older index, and runs only when missing or when Dagster's stale cause is code;
* Dagster's records cannot see a stored file that was deleted, truncated or overwritten since it was
  written: before deciding, the runner checks the lake (:func:`~artsim_pipeline.core.verify.verify_lake`:
  existence, Parquet footers, the catalog's DuckDB file, cached images, the served generation's
  recorded hashes); a damaged artefact counts as missing, so its asset and what follows run again (a
  damaged ``catalog.duckdb`` is moved aside first). When the catalog ran, the collection assets reading
  its DuckDB file (``batch_views``) run too, as its data version may not have changed;
* Dagster's stale resolver reads the event log several times per batch partition (42 s for a no-change
  plan at 512 batches): :class:`~artsim_pipeline.dagster_stale.PrefetchingStaleStatusResolver` gives it the
  same records from a few bulk reads per asset (same answers; ``artsim bench dagster`` times it);
* a failed blocking asset check (:mod:`artsim_pipeline.assets.checks`) fails its step, so nothing downstream
  runs; the run stops with :class:`CheckFailed`, one line naming the check and what to do. Dagster's
  stale status does not look at checks: an asset whose latest blocking check failed runs again (so the
  guard holds on every run until the cause is fixed or the override is given);
* an in-process run has no run monitor: when ``artsim run`` is killed, its run stays ``STARTED`` in
  Dagster's records for ever, and the automation conditions (``~in_progress``) would never request
  that batch again. Every run is tagged with the host and pid of the ``artsim run`` that executes it;
  the next ``artsim run`` marks such runs of processes that no longer exist as failed
  (:func:`fail_orphaned_runs`);
* Dagster does not keep two writers (the automation's runs, another ``artsim run``) from computing the same
  batch or collection twice: before each stage ``artsim run`` takes the stage's lock and waits for the other
  writers' in-progress runs of the same assets (:mod:`artsim_pipeline.writers`, bounded by ``wait_s``). When
  another writer ran them since the plan, the stage is planned again: Dagster's stale status afresh, and a
  reason of artsim's own (damaged, a check to retry, batches changed) is dropped for an asset that another
  writer's run, started after this runner's last write, materialized since.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    RunsFilter,
)

from .automation import RerunRule, rerun_rule
from .core.lake import lake_for
from .core.storage import DamagedFileError
from .core.verify import set_aside, verify_lake
from .run_checks import CheckFailed, blocking_checks_failed, failed_checks
from .run_health import process_exists
from .dagster_stale import stale_status_resolver
from .partitions import IMAGE_BATCHES
from .writers import LAUNCHED_BY_TAG, WRITER_WAIT_S, StageLock, overlapping_runs, wait_for_writers

# Dagster's console logger stays quiet; progress comes from artsim's own `logging` records and the
# runner's echo lines, and a failure is reported once by the CLI.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
IMAGE_CACHE_CHECK = AssetCheckKey(AssetKey("image_cache"), "no_failed_images")


def launcher_tag() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def fail_orphaned_runs(instance: DagsterInstance) -> list[str]:
    """Mark as failed the unfinished runs of ``artsim run`` processes on this host that no longer exist."""
    unfinished = [DagsterRunStatus.STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.NOT_STARTED]
    host = socket.gethostname()
    failed = []
    for run in instance.get_runs(RunsFilter(statuses=unfinished)):
        owner = run.tags.get(LAUNCHED_BY_TAG, "")
        owner_host, _, pid = owner.rpartition(":")
        if owner_host != host or not pid.isdigit() or process_exists(int(pid)):
            continue
        instance.report_run_failed(run, f"the `artsim run` executing it (pid {pid}) is gone (killed or crashed)")
        failed.append(run.run_id)
    return failed


@dataclass
class RunReport:
    """What one ``artsim run`` did: (asset, partition or None, reason) per materialization."""

    ran: list[tuple[str, str | None, str]] = field(default_factory=list)
    seconds: float = 0.0
    #: batches whose blocking check failed: {batch: the check's one line}; the run goes on without them
    failed: dict[str, str] = field(default_factory=dict)
    collection_skipped: str | None = None

    def partitions_run(self, asset: str) -> list[str]:
        return sorted(p for a, p, _ in self.ran if a == asset and p is not None)

    def assets_run(self) -> list[str]:
        return sorted({a for a, _, _ in self.ran})


def _damaged_file(exc: BaseException):
    """The path of the :class:`~artsim_pipeline.core.storage.DamagedFileError` inside Dagster's wrappers."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DamagedFileError):
            return exc.path
        exc = getattr(exc, "user_exception", None) or exc.__cause__ or exc.__context__
    return None


def _stale_reason(rule: RerunRule, causes) -> str | None:
    """Why a stale asset runs under ``rule`` (Dagster's first root cause), or None when none of ``causes`` re-runs it."""
    if rule.stale_causes is None:
        return causes[0].reason if causes else "stale"
    if any(cause.category.value in rule.stale_causes for cause in causes):
        return " or ".join(sorted(rule.stale_causes)).lower() + " changed"
    return None


def failed_check_partitions(instance: DagsterInstance, partitions: list[str]) -> set[str]:
    """Batches whose latest ``no_failed_images`` check failed (their failed images are retried)."""
    infos = instance.event_log_storage.get_asset_check_partition_info([IMAGE_CACHE_CHECK], partition_keys=partitions)
    return {
        info.partition_key for info in infos
        if info.partition_key and info.latest_execution_status.value == "FAILED"
    }


class PipelineRunner:
    """Materializes whatever Dagster reports as missing or stale, stage by stage."""

    def __init__(
        self,
        defs: Definitions,
        settings,
        instance: DagsterInstance,
        echo: Callable[[str], None] = print,
        wait_s: float = WRITER_WAIT_S,
    ) -> None:
        self.defs = defs
        self.settings = settings
        self.instance = instance
        self.echo = echo
        self.wait_s = wait_s  # how long a stage waits for another writer's runs of it (writers.py)
        self._lock_dir = Path(instance.root_directory) / ".artsim-writers"
        self._last_write = time.time()  # this runner's start, then the end of its latest run
        self.graph = defs.resolve_asset_graph()
        order = [key for level in self.graph.toposorted_asset_keys_by_level for key in sorted(level)]
        materializable = [key for key in order if self.graph.get(key).is_materializable]
        self.batch_keys = [k for k in materializable if self.graph.get(k).partitions_def is not None]
        batch_ancestors = set().union(*(self.graph.get_ancestor_asset_keys(k) for k in self.batch_keys))
        self.catalog_keys = [k for k in materializable if k in batch_ancestors and k not in self.batch_keys]
        self.collection_keys = [k for k in materializable if k not in self.batch_keys and k not in self.catalog_keys]
        # what re-runs each asset besides being missing: its automation condition's rule (automation.py)
        self.rules = {k: rerun_rule(self.graph.get(k).automation_condition) for k in materializable}

    def _execute(self, job: str, keys: list[AssetKey], partition: str | None = None) -> None:
        run_id = str(uuid.uuid4())
        try:
            result = self.defs.resolve_job_def(job).execute_in_process(
                instance=self.instance, asset_selection=keys, partition_key=partition, run_config=QUIET_RUN_CONFIG,
                tags={LAUNCHED_BY_TAG: launcher_tag()}, run_id=run_id,
            )
        except Exception:
            errors, warnings = failed_checks(self.instance, run_id)
            for line in warnings:
                self.echo(f"warning: {line}")
            if errors:  # a blocking check stopped the run: say which, once, instead of Dagster's wrapper
                raise CheckFailed("; ".join(errors)) from None
            raise
        for line in [line for lines in failed_checks(self.instance, run_id) for line in lines]:  # non-blocking ones
            self.echo(f"warning: {line}")
        if not result.success:  # raise_on_error=True raises first; this guards the rest
            raise RuntimeError(f"{job} run of {[k.to_user_string() for k in keys]} failed")

    def _stale(
        self, keys: list[AssetKey], partition: str | None = None, resolver=None, also: dict[AssetKey, str] | None = None
    ) -> list[tuple[AssetKey, str]]:
        """``keys`` (in order) that must run, each with its reason.

        A key runs as its :class:`~artsim_pipeline.automation.RerunRule` says: with a dependency chosen before
        it, when Dagster reports it missing, or stale for a cause the rule accepts; or else when ``also`` gives
        it a reason of artsim's own (see the module docstring).
        """
        resolver = resolver or stale_status_resolver(self.instance, self.graph)
        also = also or {}
        chosen: dict[AssetKey, str] = {}
        for key in keys:
            rule = self.rules[key]
            if rule.with_upstream and any(parent in chosen for parent in self.graph.get(key).parent_keys):
                chosen[key] = "upstream runs"
                continue
            status = resolver.get_status(key, partition).value
            reason = ("missing" if status == "MISSING"
                      else _stale_reason(rule, resolver.get_stale_root_causes(key, partition)) if status == "STALE"
                      else None)
            if reason or key in also:
                chosen[key] = reason or also[key]
        return list(chosen.items())

    def _run_stage(self, job: str, stale: list[tuple[AssetKey, str]], report: RunReport, label: str = "",
                   partition: str | None = None, also: dict[AssetKey, str] | None = None,
                   planned_at: float | None = None) -> bool:
        """Materialize ``stale`` (planned at time ``planned_at``, with artsim's own reasons ``also``) once no
        other writer runs it; planned again when another writer ran it meanwhile. False when nothing was left."""
        keys = self._stage_keys(job)
        lock, waited = self._wait_for_writers(job, partition)
        try:
            if waited or (planned_at is not None and overlapping_runs(
                    self.instance, keys, partition, launcher_tag(), self._job_assets, updated_since=planned_at)):
                stale = self._stale(keys, partition, also={
                    key: reason for key, reason in (also or {}).items() if not self._written_by_other(key, partition)})
                if not stale:
                    self.echo(f"{label}another writer materialized it meanwhile; nothing left to run")
                    return False
            described = ", ".join(f"{key.to_user_string()} ({reason})" for key, reason in stale)
            self.echo(f"{label}{described}; materializing")
            started = time.perf_counter()
            self._execute(job, [key for key, _ in stale], partition)
            self._last_write = time.time()
            report.ran.extend((key.to_user_string(), partition, reason) for key, reason in stale)
            self.echo(f"{label}done in {time.perf_counter() - started:.1f}s")
            return True
        finally:
            lock.release()

    def _stage_keys(self, job: str) -> list[AssetKey]:
        return {"artsim_catalog": self.catalog_keys, "artsim_batch": self.batch_keys}.get(job, self.collection_keys)

    def _wait_for_writers(self, job: str, partition: str | None = None) -> tuple[StageLock, bool]:
        """Take the stage's lock once no other writer runs it (:func:`~artsim_pipeline.writers.wait_for_writers`)."""
        lock = StageLock(self._lock_dir, job if partition is None else f"{job}-{partition}")
        waited = wait_for_writers(
            self.instance, lock, self._stage_keys(job), partition, own_tag=launcher_tag(),
            job_assets=self._job_assets, what=partition or f"the {job.removeprefix('artsim_')}", wait_s=self.wait_s,
            echo=self.echo, on_poll=lambda: fail_orphaned_runs(self.instance))
        return lock, waited

    def _job_assets(self, job_name: str) -> set[AssetKey] | None:
        """The assets of one of the code location's jobs (None for another job)."""
        try:
            return set(self.defs.resolve_job_def(job_name).asset_layer.executable_asset_keys)
        except Exception:  # noqa: BLE001 - a job of another code location, or none
            return None

    def _written_by_other(self, key: AssetKey, partition: str | None) -> bool:
        """True when ``key``'s latest materialization (of ``partition``) is another writer's, by a run that
        started after this runner's last write (so it saw what this runner saw, and more)."""
        records = self.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=1).records
        record = self.instance.get_run_record_by_id(records[0].run_id) if records else None
        return (record is not None and record.dagster_run.tags.get(LAUNCHED_BY_TAG) != launcher_tag()
                and (record.start_time or 0.0) >= self._last_write)

    def run(self) -> RunReport:
        """Observe the source, then materialize the missing or stale catalog, batches and collection."""
        started = time.perf_counter()
        report = RunReport()
        orphans = fail_orphaned_runs(self.instance)
        if orphans:
            self.echo(f"marked {len(orphans)} run(s) of an interrupted `artsim run` as failed")
        self._execute("artsim_observe_nga", [AssetKey("nga_opendata")])
        # the lake check reads what the catalog stage writes: first let another writer's catalog run end
        self._wait_for_writers("artsim_catalog")[0].release()
        damaged = self._damaged()
        planned_at = time.time()
        also = {**blocking_checks_failed(self.instance, self.graph, self.catalog_keys), **damaged.get(None, {})}
        stale = self._stale(self.catalog_keys, also=also)
        catalog_ran = bool(stale) and self._run_stage("artsim_catalog", stale, report, also=also, planned_at=planned_at)
        batches_ran = self._run_batches(report, damaged)
        if self._collection_inputs_exist(report):
            self._run_collection(report, catalog_ran=catalog_ran, batches_ran=batches_ran, damaged=damaged)
        report.seconds = time.perf_counter() - started
        if report.failed:  # the other batches and the collection are done: now say which batch failed, and why
            built = ("the collection was not rebuilt: " + report.collection_skipped if report.collection_skipped
                     else "the other batches and the collection were built without it")
            raise CheckFailed(f"{', '.join(sorted(report.failed))} failed ({built}): "
                              + "; ".join(line for _, line in sorted(report.failed.items())))
        return report

    def _collection_inputs_exist(self, report: RunReport) -> bool:
        """False (and says so) when a batch that failed now has no embeddings to build the collection from."""
        lake = lake_for(self.settings)
        missing = sorted({partition for partition in report.failed
                          for model in self.settings.models if not lake.embeddings_path(model, partition).is_file()})
        if missing:
            report.collection_skipped = f"{', '.join(missing)} never had embeddings, search keeps the last good index"
        return not missing

    def _run_collection(self, report: RunReport, catalog_ran: bool, batches_ran: bool,
                        damaged: dict[str | None, dict[AssetKey, str]]) -> None:
        after_batches = {  # see the module docstring
            key: "batches changed" for key in self.collection_keys if batches_ran and self.rules[key].after_batches
        }
        if catalog_ran:  # the catalog ran: what lives in its DuckDB file (batch_views, group "catalog") runs after it
            after_batches.update({key: "the catalog was rebuilt" for key in self.collection_keys
                                  if self.graph.get(key).group_name == "catalog" and key not in after_batches})
        after_batches.update({k: v for k, v in damaged.get(None, {}).items() if k in self.collection_keys})
        for key, reason in blocking_checks_failed(self.instance, self.graph, self.collection_keys).items():
            after_batches.setdefault(key, reason)
        planned_at = time.time()
        stale = self._stale(self.collection_keys, also=after_batches)
        if stale:
            try:
                self._run_stage("artsim_collection", stale, report, also=after_batches, planned_at=planned_at)
            except Exception as exc:  # noqa: BLE001 - only a damaged input file is handled here
                damaged_file = _damaged_file(exc)
                if damaged_file is None:
                    raise
                # a changed byte inside a Parquet page shows only when the file is read (its checksum):
                # move the file aside, so it counts as missing, rebuild it, then the collection once more
                self.echo(f"lake check: {damaged_file} is damaged (page checksum); rebuilding it")
                if set_aside(damaged_file) is None:
                    raise
                self._run_batches(report, self._damaged())
                rebuilt = {key: "an input was rebuilt" for key in self.collection_keys  # not eval_study: only code
                           if self.rules[key].stale_causes is None}
                self._run_stage("artsim_collection", self._stale(self.collection_keys, also=rebuilt), report,
                                also=rebuilt)

    def plan(self) -> list[dict[str, str | None]]:
        """What ``artsim run`` would materialize now, without running anything (``artsim status``).

        The same rule as :meth:`run`, as of the source's last observation: ``{asset, partition, status,
        reason}`` per asset (and batch), in run order.
        """
        resolver = stale_status_resolver(self.instance, self.graph)
        plan: list[dict[str, str | None]] = []

        def add(stale: list[tuple[AssetKey, str]], partition: str | None = None) -> None:
            for key, reason in stale:
                status = resolver.get_status(key, partition).value
                plan.append({"asset": key.to_user_string(), "partition": partition,
                             "status": status if status in ("MISSING", "STALE") else "WILL_RUN", "reason": reason})

        add(self._stale(self.catalog_keys, resolver=resolver,
                        also=blocking_checks_failed(self.instance, self.graph, self.catalog_keys)))
        for partition, stale, _ in self._batch_plan(resolver):
            add(stale, partition)
        add(self._stale(self.collection_keys, resolver=resolver,
                        also=blocking_checks_failed(self.instance, self.graph, self.collection_keys)))
        return plan

    def _damaged(self) -> dict[str | None, dict[AssetKey, str]]:
        """What the lake holds damaged or missing although Dagster recorded it: {batch or None: {asset: reason}}."""
        lake = lake_for(self.settings)
        batches = sorted(self.instance.get_dynamic_partitions(IMAGE_BATCHES))
        models = [k.path[-1].removeprefix("embeddings_") for k in self.batch_keys
                  if k.path[-1].startswith("embeddings_")]
        catalog_recorded = self.instance.get_latest_materialization_event(AssetKey("raw_objects")) is not None
        damages = verify_lake(lake, batches, models, catalog_expected=catalog_recorded)
        found: dict[str | None, dict[AssetKey, str]] = {}
        materialized: dict[AssetKey, set[str]] = {}
        for damage in damages:
            key = AssetKey(damage.asset)
            if key == AssetKey("faiss_index"):
                key = AssetKey("pca_model")  # refit + republish: the staged fusion may be gone as well
            if damage.partition is None:
                if self.instance.get_latest_materialization_event(key) is None:
                    continue  # never materialized: Dagster already reports it missing
            else:
                if key not in materialized:
                    materialized[key] = set(self.instance.get_materialized_partitions(key))
                if damage.partition not in materialized[key]:
                    continue
            self.echo(f"lake check: {damage.describe()}; it will be rebuilt")
            if damage.asset == "raw_objects" and not lake.is_remote:
                moved = set_aside(lake.catalog_db)
                if moved is not None:
                    self.echo(f"lake check: moved the damaged catalog aside to {moved.name}")
            found.setdefault(damage.partition, {})[key] = f"damaged: {damage.reason}"
        return found

    def _batch_plan(self, resolver, damaged: dict[str | None, dict[AssetKey, str]] | None = None
                    ) -> list[tuple[str, list[tuple[AssetKey, str]], dict[AssetKey, str]]]:
        """(batch, what must run in it, artsim's own reasons) for every batch with something to run: missing
        or stale, a failed ``no_failed_images`` check (retried), or an artefact ``damaged`` reports."""
        damaged = damaged or {}
        partitions = sorted(self.instance.get_dynamic_partitions(IMAGE_BATCHES))
        if not self.batch_keys or not partitions:
            return []
        retry = failed_check_partitions(self.instance, partitions)
        plan = []
        for partition in partitions:
            also = {IMAGE_CACHE_CHECK.asset_key: "retrying failed images"} if partition in retry else {}
            also.update(damaged.get(partition, {}))
            stale = self._stale(self.batch_keys, partition, resolver, also)
            if stale:
                plan.append((partition, stale, also))
        return plan

    def _run_batches(self, report: RunReport, damaged: dict[str | None, dict[AssetKey, str]] | None = None) -> bool:
        planned_at = time.time()
        plan = self._batch_plan(stale_status_resolver(self.instance, self.graph), damaged)
        ran = False
        for number, (partition, stale, also) in enumerate(plan, start=1):
            label = f"[{number}/{len(plan)}] {partition}: "
            try:
                ran = self._run_stage("artsim_batch", stale, report, label, partition, also, planned_at) or ran
            except CheckFailed as failed:  # one bad batch: reported at the end, the others and the collection go on
                report.failed[partition] = str(failed)
                self.echo(f"{label}{failed}")
                ran = ran or any(key == IMAGE_CACHE_CHECK.asset_key for key, _ in stale)
        return ran
