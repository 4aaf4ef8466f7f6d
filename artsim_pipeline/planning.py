"""What needs to run: staleness of every asset (and batch) from Dagster's own records.

Used by ``artsim run`` and by the refresh sensor so that a command-line refresh and the UI agree.
An asset (partition) is stale when it was never materialized, its ``code_version`` changed, the
settings it depends on changed (``config_fingerprint`` metadata), or what it consumed changed:

* a parent's current data version differs from the ``dagster/input_data_version/<parent>`` tag Dagster
  recorded when the asset last ran (same-partition parents: the parent's partition);
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

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance
from dagster._core.definitions.events import AssetMaterialization

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
