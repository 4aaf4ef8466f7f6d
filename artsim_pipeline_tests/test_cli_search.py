"""``artsim search`` and ``artsim bench`` as a user runs them (subprocesses on a small built lake)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from artsim_pipeline.cli import build_parser
from artsim_pipeline_tests.search_lake import shared_search_lake
from artsim_pipeline_tests.support import ARTSIM


@pytest.fixture(scope="module")
def lake_settings():
    return shared_search_lake()


def artsim(args, cwd: Path, settings, models: str | None = None):
    """Run ``artsim``; ``models`` is ARTSIM_MODELS (default: the lake's models; "" leaves it unset)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARTSIM_", "DAGSTER_HOME"))}
    env |= {"ARTSIM_DATA_LAKE": str(settings.data_lake), "ARTSIM_DEVICE": "cpu"}
    models = ",".join(settings.models) if models is None else models
    if models:
        env["ARTSIM_MODELS"] = models
    return subprocess.run([ARTSIM, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_search_prints_an_aligned_table(lake_settings, tmp_path):
    result = artsim(["search", "101", "-k", "4", "--artist", "rembrandt", "--include-self"], tmp_path, lake_settings)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("rank"))
    rows = lines[header + 2:lines.index("")]
    assert len(rows) == 3  # three Rembrandts
    why = lines[lines.index("") + 2:]  # then what agreed, a line per result
    assert [line.split()[0] for line in why] == ["1", "2", "3"]
    assert "very close in subject and composition" in why[0] and "same artist" in why[0]
    assert rows[0].split()[:2] == ["1", "101"]
    assert "Self-Portrait" in rows[0] and "Rembrandt van Rijn" in rows[0]
    title_at = lines[header].index("title")
    assert all(row[title_at - 2:title_at] == "  " for row in rows)  # columns line up
    assert "match: 0.7 × visual + 0.3 × catalog" in lines
    # by default a painting's neighbours are other paintings: the two other Rembrandts, never itself
    others = artsim(["search", "101", "-k", "4", "--artist", "rembrandt", "--json"], tmp_path, lake_settings)
    payload = json.loads(others.stdout)
    assert sorted(r["objectid"] for r in payload["results"]) == [102, 103]
    assert payload["identified"] is None and payload["identification"] is None


@pytest.mark.slow
def test_search_json_and_grid(lake_settings, tmp_path):
    query = lake_settings.data_lake / "images" / "u00000105-test.jpg"
    grid = tmp_path / "similar_images.png"
    result = artsim(["search", query, "-k", "3", "--json", "--grid", grid], tmp_path, lake_settings)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["kind"] == "image" and payload["k"] == 3
    assert [r["rank"] for r in payload["results"]] == [1, 2, 3]
    assert payload["results"][0]["objectid"] == 105
    # the contract the page codes against: the photo is identified as painting 105, and says how
    assert payload["identified"] == {"objectid": 105, "title": "Woman Holding a Balance",
                                     "attribution": "Johannes Vermeer",
                                     "confidence": payload["identification"]["confidence"]}
    verdict = payload["identification"]
    assert verdict["verdict"] == "identified" and 0.5 < verdict["confidence"] <= 1
    assert verdict["score"] >= verdict["threshold"] and "top-1" in verdict["method"]
    assert payload["match_basis"] == "visual similarity only (an image has no catalog data)"
    assert payload["results"][0]["final"] == payload["results"][0]["visual"] > 0.9  # a near-100 % match
    plain = artsim(["search", query, "-k", "3"], tmp_path, lake_settings)
    assert plain.stdout.splitlines()[1].startswith("This is Woman Holding a Balance — Johannes Vermeer (objectid 105, "
                                                   "confidence ")
    assert {"title", "artist", "date", "style", "medium", "image_path", "visual", "metadata", "final"} <= set(
        payload["results"][0])
    why = payload["results"][0]["explanation"]  # the numbers behind the words, per backbone and depth
    assert set(why["depths"]) == {"early", "middle", "final"} and set(why["backbones"]) == {"efficientnet_lite0"}
    assert why["depths"]["final"] > 0.99 and why["metadata"] == {} and why["summary"]
    with Image.open(grid) as image:
        assert image.format == "PNG" and image.size[0] > 400


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["not_an_image", "missing_file", "unknown_objectid"])
def test_bad_queries_exit_non_zero_with_a_clear_message(lake_settings, tmp_path, kind):
    if kind == "not_an_image":
        query = tmp_path / "readme.txt"
        query.write_text("hello")
        expected = "not a readable image"
    elif kind == "missing_file":
        query = tmp_path / "nowhere.jpg"
        expected = "no such file"
    else:
        query = "987654"
        expected = "not in the collection"
    result = artsim(["search", query], tmp_path, lake_settings)
    assert result.returncode in (1, 2)
    assert expected in result.stderr and str(query) in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.slow
def test_search_without_artsim_models_uses_the_index_models(lake_settings, tmp_path):
    # regression: the default models (ARTSIM_MODELS unset) differ from the index's efficientnet_lite0
    result = artsim(["search", "101", "-k", "2", "--json"], tmp_path, lake_settings, models="")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["results"][0]["objectid"] != 101  # itself left out
    assert "artsim search: using the index's models efficientnet_lite0" in result.stderr
    quiet = artsim(["search", "101", "-k", "2", "--json"], tmp_path, lake_settings)  # ARTSIM_MODELS = the index's
    assert quiet.returncode == 0 and "using the index's models" not in quiet.stderr


@pytest.mark.slow
def test_search_with_a_conflicting_artsim_models_is_a_clear_error(lake_settings, tmp_path):
    result = artsim(["search", "101"], tmp_path, lake_settings, models="mobilenet_v2")
    assert result.returncode == 2 and result.stdout == ""
    assert "ARTSIM_MODELS" in result.stderr
    assert "mobilenet_v2" in result.stderr and "efficientnet_lite0" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_parser_has_search_and_bench():
    parser = build_parser()
    args, extra = parser.parse_known_args(["search", "12", "-k", "3", "--face-crop", "--years", "1600-1700"])
    assert (args.query, args.k, args.face_crop, args.years, extra) == ("12", 3, True, "1600-1700", [])
    assert not args.include_self and parser.parse_args(["search", "12", "--include-self"]).include_self
    args, extra = parser.parse_known_args(["bench", "identify", "--paintings", "5"])
    assert args.benchmark == "identify" and extra == ["--paintings", "5"]
    args, extra = parser.parse_known_args(["bench", "search", "--queries", "5", "--skip-index"])
    assert args.benchmark == "search" and extra == ["--queries", "5", "--skip-index"]


def test_bench_search_end_to_end_only(lake_settings, tmp_path, monkeypatch, capsys):
    from artsim_pipeline.bench.search_e2e import build_parser as bench_parser
    from artsim_pipeline.bench.search_e2e import main

    monkeypatch.setenv("ARTSIM_MODELS", ",".join(lake_settings.models))
    monkeypatch.setenv("ARTSIM_DEVICE", "cpu")
    out = tmp_path / "bench.json"
    assert main(["--skip-index", "--queries", "2", "--data-lake", str(lake_settings.data_lake), "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["end_to_end"]["rows"]
    assert rows[0]["query"] == "user image" and rows[0]["p50_ms"] > 0 and rows[0]["forward_p50_ms"] > 0
    assert rows[0]["target_ms"] == pytest.approx(1.2 * rows[0]["forward_p50_ms"] + 20, abs=0.02)
    assert rows[1]["query"].startswith("user image --face-crop") and rows[2]["query"].startswith("objectid")
    # the web API, timed over real HTTP against the app served in-process
    by_id, upload = rows[3], rows[4]
    assert by_id["query"].startswith("http GET /api/search?objectid=") and by_id["query"].endswith("&k=10")
    assert upload["query"].startswith("http POST /api/search")
    for row in (by_id, upload):
        assert row["n"] == 2 and isinstance(row["p50_ms"], float) and 0 < row["p50_ms"] <= row["p99_ms"]
        assert isinstance(row["meets_target"], bool) and row["meets_target"] == (row["p50_ms"] < row["target_ms"])
    assert by_id["target_ms"] == 50.0
    assert upload["target_ms"] == pytest.approx(1.3 * rows[0]["forward_p50_ms"], abs=0.02)
    http = json.loads(out.read_text())["end_to_end"]["http"]
    assert http["shutdown_clean"] is True and http["port"] > 0
    printed = capsys.readouterr().out
    assert "forward_p50_ms" in printed and "http GET /api/search" in printed
    assert ("pass" in printed or "fail" in printed) and "True" not in printed
    assert bench_parser().parse_args(["--no-http"]).no_http and not bench_parser().parse_args([]).no_http


def test_bench_search_skips_the_end_to_end_row_without_an_index(tmp_path, capsys):
    from artsim_pipeline.bench.search_e2e import main

    out = tmp_path / "bench.json"
    assert main(["--skip-index", "--data-lake", str(tmp_path / "no_lake"), "--out", str(out)]) == 0
    assert "skipped: no search index" in capsys.readouterr().out
    assert "skipped" in json.loads(out.read_text())["end_to_end"]
