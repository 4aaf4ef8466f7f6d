"""What needs to run: staleness of every asset (and batch) from Dagster's own records.

Used by ``artsim run`` and by the refresh sensor so that a command-line refresh and the UI agree.
An asset (partition) is stale when it was never materialized, its ``code_version`` changed, the
settings it depends on changed (``config_fingerprint`` metadata), or what it consumed changed:

* a parent's current data version differs from the ``dagster/input_data_version/<parent>`` tag Dagster
  recorded when the asset last ran; for a same-batch parent, from the ``input_version/<parent>``
  metadata the asset recorded (:func:`consumed_version`);
* for a batch partition of an unpartitioned parent (``image_cache`` of ``filtered_paintings``): the
  batch's own fingerprint (its members, image URLs, modification dates) instead of the whole table's,
  so one new painting does not invalidate every batch;
* a materialization that recorded ``needs_retry`` (e.g. images that failed to download) runs again;
* for an unpartitioned child of batch partitions (``pca_model``): a hash over the data versions of all
  active batches (``inputs_fingerprint`` metadata, see :func:`partitions_fingerprint`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable

import duckdb
from dagster import AssetKey, AssetMaterialization, AssetRecordsFilter, DagsterInstance

from .assets.versions import asset_config_fingerprint
from .config import Settings
from .core import batches
from .core.storage import DataLake

DATA_VERSION_TAG = "dagster/data_version"
CODE_VERSION_TAG = "dagster/code_version"
INPUT_VERSION_TAG = "dagster/input_data_version/"


def _key(name: str | AssetKey) -> AssetKey:
    return name if isinstance(name, AssetKey) else AssetKey(name)


def latest_materialization(
    instance: DagsterInstance, asset: str | AssetKey, partition: str | None = None
) -> AssetMaterialization | None:
    """The newest materialization of ``asset`` (of one partition when given)."""
    records_filter = AssetRecordsFilter(
        asset_key=_key(asset), asset_partitions=[partition] if partition is not None else None
    )
    records = instance.fetch_materializations(records_filter, limit=1).records
    return records[0].asset_materialization if records else None


def latest_observation_version(instance: DagsterInstance, asset: str | AssetKey) -> str | None:
    """Data version of the newest observation of a source asset."""
    records = instance.fetch_observations(_key(asset), limit=1).records
    if not records or records[0].asset_observation is None:
        return None
    return records[0].asset_observation.tags.get(DATA_VERSION_TAG)


def data_version(instance: DagsterInstance, asset: str | AssetKey, partition: str | None = None) -> str | None:
    """Current data version of an asset (partition): its newest materialization's version tag."""
    event = latest_materialization(instance, asset, partition)
    return event.tags.get(DATA_VERSION_TAG) if event else None


def input_version_key(parent: str) -> str:
    """Metadata key under which a batch asset records the version of its same-batch parent."""
    return f"input_version/{parent}"


def consumed_version(instance: DagsterInstance, parent: str, partition: str) -> dict[str, str]:
    """Metadata entry a batch asset records about the parent partition it consumed.

    Dagster's own ``input_data_version`` tag for a partitioned parent is a hash over partitions,
    so the planner compares this explicit entry instead.
    """
    return {input_version_key(parent): str(data_version(instance, parent, partition))}


def partitions_fingerprint(instance: DagsterInstance, assets: Iterable[str], partitions: Iterable[str]) -> str:
    """Hash over the data versions of ``assets`` × ``partitions`` (missing ones count as missing)."""
    parts = [
        f"{asset}/{partition}={data_version(instance, asset, partition)}"
        for asset in sorted(assets)
        for partition in sorted(partitions)
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _metadata_text(event: AssetMaterialization, name: str) -> str | None:
    entry = event.metadata.get(name)
    return None if entry is None else str(entry.value)


@dataclass(frozen=True)
class Expectation:
    """What an up-to-date materialization must carry."""

    code_version: str
    config_fingerprint: str | None = None
    input_versions: tuple[tuple[str, str | None], ...] = ()
    metadata: tuple[tuple[str, str], ...] = ()


def stale_reason(
    instance: DagsterInstance, asset: str, expectation: Expectation, partition: str | None = None
) -> str | None:
    """Why ``asset`` (``partition``) must run, or ``None`` when it is up to date."""
    event = latest_materialization(instance, asset, partition)
    if event is None:
        return "never materialized"
    if _metadata_text(event, "needs_retry") == "True":
        return "retrying failed items"
    recorded_code = event.tags.get(CODE_VERSION_TAG)
    if recorded_code != expectation.code_version:
        return f"code version {recorded_code} -> {expectation.code_version}"
    if expectation.config_fingerprint is not None:
        if _metadata_text(event, "config_fingerprint") != expectation.config_fingerprint:
            return "settings changed"
    for parent, version in expectation.input_versions:
        if event.tags.get(INPUT_VERSION_TAG + parent) != version:
            return f"{parent} changed"
    for name, value in expectation.metadata:
        if _metadata_text(event, name) != value:
            return f"{name} changed"
    return None


class Planner:
    """Staleness of every asset (and batch) of an asset graph, for one set of settings.

    ``asset_graph`` is ``Definitions.resolve_asset_graph()`` or a sensor's
    ``context.repository_def.asset_graph``.
    """

    def __init__(self, asset_graph, settings: Settings, instance: DagsterInstance) -> None:
        self.graph = asset_graph
        self.settings = settings
        self.instance = instance
        self.lake = DataLake(settings.data_lake)
        self.order = [key for level in self.graph.toposorted_asset_keys_by_level for key in sorted(level)]
        self.sources = [key for key in self.order if self.is_source(key)]
        self.partitioned = [key for key in self.order if self.is_partitioned(key)]

    def is_partitioned(self, key: AssetKey) -> bool:
        return self.graph.get(key).partitions_def is not None

    def is_source(self, key: AssetKey) -> bool:
        node = self.graph.get(key)
        return node.is_observable and not node.is_materializable

    def depends_on_batches(self, key: AssetKey) -> bool:
        """True when ``key`` is downstream of a batch-partitioned asset."""
        return any(parent in self.partitioned for parent in self.graph.get_ancestor_asset_keys(key))

    def partitioned_with_reasons(self) -> list[tuple[AssetKey, str]]:
        """Every batch asset, for a batch Dagster does not know yet."""
        return [(key, "new batch") for key in self.partitioned]

    def batch_fingerprints(self) -> dict[str, str]:
        """Active batch keys and their fingerprints, from the DuckDB catalog (read-only)."""
        if not self.lake.catalog_db.exists():
            return {}
        with duckdb.connect(str(self.lake.catalog_db), read_only=True) as con:
            tables = {row[0] for row in con.execute("SHOW TABLES").fetchall()}
            if not {"filtered_paintings", "batch_manifest"} <= tables:
                return {}
            return batches.batch_fingerprints(con)

    def expectation(self, key: AssetKey, partition: str | None, fingerprints: dict[str, str]) -> Expectation:
        """What an up-to-date materialization of ``key`` (``partition``) must carry."""
        node = self.graph.get(key)
        inputs: list[tuple[str, str | None]] = []
        metadata: list[tuple[str, str]] = []
        partitioned_parents: list[str] = []
        for parent in sorted(node.parent_keys):
            parent_name = parent.to_user_string()
            if self.is_source(parent):
                inputs.append((parent_name, latest_observation_version(self.instance, parent)))
            elif self.is_partitioned(parent) and partition is None:
                partitioned_parents.append(parent_name)
            elif not self.is_partitioned(parent) and partition is not None:
                metadata.append(("batch_fingerprint", fingerprints.get(partition, "")))
            elif partition is not None:
                metadata.append((input_version_key(parent_name), str(data_version(self.instance, parent, partition))))
            else:
                inputs.append((parent_name, data_version(self.instance, parent)))
        if partitioned_parents:
            metadata.append(("inputs_fingerprint", partitions_fingerprint(self.instance, partitioned_parents, fingerprints)))
        return Expectation(
            code_version=node.code_version or "",
            config_fingerprint=asset_config_fingerprint(key.to_user_string(), self.settings),
            input_versions=tuple(inputs),
            metadata=tuple(metadata),
        )

    def stale_reason(self, key: AssetKey) -> str | None:
        """Why an unpartitioned asset must run now (``None``: up to date)."""
        expectation = self.expectation(key, None, self.batch_fingerprints())
        return stale_reason(self.instance, key.to_user_string(), expectation)

    def stale_batch_assets(self, partition: str, fingerprints: dict[str, str]) -> list[tuple[AssetKey, str]]:
        """The batch assets of ``partition`` that must run, in order, with the reason for each."""
        stale: list[tuple[AssetKey, str]] = []
        for key in self.partitioned:
            if any(parent in dict(stale) for parent in self.graph.get(key).parent_keys):
                stale.append((key, "upstream re-run"))
                continue
            reason = stale_reason(
                self.instance, key.to_user_string(), self.expectation(key, partition, fingerprints), partition
            )
            if reason is not None:
                stale.append((key, reason))
        return stale
