"""Two writers of one lake (issue 32 #5): a second ``artsim run`` started while the first runs waits for the
first's stages and computes none of them again; ``artsim run`` waits for the automation's in-progress runs of
the same batch, and stops with one line when they outlast its wait."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus
from dagster._core.storage.dagster_run import DagsterRun

from artsim_pipeline.automation import AUTOMATION_RUN_TAGS
from artsim_pipeline.config import Settings
from artsim_pipeline.definitions import build_definitions
from artsim_pipeline.instance import ensure_instance_config
from artsim_pipeline.partitions import IMAGE_BATCHES
from artsim_pipeline.runner import PipelineRunner
from artsim_pipeline.writers import LAUNCHED_BY_TAG, StageLock, WriterBusy, overlapping_runs, wait_for_writers
from artsim_pipeline_tests.dagster_processes import seven_painting_env
from artsim_pipeline_tests.http_server import IiifImages, LocalServer, Response
from artsim_pipeline_tests.nga_fixtures import Painting, painting_image, publish, update_v1, write_mirror
from artsim_pipeline_tests.support import ARTSIM, materializations

EMBEDDINGS = AssetKey("embeddings_mobilenet_v2")
RUN_TIMEOUT = 300.0  # two `artsim run` of 7 paintings side by side (torch on CPU, a loaded machine)


def no_job_assets(job_name: str):
    return None


def automation_run(instance, run_id: str, partition: str, status=DagsterRunStatus.STARTED) -> DagsterRun:
    return instance.add_run(DagsterRun(
        job_name="__ASSET_JOB", run_id=run_id, status=status, asset_selection=frozenset({EMBEDDINGS}),
        tags={**AUTOMATION_RUN_TAGS, "dagster/partition": partition}))


def test_only_in_progress_runs_of_the_same_assets_and_batch_are_waited_for(tmp_path):
    with DagsterInstance.local_temp(str(tmp_path)) as instance:
        automation_run(instance, "same-batch", "batch-00002")
        automation_run(instance, "other-batch", "batch-00003")
        automation_run(instance, "done", "batch-00002", status=DagsterRunStatus.SUCCESS)
        instance.add_run(DagsterRun(job_name="__ASSET_JOB", run_id="other-asset", status=DagsterRunStatus.STARTING,
                                    asset_selection=frozenset({AssetKey("pca_model")})))
        instance.add_run(DagsterRun(job_name="artsim_batch", run_id="mine", status=DagsterRunStatus.STARTED,
                                    tags={LAUNCHED_BY_TAG: "here:1", "dagster/partition": "batch-00002"}))
        found = overlapping_runs(instance, [AssetKey("image_cache"), EMBEDDINGS], "batch-00002", "here:1",
                                 no_job_assets)
        assert [run.run_id for run in found] == ["same-batch"]
        collection = overlapping_runs(instance, [AssetKey("pca_model")], None, "here:1", no_job_assets)
        assert [run.run_id for run in collection] == ["other-asset"]


def test_a_wait_outlasted_by_the_automations_run_stops_with_one_line_naming_it(tmp_path):
    lines: list[str] = []
    with DagsterInstance.local_temp(str(tmp_path)) as instance:
        run = automation_run(instance, "a1b2c3d4-automation", "batch-00002")
        lock = StageLock(tmp_path / "locks", "artsim_batch-batch-00002")
        started = time.monotonic()
        with pytest.raises(WriterBusy) as busy:
            wait_for_writers(instance, lock, [EMBEDDINGS], "batch-00002", own_tag="here:1",
                             job_assets=no_job_assets, what="batch-00002", wait_s=0.3, echo=lines.append)
        assert time.monotonic() - started < 10
        assert "run a1b2c3d4 (artsim_automation, STARTED) still materializes batch-00002" in str(busy.value)
        assert "\n" not in str(busy.value)
        assert lines == ["batch-00002: waiting for run a1b2c3d4 (artsim_automation, STARTED), which materializes "
                         "it too, up to 0.3 s"]
        assert lock.try_acquire(), "the stage's lock is released when the wait gives up"
        lock.release()
        # once the automation's run has ended, the stage is free at once
        instance.report_run_failed(run)
        assert wait_for_writers(instance, lock, [EMBEDDINGS], "batch-00002", own_tag="here:1",
                                job_assets=no_job_assets, what="batch-00002", wait_s=0.3, echo=lines.append) is False
        lock.release()


def test_a_stage_locked_by_another_writer_is_waited_for_then_taken(tmp_path):
    held = StageLock(tmp_path, "artsim_collection")
    assert held.try_acquire()
    lines: list[str] = []
    with DagsterInstance.local_temp(str(tmp_path)) as instance:
        waiter = StageLock(tmp_path, "artsim_collection")
        with pytest.raises(WriterBusy, match=r"another `artsim run` \(.*:\d+\) still materializes the collection"):
            wait_for_writers(instance, waiter, [AssetKey("pca_model")], None, own_tag="here:1",
                             job_assets=no_job_assets, what="the collection", wait_s=0.1, echo=lines.append)
        assert lines and lines[0].startswith("the collection: waiting for another `artsim run` (")
        held.release()
        assert wait_for_writers(instance, waiter, [AssetKey("pca_model")], None, own_tag="here:1",
                                job_assets=no_job_assets, what="the collection", wait_s=5, echo=lines.append) is False
        waiter.release()


def test_artsim_run_waits_for_the_automations_run_of_a_batch_and_stops_when_it_outlasts_the_wait(tmp_path, instance):
    """The runner (``artsim run``'s main job) consults the automation's in-progress runs before each batch."""
    mirror = write_mirror(tmp_path / "mirror", [Painting(i, width=96, height=80) for i in range(1, 5)])  # 2 batches
    settings = Settings(nga_source=str(mirror), data_lake=tmp_path / "lake", limit=0, min_side=64, batch_size=3,
                        models=("mobilenet_v2",), weights="random", device="cpu", pca_dim=4)
    blocking = automation_run(instance, "feedbeef-automation", "batch-00001")
    lines: list[str] = []
    runner = PipelineRunner(build_definitions(settings), settings, instance, echo=lines.append, wait_s=0.5)
    with pytest.raises(WriterBusy, match=r"run feedbeef \(artsim_automation, STARTED\) still materializes batch-00001"):
        runner.run()
    assert "batch-00001: waiting for run feedbeef (artsim_automation, STARTED), which materializes it too, " \
           "up to 0.5 s" in lines
    assert [record.partition_key for record in materializations(instance, EMBEDDINGS.path[0])] == ["batch-00000"]

    instance.report_run_failed(blocking)  # it ended without materializing: the next `artsim run` computes the batch
    report = PipelineRunner(build_definitions(settings), settings, instance, echo=lines.append, wait_s=0.5).run()
    assert report.partitions_run(EMBEDDINGS.path[0]) == ["batch-00001"]
    assert "pca_model" in report.assets_run()


def _start(tmp_path, env: dict, name: str) -> tuple[subprocess.Popen, object]:
    log = open(tmp_path / f"{name}.log", "w+")
    proc = subprocess.Popen([ARTSIM, "run"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    return proc, log


def _wait_for_line(log: Path, line: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT
    while line not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, f"no {line!r} in {log.name}:\n{log.read_text()}"
        time.sleep(0.05)


def _finish(proc: subprocess.Popen, log, name: str) -> str:
    try:
        code = proc.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        code = proc.wait()
    log.seek(0)
    output = log.read()
    log.close()
    assert code == 0, f"{name} exited {code}:\n{output[-4000:]}"
    return output


@pytest.mark.slow
def test_a_second_artsim_run_waits_for_the_first_and_computes_nothing_twice(tmp_path):
    lake, home = tmp_path / "lake", tmp_path / "dagster_home"
    gate = threading.Event()  # holds the first run inside its catalog stage until the second is waiting for it
    with LocalServer() as server:
        paintings = update_v1()
        publish(server, IiifImages(server), paintings, {p.objectid: painting_image(p.objectid) for p in paintings})
        objects = server.routes["/data/objects.csv"]

        def gated_objects(handler) -> Response:  # the probe's HEAD answers at once, the download waits
            if handler.command == "GET":
                gate.wait(RUN_TIMEOUT)
            return Response(200, objects, {"ETag": '"v1"'})

        server.routes["/data/objects.csv"] = gated_objects
        env = seven_painting_env(tmp_path, lake, home) | {  # the held download must not time out meanwhile
            "PYTHONUNBUFFERED": "1", "ARTSIM_NGA_SOURCE": server.url, "ARTSIM_HTTP_TIMEOUT": str(int(RUN_TIMEOUT))}
        ensure_instance_config(home)
        DagsterInstance.from_config(str(home)).dispose()  # the instance's databases exist before both start

        first, first_log = _start(tmp_path, env, "first")
        second = None
        try:
            _wait_for_line(tmp_path / "first.log", "materializing", first)  # the first is downloading the catalog
            second, second_log = _start(tmp_path, env, "second")
            _wait_for_line(tmp_path / "second.log", "waiting for another `artsim run`", second)
        except BaseException:
            for proc in (first, second):
                if proc is not None:
                    os.killpg(proc.pid, 9)
            raise
        finally:
            gate.set()
        first_out = _finish(first, first_log, "the first artsim run")
        second_out = _finish(second, second_log, "the second artsim run")

    with DagsterInstance.from_config(str(home)) as instance:
        batches = sorted(instance.get_dynamic_partitions(IMAGE_BATCHES))
        assert len(batches) == 3
        per_batch = sorted(record.partition_key for record in materializations(instance, EMBEDDINGS.path[0]))
        assert per_batch == batches, "every batch's embeddings materialized exactly once"
        for name in ("filtered_paintings", "pca_model", "faiss_index"):
            assert len(materializations(instance, name)) == 1, name
        assert [run.status for run in instance.get_runs() if run.status != DagsterRunStatus.SUCCESS] == []
    assert "waiting for another `artsim run`" in second_out, second_out
    assert "another writer materialized it meanwhile; nothing left to run" in second_out, second_out
    assert "waiting for" not in first_out, first_out
