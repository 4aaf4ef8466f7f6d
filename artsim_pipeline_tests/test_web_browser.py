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

            # the map: every painting (from the atlas), a click opens its page
            page.click("text=Map of the collection")
            canvas = page.locator("canvas#map")
            expect(canvas).to_have_attribute("data-ready", "1", timeout=60_000)
            assert canvas.get_attribute("data-count") == str(N_PAINTINGS)
            # drawn from the atlas with WebGL; a painting's own thumbnail loads only when zoomed in (test_web_map_browser)
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

            # several: a pick list of them as thumbnails, a click on "More like this" runs the search
            box.fill("vermeer")
            box.press("Enter")
            picks = page.locator("#choices .card")
            expect(picks).to_have_count(5, timeout=10_000)  # Vermeer's six, less 1017
            expect(picks.first).to_contain_text("Johannes Vermeer")
            expect(page.locator("#browse-head")).to_have_text("5 paintings by Johannes Vermeer")
            expect(error).to_be_hidden()
            picks.first.locator("button.pick").click()
            expect(grid).to_have_attribute("data-query", "objectid 1002", timeout=20_000)
            expect(page.locator("#choices")).to_be_hidden()
            _save(page, tmp_path, "web_text_search.png")

            # none: a clear message, not "objectid must be an integer"
            box.fill("nobody at all")
            box.press("Enter")
            expect(page.locator("#choices")).to_have_text("No painting by or titled 'nobody at all' in the collection.",
                                                          timeout=10_000)
            assert "integer" not in page.locator("#choices").inner_text()
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
            assert set(rows[0]) >= {"rank", "title", "visual", "metadata", "final", "nga_url", "query", "why"}
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


def _card_ids(locator) -> list[str]:
    return locator.evaluate_all("cs => cs.map(c => c.dataset.objectid)")


def test_browse_an_artist_load_more_errors_clear_and_a_fuller_export(tmp_path):
    """An artist + Enter: the artist's paintings as thumbnails with their count; a name not in the collection
    says so and suggests close names; the filters come from the collection; a non-image upload says so in words
    and the error clears on the next search; "Load more" adds the next ranks, none twice; the CSV and JSON
    exports carry the query, each result's why-sentence and numbers, its thumbnail and nga.gov URLs; an empty
    filtered result says what each filter removed."""
    import csv
    import json

    from playwright.sync_api import expect, sync_playwright

    from artsim_pipeline.web.app import create_app

    lake, _ = build_web_lake(tmp_path / "lake")
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("a shopping list, not a picture\n")
    with LiveServer(create_app(lake, engine_factory(lake))) as live, sync_playwright() as pw:
        with browser_page(pw, live.url) as (page, errors):
            box, grid, error, choices = (page.locator("#objectid"), page.locator("#grid"), page.locator("#error"),
                                         page.locator("#choices"))
            # the filters the collection has data for, with its values and its span of years
            expect(page.locator("#filters-note")).to_have_text("Paintings from 1630 to 1896. ", timeout=10_000)
            expect(page.locator("#artist-list option")).to_have_count(3)
            assert page.locator("#artist-list option").first.get_attribute("label") == "6 paintings"
            expect(page.locator("#style")).to_be_visible()
            assert page.locator("#year_from").get_attribute("placeholder") == "1630"

            # an artist + Enter: every one of their paintings as a thumbnail, with the count
            box.fill("monet")
            box.press("Enter")
            expect(page.locator("#browse-head")).to_have_text("6 paintings by Claude Monet", timeout=10_000)
            cards = choices.locator(".card")
            expect(cards).to_have_count(6)
            for i in range(6):
                expect(cards.nth(i)).to_contain_text("Claude Monet")
            expect(cards.first.locator("a.page")).to_have_attribute("href", "/painting/1001")
            page.wait_for_function("() => [...document.querySelectorAll('#choices img')]"
                                   ".every(i => i.complete && i.naturalWidth > 0)", timeout=20_000)
            assert "q=monet" in page.url
            _save(page, tmp_path, "web_browse_artist.png")

            # a name not in the collection: said in words, with close names offered
            box.fill("Kazimir Malevich")
            box.press("Enter")
            expect(choices).to_contain_text("No painting by or titled 'Kazimir Malevich' in the collection.")
            expect(choices.locator(".card")).to_have_count(0)
            box.fill("vermer")
            box.press("Enter")
            expect(choices.locator("button.suggestion")).to_have_text(["Johannes Vermeer"], timeout=10_000)
            _save(page, tmp_path, "web_browse_suggest.png")
            choices.locator("button.suggestion").click()
            expect(page.locator("#browse-head")).to_have_text("6 paintings by Johannes Vermeer", timeout=10_000)

            # a non-image upload: the problem in words; the next valid search clears it
            page.set_input_files("#file", str(not_an_image))
            expect(error).to_contain_text("notes.txt: not an image file we can read", timeout=10_000)
            assert "Error" not in error.inner_text() and "Unidentified" not in error.inner_text()
            _save(page, tmp_path, "web_bad_upload.png")
            page.set_input_files("#file", {"name": "empty.jpg", "mimeType": "image/jpeg", "buffer": b""})
            expect(error).to_have_text("empty.jpg: empty file (0 bytes): choose an image")
            page.set_input_files("#file", {"name": "huge.jpg", "mimeType": "image/jpeg",
                                           "buffer": b"\xff\xd8" + bytes(25 * 1024 * 1024)})
            expect(error).to_have_text("huge.jpg: too large: 25 MB, the limit is 20 MB")
            page.click("#clear")
            page.fill("#k", "5")
            box.fill("1000")
            box.press("Enter")
            expect(grid).to_have_attribute("data-query", "objectid 1000", timeout=20_000)
            expect(error).to_be_hidden()

            # Load more: the next ranks, in order, none twice, until the collection runs out
            expect(grid.locator(".card")).to_have_count(5)
            more = page.locator("#load-more")
            others = N_PAINTINGS - 1  # every painting but the query's own
            for shown in (10, 15, others):
                more.click()
                expect(grid.locator(".card")).to_have_count(shown, timeout=20_000)
            ranks = grid.locator(".card .rank").all_inner_texts()
            assert ranks == [str(r) for r in range(1, others + 1)], ranks
            ids = _card_ids(grid.locator(".card"))
            assert len(set(ids)) == others and "1000" not in ids
            expect(page.locator("#more-row")).to_be_hidden()

            # the export: every shown result, with the query and the why
            with page.expect_download() as info:
                page.click("#csv")
            rows = list(csv.DictReader(open(info.value.path(), encoding="utf-8")))
            assert [r["objectid"] for r in rows] == ids
            first = rows[0]
            assert first["query"] == "objectid 1000" and "k=5" in first["options"]
            assert first["why"] and "by depth: early layers" in first["why_numbers"]
            assert first["thumbnail_url"] == f"{live.url}/thumbs/{ids[0]}.jpg?size=256"
            assert first["nga_url"] == f"https://www.nga.gov/collection/art-object-page.{ids[0]}.html"
            with page.expect_download() as info:
                page.click("#json")
            payload = json.loads(Path(info.value.path()).read_text(encoding="utf-8"))
            assert payload["query"]["objectid"] == 1000 and payload["query"]["options"]["k"] == "5"
            assert len(payload["results"]) == others and payload["results"][1]["why"]
            assert payload["results"][1]["explanation"]["depths"]

            # an empty filtered result says what each filter removed
            page.fill("#artist", "monet")
            page.fill("#year_from", "1600")
            page.fill("#year_to", "1610")
            box.press("Enter")
            expect(grid).to_contain_text("artist 'monet' removed 12 of 18 paintings", timeout=20_000)
            expect(grid).to_contain_text("years 1600\u20131610 removed 18 of 18 paintings")
            assert errors == [], errors


BARE = {1000 + i: {"style": None, "medium": None, "beginyear": None, "endyear": None, "displaydate": None}
        for i in range(N_PAINTINGS)}


def test_a_phone_tap_opens_the_why_numbers_and_filters_without_data_hide(tmp_path):
    """At 390 px with touch: a tap on a result's "The numbers" opens them; on a catalog without style, medium or
    dates those filters are not offered, and the page says why."""
    from playwright.sync_api import expect, sync_playwright

    from artsim_pipeline.web.app import create_app

    lake, _ = build_web_lake(tmp_path / "lake", overrides=BARE)
    with LiveServer(create_app(lake, engine_factory(lake))) as live, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            context = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(live.url + "/")
            note = page.locator("#filters-note")
            expect(note).to_have_text("No painting of this collection has a style, a medium or a date, so those "
                                      "filters are not offered.", timeout=10_000)
            for hidden in ("#style", "#medium", "#year_from", "#year_to"):
                expect(page.locator(hidden)).to_be_hidden()
            expect(page.locator("#artist")).to_be_visible()

            page.fill("#objectid", "1002")
            page.press("#objectid", "Enter")
            card = page.locator("#grid .card").nth(1)
            expect(card).to_be_visible(timeout=20_000)
            numbers = card.locator("details.why-numbers")
            expect(numbers.locator("ul")).to_be_hidden()
            numbers.locator("summary").tap()
            expect(numbers.locator("ul")).to_be_visible()
            expect(numbers).to_contain_text("final features (subject, composition):")
            expect(numbers).to_contain_text("by backbone")
            assert numbers.evaluate("d => d.open") is True
            overflow = page.evaluate("() => document.documentElement.scrollWidth")
            assert overflow <= 390, f"the page is {overflow} px wide at a 390 px viewport"
            numbers.scroll_into_view_if_needed()
            _save(page, tmp_path, "web_why_tap_390.png")
            assert errors == [], errors
        finally:
            browser.close()
