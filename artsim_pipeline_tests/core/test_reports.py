"""Report files: JSON keys, markdown tables, PNG plots, the random-weights warning."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from artsim_pipeline.core.evaluation import EVAL_EPOCHS, VariantInput, evaluate_collection
from artsim_pipeline.core.reports import (
    HEADLINE_KEYS,
    PLOT_NAMES,
    REQUIRED_KEYS,
    full_markdown,
    markdown_with_plots,
    summary_markdown,
    write_report,
)

from .support import assert_monotonic_to_total

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
    learned = report["learned"]
    assert learned["available"] and learned["enabled"] is False and learned["epochs"] == EVAL_EPOCHS
    assert set(learned) >= {"heldout_artists", "precision_at_5_pca", "precision_at_5_learned", "map_pca",
                            "map_learned", "train_seconds", "splits", "delta_precision_at_5"}
    assert learned["heldout_artists"] == {"per_split": [1, 1, 1], "mean": 1.0}  # 3 painters: a third held out
    for row in learned["splits"]:
        assert len(row["artists"]) == 1 and row["heldout_paintings"] == 6 and row["train_paintings"] == 12
        assert 0.0 <= row["precision_at_5_pca"] <= 1.0 and row["epochs"] == 0  # 2 training artists: identity head


def test_markdown_has_tables_warning_and_plot_links(written):
    result, files = written
    text = files.markdown.read_text()
    assert "RANDOM WEIGHTS — meaningless" in text
    assert "| method | relevance | K | P@K |" in text and "leaks the label" in text
    assert "## Ablations" in text and "## Pixel similarity" in text
    assert "## Learned head (held-out artists)" in text and "| seed 0 | 1 | 6 |" in text
    assert "serves no head (ARTSIM_EPOCHS=0)" in text
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
    assert "Learned head (held-out artists)" in summary_markdown(report)


def test_evaluation_logs_one_line_per_step_with_counts_and_elapsed(tmp_path):
    full, face, catalog, image_path = small_collection(tmp_path)
    lines: list[str] = []
    evaluate_collection(full, catalog, image_path, face=face, pca_dim=4, pixel_queries=3, log=lines.append)
    assert lines[0].startswith(f"eval: {N} paintings, 4-d fused vectors") and "8 method runs" in lines[0]
    for stage, total in (("methods", 8), ("ablations", 8)):  # 2 relevances x (3 methods + random); 8 vector sets
        stage_lines = [line for line in lines if line.startswith(f"eval: {stage} ")]
        assert assert_monotonic_to_total(stage_lines, total) == list(range(1, total + 1))
        assert all(re.search(r" in \d+\.\ds, \d+\.\ds elapsed$", line) for line in stage_lines), stage_lines
    assert "eval: methods 4/8: random/artist in " in "\n".join(lines)
    pixel = next(line for line in lines if line.startswith("eval: pixel metrics in "))
    assert "15 query-result pairs + 15 random pairs" in pixel and pixel.endswith("s elapsed")
    assert any(line.startswith("eval: face vs full in ") for line in lines)
    assert re.fullmatch(r"eval: done in \d+\.\ds", lines[-1])
    elapsed = [float(m.group(1)) for line in lines if (m := re.search(r"(\d+\.\d)s elapsed", line))]
    assert elapsed == sorted(elapsed)


def _data_uris(text: str) -> list[tuple[str, bytes]]:
    return [(alt, base64.b64decode(data)) for alt, data in re.findall(r"!\[([^\]]*)\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", text)]


def test_markdown_with_plots_embeds_small_pngs(written):
    result, files = written
    text = markdown_with_plots(result.report, files)
    assert text.startswith(summary_markdown(result.report))
    images = _data_uris(text)
    assert len(images) == len(PLOT_NAMES)
    assert images[0][0].startswith("Precision@K per method")
    for _, png in images:
        with Image.open(io.BytesIO(png)) as img:
            assert img.format == "PNG" and 100 < img.width <= 800
    widest = max(files.plots.values(), key=lambda p: Image.open(p).width)
    assert Image.open(widest).width > 800  # so the downscaling was exercised
    assert len(text.encode("utf-8")) < 1_500_000
    assert markdown_with_plots(result.report, files.plots) == text  # the plain mapping works too


def test_markdown_with_plots_skips_what_does_not_fit_with_a_note(written, tmp_path):
    result, files = written
    base = len(summary_markdown(result.report).encode("utf-8"))
    sizes = {key: len(markdown_with_plots(result.report, {key: path}).encode("utf-8")) - base
             for key, path in files.plots.items()}
    budget = base + sizes["precision_curves"] + 400  # room for the first plot (and notes), not the others
    text = markdown_with_plots(result.report, files, max_total_bytes=budget)
    assert [alt for alt, _ in _data_uris(text)] == ["Precision@K per method (dashed: random ranking)"]
    for key in ("precision_hist", "pixel", "examples"):
        assert f"see {PLOT_NAMES[key]} in the reports folder" in text
    assert "not embedded" in text

    missing = markdown_with_plots(result.report, {"pixel": tmp_path / "gone.png"})
    assert "not embedded (FileNotFoundError" in missing and not _data_uris(missing)
    small = markdown_with_plots(result.report, files, max_width=300)
    assert all(Image.open(io.BytesIO(png)).width <= 300 for _, png in _data_uris(small))


RAW_FLOAT = re.compile(r"\d\.\d{5,}")


def test_markdown_numbers_are_rounded(written):
    result, files = written
    report = json.loads(files.json.read_text())
    for text in (summary_markdown(result.report), full_markdown(report, report["plots"]), files.markdown.read_text(),
                 re.sub(r"base64,[A-Za-z0-9+/=]+", "", markdown_with_plots(result.report, files))):
        assert not RAW_FLOAT.findall(text), RAW_FLOAT.findall(text)[:5]
    # raw Python and numpy floats, NaN of either kind, in every table of the summary
    raw = json.loads(json.dumps(report))
    raw["headline"].update(precision_at_k=0.41825677267373385, map=np.float32(0.123456789), recall_at_k=np.float32("nan"))
    raw["methods"][0].update(precision_at_k=np.float64(0.98765432101), map=float("inf"))
    raw["ablations"][0].update(map=1 / 3)
    text = summary_markdown(raw)
    assert not RAW_FLOAT.findall(text)
    assert "0.418 ±" in text and "0.123 ±" in text and "| 0.988 |" in text and "| 0.333 |" in text
    assert not re.search(r"\b(nan|inf)\b", text, re.IGNORECASE)


# fault matrix (issue 19 #5): catalog text is data, never markup (matplotlib mathtext, Markdown)
def test_artist_names_with_mathtext_and_markdown_are_plotted_as_text(tmp_path):
    full, _, catalog, image_path = small_collection(tmp_path, with_face=False)
    names = ["$\\frac{1}{$", "A $x^2$ b_c *d*", "Painter | $$ \\ ^"]
    catalog["artist"] = [names[i % 3] for i in range(N)]
    catalog["artist_key"] = [f"k{i % 3}" for i in range(N)]
    result = evaluate_collection(full, catalog, image_path, weights_setting="pretrained", pca_dim=4, pixel_queries=3)
    files = write_report(result, tmp_path / "reports", image_path)  # raised ValueError (mathtext) before
    assert files.plots["examples"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_methods_text_states_the_hybrid_weights_the_report_used(written):
    result, files = written
    assert "3K visual candidates by 0.7·visual + 0.3·metadata" in files.markdown.read_text()
    report = json.loads(json.dumps(result.report))
    report["settings"]["scoring"].update(visual=0.6, metadata=0.4, candidate_factor=5)
    assert "5K visual candidates by 0.6·visual + 0.4·metadata" in full_markdown(report, {})
