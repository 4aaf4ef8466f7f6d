"""``dagster_stale.PrefetchingStaleStatusResolver`` answers exactly as Dagster's own resolver, with a few bulk reads.

A real lake of 3 batches, then NGA v2: one image of batch 0 changed (stale, data), batches 1 and 2 re-observed
with the same fingerprint (Dagster compares the consumed and the latest observation), a new batch 3 (missing);
then a new code version of ``image_cache`` (stale, code). At each step every asset and batch gets the same
status, stale causes and root causes from both resolvers, and the prefetching one reads the event log a
fixed number of times instead of several times per batch.
"""

import os

from dagster import AssetKey
from dagster._core.definitions.data_version import CachingStaleStatusResolver

from artsim_pipeline.config import Settings
from artsim_pipeline.definitions import build_definitions
from artsim_pipeline.partitions import IMAGE_BATCHES
from artsim_pipeline.dagster_stale import PrefetchingStaleStatusResolver, stale_status_resolver
from artsim_pipeline.runner import PipelineRunner
from artsim_pipeline_tests.nga_fixtures import update_v1, update_v2, write_mirror


def plain_resolver(instance, graph):
    """Dagster's resolver as it comes (built like ``dagster_stale.stale_status_resolver``)."""
    from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
    from dagster._time import get_current_datetime

    view = AssetGraphView(temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
                          instance=instance, asset_graph=graph)
    return CachingStaleStatusResolver(instance=instance, asset_graph=graph, loading_context=view)


def answers(resolver, instance, graph):
    """(asset, partition, status, stale causes, root causes) for every asset and every batch."""
    batches = sorted(instance.get_dynamic_partitions(IMAGE_BATCHES))

    def causes(found):
        return [(c.key.asset_key.to_user_string(), c.key.partition_key, c.category.value, c.reason,
                 c.dependency.asset_key.to_user_string() if c.dependency else None) for c in found]

    out = []
    for key in graph.toposorted_asset_keys:
        for partition in batches if graph.get(key).is_partitioned else [None]:
            out.append((key.to_user_string(), partition, resolver.get_status(key, partition).value,
                        causes(resolver.get_stale_causes(key, partition)),
                        causes(resolver.get_stale_root_causes(key, partition))))
    return out


def compare(instance, graph, monkeypatch):
    """Both resolvers' answers (asserted equal) and how many event-log reads each made."""
    reads = {"n": 0}
    for name in ("fetch_materializations", "fetch_observations"):
        original = getattr(instance, name)

        def counted(*args, _original=original, **kwargs):
            reads["n"] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(instance, name, counted)
    counts, results = [], []
    for resolver in (plain_resolver(instance, graph), stale_status_resolver(instance, graph)):
        reads["n"] = 0
        results.append(answers(resolver, instance, graph))
        counts.append(reads["n"])
    assert results[0] == results[1]
    monkeypatch.undo()
    return {(asset, partition): status for asset, partition, status, _, _ in results[1]}, results[1], counts


def test_prefetching_resolver_answers_as_dagsters_own(tmp_path, instance, monkeypatch):
    v1 = update_v1()
    mirror = write_mirror(tmp_path / "mirror", v1)
    settings = Settings(nga_source=str(mirror), data_lake=tmp_path / "lake", limit=0, min_side=64, batch_size=3,
                        models=("mobilenet_v2",), weights="random", device="cpu", pca_dim=4)
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    assert isinstance(stale_status_resolver(instance, graph), PrefetchingStaleStatusResolver)
    PipelineRunner(defs, settings, instance, echo=lambda _: None).run()
    status, _, (plain_reads, bulk_reads) = compare(instance, graph, monkeypatch)
    assert {s for (asset, p), s in status.items() if p is not None} == {"FRESH"}
    assert bulk_reads < plain_reads

    # v2: painting 2's image changed (batch 0), paintings 8 and 9 are new (batch 3); the catalog re-observes all
    v2 = update_v2(v1)
    write_mirror(mirror, v2)
    objects = mirror / "data" / "objects.csv"
    os.utime(objects, ns=(1, objects.stat().st_mtime_ns + 10**9))
    defs.resolve_job_def("artsim_observe_nga").execute_in_process(instance=instance)
    defs.resolve_job_def("artsim_catalog").execute_in_process(instance=instance)
    status, full, (plain_reads, bulk_reads) = compare(instance, graph, monkeypatch)
    assert {p: status[("image_cache", p)] for p in ("batch-00000", "batch-00001", "batch-00002", "batch-00003")} == {
        "batch-00000": "STALE", "batch-00001": "FRESH", "batch-00002": "FRESH", "batch-00003": "MISSING"}
    root = next(r for a, p, _, _, r in full if (a, p) == ("image_cache", "batch-00000"))
    assert root and root[0][2] == "DATA" and root[0][0] == "image_batch"
    # a fixed number of bulk reads (one or two per partitioned asset, plus the source's), not several per batch:
    # 13 here, where Dagster's own resolver makes 47 for 4 batches
    assert bulk_reads <= 16 and 3 * bulk_reads < plain_reads, (bulk_reads, plain_reads)

    # a new code version of image_cache (ARTSIM_IMAGE_SIZE shapes it): every cached batch is stale, code
    changed = settings.with_overrides(image_size=settings.image_size + 1)
    graph = build_definitions(changed).resolve_asset_graph()
    status, full, _ = compare(instance, graph, monkeypatch)
    assert [status[("image_cache", p)] for p in ("batch-00001", "batch-00002")] == ["STALE", "STALE"]
    assert next(r for a, p, _, _, r in full if (a, p) == ("image_cache", "batch-00001"))[0][2] == "CODE"
    assert AssetKey("image_cache") in graph.get_all_asset_keys()
