"""Incremental index end to end: a small NGA update keeps the served fit and only adds to the index.

A real ``artsim run`` (Dagster instance, NGA snapshot served from 127.0.0.1) three times: the first fit,
an update with a new batch, a changed image and a removed painting (the fit is kept, the index
updated), then a changed output-shaping setting (a full refit).
"""

import numpy as np
import pytest

from artsim_pipeline.config import Settings
from artsim_pipeline.core.lake_reads import current_collection
from artsim_pipeline.core.fusion import fusion_fingerprint, transform
from artsim_pipeline.core.generations import load_generation, read_generation_file
from artsim_pipeline.core.index import search
from artsim_pipeline.core.status import format_status, lake_status
from artsim_pipeline.core.lake import DataLake
from artsim_pipeline.definitions import build_definitions
from artsim_pipeline.runner import PipelineRunner
from artsim_pipeline_tests.http_server import IiifImages, LocalServer
from artsim_pipeline_tests.nga_fixtures import Painting, painting_image, publish

pytestmark = pytest.mark.slow


def _generation(lake):
    generation = load_generation(DataLake(lake))
    return generation, generation.manifest["fit"]


def test_a_small_update_is_added_to_the_served_fit(tmp_path, instance):
    v1 = [Painting(i, artist=f"Painter {i % 5}", width=128, height=96) for i in range(1, 41)]
    images = {p.objectid: painting_image(p.objectid) for p in v1}
    with LocalServer() as server:
        iiif = IiifImages(server)
        publish(server, iiif, v1, images)
        settings = Settings(
            nga_source=server.url, data_lake=tmp_path / "lake", limit=0, min_side=64, batch_size=8, image_size=128,
            models=("efficientnet_lite0",), http_retries=2, pca_dim=8, refit_share=0.3, refit_drift=3.0,
        )
        runner = PipelineRunner(build_definitions(settings), settings, instance, echo=lambda _: None)
        runner.run()
        first, fit = _generation(tmp_path / "lake")
        assert (fit["mode"], fit["reason"], fit["fit_n"], fit["since_fit"]) == ("full", "no_generation", 40, 0)
        assert fit["fit_id"] == first.manifest["staged_fusion"]

        # NGA update: five new paintings (a new batch), painting 2's image changed, painting 3 removed
        v2 = [p for p in v1 if p.objectid != 3]
        v2[1] = Painting(2, artist="Painter 2", width=128, height=96, modified="2025-06-01")
        new = [Painting(i, artist="Painter 1", width=128, height=96) for i in range(41, 46)]
        images |= {p.objectid: painting_image(p.objectid) for p in new} | {2: painting_image(200)}
        publish(server, iiif, v2 + new, images)
        second_run = runner.run()
        assert {"pca_model", "faiss_index", "collection_map"} <= set(second_run.assets_run())
        second, fit = _generation(tmp_path / "lake")
        assert second.id != first.id
        assert (fit["mode"], fit["added"], fit["changed"], fit["removed"]) == ("incremental", 5, 1, 1), fit
        assert fit["fit_id"] == first.manifest["fit"]["fit_id"] and fit["since_fit"] == 6
        assert fit["share"] == pytest.approx(6 / 44, abs=1e-4) and fit["drift"] < 3.0
        assert fit["base_generation"] == first.id
        assert fusion_fingerprint(second.fusions["full"]) == fusion_fingerprint(first.fusions["full"])
        # the same fit keeps the served identification calibration (no simulated photos on a refresh)
        calibration = read_generation_file(DataLake(tmp_path / "lake"), second.id, "identify.json")
        assert calibration is not None
        assert calibration == read_generation_file(DataLake(tmp_path / "lake"), first.id, "identify.json")
        status = lake_status(DataLake(tmp_path / "lake"))
        assert status["index"]["fit"]["mode"] == "incremental"
        assert "fit kept, 6 paintings added since it (13.6%)" in format_status(status)
        bundle = second.bundles["full"]
        assert sorted(bundle.ids.tolist()) == sorted(p.objectid for p in v2 + new)
        # every painting, the re-embedded one included, is indexed with its current vector
        current = current_collection(DataLake(tmp_path / "lake"), settings.models, settings.taps)["full"]
        fused = transform(second.fusions["full"], current.blocks)
        np.testing.assert_allclose(bundle.index.reconstruct_batch(current.objectids), fused, atol=1e-5)
        _, top = search(bundle, fused, 1)
        assert (top[:, 0] == current.objectids).all()

        # an output-shaping setting changes: the fit is made afresh
        refit = settings.with_overrides(pca_dim=6)
        PipelineRunner(build_definitions(refit), refit, instance, echo=lambda _: None).run()
        third, fit = _generation(tmp_path / "lake")
        assert (fit["mode"], fit["reason"], fit["since_fit"]) == ("full", "settings_changed", 0)
        assert third.bundles["full"].index.d == 6
