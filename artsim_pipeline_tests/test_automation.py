"""Dagster's own freshness: stale status per batch, the automation conditions and ``artsim run`` agree.

Scenario (v1 → v2): a catalog of 3 batches is fully materialized; v2 changes one image of batch 0 and
adds two paintings (a new batch). After the catalog assets ran, Dagster reports exactly batch 0 stale
and the new batch missing; the automation conditions request exactly those batches; ``artsim run``
runs the same set.
"""

import os

from dagster import AssetKey, evaluate_automation_conditions

from artsim_pipeline.config import Settings
from artsim_pipeline.definitions import build_definitions
from artsim_pipeline.dagster_stale import stale_status_resolver
from artsim_pipeline.runner import PipelineRunner
from artsim_pipeline_tests.http_server import LocalServer, Response
from artsim_pipeline_tests.nga_fixtures import Painting, nga_csvs, update_v1, update_v2, write_mirror

BATCH_ASSETS = ["image_cache", "face_crops", "embeddings_mobilenet_v2"]


def requested(result, name):
    return sorted(p for p in result.get_requested_partitions(AssetKey(name)) if p is not None) \
        if result.get_num_requested(AssetKey(name)) else []


def batch_status(defs, instance, name, partitions):
    resolver = stale_status_resolver(instance, defs.resolve_asset_graph())
    return {p: resolver.get_status(AssetKey(name), p).value for p in partitions}


def test_changed_and_new_batches_only(tmp_path, instance):
    v1 = update_v1()
    mirror = write_mirror(tmp_path / "mirror", v1)
    settings = Settings(nga_source=str(mirror), data_lake=tmp_path / "lake", limit=0, min_side=64, batch_size=3,
                        models=("mobilenet_v2",), weights="random", device="cpu", pca_dim=4)
    defs = build_definitions(settings)
    runner = PipelineRunner(defs, settings, instance, echo=lambda _: None)
    first = runner.run()
    batches = ["batch-00000", "batch-00001", "batch-00002"]
    assert first.partitions_run("image_cache") == batches
    assert batch_status(defs, instance, "image_cache", batches) == dict.fromkeys(batches, "FRESH")
    baseline = evaluate_automation_conditions(defs=defs, instance=instance)
    # everything is fresh: the automation's first evaluation only checks the source
    assert baseline.total_requested == 1 and baseline.get_num_requested(AssetKey("nga_opendata")) == 1

    # v2: painting 2's image changed (batch 0), paintings 8 and 9 are new (batch 3)
    v2 = update_v2(v1)
    write_mirror(mirror, v2)
    objects = mirror / "data" / "objects.csv"
    os.utime(objects, ns=(1, objects.stat().st_mtime_ns + 10**9))
    defs.resolve_job_def("artsim_observe_nga").execute_in_process(instance=instance)
    source_changed = evaluate_automation_conditions(defs=defs, instance=instance, cursor=baseline.cursor)
    assert requested(source_changed, "image_cache") == []
    assert source_changed.get_num_requested(AssetKey("raw_objects")) == 1

    defs.resolve_job_def("artsim_catalog").execute_in_process(instance=instance)
    everything = batches + ["batch-00003"]
    assert batch_status(defs, instance, "image_cache", everything) == {
        "batch-00000": "STALE", "batch-00001": "FRESH", "batch-00002": "FRESH", "batch-00003": "MISSING"}
    catalog_done = evaluate_automation_conditions(defs=defs, instance=instance, cursor=source_changed.cursor)
    for name in BATCH_ASSETS:
        assert requested(catalog_done, name) == ["batch-00000", "batch-00003"], name
    assert catalog_done.get_num_requested(AssetKey("raw_objects")) == 0

    second = runner.run()
    for name in BATCH_ASSETS:
        assert second.partitions_run(name) == ["batch-00000", "batch-00003"], name
    assert {"pca_model", "faiss_index", "eval_report", "collection_map"} <= set(second.assets_run())
    from artsim_pipeline.core.layout import load_layout
    layout, _generation = load_layout(settings.data_lake / "tables" / "collection_map.parquet")
    assert sorted(layout["objectid"]) == [p.objectid for p in sorted(v2, key=lambda p: p.objectid)]
    assert "raw_objects" not in second.assets_run()  # the catalog was already refreshed
    assert runner.run().ran == []  # no change: nothing materialized
    assert batch_status(defs, instance, "image_cache", everything) == dict.fromkeys(everything, "FRESH")


def test_nga_opendata_observation_sends_conditional_requests(tmp_path, instance):
    bodies = nga_csvs([Painting(i, width=96, height=80) for i in range(1, 4)])
    with LocalServer() as server:
        for name, body in bodies.items():
            server.routes[f"/data/{name}.csv"] = (lambda b: lambda _h: Response(200, b, {"ETag": '"v1"'}))(body)
        settings = Settings(nga_source=server.url, data_lake=tmp_path / "lake", limit=0, min_side=64,
                            models=("mobilenet_v2",), weights="random")
        defs = build_definitions(settings)
        defs.resolve_job_def("artsim_observe_nga").execute_in_process(instance=instance)
        defs.resolve_job_def("artsim_catalog").execute_in_process(instance=instance)  # stores the validators
        server.requests.clear()
        defs.resolve_job_def("artsim_observe_nga").execute_in_process(instance=instance)
    heads = [headers for method, _path, headers in server.requests if method == "HEAD"]
    assert len(heads) == 5 and all(h.get("If-None-Match") == '"v1"' for h in heads)
    assert not [r for r in server.requests if r[0] == "GET"]  # an observation downloads nothing


def test_failed_images_fail_the_check_and_only_their_batch_is_retried(tmp_path, instance):
    from artsim_pipeline.runner import failed_check_partitions
    from artsim_pipeline_tests.http_server import IiifImages
    from artsim_pipeline_tests.nga_fixtures import painting_image, publish

    paintings = [Painting(i, width=128, height=96) for i in range(1, 7)]
    with LocalServer() as server:
        iiif = IiifImages(server)
        publish(server, iiif, paintings, {p.objectid: painting_image(p.objectid) for p in paintings})
        broken = IiifImages.path(paintings[4].uuid, 128)  # painting 5, in batch 1
        server.faults[broken] = [503] * 3
        settings = Settings(nga_source=server.url, data_lake=tmp_path / "lake", limit=0, min_side=64, batch_size=3,
                            image_size=128, models=("mobilenet_v2",), weights="random", device="cpu", pca_dim=4,
                            http_retries=0, max_failure_share=0.5)
        runner = PipelineRunner(build_definitions(settings), settings, instance, echo=lambda _: None)
        first = runner.run()
        assert first.partitions_run("image_cache") == ["batch-00000", "batch-00001"]
        assert failed_check_partitions(instance, ["batch-00000", "batch-00001"]) == {"batch-00001"}

        server.faults[broken] = []  # the host recovered
        second = runner.run()
        assert second.partitions_run("image_cache") == ["batch-00001"]  # only the batch with a failed image
        assert failed_check_partitions(instance, ["batch-00000", "batch-00001"]) == set()
        assert server.count(broken) == 2
        assert runner.run().ran == []


def test_a_fresh_lake_comes_all_the_way_up_from_the_automation(tmp_path, instance):
    """Ticks of the automation (as the daemon evaluates them) on a fresh lake, running what each requests."""
    mirror = write_mirror(tmp_path / "mirror", [Painting(i, width=96, height=80) for i in range(1, 6)])
    settings = Settings(nga_source=str(mirror), data_lake=tmp_path / "lake", limit=0, min_side=64, batch_size=3,
                        models=("mobilenet_v2",), weights="random", device="cpu", pca_dim=4)
    defs = build_definitions(settings)
    jobs = {"nga_opendata": "artsim_observe_nga", "raw_objects": "artsim_catalog", "filtered_paintings": "artsim_catalog"}
    cursor, ticks = None, []
    for _ in range(6):
        result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        cursor = result.cursor
        wanted = [name for name in jobs if result.get_num_requested(AssetKey(name))]
        ticks.append(wanted + [f"{n}:{','.join(requested(result, n))}" for n in BATCH_ASSETS if requested(result, n)])
        if requested(result, "image_cache"):
            break
        for job in dict.fromkeys(jobs[name] for name in wanted):
            selection = [AssetKey(name) for name in wanted if jobs[name] == job]
            defs.resolve_job_def(job).execute_in_process(instance=instance, asset_selection=selection)
    assert ticks[-1][-3:] == [f"{n}:batch-00000,batch-00001" for n in BATCH_ASSETS], ticks
    assert len(ticks) <= 4, ticks  # observe, then the catalog, then every batch


def test_runs_of_a_killed_artsim_run_are_failed_so_the_automation_requests_them_again(tmp_path, instance):
    """A killed in-process run stays STARTED; the next `artsim run` marks it failed (no run monitor does)."""
    import subprocess
    import sys

    from dagster import DagsterRunStatus
    from dagster._core.storage.dagster_run import DagsterRun

    from artsim_pipeline.runner import LAUNCHED_BY_TAG, fail_orphaned_runs, launcher_tag

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = launcher_tag().rpartition(":")[0]
    orphan = instance.add_run(DagsterRun(job_name="artsim_batch", run_id="orphan-run", status=DagsterRunStatus.STARTED,
                                         tags={LAUNCHED_BY_TAG: f"{host}:{gone.pid}"}))
    alive = instance.add_run(DagsterRun(job_name="artsim_batch", run_id="alive-run", status=DagsterRunStatus.STARTED,
                                        tags={LAUNCHED_BY_TAG: launcher_tag()}))
    other = instance.add_run(DagsterRun(job_name="artsim_batch", run_id="daemon-run", status=DagsterRunStatus.STARTED))
    assert fail_orphaned_runs(instance) == [orphan.run_id]
    assert instance.get_run_by_id(orphan.run_id).status == DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(alive.run_id).status == DagsterRunStatus.STARTED  # this process is alive
    assert instance.get_run_by_id(other.run_id).status == DagsterRunStatus.STARTED  # not launched by artsim run


def test_a_new_nga_source_setting_is_observed_at_once(tmp_path, instance):
    """ARTSIM_NGA_SOURCE is part of nga_opendata's code version: a reload with a new source observes it."""
    first = write_mirror(tmp_path / "first", [Painting(i, width=96, height=80) for i in range(1, 4)])
    second = write_mirror(tmp_path / "second", [Painting(i, width=96, height=80) for i in range(1, 5)])
    common = dict(data_lake=tmp_path / "lake", limit=0, min_side=64, batch_size=3, models=("mobilenet_v2",),
                  weights="random", device="cpu", pca_dim=4)
    before = build_definitions(Settings(nga_source=str(first), **common))
    after = build_definitions(Settings(nga_source=str(second), **common))
    source = AssetKey("nga_opendata")
    initial = evaluate_automation_conditions(defs=before, instance=instance)
    assert initial.get_num_requested(source) == 1  # observed when the automation starts
    unchanged = evaluate_automation_conditions(defs=before, instance=instance, cursor=initial.cursor)
    assert unchanged.get_num_requested(source) == 0  # nothing new: not before the next cron tick
    switched = evaluate_automation_conditions(defs=after, instance=instance, cursor=unchanged.cursor)
    assert switched.get_num_requested(source) == 1
