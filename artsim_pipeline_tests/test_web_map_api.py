"""``/api/map`` (web/routes_map.py) against a live server on the small web lake: the per-painting arrays,
the named regions (stored by the pipeline, or clustered by the server), the date and grid layouts, gzip,
and the search within a selection."""

from __future__ import annotations


import numpy as np
import pytest
import requests

from artsim_pipeline.core.generations import load_generation
from artsim_pipeline.core.layout_refresh import refresh_collection_map
from artsim_pipeline.core.layout_views import date_layout, grid_layout
from artsim_pipeline_tests.web_lake import NEEDS_MIRROR_IMAGES, N_PAINTINGS, LiveServer, build_web_lake, engine_factory


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return build_web_lake(tmp_path_factory.mktemp("map-api") / "lake")[0]


def get_map(url: str) -> dict:
    reply = requests.get(url + "/api/map", params={"wait": 60}, timeout=90)
    assert reply.status_code == 200, reply.text
    assert reply.headers.get("content-encoding") == "gzip"  # requests asks for gzip and unpacks it
    return reply.json()


@NEEDS_MIRROR_IMAGES
def test_map_payload_has_regions_layouts_and_per_painting_fields(lake):
    from artsim_pipeline.web.app import create_app

    with LiveServer(create_app(lake, engine_factory(lake))) as live:
        data = get_map(live.url)  # no stored map: computed by the server, regions clustered there
        raw = requests.get(live.url + "/api/map", headers={"Accept-Encoding": "identity"}, timeout=30)
        assert raw.headers.get("content-encoding") is None and raw.json() == data
    n = N_PAINTINGS
    assert data["count"] == n and sorted(data["objectid"]) == list(range(1000, 1000 + n))
    for key in ("x", "y", "region", "artist", "year", "title"):
        assert len(data[key]) == n, key
    i = data["objectid"].index(1001)
    assert data["artist"][i] == "Claude Monet" and data["year"][i] == 1881 and data["title"][i] == "Painting 1"
    # no stored map: the server clustered it (18 paintings, regions of at least 8) and named the regions
    assert data["regions"] and sum(r["size"] for r in data["regions"]) == sum(v >= 0 for v in data["region"])
    for r in data["regions"]:
        members = {o for o, v in zip(data["objectid"], data["region"]) if v == r["id"]}
        assert r["size"] == len(members) and set(r["representatives"]) <= members
        assert any(a in r["label"] for a in ("Monet", "Rembrandt", "Vermeer", "various artists")), r["label"]
    date, grid = data["layouts"]["date"], data["layouts"]["grid"]
    assert date["axis"]["from"] == 1630 and date["axis"]["to"] == 1896
    order = np.argsort(data["year"])
    assert np.all(np.diff(np.asarray(date["x"])[order]) > -0.02)  # later paintings further right
    cells = {(int(a * grid["cols"]), int(b * grid["cols"])) for a, b in zip(grid["x"], grid["y"])}
    assert len(cells) == n and grid["cols"] == 5  # one painting per cell


def test_stored_regions_are_served_and_search_within_a_selection(tmp_path):
    from artsim_pipeline.web.app import create_app

    lake, _ = build_web_lake(tmp_path / "lake")
    done = refresh_collection_map(lake, load_generation(lake))  # as the collection_map asset stores it
    with LiveServer(create_app(lake, engine_factory(lake))) as live:
        data = get_map(live.url)
        assert data["source"] == "laid out by the pipeline (collection_map)"
        assert data["regions"] == done.regions
        by_id = done.frame.set_index("objectid")["region"]
        assert data["region"] == [int(by_id[o]) for o in data["objectid"]]
        assert all(r["label"] and len(r["representatives"]) >= 1 for r in data["regions"])

        selection = [1000, 1003, 1006, 1009, 1012, 99_999]
        reply = requests.post(live.url + "/api/map/search", json={"objectid": 1003, "objectids": selection, "k": 10},
                              timeout=30)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["within"] == 5 and [r["objectid"] for r in body["results"]][0] == 1003  # itself first
        assert {r["objectid"] for r in body["results"]} == set(selection[:5])
        scores = [r["score"] for r in body["results"]]
        assert scores == sorted(scores, reverse=True) and abs(scores[0] - 1.0) < 1e-3

        for payload, status, words in [({"objectid": 1003, "objectids": []}, 400, "selection is empty"),
                                       ({"objectid": 5, "objectids": [1000]}, 404, "not in the index"),
                                       ({"objectid": "x", "objectids": [1000]}, 400, "a number"),
                                       ({"objectid": 1003, "objectids": [1], "k": 0}, 400, "k from 1")]:
            reply = requests.post(live.url + "/api/map/search", json=payload, timeout=30)
            assert reply.status_code == status and words in reply.json()["detail"], (payload, reply.text)
        reply = requests.post(live.url + "/api/map/search", data=b"not json", timeout=30)
        assert reply.status_code == 400 and "JSON" in reply.json()["detail"]


def test_date_and_grid_layouts():
    ids = np.arange(10, dtype=np.int64)
    years = np.array([1500, 1600, 1700, np.nan, 1550, 1650, 1500, 1900, np.nan, 1800], dtype=float)
    y = np.linspace(0, 1, 10)
    x, yy, axis = date_layout(ids, y, years)
    assert axis == {"from": 1500, "to": 1900, "span": 0.9, "undated_x": 0.94}
    dated = np.isfinite(years)
    assert np.all(x[~dated] >= 0.94) and np.all(x[dated] <= 0.9)
    assert np.all(np.diff(x[dated][np.argsort(years[dated], kind="stable")]) >= -0.003)
    assert np.allclose(yy, y, atol=0.003)
    assert np.array_equal(date_layout(ids[::-1], y[::-1], years[::-1])[0], x[::-1])  # order-free
    gx, gy, cols = grid_layout(np.random.default_rng(0).random(1000), np.random.default_rng(1).random(1000))
    assert cols == 32 and len({(a, b) for a, b in zip(gx, gy)}) == 1000
    assert gx.min() > 0 and gx.max() < 1 and gy.max() < 1
