"""The collection map as a curator's instrument, in headless Chromium (Playwright; WebGL by SwiftShader):
named regions on the map, find an artist, colour by artist, the date layout, box and lasso selection with
CSV/JSON export and search within, "Show on map" from a search and a painting's page, and pinch zoom and
tap at 390 px on a touch screen. The page's state is read from its test hook (``window.artsimMap``);
screenshots go to ``$ARTSIM_SCREENSHOT_DIR`` when set."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import time

import pytest
import requests

from artsim_pipeline_tests.web_lake import NEEDS_MIRROR_IMAGES, LiveServer, build_web_lake, engine_factory

CHROMIUM = "/usr/bin/chromium"


def _skip_reason() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed"
    chromium = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).is_file() else None)
    return None if chromium else "no Chromium (install Debian's `chromium`)"


pytestmark = [pytest.mark.slow, pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")]
MONET = [1001, 1004, 1007, 1010, 1013, 1016]  # web_lake.py: every third painting, from 1001


def shot(page, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    page.screenshot(path=str(path))
    extra = os.environ.get("ARTSIM_SCREENSHOT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(extra) / name)


def launch(pw):
    return pw.chromium.launch(executable_path=shutil.which("chromium") or CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-dev-shm-usage", "--enable-unsafe-swiftshader"])


def open_map(browser, url: str, **context):
    page = browser.new_context(viewport=context.pop("viewport", {"width": 1280, "height": 900}), accept_downloads=True,
                               **context).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.wait_for_selector("canvas#map[data-ready='1'][data-atlas='1']", timeout=60_000)
    page.wait_for_timeout(600)  # the layout animation (350 ms)
    return page, errors


def state(page) -> dict:
    return page.evaluate("() => artsimMap.state()")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from artsim_pipeline.web.app import create_app

    lake, _ = build_web_lake(tmp_path_factory.mktemp("map-browser") / "lake")
    with LiveServer(create_app(lake, engine_factory(lake))) as server:
        yield server



def settled_xs(page, objectids, timeout_s: float = 15.0) -> dict:
    """Screen x of each painting once the layout's transition has ended (two readings 250 ms apart agree; a
    loaded machine draws the animation's frames late, so a fixed wait can read positions in flight)."""
    read = lambda: {o: round(page.evaluate(f"() => artsimMap.screenOf({o})")[0], 1) for o in objectids}  # noqa: E731
    deadline, last = time.monotonic() + timeout_s, read()
    while time.monotonic() < deadline:
        page.wait_for_timeout(250)
        now = read()
        if now == last:
            return now
        last = now
    return last

@NEEDS_MIRROR_IMAGES
def test_regions_find_colour_and_the_date_layout(live, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    payload = requests.get(live.url + "/api/map", params={"wait": 60}, timeout=90).json()
    with sync_playwright() as pw:
        browser = launch(pw)
        page, errors = open_map(browser, live.url + "/map")
        # the regions are named on the map and listed
        labels = [r["label"] for r in payload["regions"]]
        assert labels and sorted(state(page)["labels"]) == sorted(labels)
        page.click("#panel-toggle")
        expect(page.locator("#regions button")).to_have_text(labels)
        reps = page.locator("#regions li").first.locator(".reps img").evaluate_all("is => is.map(i => +i.dataset.objectid)")
        assert reps == payload["regions"][0]["representatives"] and len(reps) == 4  # nearest the medoid
        page.wait_for_function("() => [...document.querySelectorAll('#regions .reps img')].every(i => i.complete && i.naturalWidth > 0)",
                               timeout=20_000)
        shot(page, tmp_path, "map_regions.png")
        page.locator("#regions button").first.click()
        first = payload["regions"][0]
        members = sorted(o for o, r in zip(payload["objectid"], payload["region"]) if r == first["id"])
        assert state(page)["highlighted"] == members
        page.click("#panel-toggle")

        # typing an artist: the suggestion, then all of the artist's paintings highlighted
        page.fill("#find", "monet")
        expect(page.locator("#finds li").first).to_contain_text("Claude Monet")
        expect(page.locator("#finds li").first).to_contain_text("6 paintings")
        page.press("#find", "Enter")
        assert state(page)["highlighted"] == MONET
        expect(page.locator("#status")).to_have_text("Claude Monet: 6 paintings highlighted")
        page.wait_for_timeout(500)
        shot(page, tmp_path, "map_find_monet.png")
        # a title: flies to the painting and rings it
        page.fill("#find", "Painting 5")
        page.press("#find", "Enter")
        assert state(page)["focus"] == 1005 and state(page)["zoom"] > 1

        # colour by artist, with a legend; then the date layout: later paintings further right
        page.click("#find-clear")
        page.click("#zfit")
        page.select_option("#colour", "artist")
        assert sorted(state(page)["legend"]) == ["Claude Monet", "Johannes Vermeer", "Rembrandt van Rijn"]
        expect(page.locator("#legend li")).to_have_count(3)
        page.select_option("#layout", "date")
        assert state(page)["layout"] == "date"
        xs = settled_xs(page, (1000, 1001, 1015, 1016))
        # Rembrandt 1630 and 1645 left of Monet 1881 and 1896 (250 years apart; within 15 years the grid snap,
        # which moves a painting into the nearest free cell, may swap two neighbours)
        assert max(xs[1000], xs[1015]) < min(xs[1001], xs[1016]), xs
        shot(page, tmp_path, "map_date_by_artist.png")
        page.select_option("#layout", "grid")
        page.wait_for_timeout(600)
        cells = page.evaluate("() => data.objectid.map(o => artsimMap.screenOf(o).map(v => Math.round(v)).join(','))")
        assert len(set(cells)) == len(cells)  # one place per painting
        assert errors == [], errors
        browser.close()


@NEEDS_MIRROR_IMAGES
def test_box_and_lasso_selection_export_and_search_within(live, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = launch(pw)
        page, errors = open_map(browser, live.url + "/map")
        box = page.locator("canvas#over").bounding_box()
        points = page.evaluate("() => data.objectid.map(o => [o, ...artsimMap.screenOf(o)])")
        xs = sorted(p[1] for p in points)
        cut = (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2  # the left half of the paintings
        expected = sorted(o for o, x, _ in points if x < cut)
        page.click("#tool-box")
        page.mouse.move(box["x"] + 2, box["y"] + 2)
        page.mouse.down()
        page.mouse.move(box["x"] + cut / 2, box["y"] + box["height"] / 2, steps=4)
        page.mouse.move(box["x"] + cut, box["y"] + box["height"] - 2, steps=4)
        page.mouse.up()
        assert state(page)["selected"] == expected
        expect(page.locator("#sel-count")).to_have_text(f"{len(expected)} selected")
        expect(page.locator("#sel-list a")).to_have_count(len(expected))
        shot(page, tmp_path, "map_box_selection.png")
        with page.expect_download() as info:
            page.click("#sel-csv")
        rows = list(csv.DictReader(open(info.value.path(), encoding="utf-8")))
        assert sorted(int(r["objectid"]) for r in rows) == expected and set(rows[0]) == {
            "objectid", "title", "artist", "year", "region"}
        with page.expect_download() as info:
            page.click("#sel-json")
        exported = json.loads(Path(info.value.path()).read_text(encoding="utf-8"))["paintings"]
        assert sorted(p["objectid"] for p in exported) == expected
        # search within these: the first selected painting is the query, it comes first
        page.click("#sel-search")
        expect(page.locator("#sel-results li").first).to_have_attribute("data-objectid", str(expected[0]),
                                                                        timeout=20_000)
        found = [int(o) for o in page.locator("#sel-results li").evaluate_all("ls => ls.map(l => l.dataset.objectid)")]
        assert sorted(found) == expected

        # a lasso: a triangle around three paintings' centres
        page.click("#sel-clear")
        page.click("#panel-toggle")  # the panel opened with the selection: out of the way
        page.click("#tool-lasso")
        three = points[:3]
        cx, cy = sum(p[1] for p in three) / 3, sum(p[2] for p in three) / 3
        ring = [(min(max(cx + 1.5 * (x - cx), 3), box["width"] - 3), min(max(cy + 1.5 * (y - cy), 3), box["height"] - 3))
                for _, x, y in three]
        path = [*ring, ring[0]]
        page.mouse.move(box["x"] + path[0][0], box["y"] + path[0][1])
        page.mouse.down()
        for x, y in path[1:]:
            page.mouse.move(box["x"] + x, box["y"] + y, steps=6)
        page.mouse.up()
        polygon = [(x, y) for x, y in ring]
        inside = sorted(o for o, x, y in points if _inside(x, y, polygon))
        assert inside and state(page)["selected"] == inside
        shot(page, tmp_path, "map_lasso_selection.png")
        assert errors == [], errors
        browser.close()


def _inside(x: float, y: float, polygon: list[tuple[float, float]]) -> bool:
    result, j = False, len(polygon) - 1
    for i, (xi, yi) in enumerate(polygon):
        xj, yj = polygon[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            result = not result
        j = i
    return result


def test_show_on_map_from_a_search_and_from_a_painting_page(live, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(live.url + "/?objectid=1003&k=5")
        expect(page.locator("#grid .card")).to_have_count(5, timeout=30_000)
        results = [int(o) for o in page.locator("#grid .card").evaluate_all("cs => cs.map(c => c.dataset.objectid)")]
        page.click("#show-on-map")
        page.wait_for_selector("canvas#map[data-ready='1'][data-atlas='1']", timeout=60_000)
        page.wait_for_timeout(600)
        assert state(page)["highlighted"] == sorted(results) and state(page)["query"] == 1003
        expect(page.locator("#status")).to_contain_text("5 search results highlighted")
        shot(page, tmp_path, "map_show_search.png")

        page.goto(live.url + "/painting/1005")
        page.click("#on-map")
        page.wait_for_selector("canvas#map[data-ready='1']", timeout=60_000)
        assert state(page)["focus"] == 1005 and "/map?focus=1005" in page.url
        browser.close()


@NEEDS_MIRROR_IMAGES
def test_phone_pinch_zoom_and_tap(live, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = launch(pw)
        page, errors = open_map(browser, live.url + "/map", viewport={"width": 390, "height": 844}, has_touch=True,
                                is_mobile=True, device_scale_factor=2)
        expect(page.locator("#hint")).to_have_text("drag to pan, pinch to zoom, tap a painting")
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, f"the map page is {width} px wide at 390 px"
        box = page.locator("canvas#over").bounding_box()
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        before = state(page)["zoom"]
        cdp = page.context.new_cdp_session(page)

        def touch(kind: str, spread: float) -> None:
            points = [] if kind == "touchEnd" else [{"x": cx - spread, "y": cy, "id": 0}, {"x": cx + spread, "y": cy, "id": 1}]
            cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": points})

        touch("touchStart", 30)
        for spread in range(40, 130, 10):
            touch("touchMove", spread)
        touch("touchEnd", 0)
        page.wait_for_timeout(500)
        after = state(page)["zoom"]
        assert after > 3 * before, (before, after)  # spread 30 -> 120 px: about four times closer
        shot(page, tmp_path, "map_phone_pinched.png")
        # a tap on a painting shows its card with a link to its page (no hover on a touch screen)
        target = page.evaluate("() => { const r = over.getBoundingClientRect(); for (const o of data.objectid) {"
                               " const [x, y] = artsimMap.screenOf(o); if (x > 20 && y > 20 && x < r.width - 20 &&"
                               " y < r.height - 20) return [o, x, y]; } return null; }")
        assert target, "no painting in view after the pinch"
        page.touchscreen.tap(box["x"] + target[1], box["y"] + target[2])
        expect(page.locator("#tip a")).to_have_attribute("href", f"/painting/{target[0]}")
        shot(page, tmp_path, "map_phone_tap.png")
        assert errors == [], errors
        browser.close()
