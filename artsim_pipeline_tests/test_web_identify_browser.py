"""Identification on the search page in headless Chromium (Debian's ``chromium`` driven by Playwright):
an uploaded photo of a painting of the collection says "This is <title> — <artist> (confidence …)", a photo
of a painting that is not in it says so, an objectid search's cards never include the painting itself and
a near duplicate carries its label (on the search page and the painting page). Screenshots go to the test's
tmp dir and to ``$ARTSIM_SCREENSHOT_DIR`` when set. Skips only when Playwright or Chromium is missing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from artsim_pipeline_tests.identify_lake import build_identify_lake, outside_images, with_near_duplicate
from artsim_pipeline_tests.web_lake import NEEDS_MIRROR_IMAGES, LiveServer, engine_factory


def _chromium() -> str | None:
    explicit = os.environ.get("ARTSIM_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _skip_reason() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright's Python package is not installed (pip install -e '.[test]')"
    return None if _chromium() else "no Chromium binary (apt-get install chromium, or set ARTSIM_CHROMIUM)"


pytestmark = [pytest.mark.slow, pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")]


def _save(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / name), full_page=False)
    extra = os.environ.get("ARTSIM_SCREENSHOT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / name, Path(extra) / name)


@NEEDS_MIRROR_IMAGES
def test_the_page_says_which_painting_a_photo_shows_or_that_it_is_not_in_the_collection(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from artsim_pipeline.web.app import create_app

    lake, _ = build_identify_lake(tmp_path / "lake")
    with_near_duplicate(lake, copy=1017, of=1003)
    member = tmp_path / "photo-of-painting-9.jpg"
    with Image.open(lake.image_path("web-1009")) as image:  # a phone's copy of painting 9: re-encoded, larger
        image.convert("RGB").save(member, format="JPEG", quality=90)
    outside = outside_images(1)
    stranger = outside[0] if outside else tmp_path / "stranger.jpg"
    if not outside:
        Image.effect_mandelbrot((240, 180), (-2, -1.2, 1, 1.2), 60).convert("RGB").save(stranger)

    with LiveServer(create_app(lake, engine_factory(lake))) as live, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=_chromium(), headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(live.url + "/")
            banner = page.locator("#identification")

            page.set_input_files("#file", str(member))
            expect(banner).to_contain_text("This is Painting 9 — ", timeout=30_000)
            expect(banner).to_contain_text("(confidence ")
            expect(banner).to_contain_text("How the match is made: visual similarity only")
            expect(banner.locator("a")).to_have_attribute("href", "/painting/1009")
            assert page.locator("#grid .card").first.get_attribute("data-objectid") == "1009"
            expect(page.locator("#grid .card").first.locator(".score.final .pct")).to_have_text("100%")  # match = visual
            _save(page, tmp_path, "web_identified.png")

            page.set_input_files("#file", str(stranger))
            expect(banner).to_contain_text("Not in the collection", timeout=30_000)
            expect(banner).not_to_contain_text("This is")
            _save(page, tmp_path, "web_not_in_collection.png")

            # a painting's own search: every card is another painting; its other image is labelled
            page.fill("#objectid", "1003")
            page.click("#go")
            expect(page.locator("#grid")).to_have_attribute("data-query", "objectid 1003", timeout=20_000)
            cards = page.locator("#grid .card")
            expect(cards.first).to_be_visible()
            assert "1003" not in [cards.nth(i).get_attribute("data-objectid") for i in range(cards.count())]
            expect(page.locator("#grid .card[data-objectid='1017'] .near-duplicate")).to_have_text("near duplicate")
            expect(page.locator("#grid .near-duplicate")).to_have_count(1)
            expect(banner).to_contain_text("How the match is made: 0.7 × visual + 0.3 × catalog")
            expect(banner).not_to_contain_text("This is")
            _save(page, tmp_path, "web_objectid_near_duplicate.png")

            page.goto(live.url + "/painting/1003")
            neighbours = page.locator("#neighbours .card")
            expect(neighbours.first).to_be_visible(timeout=20_000)
            assert "1003" not in [neighbours.nth(i).get_attribute("data-objectid") for i in range(neighbours.count())]
            expect(page.locator("#neighbours .card[data-objectid='1017'] .near-duplicate")).to_have_count(1)
            assert errors == [], errors
        finally:
            browser.close()
