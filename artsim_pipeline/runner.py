"""``artsim run``: materialize every stale asset and batch in dependency order, in-process.

The plan comes from :class:`artsim_pipeline.planning.Planner`; nothing fresh is recomputed, so a
second run with nothing changed only observes the source and checks Dagster's records.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from dagster import AssetKey, DagsterInstance, Definitions, materialize

from .config import Settings
from .partitions import IMAGE_BATCHES
from .planning import Planner

# Dagster's console logger stays quiet; progress comes from artsim's own `logging` records and the
# runner's echo lines, and a failure is reported once by the CLI.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@dataclass
class RunReport:
    """What one ``artsim run`` did: (asset, partition or None, reason) per materialization."""

    ran: list[tuple[str, str | None, str]] = field(default_factory=list)
    seconds: float = 0.0

    def partitions_run(self, asset: str) -> list[str]:
        return sorted(p for a, p, _ in self.ran if a == asset and p is not None)

    def assets_run(self) -> list[str]:
        return sorted({a for a, _, _ in self.ran})


class PipelineRunner:
    """Plans and executes refreshes of the whole asset graph for one set of settings."""

    def __init__(
        self,
        defs: Definitions,
        settings: Settings,
        instance: DagsterInstance,
        echo: Callable[[str], None] = print,
    ) -> None:
        self.instance = instance
        self.echo = echo
        self.planner = Planner(defs.resolve_asset_graph(), settings, instance)
        self._assets = list(defs.assets or []) + list(defs.asset_checks or [])
        self._resources = defs.resources or {}

    def _materialize(self, keys: list[AssetKey], partition: str | None = None) -> None:
        result = materialize(
            self._assets,
            selection=keys,
            partition_key=partition,
            instance=self.instance,
            resources=self._resources,
            run_config=QUIET_RUN_CONFIG,
        )
        if not result.success:  # raise_on_error=True raises first; this guards the rest
            raise RuntimeError(f"materialization of {[k.to_user_string() for k in keys]} failed")

    def run(self) -> RunReport:
        """Observe sources, then materialize whatever is stale, stage by stage."""
        started = time.perf_counter()
        report = RunReport()
        planner = self.planner
        if planner.sources:
            self._materialize(planner.sources)
        batches_done = False
        for key in planner.order:
            if planner.is_source(key):
                continue
            if planner.is_partitioned(key):
                if not batches_done:
                    self._run_batches(report)
                    batches_done = True
                continue
            reason = planner.stale_reason(key)
            if reason is None:
                continue
            name = key.to_user_string()
            self.echo(f"{name}: {reason}; materializing")
            step = time.perf_counter()
            self._materialize([key])
            report.ran.append((name, None, reason))
            self.echo(f"{name}: done in {time.perf_counter() - step:.1f}s")
        report.seconds = time.perf_counter() - started
        return report

    def _run_batches(self, report: RunReport) -> None:
        fingerprints = self.planner.batch_fingerprints()
        known = set(self.instance.get_dynamic_partitions(IMAGE_BATCHES))
        missing = [key for key in sorted(fingerprints) if key not in known]
        if missing:  # e.g. a fresh DAGSTER_HOME over an existing data lake
            self.instance.add_dynamic_partitions(IMAGE_BATCHES, missing)
        total = len(fingerprints)
        for number, partition in enumerate(sorted(fingerprints), start=1):
            stale = self.planner.stale_batch_assets(partition, fingerprints)
            if not stale:
                continue
            described = ", ".join(f"{key.to_user_string()} ({reason})" for key, reason in stale)
            self.echo(f"[{number}/{total}] {partition}: {described}")
            step = time.perf_counter()
            self._materialize([key for key, _ in stale], partition)
            report.ran.extend((key.to_user_string(), partition, reason) for key, reason in stale)
            self.echo(f"[{number}/{total}] {partition}: done in {time.perf_counter() - step:.1f}s")
