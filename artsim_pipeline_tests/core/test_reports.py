"""Report files: JSON keys, markdown tables, PNG plots, the random-weights warning."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from artsim_pipeline.core.evaluation import VariantInput, evaluate_collection
from artsim_pipeline.core.reports import HEADLINE_KEYS, PLOT_NAMES, REQUIRED_KEYS, summary_markdown, write_report

N = 18


def small_collection(tmp_path, with_face: bool = True):
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    images.mkdir()
    artists = [f"Painter {i % 3}" for i in range(N)]
    catalog = pd.DataFrame({
        "objectid": np.arange(100, 100 + N),
        "uuid": [f"img-{i}" for i in range(N)],
        "artist": artists,
        "artist_key": [a.lower() for a in artists],
        "style": [["Baroque", "Rococo; Baroque", None][i % 3] for i in range(N)],
        "medium": ["oil on canvas" if i % 2 else "oil on panel" for i in range(N)],
        "beginyear": [1600 + 10 * i for i in range(N)],
        "endyear": [None] * N,
        "displaydate": [None] * N,
        "title": [f"T{i}" for i in range(N)],
    })
    for i in range(N):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(images / f"img-{i}.jpg")
    centres = rng.normal(size=(3, 8))
    blocks = {
        "model_a": np.stack([centres[i % 3] + 0.8 * rng.normal(size=8) for i in range(N)]),
        "model_b": rng.normal(size=(N, 5)),
    }
    full = VariantInput(catalog["objectid"].to_numpy(), catalog["uuid"].to_numpy(), blocks)
    face = None
    if with_face:
        rows = np.arange(0, N, 2)
        face = VariantInput(full.objectids[rows], full.uuids[rows], {m: v[rows] + 0.1 for m, v in blocks.items()})
    return full, face, catalog, (lambda uuid: images / f"{uuid}.jpg")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("report")
    full, face, catalog, image_path = small_collection(tmp_path)
    result = evaluate_collection(full, catalog, image_path, face=face, models=["model_a", "model_b"],
                                 weights_setting="random", pca_dim=4, pixel_queries=6)
    files = write_report(result, tmp_path / "reports", image_path)
    return result, files


def test_json_has_the_required_keys(written):
    _, files = written
    report = json.loads(files.json.read_text())  # strict JSON: NaN would have been written as null
    assert set(REQUIRED_KEYS) <= set(report)
    headline = report["headline"]
    assert set(HEADLINE_KEYS) <= set(headline)
    assert (headline["method"], headline["relevance"], headline["k"]) == ("visual", "artist", 5)
    assert headline["models"] == ["model_a", "model_b"] and headline["weights"] == "random"
    assert "RANDOM WEIGHTS" in headline["warning"]
    assert headline["n_queries"] == N
    methods = {(r["method"], r["relevance"], r["k"]) for r in report["methods"]}
    for method in ("visual", "hybrid_no_label", "hybrid_all_leaky"):
        for relevance in ("artist", "style"):
            assert {(method, relevance, k) for k in (1, 5, 10)} <= methods
    for row in report["methods"]:
        assert set(row) >= {"precision_at_k", "recall_at_k", "map_at_k", "map", "n_queries", "leaks_label"}
        assert row["leaks_label"] == (row["method"] == "hybrid_all_leaky")
    visual5 = next(r for r in report["methods"] if (r["method"], r["relevance"], r["k"]) == ("visual", "artist", 5))
    assert visual5["precision_at_k"] == pytest.approx(headline["precision_at_k"])
    expected = {(r, k) for r in ("artist", "style") for k in (1, 5, 10)}
    assert {(r["relevance"], r["k"]) for r in report["random_baseline"]} == expected
    names = [a["name"] for a in report["ablations"]]
    assert names[:2] == ["model_a alone", "model_b alone"] and any("whitened" in n for n in names)
    assert report["face_vs_full"]["available"] and len(report["face_vs_full"]["rows"]) == 3
    pixel = report["pixel"]
    assert pixel["n_queries"] == 6 and pixel["n_pairs"] == 30 and pixel["n_random_pairs"] == 30
    assert 0 <= pixel["mean_rmse"] <= 1 and -1 <= pixel["mean_ssim"] <= 1
    assert report["plots"] == {key: name for key, name in PLOT_NAMES.items()}


def test_markdown_has_tables_warning_and_plot_links(written):
    result, files = written
    text = files.markdown.read_text()
    assert "RANDOM WEIGHTS — meaningless" in text
    assert "| method | relevance | K | P@K |" in text and "leaks the label" in text
    assert "## Ablations" in text and "## Pixel similarity" in text
    for name in PLOT_NAMES.values():
        assert f"]({name})" in text
    summary = summary_markdown(result.report)
    assert "RANDOM WEIGHTS" in summary and "| P@5 |" in summary


def test_plots_are_png_images(written):
    _, files = written
    assert set(files.plots) == set(PLOT_NAMES)
    for path in files.plots.values():
        with Image.open(path) as img:
            assert img.format == "PNG" and img.width > 300
    assert not list(files.json.parent.glob("*.tmp"))


def test_report_without_faces_or_styles(tmp_path):
    full, _, catalog, image_path = small_collection(tmp_path, with_face=False)
    catalog["style"] = None
    result = evaluate_collection(full, catalog, image_path, weights_setting="pretrained", pca_dim=4, pixel_queries=3)
    files = write_report(result, tmp_path / "reports", image_path)
    report = json.loads(files.json.read_text())
    assert "warning" not in report["headline"] and "RANDOM WEIGHTS" not in files.markdown.read_text()
    assert {r["relevance"] for r in report["methods"]} == {"artist"}
    assert "style" in report["skipped_relevances"]
    assert report["face_vs_full"]["available"] is False
