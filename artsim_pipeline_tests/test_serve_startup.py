"""``artsim serve`` is up at once: the port opens with the index and catalog loaded, the models load in the
background, ``/healthz`` says whether image search is ready, and an upload that arrives first waits for the
models instead of failing. A real server process on the small search lake, over HTTP on 127.0.0.1."""

from __future__ import annotations

import io
import os
import subprocess
import time

import pytest
import requests

from artsim_pipeline_tests.search_lake import astronaut, shared_search_lake
from artsim_pipeline_tests.support import ARTSIM, free_port

pytestmark = pytest.mark.slow  # a server process


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
        objectid = requests.get(url + "/api/search", params={"objectid": 101, "k": 3}, timeout=30)
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
