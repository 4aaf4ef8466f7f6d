"""Catalog assets through Dagster's ``materialize()``: HTTP source with a fault, and the shared mirror."""

import duckdb
from dagster import AssetKey, materialize

from artsim_pipeline.config import Settings
from artsim_pipeline.definitions import build_assets
from artsim_pipeline.partitions import IMAGE_BATCHES
from artsim_pipeline.resources import NgaSourceResource, build_resources
from artsim_pipeline_tests.http_server import LocalServer
from artsim_pipeline_tests.nga_fixtures import Painting, nga_csvs

CATALOG = ["nga_opendata", "raw_objects", "filtered_paintings"]


def run_catalog(settings, instance, **resource_overrides):
    resources = build_resources(settings) | resource_overrides
    result = materialize(build_assets(settings), selection=CATALOG, resources=resources, instance=instance)
    assert result.success
    return result


def metadata(instance, name):
    event = instance.get_latest_materialization_event(AssetKey(name))
    return {key: value.value for key, value in event.asset_materialization.metadata.items()}


def test_catalog_assets_over_http_with_one_500(tmp_path, instance):
    paintings = [Painting(i, artist=f"Artist {i % 3}", width=1500 if i % 4 == 0 else 600) for i in range(1, 12)]
    paintings.append(Painting(99, classification="Drawing"))
    with LocalServer() as server:
        for name, body in nga_csvs(paintings).items():
            server.routes[f"/data/{name}.csv"] = body
        server.faults["/data/objects.csv"] = [500]
        settings = Settings(nga_source=server.url, data_lake=tmp_path / "lake", limit=0, batch_size=4)
        resources = build_resources(settings)
        resources["nga_source"] = NgaSourceResource(location=settings.nga_source, backoff_base_s=0.01)  # a new one: Dagster rebuilds a model_copy from its old config
        selection = ["raw_objects", "filtered_paintings"]
        result = materialize(build_assets(settings), selection=selection, resources=resources, instance=instance)
        assert result.success
        assert server.count("/data/objects.csv", method="GET") == 2  # the 500, then the retry
    raw = metadata(instance, "raw_objects")
    assert raw["rows_objects"] == 12 and raw["rows_published_images"] == 12
    filtered = metadata(instance, "filtered_paintings")
    assert filtered["paintings"] == 11 and filtered["distinct_artists"] == 3 and filtered["high_res"] == 2
    assert filtered["batches"] == 3
    assert instance.get_dynamic_partitions(IMAGE_BATCHES) == ["batch-00000", "batch-00001", "batch-00002"]
    checks = [e for e in result.get_asset_check_evaluations()]
    assert len(checks) == 5 and all(c.passed for c in checks)  # 3 @asset_check + required_columns, no_sudden_shrink
    parquet = tmp_path / "lake" / "tables" / "filtered_paintings.parquet"
    assert duckdb.sql(f"SELECT count(*) FROM '{parquet}'").fetchall()[0][0] == 11
    # each batch's membership is an observation of image_batch, with the batch fingerprint as data version
    sizes = duckdb.sql(f"SELECT batch_key, count(*) FROM '{parquet}' GROUP BY 1 ORDER BY 1").fetchall()
    assert sizes == [("batch-00000", 4), ("batch-00001", 4), ("batch-00002", 3)]
    versions = {}
    for batch in ("batch-00000", "batch-00001", "batch-00002"):
        record = instance.get_latest_data_version_record(AssetKey("image_batch"), True, batch)
        versions[batch] = record.asset_observation.tags["dagster/data_version"]
    assert len(set(versions.values())) == 3


def test_catalog_assets_on_the_shared_mirror(tmp_path, instance, nga_mirror):
    settings = Settings(nga_source=str(nga_mirror), data_lake=tmp_path / "lake", limit=0, min_side=128, batch_size=256)
    run_catalog(settings, instance)
    filtered = metadata(instance, "filtered_paintings")
    assert filtered["paintings"] == 1698 and filtered["distinct_artists"] == 29
    keys = instance.get_dynamic_partitions(IMAGE_BATCHES)
    assert keys == [f"batch-{i:05d}" for i in range(7)]  # ceil(1698 / 256)
    with duckdb.connect(str(tmp_path / "lake" / "catalog.duckdb"), read_only=True) as con:
        sizes = [n for (n,) in con.execute("SELECT count(*) FROM batch_manifest GROUP BY batch_key ORDER BY batch_key").fetchall()]
    assert sizes == [256] * 6 + [1698 - 6 * 256]
    # the default ARTSIM_LIMIT keeps a deterministic first-run subset
    run_catalog(Settings(nga_source=str(nga_mirror), data_lake=tmp_path / "lake2", min_side=128), instance)
    assert metadata(instance, "filtered_paintings")["paintings"] == 1000
