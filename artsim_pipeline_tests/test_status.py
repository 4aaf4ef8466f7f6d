"""``artsim status`` as a user runs it (a subprocess after a real ``artsim run``), and ``/api/status``."""

from __future__ import annotations

import json

import pytest

from artsim_pipeline_tests.nga_fixtures import Painting, jpeg_bytes, write_mirror
from artsim_pipeline_tests.support import artsim


@pytest.mark.slow
def test_artsim_status_reports_every_paintings_state_and_what_is_stale(tmp_path):
    paintings = [Painting(i, title=f"Painting {i}", width=96, height=80, artist=f"Painter {i % 2}") for i in range(1, 9)]
    mirror = write_mirror(tmp_path / "mirror", paintings)
    (mirror / "images" / f"{paintings[6].uuid}.jpg").unlink()  # 7: not in the mirror -> failed
    (mirror / "images" / f"{paintings[7].uuid}.jpg").write_bytes(jpeg_bytes(8, (40, 30)))  # 8: too small
    env = {"ARTSIM_NGA_SOURCE": str(mirror), "ARTSIM_LIMIT": "0", "ARTSIM_MIN_SIDE": "64",
           "ARTSIM_BATCH_SIZE": "4", "ARTSIM_MODELS": "mobilenet_v2", "ARTSIM_WEIGHTS": "random",
           "ARTSIM_DEVICE": "cpu", "ARTSIM_PCA_DIM": "4", "ARTSIM_MAX_FAILURE_SHARE": "0.5",
           "DAGSTER_HOME": str(tmp_path / "dh"), "OMP_NUM_THREADS": "1"}
    assert artsim(["status"], tmp_path, **env).returncode == 0  # an empty lake: nothing yet, no error
    run = artsim(["run"], tmp_path, **env)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]

    result = artsim(["status", "--json"], tmp_path, **env)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["stale_from"]["from_cache"] is True, status["stale_from"]  # `artsim run` cached its last plan
    assert status["catalog"]["paintings"] == 8 and status["catalog"]["batches"] == 2
    assert status["images"] == {"cached": 6, "skipped_small": 1, "failed": 1, "not_tried": 0,
                                "reasons": {"not_in_mirror": 1, "too_small": 1}}
    assert status["embeddings"]["mobilenet_v2"]["paintings"] == 6
    assert status["index"]["indexed"] == 6 and status["index"]["generation"]
    worst = status["problems"]
    assert [(p["objectid"], p["status"]) for p in worst] == [(7, "failed"), (8, "skipped_small")]
    assert worst[0]["title"] == "Painting 7" and "not_in_mirror" in worst[0]["reason"]
    # the failed image is retried by the next run (its batch's check failed): that is what is stale
    assert [(s["asset"], s["partition"]) for s in status["stale"]][:1] == [("image_cache", "batch-00001")], status["stale"]

    text = artsim(["status"], tmp_path, **env)
    assert text.returncode == 0
    assert "8 paintings in 2 batches" in text.stdout and "6 cached, 1 skipped (too small), 1 failed" in text.stdout
    assert "Painting 7" in text.stdout and "indexed     6 paintings" in text.stdout

    # a damaged artefact: the status names it and exits 1
    emb = next((tmp_path / "lake" / "embeddings" / "mobilenet_v2").glob("*.parquet"))
    emb.write_bytes(b"not parquet")
    damaged = artsim(["status"], tmp_path, **env)
    assert damaged.returncode == 1 and "DAMAGED" in damaged.stdout and emb.name in damaged.stdout
    assert "Traceback" not in damaged.stdout + damaged.stderr
