"""``artsim bench dagster`` at a tiny size, as a user runs it: a real lake of 2 then 4 batch partitions built by
``artsim run``, the no-change run, ``artsim status`` and the UI's GraphQL against a real dagster-webserver."""

import json

import pytest

from artsim_pipeline_tests.support import artsim

pytestmark = pytest.mark.slow

RECORD_FIELDS = {
    "partitions": int, "paintings": int, "build_s": float, "build_new_partitions": int, "build_materializations": int,
    "cli_run_s": float, "cli_run_materializations": int, "run_s": float, "run_materializations": int,
    "plan_s": float, "plan_entries": int, "cli_status_s": float, "cli_status_stale": int,
    "automation_first_tick_s": float, "automation_first_requested": int, "automation_tick_s": float,
    "automation_requested": int,
    "ui_asset_graph_s": float, "ui_asset_graph_not_fresh": list, "ui_partition_s": float,
    "by_partition_s": float, "by_partition_statuses": int, "by_partition_not_fresh": int,
}


def test_bench_dagster_writes_its_json_and_the_no_change_run_runs_nothing(tmp_path):
    out = tmp_path / "bench_dagster.json"
    result = artsim(["bench", "dagster", "--sizes", "2,4", "--workdir", str(tmp_path / "work"), "--out", str(out)],
                    tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["benchmark"] == "dagster" and report["batch_size"] == 2 and report["models"] == ["mobilenet_v2"]
    assert isinstance(report["dagster_version"], str) and report["cpu_count"] >= 1
    assert [r["partitions"] for r in report["sizes"]] == [2, 4]
    for record in report["sizes"]:
        for name, kind in RECORD_FIELDS.items():
            assert isinstance(record[name], (int, float) if kind is float else kind), (name, record[name])
    first, second = report["sizes"]
    assert first["build_new_partitions"] == 2 and second["build_new_partitions"] == 2
    assert first["paintings"] == 4 and second["paintings"] == 8
    # a real first run: per new batch image_cache, face_crops, embeddings (+ catalog and collection)
    assert first["build_materializations"] >= 3 * 2 and second["build_materializations"] >= 3 * 2
    for record in report["sizes"]:
        # nothing changed: nothing runs, nothing is planned, Dagster reports every partition fresh
        assert record["cli_run_materializations"] == record["run_materializations"] == 0
        assert record["plan_entries"] == record["cli_status_stale"] == 0
        assert record["by_partition_not_fresh"] == 0
        assert record["automation_requested"] == 0  # the daemon's next tick requests nothing either
        # the asset graph shows eval_study stale after a refresh (its numbers are of an older index), by design
        assert set(record["ui_asset_graph_not_fresh"]) <= {"eval_study"}
    # image_batch, image_cache, face_crops, embeddings_mobilenet_v2: one status per partition each
    assert second["by_partition_statuses"] == 4 * 4
    assert set(report["growth"]) >= {"cli_run_s", "plan_s", "by_partition_s"}
    assert "artsim run s" in result.stdout and f"wrote {out}" in result.stdout
