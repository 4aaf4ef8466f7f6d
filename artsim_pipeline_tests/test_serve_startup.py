"""``artsim serve`` is up at once: the port opens with the index and catalog loaded, the models load in the
background, ``/healthz`` says whether image search is ready, and an upload that arrives first waits for the
models instead of failing. A real server process on the small search lake, over HTTP on 127.0.0.1; and the app
in a thread of this process when the models cannot be loaded."""

from __future__ import annotations

import io
import os
import subprocess
import time

import pytest
import requests

from artsim_pipeline.core.lake import DataLake
from artsim_pipeline.core.search import SearchEngine
from artsim_pipeline.web.app import create_app
from artsim_pipeline_tests.search_lake import astronaut, shared_search_lake
from artsim_pipeline_tests.support import ARTSIM, free_port
from artsim_pipeline_tests.web_lake import LiveServer


def healthz(url: str, deadline: float) -> dict:
    """The first 200 answer of ``/healthz`` (polled until ``deadline``)."""
    while time.monotonic() < deadline:
        try:
            reply = requests.get(url + "/healthz", timeout=5)
            if reply.status_code == 200:
                return reply.json()
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    raise AssertionError("/healthz did not answer")


@pytest.mark.slow  # a server process
def test_serve_answers_before_the_models_and_a_first_upload_waits_for_them(tmp_path):
    settings = shared_search_lake()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARTSIM_", "DAGSTER_HOME"))}
    env |= {"ARTSIM_DATA_LAKE": str(settings.data_lake), "ARTSIM_DEVICE": "cpu",
            "ARTSIM_MODELS": ",".join(settings.models)}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    photo = io.BytesIO()
    astronaut().save(photo, format="JPEG")
    proc = subprocess.Popen([ARTSIM, "serve", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        first = healthz(url, time.monotonic() + 120)
        assert first["status"] == "ok" and first["image_search"] in ("loading", "ready")
        upload = requests.post(url + "/api/search", files={"image": ("photo.jpg", photo.getvalue(), "image/jpeg")},
                               data={"k": "3"}, timeout=120)  # sent at once: it waits for the models
        assert upload.status_code == 200, upload.text
        assert len(upload.json()["results"]) == 3
        objectid = requests.get(url + "/api/search", params={"objectid": 101, "k": 3, "include_self": "true"}, timeout=30)
        assert objectid.status_code == 200 and objectid.json()["results"][0]["objectid"] == 101
        assert healthz(url, time.monotonic() + 30)["image_search"] == "ready"
        again = requests.post(url + "/api/search", files={"image": ("photo.jpg", photo.getvalue(), "image/jpeg")},
                              data={"k": "3"}, timeout=60)
        assert again.json()["results"] == upload.json()["results"]  # same engine, same models, same answer
        bad = requests.get(url + "/api/search", params={"objectid": 999999}, timeout=30)
        assert bad.status_code == 404 and "not in the collection" in bad.text
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert stderr.count("image search ready") == 1, stderr  # the models loaded once for the server


def test_models_that_cannot_load_leave_objectid_search_up_and_uploads_get_503_with_the_reason():
    settings = shared_search_lake()  # embedded with pretrained weights: random ones do not match them
    lake = DataLake(settings.data_lake)
    app = create_app(lake, lambda: SearchEngine(lake, weights="random", device="cpu", preload_models=False),
                     precompute_map=False)
    photo = io.BytesIO()
    astronaut().save(photo, format="JPEG")
    with LiveServer(app) as server:
        deadline = time.monotonic() + 120
        while (health := healthz(server.url, deadline))["image_search"] == "loading":
            time.sleep(0.1)
        assert health["image_search"] == "failed" and "weights" in health["image_search_error"]
        upload = requests.post(server.url + "/api/search", files={"image": ("p.jpg", photo.getvalue(), "image/jpeg")},
                               timeout=60)
        assert upload.status_code == 503 and "image search is unavailable" in upload.json()["detail"]
        assert "weights" in upload.json()["detail"]
        by_id = requests.get(server.url + "/api/search", params={"objectid": 101, "k": 3, "include_self": "true"}, timeout=30)
        assert by_id.status_code == 200 and by_id.json()["results"][0]["objectid"] == 101
