"""The search page and the map in headless Chromium (Debian's ``chromium`` driven by Playwright's Python
package; nothing is downloaded at test time).

Upload an image of the shared mirror -> the result grid (itself first) -> "More like this" -> a new
grid (of other paintings) -> the map -> click a painting -> its "more like this" grid. Screenshots of the search page and
the map are written to the test's tmp dir, and also to ``$ARTSIM_SCREENSHOT_DIR`` when set.
Skips (with the reason) only when Playwright or a Chromium binary is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest

from artsim_pipeline_tests.nga_fixtures import NGA_MIRROR
from artsim_pipeline_tests.web_lake import (N_PAINTINGS, VELAZQUEZ, LiveServer, build_web_lake, engine_factory,
                                                source_images)

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_path() -> str | None:
    explicit = os.environ.get("ARTSIM_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


def _skip_reason() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright's Python package is not installed (pip install -e '.[test]')"
    if chromium_path() is None:
        return ("no Chromium binary (looked for $ARTSIM_CHROMIUM, " + ", ".join(CHROMIUM_CANDIDATES)
                + "); install Debian's `chromium` (apt-get install chromium) — .ci/run does when it can")
    return None


pytestmark = [pytest.mark.slow, pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")]


def _save(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=False)
    extra = os.environ.get("ARTSIM_SCREENSHOT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(extra) / name)
    return path


@contextlib.contextmanager
def browser_page(pw, url: str, width: int = 1280):
    """Debian's Chromium, headless, on ``url``'s search page: ``(page, JavaScript errors seen)``."""
    browser = pw.chromium.launch(executable_path=chromium_path(), headless=True,
                                 args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
    try:
        page = browser.new_page(viewport={"width": width, "height": 900}, accept_downloads=True)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url + "/")
        yield page, errors
    finally:
        browser.close()


def test_upload_grid_more_like_this_and_map(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from artsim_pipeline.web.app import create_app

    lake, _ = build_web_lake(tmp_path / "lake")
    # the query: an image of the shared mirror (the lake's painting 1006 is a copy of it)
    mirror_files = sorted((NGA_MIRROR / "images").glob("*.jpg"))[:N_PAINTINGS] if NGA_MIRROR.is_dir() else []
    query = mirror_files[6] if len(mirror_files) == N_PAINTINGS else tmp_path / "query.jpg"
    if not query.exists():
        query.write_bytes(source_images()[6])

    with LiveServer(create_app(lake, engine_factory(lake))) as live, sync_playwright() as pw:
        with browser_page(pw, live.url) as (page, errors):
            expect(page.locator("#banner")).to_contain_text(f"{N_PAINTINGS} paintings indexed")

            # upload -> grid, itself first
            page.set_input_files("#file", str(query))
            cards = page.locator("#grid .card")
            expect(cards.first).to_be_visible(timeout=30_000)
            expect(cards).to_have_count(12)
            assert cards.first.get_attribute("data-objectid") == "1006"
            expect(cards.first).to_contain_text("Painting 6")
            expect(cards.first.locator("a.nga")).to_have_attribute(
                "href", "https://www.nga.gov/collection/art-object-page.1006.html")
            # scores as bars with a percentage; the exact number on hover (title)
            expect(cards.first.locator(".score[title^='visual']")).to_have_attribute("title", "visual 1.000")
            expect(cards.first.locator(".score[title^='visual'] .pct")).to_have_text("100%")
            width = cards.first.locator(".score[title^='visual'] .fill").evaluate("e => e.style.width")
            assert width == "100%", width
            # what agreed, in words on each card, the numbers on hover: the upload is painting 6 itself
            why = cards.first.locator(".why")
            expect(why).to_have_text("very close in palette and brushwork; very close in forms and motifs; "
                                     "very close in subject and composition")
            assert "final features (subject, composition): 1.00 (very close)" in why.get_attribute("title")
            assert cards.nth(5).locator(".why").inner_text().count(";") >= 2  # every card says it, by depth
            page.wait_for_function("() => [...document.querySelectorAll('#grid img')].slice(0, 4)"
                                   ".every(i => i.complete && i.naturalWidth > 0)", timeout=20_000)
            _save(page, tmp_path, "web_search.png")

            # "More like this" on the third card -> a new grid for that painting
            third = cards.nth(2).get_attribute("data-objectid")
            cards.nth(2).locator("button.more").click()
            expect(page.locator("#grid")).to_have_attribute("data-query", f"objectid {third}", timeout=20_000)
            expect(cards.first).to_be_visible()
            expect(page.locator(f"#grid .card[data-objectid='{third}']")).to_have_count(0)  # its neighbours, not itself
            expect(page.locator("#query-title")).to_contain_text(f"objectid {third}")
            expect(cards.first.locator(".why")).to_contain_text("same artist")  # the metadata that matched
            assert f"objectid={third}" in page.url

            # the map: every painting (the atlas first, then their own thumbnails), a click opens its page
            page.click("text=Map of the collection")
            canvas = page.locator("canvas#map")
            expect(canvas).to_have_attribute("data-ready", "1", timeout=60_000)
            assert canvas.get_attribute("data-count") == str(N_PAINTINGS)
            page.wait_for_function("() => [...document.querySelectorAll('img')].length === 0 && "
                                   "typeof images !== 'undefined' && [...images.values()].filter(i => i.ready)"
                                   f".length >= {N_PAINTINGS}", timeout=30_000)
            expect(canvas).to_have_attribute("data-atlas", "1", timeout=20_000)
            page.wait_for_timeout(200)
            _save(page, tmp_path, "web_map.png")
            assert "/" not in page.locator("#info").inner_text().split("·")[-1], "the footer shows a server path"
            x, y, oid = page.evaluate("() => { const [x, y] = toScreen(0); return [x, y, data.objectid[0]]; }")
            box = canvas.bounding_box()
            page.mouse.click(box["x"] + x, box["y"] + y)
            page.wait_for_url(f"**/painting/{oid}", timeout=10_000)
            expect(page.locator("#neighbours .card").first).to_be_visible(timeout=20_000)
            expect(page.locator(f"#neighbours .card[data-objectid='{oid}']")).to_have_count(0)
            assert errors == [], errors


def test_search_box_finds_paintings_by_artist_or_title(tmp_path):
    """Typing a name (no accents) + Enter: one match -> its grid; several -> a pick list; none -> a message."""
    from playwright.sync_api import expect, sync_playwright

    from artsim_pipeline.web.app import create_app

    lake, _ = build_web_lake(tmp_path / "lake", overrides=VELAZQUEZ)  # 1017 is by "Diego Velázquez"
    with LiveServer(create_app(lake, engine_factory(lake))) as live, sync_playwright() as pw:
        with browser_page(pw, live.url) as (page, errors):
            expect(page.locator("#banner")).to_contain_text(f"{N_PAINTINGS} paintings indexed")
            box, grid, error = page.locator("#objectid"), page.locator("#grid"), page.locator("#error")

            # one match: its similarity grid (other paintings, not itself)
            box.fill("velazquez")
            box.press("Enter")
            expect(grid).to_have_attribute("data-query", "objectid 1017", timeout=20_000)
            expect(grid.locator(".card").first).to_be_visible()
            expect(grid.locator(".card[data-objectid='1017']")).to_have_count(0)
            expect(page.locator("#query-title")).to_contain_text("Diego Velázquez")
            expect(error).to_be_hidden()

            # several: a pick list of them (catalog text as text), a click runs the search
            box.fill("vermeer")
            box.press("Enter")
            picks = page.locator("#choices button.pick")
            expect(picks).to_have_count(5, timeout=10_000)  # Vermeer's six, less 1017
            expect(picks.first).to_contain_text("Johannes Vermeer")
            expect(error).to_be_hidden()
            picks.first.click()
            expect(grid).to_have_attribute("data-query", "objectid 1002", timeout=20_000)
            expect(page.locator("#choices")).to_be_hidden()
            _save(page, tmp_path, "web_text_search.png")

            # none: a clear message, not "objectid must be an integer"
            box.fill("nobody at all")
            box.press("Enter")
            expect(error).to_have_text("no painting matches 'nobody at all'", timeout=10_000)
            assert "integer" not in error.inner_text()
            assert errors == [], errors


def test_detail_view_export_share_link_docs_offline_and_a_phone_width(tmp_path):
    """The painting page (large image, metadata, nga.gov, neighbours), CSV/JSON downloads of a grid, the
    search's link restoring it, /docs rendering with every non-local request blocked, the status page,
    and the search page at 390 px: nothing runs off screen, the card buttons stay on one line."""
    import csv
    import json

    from playwright.sync_api import expect, sync_playwright

    from artsim_pipeline.web.app import create_app

    lake, _ = build_web_lake(tmp_path / "lake", overrides=VELAZQUEZ)
    with LiveServer(create_app(lake, engine_factory(lake))) as live, sync_playwright() as pw:
        with browser_page(pw, live.url) as (page, errors):
            outside: list[str] = []

            def local_only(route):
                if route.request.url.startswith(live.url):
                    route.continue_()
                else:  # offline: nothing outside this server may be needed
                    outside.append(route.request.url)
                    route.abort()

            page.route("**/*", local_only)
            # a search with options -> its link restores the same search in a fresh page
            page.fill("#k", "5")
            page.fill("#artist", "vermeer")
            page.fill("#objectid", "1002")
            page.press("#objectid", "Enter")
            grid = page.locator("#grid")
            expect(grid).to_have_attribute("data-query", "objectid 1002", timeout=20_000)
            expect(grid.locator(".card")).to_have_count(4)  # the other four Vermeers (1017 is a Velázquez here)
            assert "artist=vermeer" in page.url and "k=5" in page.url, page.url
            shown = grid.locator(".card").evaluate_all("cs => cs.map(c => c.dataset.objectid)")

            # export: what is shown, as CSV and JSON files
            with page.expect_download() as info:
                page.click("#csv")
            rows = list(csv.DictReader(open(info.value.path(), encoding="utf-8")))
            assert [r["objectid"] for r in rows] == shown and rows[0]["artist"] == "Johannes Vermeer"
            assert set(rows[0]) >= {"rank", "title", "visual", "metadata", "final", "nga_url"}
            with page.expect_download() as info:
                page.click("#json")
            payload = json.loads(Path(info.value.path()).read_text(encoding="utf-8"))
            assert [r["objectid"] for r in payload["results"]] == [int(o) for o in shown]

            link = page.url
            page.goto(live.url + "/")
            page.goto(link)
            expect(grid).to_have_attribute("data-query", "objectid 1002", timeout=20_000)
            expect(page.locator("#artist")).to_have_value("vermeer")
            assert grid.locator(".card").evaluate_all("cs => cs.map(c => c.dataset.objectid)") == shown

            # the detail view: a card's title opens the painting's page
            grid.locator(".card").nth(1).locator(".title a").click()
            page.wait_for_url(f"**/painting/{shown[1]}", timeout=10_000)
            expect(page.locator("#title")).not_to_be_empty(timeout=10_000)
            expect(page.locator("#fields")).to_contain_text("Medium")
            expect(page.locator("#fields")).to_contain_text("Object id")
            expect(page.locator("#nga")).to_have_attribute(
                "href", f"https://www.nga.gov/collection/art-object-page.{shown[1]}.html")
            neighbours = page.locator("#neighbours .card")
            expect(neighbours.first).to_be_visible(timeout=20_000)
            expect(page.locator(f"#neighbours .card[data-objectid='{shown[1]}']")).to_have_count(0)
            page.wait_for_function("() => document.getElementById('large').complete && "
                                   "document.getElementById('large').naturalWidth > 0", timeout=10_000)
            _save(page, tmp_path, "web_painting.png")

            # the status page: the lake's counts
            page.goto(live.url + "/status")
            expect(page.locator("#counts")).to_contain_text("Paintings in the catalog", timeout=10_000)
            expect(page.locator("#counts tr").first).to_contain_text(str(N_PAINTINGS))
            _save(page, tmp_path, "web_status.png")

            # /docs: Swagger UI from this server, rendered with the outside world blocked
            page.goto(live.url + "/docs")
            expect(page.locator(".swagger-ui .opblock").first).to_be_visible(timeout=20_000)
            expect(page.locator(".swagger-ui")).to_contain_text("/api/search")
            _save(page, tmp_path, "web_docs.png")
            assert outside == [], outside
            assert errors == [], errors

        with browser_page(pw, live.url, width=390) as (page, errors):
            page.fill("#objectid", "1002")
            page.press("#objectid", "Enter")
            expect(page.locator("#grid .card").first).to_be_visible(timeout=20_000)
            overflow = page.evaluate("() => document.documentElement.scrollWidth")
            assert overflow <= 390, f"the page is {overflow} px wide at a 390 px viewport"
            options = page.locator("fieldset").bounding_box()
            assert options["x"] >= 0 and options["x"] + options["width"] <= 390, options
            for selector in ("#grid .card button.more", "#grid .card a.nga"):
                box = page.locator(selector).first.bounding_box()
                line = page.locator(selector).first.evaluate("e => parseFloat(getComputedStyle(e).lineHeight) || 20")
                assert box["height"] < 2 * line + 12, f"{selector} wraps at 390 px ({box})"
                assert box["x"] + box["width"] <= 390, f"{selector} runs off screen ({box})"
            _save(page, tmp_path, "web_search_390.png")
            assert errors == [], errors
