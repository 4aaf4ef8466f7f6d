"""``artsim bench dagster --fresh-lake`` on a 7-painting NGA mirror, as a user runs it: a fresh lake through
``artsim run`` and another through ``dagster dev`` + the Automation page's ``startSensor``, both timed in one run.

Both legs must bring up the same assets; the automation's batches must run as runs of their own (not one
backfill waiting for the backfill daemon), several at once, and its report carries each leg's run timeline."""

import json
from pathlib import Path

import pytest

from artsim_pipeline_tests.dagster_processes import seven_painting_env
from artsim_pipeline_tests.support import artsim

pytestmark = pytest.mark.slow

LEG_FIELDS = ("wall_s", "to_index_s", "to_eval_report_s", "runs", "run_s", "busy_s", "idle_s", "max_concurrent_runs")


def test_a_fresh_lake_through_the_cli_and_through_the_automation_in_one_run(tmp_path):
    env = seven_painting_env(tmp_path, tmp_path / "unused-lake", tmp_path / "unused-home")
    settings = {k: v for k, v in env.items() if k.startswith("ARTSIM_") and k != "ARTSIM_DATA_LAKE"}
    out = tmp_path / "fresh.json"
    result = artsim(["bench", "dagster", "--fresh-lake", "--workdir", str(tmp_path / "work"), "--out", str(out),
                     "--timeout", "480"], tmp_path, OMP_NUM_THREADS="1", **settings)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "automation / CLI:" in result.stdout, result.stdout
    report = json.loads(out.read_text())
    assert report["source"] == settings["ARTSIM_NGA_SOURCE"] and report["settings"]["ARTSIM_BATCH_SIZE"] == "3"
    cli, automation = report["legs"]["cli"], report["legs"]["automation"]
    for leg in (cli, automation):
        for field in LEG_FIELDS:
            assert isinstance(leg[field], (int, float)), (field, leg[field])
        assert 0 < leg["to_index_s"] <= leg["to_eval_report_s"] <= leg["wall_s"] + 1
        assert leg["busy_s"] <= leg["wall_s"] + 1 and leg["idle_s"] == pytest.approx(leg["wall_s"] - leg["busy_s"], abs=0.2)
        assert all(run["status"] == "SUCCESS" for run in leg["timeline"]), leg["timeline"]
    assert report["automation_vs_cli"] == pytest.approx(automation["wall_s"] / cli["wall_s"], abs=1e-3)
    # artsim run: observe, catalog, three batches, the collection: one after the other
    assert cli["runs"] == 6 and cli["max_concurrent_runs"] == 1
    batches = [run for run in automation["timeline"] if run["partition"]]
    assert sorted(run["partition"] for run in batches) == ["batch-00000", "batch-00001", "batch-00002"]
    assert automation["max_concurrent_runs"] >= 2  # the batches run at once
    assert not any(run["backfill"] for run in automation["timeline"])  # runs, not a backfill for the next loop
    # both legs left a complete lake: the same catalog views and served index files
    for leg in ("cli", "automation"):
        lake = Path(tmp_path / "work" / leg / "lake")
        assert (lake / "index" / "CURRENT").is_file(), leg
        assert (lake / "tables" / "filtered_paintings.parquet").is_file(), leg
