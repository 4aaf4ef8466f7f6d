"""The server under the faults of issue 19 (fault matrix rows #1, #11, #13) and its new routes, over HTTP
against a real uvicorn on 127.0.0.1: uploads never stall objectid searches, a full queue answers 503,
error bodies show no server path, headers forbid inline script and framing, big objectids are searchable."""

from __future__ import annotations

import io
import re
import threading
import time

import requests
from PIL import Image

from artsim_pipeline.core.search import SearchEngine
from artsim_pipeline.web import pages
from artsim_pipeline.web.app import SECURITY_HEADERS, create_app
from artsim_pipeline.web.state import QueryGate
from artsim_pipeline_tests.web_lake import N_PAINTINGS, LiveServer, build_web_lake, post_image


class HeldEngine(SearchEngine):
    """An engine whose image searches wait for ``release`` (a long upload, held as long as the test wants)."""

    release = threading.Event()
    entered = threading.Event()

    def search(self, query, *args, **kwargs):
        if isinstance(query, (bytes, bytearray)):
            type(self).entered.set()
            assert type(self).release.wait(60)
        return super().search(query, *args, **kwargs)


def test_a_slow_upload_never_stalls_an_objectid_search_and_a_full_queue_answers_503(tmp_path):
    lake, _ = build_web_lake(tmp_path / "lake")
    gate = QueryGate(running=1, waiting=0, wait_s=0.5)
    app = create_app(lake, lambda: HeldEngine(lake, weights="random", device="cpu"), gate=gate)
    HeldEngine.release.clear(), HeldEngine.entered.clear()
    data = lake.image_path("web-1003").read_bytes()
    with LiveServer(app) as live:
        held: list[requests.Response] = []
        worker = threading.Thread(target=lambda: held.append(post_image(live, data, k=3)))
        worker.start()
        try:
            assert HeldEngine.entered.wait(30), "the upload never reached the engine"
            # the upload holds the only image slot: an objectid search still answers, at once
            started = time.monotonic()
            reply = requests.get(live.url + "/api/search", params={"objectid": 1005, "k": 3, "include_self": "true"},
                                 timeout=20)
            seconds = time.monotonic() - started
            assert reply.status_code == 200 and reply.json()["results"][0]["objectid"] == 1005
            assert seconds < 5, f"an objectid search waited {seconds:.1f}s behind an upload"
            # a second upload: no slot, no queue room -> 503 with Retry-After, not an unbounded wait
            busy = post_image(live, data, k=3)
            assert busy.status_code == 503 and busy.headers.get("Retry-After") == "2", busy.text
            assert "busy" in busy.json()["detail"]
            assert requests.get(live.url + "/healthz", timeout=10).json()["image_queries"]["refused"] == 1
            # a 1x30000 strip is refused from its header (400), even with every slot taken
            buffer = io.BytesIO()
            Image.new("L", (1, 30000), 128).save(buffer, "PNG")
            strip = post_image(live, buffer.getvalue(), name="strip.png", mime="image/png")
            assert strip.status_code == 400 and "aspect ratio" in strip.json()["detail"], strip.text
        finally:
            HeldEngine.release.set()
            worker.join(60)
        assert held and held[0].status_code == 200 and held[0].json()["results"][0]["objectid"] == 1003


def test_error_bodies_show_no_server_path(tmp_path):
    lake, _ = build_web_lake(tmp_path / "lake")
    generation = lake.index_pointer_path.read_text().strip()
    (lake.generation_dir(generation) / "generation.json").write_text("{ not json")  # a damaged generation
    with LiveServer(create_app(lake, lambda: SearchEngine(lake, weights="random", device="cpu"))) as live:
        for path in ("/healthz", "/api/search?objectid=1003", "/api/paintings/1003", "/api/status"):
            reply = requests.get(live.url + path, timeout=20)
            assert str(tmp_path) not in reply.text, (path, reply.text)
        health = requests.get(live.url + "/healthz", timeout=20)
        assert health.status_code == 503 and "<data lake>" in health.json()["detail"], health.text
        status = requests.get(live.url + "/api/status", timeout=20).json()
        assert status["errors"] and "<data lake>" in status["errors"][0]


def test_security_headers_and_no_inline_script_or_style(tmp_path):
    lake, _ = build_web_lake(tmp_path / "lake")
    with LiveServer(create_app(lake, lambda: SearchEngine(lake, weights="random", device="cpu"))) as live:
        for path in ("/", "/map", "/status", "/painting/1003", "/docs", "/static/search.js", "/api/search?objectid=1003"):
            reply = requests.get(live.url + path, timeout=20)
            assert reply.status_code == 200, (path, reply.status_code)
            for name, value in SECURITY_HEADERS.items():
                assert reply.headers.get(name) == value, (path, name)
        csp = SECURITY_HEADERS["Content-Security-Policy"]
        assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    for template in sorted(pages.TEMPLATES_DIR.glob("*.html")):  # what the policy would block
        text = template.read_text(encoding="utf-8")
        assert "<style" not in text and " style=" not in text, template.name
        assert not re.search(r"\son[a-z]+\s*=", text), template.name  # onclick= and the like
        scripts = re.findall(r"<script([^>]*)>(.*?)</script>", text, re.S)
        assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts), template.name


def test_objectids_beyond_2_62_are_searchable_on_the_web(tmp_path):
    big = 2**62 + 12345
    lake, _ = build_web_lake(tmp_path / "lake", overrides={1004: {"objectid": big}})
    with LiveServer(create_app(lake, lambda: SearchEngine(lake, weights="random", device="cpu"))) as live:
        for reply in (requests.get(live.url + "/api/search", params={"objectid": big, "k": 2, "include_self": "true"},
                                   timeout=20),
                      requests.post(live.url + "/api/search", timeout=20,
                                    data={"objectid": str(big), "k": "2", "include_self": "true"})):
            assert reply.status_code == 200, reply.text
            assert reply.json()["results"][0]["objectid"] == big
        assert requests.get(live.url + f"/api/paintings/{big}", timeout=20).json()["objectid"] == big
        too_big = requests.post(live.url + "/api/search", data={"objectid": str(2**63)}, timeout=20)
        assert too_big.status_code == 400 and "objectid" in too_big.json()["detail"]


def test_painting_detail_status_and_map_atlas(tmp_path):
    lake, _ = build_web_lake(tmp_path / "lake")
    with LiveServer(create_app(lake, lambda: SearchEngine(lake, weights="random", device="cpu"),
                               stale=lambda: [])) as live:
        painting = requests.get(live.url + "/api/paintings/1003", timeout=20).json()
        assert painting["metadata"]["medium"] == painting["medium"] and painting["metadata"]["objectid"] == 1003
        assert "image_path" not in painting["metadata"]
        status = requests.get(live.url + "/api/status", timeout=20).json()
        assert status["catalog"]["paintings"] == N_PAINTINGS and status["index"]["indexed"] == N_PAINTINGS
        assert status["stale"] == [] and status["lake"] == "<data lake>"
        deadline = time.monotonic() + 120
        while (m := requests.get(live.url + "/api/map?wait=5", timeout=30)).status_code == 202:
            assert time.monotonic() < deadline
        body = m.json()
        atlas = requests.get(live.url + body["atlas"]["url"], timeout=60)
        assert atlas.status_code == 200 and atlas.headers["content-type"] == "image/jpeg"
        image = Image.open(io.BytesIO(atlas.content))
        cols, cell = body["atlas"]["cols"], body["atlas"]["cell"]
        assert image.size == (cols * cell, -(-body["count"] // cols) * cell)
        again = requests.get(live.url + body["atlas"]["url"], headers={"If-None-Match": atlas.headers["ETag"]}, timeout=20)
        assert again.status_code == 304
