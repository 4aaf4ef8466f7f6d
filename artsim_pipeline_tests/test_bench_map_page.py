"""``artsim bench map_page`` end to end on a small size: the page served, measured in headless Chromium,
the table printed and the JSON written (the real sizes, up to 131,072, are the lead's to run)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (shutil.which("chromium") or Path("/usr/bin/chromium").is_file()),
                                 reason="no Chromium (install Debian's `chromium`)")]


def test_bench_map_page_measures_transfer_paint_and_zoom(tmp_path):
    out = tmp_path / "map_page.json"
    done = subprocess.run([sys.executable, "-m", "artsim_pipeline.cli", "bench", "map_page", "--sizes", "400,900",
                           "--port", "0", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "zoom ms" in done.stdout and "renderer" in done.stdout  # the table
    report = json.loads(out.read_text())
    assert report["benchmark"] == "map_page" and [r["n"] for r in report["rows"]] == [400, 900]
    for row in report["rows"]:
        assert row["page_errors"] == [] and row["regions"] >= 1
        assert 0 < row["first_paint_s"] <= row["atlas_paint_s"] < 60
        assert 0 < row["gzip_mb"] < row["json_mb"] and row["transfer_mb"] >= row["gzip_mb"] + row["atlas_mb"] - 0.02
        assert row["zoom_step_ms_median"] > 0 and row["redraw_ms_median"] > 0 and len(row["zoom_steps_ms"]) == 8
