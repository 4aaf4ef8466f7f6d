"""``artsim bench catalog`` (in process, small sizes): a table and JSON with every measure, bad sizes refused."""

import json

import pytest

from artsim_pipeline.bench.catalog_follow import main


def test_bench_catalog_writes_a_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--sizes", "50,120", "--out", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert [r["paintings"] for r in results] == [50, 120]
    for r in results:
        assert r["check_us"] > 0 and r["follow_s"] >= r["load_s"] > 0
    assert "| 120 |" in capsys.readouterr().out


def test_bench_catalog_refuses_bad_sizes(tmp_path):
    with pytest.raises(SystemExit):
        main(["--sizes", "1", "--out", str(tmp_path / "x.json")])
