"""Issue 32 #3 and #7 on the user's path: NGA changes upstream, ``artsim run`` refreshes the lake (Dagster,
NGA served from 127.0.0.1) while ``artsim serve``'s app answers over real HTTP on 127.0.0.1.

* only a title changes: no new index generation is published, yet the running server shows the new title
  at the next request (the painting, title search, the map, search results);
* one painting is removed: its batch's embeddings encode nothing (every other vector is reused), and the
  painting is gone from every answer.
"""

import requests
from dagster import AssetKey

from artsim_pipeline.config import Settings
from artsim_pipeline.core.lake import DataLake
from artsim_pipeline.core.search import SearchEngine
from artsim_pipeline.definitions import build_definitions
from artsim_pipeline.runner import PipelineRunner
from artsim_pipeline.web.app import create_app
from artsim_pipeline_tests.http_server import IiifImages, LocalServer
from artsim_pipeline_tests.nga_fixtures import Painting, painting_image, publish
from artsim_pipeline_tests.web_lake import LiveServer

EMBEDDINGS = "embeddings_efficientnet_lite0"


def _get(live, path, **params):
    return requests.get(live.url + path, params=params, timeout=120)


def _latest_embeddings(instance) -> tuple[str, dict]:
    event = instance.get_latest_materialization_event(AssetKey(EMBEDDINGS)).asset_materialization
    return event.partition, {k: v.value for k, v in event.metadata.items()}


def test_a_running_server_follows_a_refresh_and_a_removal_reembeds_nothing(tmp_path, instance):
    v1 = [Painting(i, title=f"Painting {i}", artist=f"Painter {i % 3}", width=128, height=96) for i in range(1, 9)]
    images = {p.objectid: painting_image(p.objectid) for p in v1}
    with LocalServer() as server:
        iiif = IiifImages(server)
        publish(server, iiif, v1, images)
        settings = Settings(nga_source=server.url, data_lake=tmp_path / "lake", limit=0, min_side=64, batch_size=4,
                            image_size=128, models=("efficientnet_lite0",), http_retries=2, pca_dim=4, device="cpu")
        runner = PipelineRunner(build_definitions(settings), settings, instance, echo=lambda _: None)
        runner.run()
        lake = DataLake(settings.data_lake)
        generation = lake.index_pointer_path.read_text().strip()
        app = create_app(lake, lambda: SearchEngine.from_settings(settings))
        with LiveServer(app) as live:
            assert _get(live, "/api/paintings/2").json()["title"] == "Painting 2"

            # v2: only painting 2's title changes upstream
            v2 = [Painting(2, title="Evening on the Canal", artist="Painter 2", width=128, height=96)
                  if p.objectid == 2 else p for p in v1]
            publish(server, iiif, v2, images)
            runner.run()
            assert lake.index_pointer_path.read_text().strip() == generation  # no new generation
            assert _get(live, "/api/paintings/2").json()["title"] == "Evening on the Canal"
            assert [p["objectid"] for p in _get(live, "/api/paintings", q="evening on the canal").json()["paintings"]] == [2]
            the_map = _get(live, "/api/map", wait=60).json()
            assert dict(zip(the_map["objectid"], the_map["title"]))[2] == "Evening on the Canal"
            results = _get(live, "/api/search", objectid=1, k=8).json()["results"]
            assert {r["objectid"]: r["title"] for r in results}[2] == "Evening on the Canal"

            # v3: painting 3 (batch 0) is removed upstream: batch 0 is embedded again, encoding nothing
            v3 = [p for p in v2 if p.objectid != 3]
            publish(server, iiif, v3, images)
            report = runner.run()
            assert report.partitions_run(EMBEDDINGS) == ["batch-00000"]
            partition, metadata = _latest_embeddings(instance)
            assert partition == "batch-00000" and metadata["encoded"] == 0, metadata
            assert metadata["reused"] == metadata["full_vectors"] + metadata["face_vectors"] and metadata["full_vectors"] == 3
            assert _get(live, "/api/paintings/3").status_code == 404
            ids = [r["objectid"] for r in _get(live, "/api/search", objectid=1, k=8).json()["results"]]
            assert 3 not in ids and sorted(ids) == [2, 4, 5, 6, 7, 8]  # the query painting leaves itself out
