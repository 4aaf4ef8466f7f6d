"""``eval_report`` and ``eval_study`` through Dagster: the whole chain on a small generated mirror (random
weights); a new batch re-runs the per-refresh report, not the study."""

import json

from dagster import AssetCheckKey, AssetKey

from artsim_pipeline.config import Settings
from artsim_pipeline.core.reports import HEADLINE_KEYS, PLOT_NAMES, REQUIRED_KEYS, report_names
from artsim_pipeline.definitions import build_definitions
from artsim_pipeline.code_versions import code_version
from artsim_pipeline.runner import PipelineRunner
from artsim_pipeline_tests.nga_fixtures import Painting, write_mirror

STYLES = [["Baroque"], ["Impressionism"], ["Baroque", "Realism"]]


def _meta(instance, name: str):
    event = instance.get_latest_materialization_event(AssetKey(name)).asset_materialization
    return event, {key: value.value for key, value in event.metadata.items()}


def test_eval_report_and_eval_study_materialize_after_the_index(tmp_path, instance):
    paintings = [
        Painting(i, artist=f"Painter {i % 3}", styles=STYLES[i % 3], width=160, height=120, beginyear=1600 + 20 * i,
                 medium="oil on panel" if i % 2 else "oil on canvas")
        for i in range(1, 13)
    ]
    mirror = write_mirror(tmp_path / "mirror", paintings)
    settings = Settings(
        nga_source=str(mirror), data_lake=tmp_path / "lake", limit=0, min_side=64, batch_size=6,
        models=("mobilenet_v2",), weights="random", device="cpu", embed_batch_size=8, pca_dim=8,
    )
    runner = PipelineRunner(build_definitions(settings), settings, instance, echo=lambda _: None)
    first = runner.run()
    assert {"eval_report", "eval_study"} <= set(first.assets_run())

    # the per-refresh report: the methods, the chance level, the served index; no study blocks
    event, meta = _meta(instance, "eval_report")
    assert 0.0 <= meta["precision_at_k"] <= 1.0 and 0.0 <= meta["map"] <= 1.0
    assert meta["n_queries"] == 12 and meta["n_paintings"] == 12
    assert "mean_rmse" not in meta and "heldout_precision_at_5_learned" not in meta
    assert meta["weights"] == "random" and "RANDOM WEIGHTS" in meta["warning"]
    assert "| P@5 |" in meta["report"] and "hybrid_no_label" in meta["report"] and "eval_study" in meta["report"]
    assert event.tags["dagster/code_version"] == code_version("eval_report", settings)  # logic + its settings
    reports = tmp_path / "lake" / "reports"
    report = json.loads((reports / "eval_report.json").read_text())
    assert report["study"] is False and report["ablations"] == [] and report["learned"]["available"] is False
    assert set(REQUIRED_KEYS) <= set(report) and set(HEADLINE_KEYS) <= set(report["headline"])
    assert round(report["headline"]["precision_at_k"], 4) == meta["precision_at_k"]  # shown rounded in the UI
    assert report["index_check"]["recall_vs_exact_at_5"] == 1.0  # 12 vectors: a flat (exact) index
    assert {r["relevance"] for r in report["methods"]} == {"artist", "style"}
    assert (reports / PLOT_NAMES["precision_curves"]).stat().st_size > 0
    # the asset page: the methods as a table, the plots and files as paths relative to the lake
    rows = [record.data for record in meta["methods"].records]
    assert len(rows) == len(report["methods"]) + len(report["random_baseline"])
    assert {"method", "relevance", "k", "precision_at_k", "map"} <= set(rows[0])
    assert meta["plot_precision_curves"] == f"reports/{PLOT_NAMES['precision_curves']}"
    assert meta["report_json"] == "reports/eval_report.json"
    keys = [AssetCheckKey(AssetKey("eval_report"), name) for name in ("precision_above_chance", "no_quality_drop")]
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    drop = latest[keys[1]].event.dagster_event.event_specific_data
    assert drop.passed and drop.metadata["previous_precision_at_5"].value == "none (first report)"
    chance = latest[keys[0]].event.dagster_event.event_specific_data  # random weights: whatever it found, it says
    assert chance.metadata["random_precision_at_5"].value == round(report["headline"]["random_precision_at_k"], 4)

    # the study: the same headline numbers plus the ablations, the learned head and the pixel metrics
    event, study_meta = _meta(instance, "eval_study")
    assert study_meta["precision_at_k"] == meta["precision_at_k"] and 0.0 <= study_meta["mean_rmse"] <= 1.0
    for key in ("heldout_precision_at_5_pca", "heldout_precision_at_5_learned", "heldout_map_pca", "heldout_map_learned"):
        assert 0.0 <= study_meta[key] <= 1.0, key
    study = json.loads((reports / "eval_study.json").read_text())
    assert study["study"] is True and study["ablations"] and study["settings"]["fusion"]["source"] == "fusion file"
    learned = study["learned"]  # 3 painters: one held out per split, the head off (ARTSIM_EPOCHS=0)
    assert learned["enabled"] is False and len(learned["splits"]) == 3
    assert round(learned["precision_at_5_learned"], 4) == study_meta["heldout_precision_at_5_learned"]
    assert "RANDOM WEIGHTS — meaningless" in (reports / "eval_study.md").read_text()
    for name in report_names("eval_study")[2].values():
        assert (reports / name).stat().st_size > 0, name

    second = runner.run()  # nothing changed: both up to date
    assert not {"eval_report", "eval_study"} & set(second.assets_run())

    # a new batch: the refresh re-runs the per-refresh report, not the study
    paintings += [Painting(i, artist=f"Painter {i % 3}", styles=STYLES[i % 3], width=160, height=120)
                  for i in range(13, 19)]
    write_mirror(tmp_path / "mirror", paintings)
    third = runner.run()
    assert "eval_report" in third.assets_run() and "eval_study" not in third.assets_run(), third.ran
    assert _meta(instance, "eval_report")[1]["n_paintings"] == 18
