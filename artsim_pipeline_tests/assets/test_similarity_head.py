"""ARTSIM_EPOCHS > 0 adds similarity_head; faiss_index and search then use the projected full fusion."""

import json

import numpy as np

from artsim_pipeline.config import Settings
from artsim_pipeline.core.evaluation.run import SERVED_HEAD_WARNING
from artsim_pipeline.core.generations import load_generation
from artsim_pipeline.core.head import load_head
from artsim_pipeline.core.search import SearchEngine
from artsim_pipeline.core.lake import DataLake
from artsim_pipeline.definitions import build_definitions
from artsim_pipeline.runner import PipelineRunner
from artsim_pipeline_tests.nga_fixtures import Painting, write_mirror


def _keys(settings):
    return {key.to_user_string() for key in build_definitions(settings).resolve_asset_graph().get_all_asset_keys()}


def test_head_is_off_by_default_and_on_with_epochs(tmp_path, instance):
    paintings = [Painting(i, width=80, height=72, attribution=f"Painter {i % 8}") for i in range(1, 25)]
    mirror = write_mirror(tmp_path / "mirror", paintings)
    off = Settings(nga_source=str(mirror), data_lake=tmp_path / "lake", limit=0, min_side=64, batch_size=12,
                   models=("efficientnet_lite0",))
    assert "similarity_head" not in _keys(off)
    on = off.with_overrides(epochs=5)
    assert "similarity_head" in _keys(on)

    report = PipelineRunner(build_definitions(on), on, instance, echo=lambda _: None).run()
    assert {"pca_model", "similarity_head", "faiss_index"} <= set(report.assets_run())
    lake = DataLake(tmp_path / "lake")
    head = load_head(lake.similarity_head_path)
    assert head.info["n_artists"] == 8 and head.info["max_epochs"] == 5
    generation = load_generation(lake)
    full = generation.fusions["full"]
    assert full.projection is not None and np.array_equal(full.projection, head.weight.astype(np.float64))
    assert any("@blocks." in name for name in full.model_names)  # taps are fusion blocks (ARTSIM_TAPS=mean)
    assert not any(name.endswith(".std") for name in full.model_names)

    report = json.loads((lake.reports_dir / "eval_report.json").read_text())
    assert report["headline"]["warning"] == SERVED_HEAD_WARNING  # numbers on labels the head was trained on
    study = json.loads((lake.reports_dir / "eval_study.json").read_text())
    assert study["learned"]["enabled"] is True and study["learned"]["epochs"] == 5

    engine = SearchEngine.from_settings(on)
    assert engine.search(7, k=3, include_self=True)[0].objectid == 7  # the stored (projected) vector finds itself
    # an image query goes through the backbone, its taps, the fusion and the head: it lands on its painting
    by_image = engine.search(str(engine.image_path(7)), k=3)
    assert by_image[0].objectid == 7 and by_image[0].cosine > 0.999
    again = PipelineRunner(build_definitions(on), on, instance, echo=lambda _: None).run()
    assert again.assets_run() == []
