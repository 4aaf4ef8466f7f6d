"""Changing ARTSIM_MODELS re-materializes only the affected assets."""

import pyarrow.parquet as pq

from artsim_pipeline.config import Settings
from artsim_pipeline.definitions import build_definitions
from artsim_pipeline.runner import PipelineRunner
from artsim_pipeline_tests.nga_fixtures import Painting, write_mirror


def test_adding_a_model_runs_only_its_embeddings_and_the_collection_assets(tmp_path, instance):
    mirror = write_mirror(tmp_path / "mirror", [Painting(i, width=96, height=80) for i in range(1, 6)])
    base = Settings(nga_source=str(mirror), data_lake=tmp_path / "lake", limit=0, min_side=64, batch_size=3,
                    models=("efficientnet_lite0",))

    def run(settings):
        return PipelineRunner(build_definitions(settings), settings, instance, echo=lambda _: None).run()

    first = run(base)
    assert first.partitions_run("embeddings_efficientnet_lite0") == ["batch-00000", "batch-00001"]

    second = run(base.with_overrides(models=("efficientnet_lite0", "mobilenet_v2")))
    assert second.partitions_run("embeddings_mobilenet_v2") == ["batch-00000", "batch-00001"]
    for untouched in ("raw_objects", "filtered_paintings", "image_cache", "face_crops", "embeddings_efficientnet_lite0"):
        assert untouched not in second.assets_run(), untouched
    assert {"pca_model", "faiss_index"} <= set(second.assets_run())

    table = pq.read_table(tmp_path / "lake" / "embeddings" / "mobilenet_v2" / "batch-00000.parquet")
    taps = [f"tap:features.{i}.{stat}" for i in (10, 13, 16, 17) for stat in ("mean", "std")]
    assert table.column_names == ["objectid", "uuid", "variant", "vector", *taps]
    assert table.num_rows >= 3 and len(table.column("vector")[0]) == 1280

    # changing the weights of one model invalidates that model's embeddings only
    third = run(base.with_overrides(models=("efficientnet_lite0", "mobilenet_v2"), weights="random"))
    assert set(third.partitions_run("embeddings_mobilenet_v2")) == {"batch-00000", "batch-00001"}
    assert "image_cache" not in third.assets_run() and "face_crops" not in third.assets_run()
