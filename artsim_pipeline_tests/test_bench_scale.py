"""``artsim bench scale`` end to end on tiny sizes: every step in its own process, the JSON schema, the
inputs kept in the work dir, and a step run without its producers (they run untimed first)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from artsim_pipeline.bench.scale import exponent, generate
from artsim_pipeline.core.fusion import block_key

pytestmark = pytest.mark.slow

MODEL = "mobilenet_v2"
TAPS = ("features.10", "features.13", "features.16", "features.17")


def _bench(tmp_path, *args: str) -> dict:
    out = tmp_path / "scale.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "artsim_pipeline.cli", "bench", "scale", "--models", MODEL,
                           "--workdir", str(tmp_path / "work"), "--out", str(out), *args],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "exponent" in done.stdout and "machine:" in done.stdout  # the table
    return json.loads(out.read_text())


def test_bench_scale_measures_each_step_per_size_and_writes_the_json(tmp_path):
    fast = ("pca_model", "faiss_index", "eval_report")
    report = _bench(tmp_path, "--sizes", "64,128,192", "--steps", "eval_report,pca_model,faiss_index")
    assert report["benchmark"] == "scale" and report["sizes"] == [64, 128, 192]
    machine = report["machine"]
    assert machine["cpus"] >= machine["cpus_usable"] >= 1 and len(machine["load_before"]) == 3
    assert len(machine["load_after"]) == 3 and machine["memory_gb"] > 0
    blocks = report["input"]["blocks"]
    assert set(blocks) == {MODEL, *(block_key(MODEL, f"{tap}.mean") for tap in TAPS)}  # mean taps, no std
    assert blocks[MODEL] == 1280 and report["input"]["width"] == sum(blocks.values())
    assert list(report["steps"]) == list(fast)  # in pipeline order, whatever order they were asked in
    for name, row in report["steps"].items():
        assert row["n"] == [64, 128, 192], name
        assert all(s > 0 for s in row["seconds"]), (name, row)
        assert all(peak >= base > 0 for peak, base in zip(row["peak_rss_mb"], row["import_rss_mb"])), (name, row)
        assert isinstance(row["exponent"], float) and row["exponent_sizes"] == [64, 128, 192], (name, row)
        assert all("load_1min_at_start" in d for d in row["details"]), (name, row)
    assert [d["dim"] for d in report["steps"]["pca_model"]["details"]] == [63, 127, 191]
    for d in report["steps"]["eval_report"]["details"]:
        assert 0.0 <= d["precision_at_5"] <= 1.0 and d["n_queries"] == d["n_eligible_queries"] > 0

    root = tmp_path / "work" / "n64"  # the inputs stay for the next run (same manifest: not generated again)
    blocks_path = root / "blocks" / f"{MODEL}.npy"
    stamp = blocks_path.stat().st_mtime_ns
    generate(root, 64, blocks)
    assert blocks_path.stat().st_mtime_ns == stamp and np.load(blocks_path, mmap_mode="r").shape == (64, 1280)

    again = _bench(tmp_path, "--sizes", "96", "--steps", "collection_map")  # its producer runs untimed first
    row = again["steps"]["collection_map"]
    assert list(again["steps"]) == ["collection_map"] and row["n"] == [96] and row["seconds"][0] > 0
    assert row["details"][0]["points"] == 96 and row["exponent"] is None
    assert (tmp_path / "work" / "n96" / "fused.npy").exists()


def test_exponent_is_the_log_log_slope_of_the_largest_sizes():
    slope, sizes = exponent([10, 100, 1000, 10000], [50.0, 1.0, 10.0, 100.0])  # the small size is overhead
    assert sizes == [100, 1000, 10000] and slope == pytest.approx(1.0)
    assert exponent([10, 20], [1.0, None]) == (None, [10])
    assert exponent([10, 20, 40], [1.0, 4.0, 16.0], last=2) == (pytest.approx(2.0), [20, 40])
