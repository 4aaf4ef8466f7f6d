"""Identification, self-exclusion and the match basis through ``artsim serve``'s JSON API over real HTTP
(uvicorn in a thread on 127.0.0.1; the small web lake with a calibration, :mod:`.identify_lake`)."""

from __future__ import annotations

import io

import pytest
import requests
from PIL import Image

from artsim_pipeline_tests.identify_lake import build_identify_lake, outside_images, with_near_duplicate
from artsim_pipeline_tests.web_lake import NEEDS_MIRROR_IMAGES, N_PAINTINGS, LiveServer, engine_factory, post_image

IDENTIFIED_KEYS = {"objectid", "title", "attribution", "confidence"}
VERDICT_KEYS = {"verdict", "score", "threshold", "confidence", "method"}


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    lake, _ = build_identify_lake(tmp_path_factory.mktemp("identify-lake") / "lake")
    with_near_duplicate(lake, copy=1017, of=1003)  # painting 1017 is another image of painting 1003
    return lake


@pytest.fixture(scope="module")
def server(lake):
    from artsim_pipeline.web.app import create_app

    with LiveServer(create_app(lake, engine_factory(lake))) as live:
        yield live


def test_a_photo_of_a_painting_of_the_collection_is_identified(server, lake):
    for oid in (1002, 1009):
        reply = post_image(server, lake.image_path(f"web-{oid}").read_bytes(), k=5)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert set(body["identified"]) == IDENTIFIED_KEYS and set(body["identification"]) >= VERDICT_KEYS
        assert body["identified"]["objectid"] == oid and body["identified"]["title"] == f"Painting {oid - 1000}"
        assert body["identified"]["attribution"] and 0.5 < body["identified"]["confidence"] <= 1
        verdict = body["identification"]
        assert verdict["verdict"] == "identified" and verdict["score"] >= verdict["threshold"]
        assert isinstance(verdict["method"], str) and "top-1" in verdict["method"]
        # an image has no catalog data: the match is the visual score itself, and the response says so
        assert body["match_basis"] == "visual similarity only (an image has no catalog data)"
        top = body["results"][0]
        assert top["objectid"] == oid and top["final"] == top["visual"] > 0.99 and top["metadata"] == 0


def test_a_photo_of_a_painting_not_in_the_collection_is_not_identified(server, lake):
    pictures = outside_images(2)
    if not pictures:
        pictures_bytes = [_pattern(seed) for seed in (1, 2)]
    else:
        pictures_bytes = [p.read_bytes() for p in pictures]
    for data in pictures_bytes:
        body = post_image(server, data, k=3).json()
        assert body["identified"] is None
        assert body["identification"]["verdict"] == "not_in_collection"
        assert body["identification"]["score"] < body["identification"]["threshold"]
    # the API's verdicts are the engine's (what `artsim bench identify` measures)
    engine = engine_factory(lake)()
    try:
        for data in pictures_bytes + [lake.image_path("web-1004").read_bytes()]:
            api = post_image(server, data, k=3).json()["identification"]
            assert api == engine.search(data, k=3).identification
    finally:
        engine.close()


def _pattern(seed: int) -> bytes:
    import numpy as np

    pixels = np.random.default_rng(seed).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((240, 180)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_objectid_searches_never_return_the_painting_itself(server):
    for oid in range(1000, 1000 + N_PAINTINGS):
        body = requests.get(server.url + "/api/search", params={"objectid": oid, "k": 20}, timeout=10).json()
        ids = [r["objectid"] for r in body["results"]]
        assert oid not in ids and len(ids) == N_PAINTINGS - 1
        assert body.get("identified") is None and body.get("identification") is None
        assert body["match_basis"] == "0.7 × visual + 0.3 × catalog"
    posted = requests.post(server.url + "/api/search", data={"objectid": "1005", "k": "3"}, timeout=10).json()
    assert 1005 not in [r["objectid"] for r in posted["results"]]
    kept = requests.get(server.url + "/api/search", params={"objectid": 1005, "k": 3, "include_self": "true"},
                        timeout=10).json()
    assert kept["results"][0]["objectid"] == 1005 and not kept["results"][0]["near_duplicate"]


@NEEDS_MIRROR_IMAGES
def test_a_near_duplicate_stays_and_is_labelled(server):
    body = requests.get(server.url + "/api/search", params={"objectid": 1003, "k": 5}, timeout=10).json()
    labelled = [r for r in body["results"] if r["near_duplicate"]]
    assert [r["objectid"] for r in labelled] == [1017] and labelled[0]["cosine"] > 0.95
    visual = requests.get(server.url + "/api/search", params={"objectid": 1017, "k": 5}, timeout=10).json()
    assert [r["objectid"] for r in visual["results"] if r["near_duplicate"]] == [1003]
