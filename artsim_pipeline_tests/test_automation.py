"""Sensors and schedule evaluated against a real instance and data lake."""

import os

from dagster import SkipReason, build_schedule_context, build_sensor_context, materialize

from artsim_pipeline.automation import image_batch_sensor, nga_update_sensor
from artsim_pipeline.config import Settings
from artsim_pipeline.definitions import build_asset_checks, build_assets, build_definitions
from artsim_pipeline.resources import build_resources
from artsim_pipeline.runner import PipelineRunner
from artsim_pipeline_tests.nga_fixtures import Painting, write_mirror


def make_settings(tmp_path, mirror):
    return Settings(nga_source=str(mirror), data_lake=tmp_path / "lake", limit=0, min_side=64, batch_size=3,
                    models=("efficientnet_lite0",))


def test_nga_update_sensor_and_schedule_fire_only_when_upstream_changes(tmp_path, instance):
    mirror = write_mirror(tmp_path / "mirror", [Painting(i) for i in range(1, 4)], with_images=False)
    settings = make_settings(tmp_path, mirror)
    resources = build_resources(settings)
    defs = build_definitions(settings)

    first = nga_update_sensor(build_sensor_context(instance=instance, resources=resources))
    assert len(first.run_requests) == 1 and first.cursor
    instance.report_runless_asset_event(first.asset_events[0])  # what the daemon does with the result
    again = nga_update_sensor(build_sensor_context(instance=instance, resources=resources, cursor=first.cursor))
    assert isinstance(again, SkipReason)

    schedule = defs.get_schedule_def("nga_refresh_schedule")
    assert schedule.cron_schedule == settings.refresh_cron
    with build_schedule_context(instance=instance, resources=resources) as context:
        assert isinstance(schedule(context), SkipReason)
        objects = mirror / "data" / "objects.csv"
        objects.write_text(objects.read_text() + "99,u99,Extra,1700,1700,1700,oil,Someone,Someone,Painting,\n")
        os.utime(objects, ns=(1, 10**18))
        request = schedule(context)
        assert request.run_key and request.run_key != first.run_requests[0].run_key
    changed = nga_update_sensor(build_sensor_context(instance=instance, resources=resources, cursor=first.cursor))
    assert isinstance(changed, SkipReason)  # the schedule already recorded the new version


def test_image_batch_sensor_requests_stale_batches_then_the_index(tmp_path, instance):
    mirror = write_mirror(tmp_path / "mirror", [Painting(i, width=96, height=80) for i in range(1, 6)])
    settings = make_settings(tmp_path, mirror)
    defs = build_definitions(settings)
    context = lambda: build_sensor_context(instance=instance, definitions=defs, resources=build_resources(settings))

    assert isinstance(image_batch_sensor(context()), SkipReason)  # no catalog yet
    materialize([*build_assets(settings), *build_asset_checks(settings)], selection=["raw_objects", "filtered_paintings"],
                resources=build_resources(settings), instance=instance)
    result = image_batch_sensor(context())
    assert [r.partition_key for r in result.run_requests] == ["batch-00000", "batch-00001"]
    names = {k.to_user_string() for k in result.run_requests[0].asset_selection}
    assert names == {"image_cache", "face_crops", "embeddings_efficientnet_lite0"}

    PipelineRunner(defs, settings, instance, echo=lambda _: None).run()
    assert isinstance(image_batch_sensor(context()), SkipReason)  # everything fresh

    # re-running a batch that produces identical vectors does not invalidate the index
    materialize(build_assets(settings), selection=["embeddings_efficientnet_lite0"], partition_key="batch-00001",
                resources=build_resources(settings), instance=instance)
    assert isinstance(image_batch_sensor(context()), SkipReason)
    # a setting of the index changes: batches stay fresh, one run rebuilds the index and what follows it
    changed = settings.with_overrides(pca_dim=2)
    result = image_batch_sensor(build_sensor_context(instance=instance, definitions=build_definitions(changed),
                                                     resources=build_resources(changed)))
    assert len(result.run_requests) == 1 and result.run_requests[0].partition_key is None
    assert {k.to_user_string() for k in result.run_requests[0].asset_selection} == {"pca_model", "faiss_index", "eval_report"}
