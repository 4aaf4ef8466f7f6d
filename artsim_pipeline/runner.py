"""``artsim run``: materialize every stale asset and batch in dependency order, in-process.

The plan comes from :mod:`artsim_pipeline.planning`; nothing fresh is recomputed, so a second run with
nothing changed only observes the source and checks records.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import duckdb
from dagster import AssetKey, DagsterInstance, Definitions, materialize

from .assets.versions import asset_config_fingerprint
from .config import Settings
from .core import batches
from .core.storage import DataLake
from .partitions import IMAGE_BATCHES
from .planning import Expectation, data_version, latest_observation_version, partitions_fingerprint, stale_reason

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
        self.defs = defs
        self.settings = settings
        self.instance = instance
        self.echo = echo
        self.graph = defs.resolve_asset_graph()
        self.lake = DataLake(settings.data_lake)
        self._assets = list(defs.assets or []) + list(defs.asset_checks or [])
        self._resources = defs.resources or {}

    # -- graph helpers -------------------------------------------------------------------------
    def _name(self, key: AssetKey) -> str:
        return key.to_user_string()

    def _is_partitioned(self, key: AssetKey) -> bool:
        return self.graph.get(key).partitions_def is not None

    def _is_source(self, key: AssetKey) -> bool:
        return self.graph.get(key).is_observable and not self.graph.get(key).is_materializable

    def _topological(self) -> list[AssetKey]:
        return [key for level in self.graph.toposorted_asset_keys_by_level for key in sorted(level)]

    def _batch_state(self) -> dict[str, str]:
        """Active batch keys and their fingerprints, from the DuckDB catalog."""
        if not self.lake.catalog_db.exists():
            return {}
        with duckdb.connect(str(self.lake.catalog_db), read_only=True) as con:
            tables = {row[0] for row in con.execute("SHOW TABLES").fetchall()}
            if not {"filtered_paintings", "batch_manifest"} <= tables:
                return {}
            return batches.batch_fingerprints(con)

    # -- planning ------------------------------------------------------------------------------
    def expectation(self, key: AssetKey, partition: str | None, fingerprints: dict[str, str]) -> Expectation:
        node = self.graph.get(key)
        name = self._name(key)
        inputs: list[tuple[str, str | None]] = []
        metadata: list[tuple[str, str]] = []
        partitioned_parents: list[str] = []
        for parent in sorted(node.parent_keys):
            parent_name = self._name(parent)
            if self._is_source(parent):
                inputs.append((parent_name, latest_observation_version(self.instance, parent)))
            elif self._is_partitioned(parent) and partition is None:
                partitioned_parents.append(parent_name)
            elif not self._is_partitioned(parent) and partition is not None:
                metadata.append(("batch_fingerprint", fingerprints.get(partition, "")))
            else:
                inputs.append((parent_name, data_version(self.instance, parent, partition)))
        if partitioned_parents:
            metadata.append(("inputs_fingerprint", partitions_fingerprint(self.instance, partitioned_parents, fingerprints)))
        return Expectation(
            code_version=node.code_version or "",
            config_fingerprint=asset_config_fingerprint(name, self.settings),
            input_versions=tuple(inputs),
            metadata=tuple(metadata),
        )

    # -- execution -----------------------------------------------------------------------------
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
            raise RuntimeError(f"materialization of {[self._name(k) for k in keys]} failed")

    def run(self) -> RunReport:
        """Observe sources, then materialize whatever is stale, stage by stage."""
        started = time.perf_counter()
        report = RunReport()
        order = self._topological()
        sources = [key for key in order if self._is_source(key)]
        if sources:
            self._materialize(sources)
        partitioned = [key for key in order if self._is_partitioned(key)]
        batches_done = False
        for key in order:
            if self._is_source(key):
                continue
            if self._is_partitioned(key):
                if not batches_done:
                    self._run_batches(partitioned, report)
                    batches_done = True
                continue
            fingerprints = self._batch_state()
            reason = stale_reason(self.instance, self._name(key), self.expectation(key, None, fingerprints))
            if reason is None:
                continue
            self.echo(f"{self._name(key)}: {reason}; materializing")
            step = time.perf_counter()
            self._materialize([key])
            report.ran.append((self._name(key), None, reason))
            self.echo(f"{self._name(key)}: done in {time.perf_counter() - step:.1f}s")
        report.seconds = time.perf_counter() - started
        return report

    def _run_batches(self, keys: list[AssetKey], report: RunReport) -> None:
        fingerprints = self._batch_state()
        total = len(fingerprints)
        known = set(self.instance.get_dynamic_partitions(IMAGE_BATCHES))
        missing = [key for key in sorted(fingerprints) if key not in known]
        if missing:  # e.g. a fresh DAGSTER_HOME over an existing data lake
            self.instance.add_dynamic_partitions(IMAGE_BATCHES, missing)
        for number, partition in enumerate(sorted(fingerprints), start=1):
            stale: list[AssetKey] = []
            reasons: list[str] = []
            for key in keys:
                upstream_stale = any(parent in stale for parent in self.graph.get(key).parent_keys)
                reason = "upstream re-run" if upstream_stale else stale_reason(
                    self.instance, self._name(key), self.expectation(key, partition, fingerprints), partition
                )
                if reason is not None:
                    stale.append(key)
                    reasons.append(f"{self._name(key)} ({reason})")
            if not stale:
                continue
            self.echo(f"[{number}/{total}] {partition}: {', '.join(reasons)}")
            step = time.perf_counter()
            self._materialize(stale, partition)
            for key, reason in zip(stale, reasons):
                report.ran.append((self._name(key), partition, reason))
            self.echo(f"[{number}/{total}] {partition}: done in {time.perf_counter() - step:.1f}s")
