"""Issue 32 #9 (fault matrix): the small defects of the fourth fault probe, each on the user's path.

``artsim status`` after a whole batch left the catalog, a wrong ``ARTSIM_MODELS``, ``ARTSIM_DATA_LAKE``
naming a file (the ``artsim`` command, in process), HEAD requests and thumbnail revalidation (real HTTP
on 127.0.0.1), ``artsim serve --host 0.0.0.0`` (a real process, ``slow``).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time

import pandas as pd
import pytest
import requests

from artsim_pipeline.cli import main
from artsim_pipeline.core.lake import DataLake
from artsim_pipeline.core.status import lake_status
from artsim_pipeline.web.app import create_app, exposure_warning
from artsim_pipeline_tests.support import ARTSIM, free_port
from artsim_pipeline_tests.web_lake import LiveServer, build_web_lake, engine_factory


@pytest.fixture(autouse=True)
def _package_log_handlers():
    """``main`` adds a handler to the package's logger (for the life of a real command): removed again."""
    logger = logging.getLogger("artsim_pipeline")
    handlers, level = list(logger.handlers), logger.level
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


def _parquet(path, rows: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path, index=False)


def test_status_counts_only_paintings_still_in_the_catalog_after_a_batch_is_removed(tmp_path):
    lake = DataLake(tmp_path / "lake")
    kept, removed = [1, 2, 3, 4], [5, 6, 7, 8]  # batch-00001 left the catalog; its files stay on disk
    _parquet(lake.filtered_paintings_parquet, {"objectid": kept, "title": ["t"] * 4, "artist": ["a"] * 4,
                                               "batch_key": ["batch-00000"] * 4})
    for batch, ids in (("batch-00000", kept), ("batch-00001", removed)):
        _parquet(lake.image_status_path(batch), {"objectid": ids, "status": ["cached"] * 4, "reason": [None] * 4})
        _parquet(lake.faces_path(batch), {"objectid": ids, "face_count": [1] * 4, "error": [None] * 4})
        _parquet(lake.embeddings_path("mobilenet_v2", batch),
                 {"objectid": ids + ids[:1], "variant": ["full"] * 4 + ["face"]})
    status = lake_status(lake)
    assert status["catalog"]["paintings"] == 4 and status["images"]["cached"] == 4
    assert status["faces"] == {"checked": 4, "with_face": 4, "errors": 0}
    embedded = status["embeddings"]["mobilenet_v2"]
    assert embedded["paintings"] == 4 and embedded["face_vectors"] == 1


def test_a_wrong_artsim_models_is_reported_before_anything_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ARTSIM_MODELS", "mobilenet_v2,resnet_9000")
    monkeypatch.setenv("ARTSIM_DATA_LAKE", str(tmp_path / "lake"))
    monkeypatch.setenv("ARTSIM_NGA_SOURCE", str(tmp_path / "nga"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert "ARTSIM_MODELS" in err and "resnet_9000" in err and "efficientnet_lite0" in err, err
    assert "mobilenet_v2," not in err.split("unknown")[1].split(";")[0]  # only the wrong name is named
    assert not (tmp_path / "lake").exists() and not (tmp_path / "dh").exists()  # nothing ran, nothing written


@pytest.mark.parametrize("command", [["run"], ["status"]])
def test_a_data_lake_that_is_a_file_is_a_clear_error_naming_the_variable(tmp_path, monkeypatch, capsys, command):
    lake = tmp_path / "lake.txt"
    lake.write_text("not a lake")
    monkeypatch.setenv("ARTSIM_DATA_LAKE", str(lake))
    monkeypatch.setenv("ARTSIM_NGA_SOURCE", str(tmp_path))
    monkeypatch.setenv("ARTSIM_MODELS", "mobilenet_v2")
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert main(command) != 0
    err = capsys.readouterr().err
    assert "ARTSIM_DATA_LAKE" in err and "is a file" in err and "Errno" not in err, err
    assert lake.read_text() == "not a lake"


def test_head_answers_wherever_get_does_and_thumbnails_are_revalidated(tmp_path):
    lake, _ = build_web_lake(tmp_path / "lake")
    with LiveServer(create_app(lake, engine_factory(lake))) as live:
        for path in ("/healthz", "/", "/map", "/painting/1003", "/status", "/api/paintings/1003",
                     "/thumbs/1003.jpg", "/static/artsim.css", "/openapi.json"):
            got = requests.get(live.url + path, timeout=60)
            head = requests.head(live.url + path, timeout=60)
            assert got.status_code == 200 and head.status_code == 200, (path, got.status_code, head.status_code)
            assert head.content == b"" and head.headers.get("content-type") == got.headers.get("content-type"), path
            assert head.headers.get("content-length") == got.headers.get("content-length"), path
        assert requests.head(live.url + "/api/paintings/999999", timeout=60).status_code == 404

        thumb = requests.get(live.url + "/thumbs/1003.jpg", timeout=60)
        assert thumb.headers["Cache-Control"] == "no-cache" and "max-age" not in thumb.headers["Cache-Control"]
        etag = thumb.headers["ETag"]
        again = requests.get(live.url + "/thumbs/1003.jpg", headers={"If-None-Match": etag}, timeout=60)
        assert again.status_code == 304 and again.headers["Cache-Control"] == "no-cache"
        # the image changes: the browser's revalidation gets the new thumbnail at once
        lake.image_path("web-1003").write_bytes(lake.image_path("web-1007").read_bytes())
        changed = requests.get(live.url + "/thumbs/1003.jpg", headers={"If-None-Match": etag}, timeout=60)
        assert changed.status_code == 200 and changed.headers["ETag"] != etag and changed.content != thumb.content


def test_a_non_loopback_host_warns_that_there_is_no_authentication():
    for host in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"):
        assert exposure_warning(host) is None, host
    for host in ("0.0.0.0", "::", "192.168.1.20", "art.example.org"):
        warning = exposure_warning(host)
        assert warning and "no authentication" in warning and host in warning, host


@pytest.mark.slow
def test_artsim_serve_on_all_interfaces_warns_and_on_loopback_does_not(tmp_path):
    outputs = {}
    for host in ("0.0.0.0", "127.0.0.1"):
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ARTSIM_", "DAGSTER_HOME"))}
        env |= {"ARTSIM_DATA_LAKE": str(tmp_path / "lake"), "ARTSIM_DEVICE": "cpu"}
        proc = subprocess.Popen([ARTSIM, "serve", "--host", host, "--port", str(port)], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)  # 503: no index yet
                    break
                except requests.ConnectionError:
                    time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                outputs[host], _ = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                outputs[host], _ = proc.communicate()
    assert "no authentication" in outputs["0.0.0.0"] and "0.0.0.0" in outputs["0.0.0.0"], outputs["0.0.0.0"]
    assert "no authentication" not in outputs["127.0.0.1"], outputs["127.0.0.1"]
