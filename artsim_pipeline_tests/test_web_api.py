"""``artsim serve``'s JSON API over real HTTP on 127.0.0.1 (uvicorn in a thread, a free port).

The lake is small and synthetic, built without Dagster in a few seconds (:mod:`.web_lake`).
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from PIL import Image

from artsim_pipeline.core.generations import current_generation_id
from artsim_pipeline.core.lake import DataLake
from artsim_pipeline_tests.support import ARTSIM, disk_writes, free_port
from artsim_pipeline_tests.web_lake import (MODEL, N_PAINTINGS, VELAZQUEZ_AND_PORTRAIT, LiveServer, build_web_lake,
                                            engine_factory, post_image, publish)


@pytest.fixture(scope="module")
def web_lake(tmp_path_factory):
    return build_web_lake(tmp_path_factory.mktemp("web-lake") / "lake")


@pytest.fixture(scope="module")
def server(web_lake):
    from artsim_pipeline.web.app import create_app

    lake, _ = web_lake
    app = create_app(lake, engine_factory(lake), max_upload_bytes=2 * 1024 * 1024, max_pixels=4_000_000)
    with LiveServer(app) as live:
        yield live


# ----------------------------------------------------------------------------- tests


def test_health_and_openapi(server, web_lake):
    lake, _ = web_lake
    health = requests.get(server.url + "/healthz", timeout=10).json()
    assert health["status"] == "ok" and health["indexed"] == N_PAINTINGS and health["models"] == [MODEL]
    assert health["generation"] == current_generation_id(lake)
    spec = requests.get(server.url + "/openapi.json", timeout=10).json()
    assert {"/api/search", "/api/paintings/{objectid}", "/api/map", "/healthz"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/api/search"]["post"]["requestBody"]["content"]
    page = requests.get(server.url + "/", timeout=10)
    assert page.status_code == 200 and "Drop an image here" in page.text
    assert requests.get(server.url + "/map", timeout=10).status_code == 200


def test_upload_a_mirror_image_returns_itself_first(server, web_lake):
    lake, _ = web_lake
    for oid in (1000, 1007, 1013):
        data = lake.image_path(f"web-{oid}").read_bytes()  # the mirror's file, byte for byte
        reply = post_image(server, data, k=5)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["kind"] == "image" and len(body["results"]) == 5
        top = body["results"][0]
        assert top["objectid"] == oid and top["cosine"] > 0.9999
        assert top["thumbnail"] == f"/thumbs/{oid}.jpg"
        assert top["nga_url"] == f"https://www.nga.gov/collection/art-object-page.{oid}.html"
        assert "image_path" not in top
    # a raw image/* body works too (curl --data-binary)
    raw = requests.post(server.url + "/api/search?k=3", data=lake.image_path("web-1004").read_bytes(),
                        headers={"Content-Type": "image/jpeg"}, timeout=60)
    assert raw.status_code == 200 and raw.json()["results"][0]["objectid"] == 1004


def test_objectid_query_get_and_post(server):
    reply = requests.get(server.url + "/api/search", params={"objectid": 1005, "k": 4, "include_self": "true"},
                         timeout=10)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["kind"] == "objectid" and body["results"][0]["objectid"] == 1005
    assert body["results"][0]["cosine"] == pytest.approx(1.0, abs=1e-5)
    assert body["query_painting"]["title"] == "Painting 5"
    assert {"title", "artist", "date", "style", "medium", "visual", "metadata", "final"} <= set(body["results"][0])
    assert any(r["metadata"] > 0 for r in body["results"])  # an objectid query has metadata
    for r in body["results"]:  # what agreed: the numbers behind each card's words, the bonuses it got
        why = r["explanation"]
        assert set(why["depths"]) == {"early", "middle", "final"} and why["summary"].count(";") >= 2
        assert sum(why["metadata"].values()) == pytest.approx(r["metadata"])
    posted = requests.post(server.url + "/api/search", data={"objectid": "1005", "k": "4", "include_self": "1"},
                           timeout=10)
    assert [r["objectid"] for r in posted.json()["results"]] == [r["objectid"] for r in body["results"]]
    missing = requests.get(server.url + "/api/search", params={"objectid": 424242}, timeout=10)
    assert missing.status_code == 404 and "not in the collection" in missing.json()["detail"]


def test_filters(server):
    reply = requests.get(server.url + "/api/search", params={"objectid": 1000, "k": 20, "artist": "monet"}, timeout=10)
    assert reply.status_code == 200, reply.text
    ids = {r["objectid"] for r in reply.json()["results"]}
    assert ids == {1000 + i for i in range(N_PAINTINGS) if i % 3 == 1}
    years = requests.post(server.url + "/api/search", timeout=10,
                          data={"objectid": "1000", "k": "20", "year_from": "1880", "year_to": "1890"}).json()
    assert {r["objectid"] for r in years["results"]} == {1001, 1004, 1007, 1010}  # Monet 1881, 1884, 1887, 1890
    styled = requests.get(server.url + "/api/search", timeout=10,
                          params={"objectid": 1000, "k": 20, "style": "baroque", "medium": "panel"}).json()
    assert {r["objectid"] for r in styled["results"]} == {1000 + i for i in range(N_PAINTINGS) if i % 3 == 2}
    none = requests.get(server.url + "/api/search", params={"objectid": 1000, "artist": "nobody"}, timeout=10).json()
    assert none["results"] == [] and "no painting matches the filters" in none["notes"]
    bad = requests.get(server.url + "/api/search", params={"objectid": 1000, "years": "1700-1600"}, timeout=10)
    assert bad.status_code == 400 and "year range" in bad.json()["detail"]


def test_bad_uploads_get_a_4xx_with_a_message(server, web_lake):
    lake, _ = web_lake
    text = post_image(server, b"hello, I am not an image\n", name="notes.txt", mime="text/plain")
    assert text.status_code == 415 and "not an image" in text.json()["detail"]
    empty = post_image(server, b"", name="empty.jpg")
    assert empty.status_code == 400 and "empty" in empty.json()["detail"]
    big = post_image(server, b"\xff\xd8" + b"\0" * (3 * 1024 * 1024), name="huge.jpg")  # > 2 MiB limit
    assert big.status_code == 413 and "too large" in big.json()["detail"]
    bomb = io.BytesIO()
    Image.new("1", (5000, 5000)).save(bomb, format="PNG")  # ~3 KB on the wire, 25 MP decoded
    assert len(bomb.getvalue()) < 100_000
    refused = post_image(server, bomb.getvalue(), name="bomb.png", mime="image/png")
    assert refused.status_code == 413 and "pixels" in refused.json()["detail"]
    truncated = post_image(server, lake.image_path("web-1003").read_bytes()[:400], name="cut.jpg")
    assert 400 <= truncated.status_code < 500 and truncated.json()["detail"]
    nothing = requests.post(server.url + "/api/search", data={"k": "3"}, timeout=10)
    assert nothing.status_code == 400 and "objectid" in nothing.json()["detail"]
    k_bad = requests.post(server.url + "/api/search", data={"objectid": "1000", "k": "0"}, timeout=10)
    assert k_bad.status_code in (400, 422)


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_uploads_are_never_written_to_disk(server, web_lake):
    """Uploads stay in memory (:mod:`artsim_pipeline.web.uploads`): no file of this process is opened for
    writing while images are searched and refused, not even the anonymous temporary file Starlette's
    form parser rolls an upload over 1 MiB into; the lake is unchanged."""
    lake, _ = web_lake
    noise = io.BytesIO()
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (700, 700, 3), dtype=np.uint8)).save(noise, "PNG")
    large = noise.getvalue()
    assert 1024 * 1024 < len(large) < 2 * 1024 * 1024  # over Starlette's spool size, under the server's limit
    jpeg = lake.image_path("web-1007").read_bytes()
    post_image(server, jpeg, k=1)  # the models are loaded before the recording starts
    lake_before = _tree(lake.root)
    with disk_writes() as written:
        replies = [post_image(server, large, name="noise.png", mime="image/png", k=3),
                   post_image(server, jpeg, name="query.jpg", k=3, artist="monet"),
                   requests.post(server.url + "/api/search?k=2", data=large, headers={"Content-Type": "image/png"},
                                 timeout=60),
                   post_image(server, b"\xff\xd8" + b"\0" * (3 * 1024 * 1024), name="huge.jpg"),
                   post_image(server, jpeg[:400], name="cut.jpg"),
                   post_image(server, b"plain text, not an image\n" * 50_000, name="notes.txt", mime="text/plain")]
    assert [r.status_code for r in replies[:3]] == [200, 200, 200], [r.text for r in replies]
    assert replies[3].status_code == 413 and 400 <= replies[4].status_code < 500 and replies[5].status_code == 415
    assert replies[1].json()["results"][0]["objectid"] == 1007  # a Monet, found among the Monets
    assert written == []
    # the system temp folder is shared with every other process on the machine: the audit hook above (this
    # process's own writes, named or not) is the check; the lake is ours alone
    assert _tree(lake.root) == lake_before
    with disk_writes() as spooled:  # the recorder sees what Starlette's parser would do with `large`
        with tempfile.SpooledTemporaryFile(max_size=1024 * 1024) as spool:
            spool.write(large)
    assert spooled


def test_two_images_or_an_image_and_an_objectid_are_refused_saying_why(server, web_lake):
    lake, _ = web_lake
    jpeg = lake.image_path("web-1003").read_bytes()
    both = post_image(server, jpeg, name="a.jpg", objectid=1002)
    assert both.status_code == 400 and "not both" in both.json()["detail"]
    two = requests.post(server.url + "/api/search", files=[("image", ("a.jpg", jpeg, "image/jpeg")),
                                                           ("other", ("b.jpg", jpeg, "image/jpeg"))], timeout=60)
    assert two.status_code == 400 and "'a.jpg' and 'b.jpg'" in two.json()["detail"]
    assert post_image(server, jpeg, name="a.jpg").status_code == 200  # one image alone still searches

def test_paintings_thumbnails_and_map(server, web_lake):
    one = requests.get(server.url + "/api/paintings/1002", timeout=10).json()
    assert one["title"] == "Painting 2" and one["indexed"] is True and one["artist"] == "Johannes Vermeer"
    assert requests.get(server.url + "/api/paintings/99", timeout=10).status_code == 404
    picked = requests.get(server.url + "/api/paintings", params={"q": "vermeer"}, timeout=10).json()
    assert picked["count"] == N_PAINTINGS // 3
    thumb = requests.get(server.url + "/thumbs/1002.jpg", params={"size": 128}, timeout=10)
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(thumb.content)) as image:
        assert max(image.size) == 128
    etag = thumb.headers["etag"]
    again = requests.get(server.url + "/thumbs/1002.jpg", params={"size": 128}, headers={"If-None-Match": etag},
                         timeout=10)
    assert again.status_code == 304 and again.headers["etag"] == etag
    assert requests.get(server.url + "/thumbs/99.jpg", timeout=10).status_code == 404
    reply = requests.get(server.url + "/api/map", params={"wait": 60}, timeout=90)
    assert reply.status_code == 200, reply.text
    data = reply.json()
    assert data["count"] == N_PAINTINGS and sorted(data["objectid"]) == list(range(1000, 1000 + N_PAINTINGS))
    assert all(0.0 <= v <= 1.0 for v in data["x"] + data["y"]) and len(data["title"]) == N_PAINTINGS


def test_paintings_text_lookup_ignores_case_and_accents_best_match_first(tmp_path):
    from artsim_pipeline.web.app import create_app

    lake, _ = build_web_lake(tmp_path / "lake", overrides=VELAZQUEZ_AND_PORTRAIT)
    with LiveServer(create_app(lake, engine_factory(lake))) as live:
        def lookup(q: str) -> list[int]:
            reply = requests.get(live.url + "/api/paintings", params={"q": q}, timeout=10)
            assert reply.status_code == 200, reply.text
            body = reply.json()
            assert body["count"] == len(body["paintings"])
            return [p["objectid"] for p in body["paintings"]]

        # no accent, any case: both the painting by Velázquez and the portrait titled after him
        assert sorted(lookup("velazquez")) == [1014, 1017]
        assert sorted(lookup("VELÁZQUEZ")) == [1014, 1017]
        # the exact artist comes before a title that only contains it (though 1014 is first in the catalog)
        assert lookup("Diego Velazquez") == [1017, 1014]
        assert lookup("portrait of diego") == [1014]
        one = requests.get(live.url + "/api/paintings", params={"q": "diego velazquez"}, timeout=10).json()
        assert one["paintings"][0]["artist"] == "Diego Velázquez"
        # an artist or title starting with the text beats a match inside; an exact title beats a prefix
        assert lookup("diego") == [1017, 1014]
        assert lookup("painting 1")[:2] == [1001, 1010]
        assert lookup("nobody at all") == []


def test_index_hot_reload(server, web_lake):
    lake, raw = web_lake
    before = requests.get(server.url + "/healthz", timeout=10).json()
    # a new generation without the last six paintings: the next request serves it, no restart
    ids = np.arange(1000, 1000 + N_PAINTINGS, dtype=np.int64)
    generation = publish(lake, raw[:12], ids[:12], dim=8)
    assert generation != before["generation"]
    after = requests.get(server.url + "/healthz", timeout=60).json()
    assert after["generation"] == generation and after["indexed"] == 12 and after["reloads"] == before["reloads"] + 1
    reply = post_image(server, lake.image_path("web-1015").read_bytes(), k=20)
    assert reply.status_code == 200 and reply.json()["generation"] == generation
    assert 1015 not in {r["objectid"] for r in reply.json()["results"]}
    assert len(reply.json()["results"]) == 12
    # and back: the painting is served again
    generation = publish(lake, raw, ids, dim=12)
    reply = post_image(server, lake.image_path("web-1015").read_bytes(), k=3)
    assert reply.json()["generation"] == generation and reply.json()["results"][0]["objectid"] == 1015
    mapped = requests.get(server.url + "/api/map", params={"wait": 60}, timeout=90).json()
    assert mapped["generation"] == generation and mapped["count"] == N_PAINTINGS


def test_empty_lake_says_run_artsim_run_first(tmp_path):
    from artsim_pipeline.web.app import create_app

    lake = DataLake(tmp_path / "empty")
    with LiveServer(create_app(lake, engine_factory(lake))) as live:
        health = requests.get(live.url + "/healthz", timeout=10)
        assert health.status_code == 503 and "artsim run" in health.json()["hint"]
        reply = requests.get(live.url + "/api/search", params={"objectid": 1}, timeout=10)
        assert reply.status_code == 503 and "artsim run" in reply.json()["detail"]
        assert requests.get(live.url + "/", timeout=10).status_code == 200  # the page itself says so


def test_serve_binds_localhost_by_default():
    from artsim_pipeline.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port) == ("127.0.0.1", 8000)


@pytest.mark.slow
def test_artsim_serve_command(web_lake, tmp_path):
    """``artsim serve`` as a user runs it: binds 127.0.0.1, answers /healthz and a search, stops on SIGINT."""
    lake, _ = web_lake
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARTSIM_", "DAGSTER_HOME"))}
    env |= {"ARTSIM_DATA_LAKE": str(lake.root), "ARTSIM_MODELS": MODEL, "ARTSIM_WEIGHTS": "random",
            "ARTSIM_DEVICE": "cpu"}
    proc = subprocess.Popen([ARTSIM, "serve", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url, deadline, health = f"http://127.0.0.1:{port}", time.monotonic() + 90, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = requests.get(url + "/healthz", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        assert health is not None and health.status_code == 200, proc.stdout.read() if proc.poll() is not None else ""
        assert health.json()["indexed"] == N_PAINTINGS
        reply = requests.get(url + "/api/search", params={"objectid": 1003, "k": 2}, timeout=30)
        assert reply.status_code == 200 and reply.json()["results"][0]["objectid"] != 1003  # not itself
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert f"open http://127.0.0.1:{port}/" in out


def test_compute_layout_is_deterministic_and_normalised(tmp_path):
    from artsim_pipeline.core.layout import compute_layout, load_layout, save_layout

    rng = np.random.default_rng(3)
    x = rng.standard_normal((120, 24)).astype(np.float32)
    ids = np.arange(5000, 5120)
    a = compute_layout(x, ids, seed=0)
    b = compute_layout(x[::-1], ids[::-1], seed=0)  # input order does not matter
    assert list(a.columns) == ["objectid", "x", "y"] and list(a["objectid"]) == list(ids)
    assert np.allclose(a[["x", "y"]].to_numpy(), b[["x", "y"]].to_numpy())
    xy = a[["x", "y"]].to_numpy()
    assert xy.min() >= 0.0 and xy.max() <= 1.0 and np.isclose(xy.max(axis=0) - xy.min(axis=0), 1.0).any()
    assert len(compute_layout(x[:3], ids[:3])) == 3 and len(compute_layout(x[:1], ids[:1])) == 1
    assert len(compute_layout(x[:0], ids[:0])) == 0
    lake = DataLake(tmp_path / "lake")
    save_layout(a, lake.collection_map_path, generation="gen-1")
    frame, generation = load_layout(lake.collection_map_path)
    assert generation == "gen-1" and frame.equals(a)


def test_server_uses_the_lakes_collection_map_when_it_matches(web_lake, tmp_path):
    from artsim_pipeline.core.layout import save_layout
    from artsim_pipeline.web.state import MapCache, Served

    lake, _ = web_lake
    engine = engine_factory(lake)()
    ids = np.arange(1000, 1000 + N_PAINTINGS)
    frame = pd.DataFrame({"objectid": ids, "x": np.linspace(0, 1, N_PAINTINGS), "y": 0.5})
    path = lake.collection_map_path
    try:
        save_layout(frame, path, generation=engine.generation)
        got = MapCache(lake).get(Served(engine), timeout=30)
        assert got is not None and np.allclose(got["x"], frame["x"])  # read, not recomputed
        save_layout(frame, path, generation="another-generation")  # stale: computed again
        cache = MapCache(lake)
        got = cache.get(Served(engine), timeout=60)
        assert got is not None and not np.allclose(got["x"], frame["x"])
        assert cache.source[engine.generation].startswith("computed")
    finally:
        path.unlink(missing_ok=True)


def test_browse_an_artist_paged_with_the_total_and_a_message(server):
    def page(**params):
        reply = requests.get(server.url + "/api/paintings", params=params, timeout=10)
        assert reply.status_code == 200, reply.text
        return reply.json()

    first = page(q="VERMEER", limit=4)
    assert first["total"] == N_PAINTINGS // 3 and first["count"] == 4 and first["offset"] == 0
    assert first["artist"] == "Johannes Vermeer" and first["message"] == "6 paintings by Johannes Vermeer"
    assert first["paintings"] == first["items"]  # the first version's callers read "paintings" and "count"
    rest = page(q="vermeer", limit=4, offset=4)
    ids = [p["objectid"] for p in first["items"] + rest["items"]]
    assert ids == [1000 + i for i in range(N_PAINTINGS) if i % 3 == 2]  # every one, once, in order
    item = first["items"][0]
    assert item["thumb_url"] == "/thumbs/1002.jpg?size=256" and item["page_url"] == "/painting/1002"
    assert item["attribution"] == "Johannes Vermeer" and item["title"] == "Painting 2"
    assert requests.get(server.url + item["thumb_url"], timeout=10).status_code == 200
    titled = page(q="painting 1")
    assert titled["artist"] is None and titled["message"] == f"{titled['total']} paintings match 'painting 1'"
    none = page(q="Kazimir Malevich")
    assert none["total"] == 0 and none["items"] == [] and none["suggestions"] == []
    assert none["message"] == "No painting by or titled 'Kazimir Malevich' in the collection"
    close = page(q="vermer")
    assert close["total"] == 0 and close["suggestions"] == ["Johannes Vermeer"]
    assert "did you mean 'Johannes Vermeer'?" in close["message"]
    assert page()["total"] == N_PAINTINGS
    assert requests.get(server.url + "/api/paintings", params={"q": "x", "offset": -1}, timeout=10).status_code == 422


def test_facets_list_the_catalogs_values_with_counts(server):
    reply = requests.get(server.url + "/api/facets", timeout=10)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["total"] == N_PAINTINGS
    assert {"value": "Baroque", "count": 12} in body["style"]["values"] and body["style"]["available"]
    assert {"value": "Claude Monet", "count": 6} in body["artist"]["values"]
    assert body["medium"]["values"][0] == {"value": "oil on canvas", "count": 12}
    assert body["years"] == {"available": True, "with_value": N_PAINTINGS, "min": 1630, "max": 1896}


def test_load_more_continues_the_ranking_without_repeats(server):
    def ranks(**params):
        reply = requests.get(server.url + "/api/search", params={"objectid": 1000, **params}, timeout=30)
        assert reply.status_code == 200, reply.text
        return [(r["rank"], r["objectid"]) for r in reply.json()["results"]]

    whole = ranks(k=15)
    assert ranks(k=5) + ranks(k=5, offset=5) + ranks(k=5, offset=10) == whole
    posted = requests.post(server.url + "/api/search", data={"objectid": "1000", "k": "4", "offset": "8"}, timeout=30)
    assert [(r["rank"], r["objectid"]) for r in posted.json()["results"]] == whole[8:12]
    assert posted.json()["offset"] == 8 and posted.json()["more"] is True
    assert requests.get(server.url + "/api/search", params={"objectid": 1000, "k": 5, "offset": 15},
                        timeout=30).json()["more"] is False  # 3 of 5 came back: the end
    assert ranks(k=10, offset=N_PAINTINGS) == []  # past the end: nothing more
    too_deep = requests.get(server.url + "/api/search", params={"objectid": 1000, "k": 100, "offset": 950}, timeout=10)
    assert too_deep.status_code == 400 and "offset must be between 0 and 900" in too_deep.json()["detail"]


def test_an_empty_result_says_which_filter_removed_what(server):
    body = requests.get(server.url + "/api/search", timeout=10,
                        params={"objectid": 1000, "artist": "monet", "years": "1600-1610"}).json()
    assert body["results"] == []
    assert "artist 'monet' removed 12 of 18 paintings" in body["notes"]
    assert "years 1600\u20131610 removed 18 of 18 paintings" in body["notes"]


def test_bad_upload_messages_name_the_problem_in_words(server):
    text = post_image(server, b"hello, I am not an image\n", name="notes.txt", mime="text/plain").json()["detail"]
    assert text.startswith("notes.txt: not an image file we can read (supported: JPEG, PNG"), text
    assert "Error" not in text  # no exception class
    big = post_image(server, b"\xff\xd8" + b"\0" * (3 * 1024 * 1024), name="huge.jpg").json()["detail"]
    assert "too large: 3.0 MB, the limit is 2.0 MB" in big, big
    empty = post_image(server, b"", name="empty.jpg").json()["detail"]
    assert empty == "empty.jpg: empty file (0 bytes): choose an image"
