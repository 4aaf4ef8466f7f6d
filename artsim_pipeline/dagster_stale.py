"""Dagster's stale status, read the way its UI reads it: the one module of artsim on Dagster's internals.

Why internals: ``artsim run`` and ``artsim status`` must answer exactly what the UI's "stale" badges answer
(the brief: UI = CLI), and Dagster has no public API for stale status. Its UI reads it through GraphQL
(``assetNodes.staleStatus``) from ``CachingStaleStatusResolver``; the request for a public accessor
(dagster-io/dagster#19368) was closed with no work planned. Planning on the public
``evaluate_automation_conditions`` instead was weighed and rejected: its conditions are edge-triggered
(they request a stale asset once, on the tick it became stale, and need a persisted cursor), so they
cannot answer "what is stale now" for ``artsim status``, and a missed tick would be missed for good.

So every use of ``dagster._`` lives here, behind two names the rest of artsim calls:

* :func:`stale_status_resolver` — Dagster's own resolver (``get_status``, ``get_stale_root_causes``),
  built the way Dagster's own test utilities build it outside a workspace;
* :class:`PrefetchingStaleStatusResolver` — the same rule, reading records in bulk (below).

Its sibling :mod:`.dagster_stale_cache` reads the instance's SQLite files (their layout is Dagster's too)
without importing Dagster, so that ``artsim status`` can tell whether the plan it cached is still current.

A Dagster upgrade that moves these names breaks this module (or, for the storage's layout, its sibling)
only; ``test_stale_resolver.py`` compares the prefetching resolver with Dagster's on fresh, stale,
re-observed, missing and code-changed batches.
"""

from __future__ import annotations

from datetime import datetime, timezone

from dagster import AssetKey, AssetRecordsFilter, DagsterEventType, DagsterInstance, DataVersion
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import (
    DATA_VERSION_TAG,
    CachingStaleStatusResolver,
    extract_data_version_from_entry,
)


class PrefetchingStaleStatusResolver(CachingStaleStatusResolver):
    """Dagster's stale resolver, its rule unchanged, reading each partitioned asset's records in bulk.

    Dagster's resolver asks the event log once or twice per asset partition and dependency (about 7 SQLite
    queries per batch here: 42 s for the no-change plan at 512 batches, 2 loaded cores). This answers the
    same questions from a few bulk reads per asset: the latest storage id of every partition (what Dagster's
    own queryer reads), those records by id and, for a dependency recorded again since a partition ran
    (every catalog run re-observes each ``image_batch``), the data versions at the consumed cursor (one read
    per cursor). What they cannot answer exactly goes to Dagster's own code; ``test_stale_resolver.py``
    compares both on fresh, stale, re-observed, missing and code-changed batches.
    """

    CHUNK = 500  # storage ids per query (well under SQLite's bound-variable limit)

    def _records(self, asset_key: AssetKey, event_type: DagsterEventType, ids: list[int]) -> dict:
        fetch = (self._instance.fetch_observations if event_type == DagsterEventType.ASSET_OBSERVATION
                 else self._instance.fetch_materializations)
        found = {}
        for start in range(0, len(ids), self.CHUNK):
            chunk = ids[start:start + self.CHUNK]
            for record in fetch(AssetRecordsFilter(asset_key=asset_key, storage_ids=chunk), limit=len(chunk)).records:
                found[record.storage_id] = record
        return found

    def _latest(self, asset_key: AssetKey, event_type: DagsterEventType) -> dict:
        """{partition: its latest record of ``event_type``} (one bulk read per asset and event type)."""
        cache = self.__dict__.setdefault("_artsim_latest", {})
        if (asset_key, event_type) not in cache:
            ids = self._instance.get_latest_storage_id_by_partition(asset_key, event_type)
            records = self._records(asset_key, event_type, sorted(ids.values()))
            cache[(asset_key, event_type)] = {partition: records.get(i) for partition, i in ids.items()}
        return cache[(asset_key, event_type)]

    def _versions_before(self, asset_key: AssetKey, event_type: DagsterEventType, cursor: int) -> dict:
        """{partition: data version of its latest event at or before storage id ``cursor``} (one query per cursor:
        the batches of one ``artsim run`` consumed the same ``image_batch`` cursor)."""
        cache = self.__dict__.setdefault("_artsim_before", {})
        if (asset_key, event_type, cursor) not in cache:
            tags = self._instance.event_log_storage.get_latest_tags_by_partition(
                asset_key, event_type, [DATA_VERSION_TAG], before_cursor=cursor + 1)
            cache[(asset_key, event_type, cursor)] = {p: t.get(DATA_VERSION_TAG) for p, t in tags.items()}
        return cache[(asset_key, event_type, cursor)]

    def _get_latest_data_version_record(self, key):  # Dagster: the latest materialization (or observation)
        asset = self.asset_graph.get(key.asset_key)
        if key.partition_key is None or not asset.is_partitioned:
            return super()._get_latest_data_version_record(key=key)
        materialized = self._latest(key.asset_key, DagsterEventType.ASSET_MATERIALIZATION).get(key.partition_key)
        if not asset.is_observable:
            return materialized
        observed = self._latest(key.asset_key, DagsterEventType.ASSET_OBSERVATION).get(key.partition_key)
        if observed is None:  # the queryer looks for an observation first
            return None
        return sorted([r for r in (materialized, observed) if r is not None], key=lambda r: r.timestamp,
                      reverse=True)[0]

    def _is_dep_updated(self, provenance, dep_key) -> bool:
        if dep_key.partition_key is None:
            return super()._is_dep_updated(provenance, dep_key)
        # Dagster: the dependency's latest event after the consumed one, compared with the latest at or before it
        external = self.asset_graph.get(dep_key.asset_key).is_external
        event_type = DagsterEventType.ASSET_OBSERVATION if external else DagsterEventType.ASSET_MATERIALIZATION
        latest = self._latest(dep_key.asset_key, event_type).get(dep_key.partition_key)
        cursor = provenance.input_storage_ids[dep_key.asset_key]
        if latest is None or (cursor is not None and latest.storage_id <= cursor):
            return False
        previous = self._versions_before(dep_key.asset_key, event_type, cursor).get(dep_key.partition_key) \
            if cursor else None
        if not previous:  # no event, or its latest event has no data version tag: Dagster's own code
            return super()._is_dep_updated(provenance, dep_key)
        return self._data_versions_differ(DataVersion(previous), extract_data_version_from_entry(latest.event_log_entry))


def stale_status_resolver(instance: DagsterInstance, asset_graph):
    """Dagster's own stale/missing resolver (what the UI's badges and ``stale_assets_only`` use), reading
    records in bulk (:class:`PrefetchingStaleStatusResolver`).

    Dagster has no public constructor for it outside a workspace; this builds it the way Dagster's own
    test utilities do.
    """
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=datetime.now(timezone.utc), last_event_id=None),
        instance=instance, asset_graph=asset_graph,
    )
    return PrefetchingStaleStatusResolver(instance=instance, asset_graph=asset_graph, loading_context=view)
