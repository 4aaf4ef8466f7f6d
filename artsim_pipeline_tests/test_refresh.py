"""Incremental refresh end to end: NGA snapshot v1 → v2 served from 127.0.0.1, only what changed re-runs."""

import duckdb

from artsim_pipeline.config import Settings
from artsim_pipeline.core.generations import load_generation
from artsim_pipeline.core.lake import DataLake
from artsim_pipeline.definitions import build_definitions
from artsim_pipeline.runner import PipelineRunner
from artsim_pipeline_tests.http_server import IiifImages, LocalServer
from artsim_pipeline_tests.nga_fixtures import Painting, painting_image, publish

BATCH_ASSETS = ["image_cache", "face_crops", "embeddings_efficientnet_lite0"]


def test_refresh_runs_only_new_and_changed_batches(tmp_path, instance):
    v1 = [Painting(i, artist=f"Painter {i % 3}", width=128, height=96, styles=["Baroque"] if i % 2 else []) for i in range(1, 11)]
    images = {p.objectid: painting_image(p.objectid) for p in v1}
    with LocalServer() as server:
        iiif = IiifImages(server)
        publish(server, iiif, v1, images)
        settings = Settings(
            nga_source=server.url, data_lake=tmp_path / "lake", limit=0, min_side=64, batch_size=4, image_size=128,
            models=("efficientnet_lite0",), http_retries=2,
        )
        runner = PipelineRunner(build_definitions(settings), settings, instance, echo=lambda _: None)

        first = runner.run()
        assert first.partitions_run("image_cache") == ["batch-00000", "batch-00001", "batch-00002"]
        assert {"pca_model", "faiss_index"} <= set(first.assets_run())

        # v2: three new paintings, painting 2's image changed, painting 3 removed (both in batch 0)
        v2 = [p for p in v1 if p.objectid != 3]
        v2[1] = Painting(2, artist="Painter 2", width=128, height=96, modified="2025-06-01")
        new = [Painting(i, artist="Painter 1", width=128, height=96) for i in (11, 12, 13)]
        images |= {p.objectid: painting_image(p.objectid) for p in new} | {2: painting_image(200)}
        publish(server, iiif, v2 + new, images)
        requests_before = server.count("/iiif/")

        second = runner.run()
        for asset in BATCH_ASSETS:
            assert second.partitions_run(asset) == ["batch-00000", "batch-00003"], asset
        assert {"raw_objects", "filtered_paintings", "pca_model", "faiss_index"} <= set(second.assets_run())
        assert server.count("/iiif/") - requests_before == 4  # the changed image and the three new ones
        bundle = load_generation(DataLake(tmp_path / "lake")).bundles["full"]
        expected = sorted(p.objectid for p in v2 + new)
        assert sorted(bundle.ids.tolist()) == expected

        third = runner.run()
        assert third.ran == []  # only the cheap checks ran

    with duckdb.connect(str(tmp_path / "lake" / "catalog.duckdb"), read_only=True) as con:
        assert con.execute("SELECT batch_key FROM batch_manifest WHERE objectid = 12").fetchall() == [("batch-00003",)]
