"""``artsim bench map_page``: the collection map page itself in headless Chromium, at 1,698 to 131,072 paintings.

Data: a synthetic map per size (60 Gaussian islands of uneven size in [0, 1]² plus 5 % scatter; artists
drawn Zipf-like from ``n / 300`` names, years 1400-1950 with 8 % undated, titles), its named regions
(:mod:`artsim_pipeline.core.map_regions`, timed) and the ``/api/map`` payload built by the server's own
code (:func:`artsim_pipeline.web.routes_map.payload_of`, gzip as served); an atlas JPEG of the size the
server would make (16 or 32 px cells) with coloured cells. A small FastAPI app on 127.0.0.1 serves the
real page (``templates/map.html``, ``static/``) with that payload and atlas.

Measured per size, Chromium headless (Debian's ``/usr/bin/chromium``; WebGL is drawn by SwiftShader, the
CPU rasteriser, as on a machine without a GPU; the renderer string is in the JSON):

* transfer: bytes the page fetched (the HTML, scripts and styles, ``/api/map`` gzip, the atlas);
* first paint: from the start of the navigation to the first frame with every painting drawn (coloured
  sprites); atlas paint: to the first frame with the atlas' thumbnails;
* zoom step: a wheel event on the map (a 1.2× zoom around the centre) to the next frame presented (two
  animation frames later; an idle page's two frames are ``frame_ms``), median and max of 8, in then out.
  Above 20,000 paintings the page shows the zoomed view by moving the last WebGL frame (a CSS transform)
  and draws the sprites again once the view rests (map.js); that full redraw is ``redraw_ms``: the
  sprites drawn for a new view and read back (``readPixels`` waits for the last pixel), median and max
  of 12 zooms by 1.25× in then out;
* layout switch: similarity → date (the animation's first frame).

Prints a table and writes JSON (``--out``; default ``<data_lake>/reports/bench_map_page.json``).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import math
import os
import shutil
import socket
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import Settings
from ..core.storage import atomic_write_text

SIZES = "1698,32768,131072"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--enable-unsafe-swiftshader"]


def synthetic_map(n: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(map ``objectid, x, y``, catalog indexed by objectid) of ``n`` synthetic paintings (module doc)."""
    rng = np.random.default_rng(seed)
    centres, spread = rng.random((60, 2)) * 0.8 + 0.1, rng.uniform(0.01, 0.05, 60)
    weights = rng.pareto(1.5, 60) + 0.2
    island = rng.choice(60, size=n, p=weights / weights.sum())
    xy = centres[island] + rng.normal(0, 1, (n, 2)) * spread[island, None]
    scatter = rng.random(n) < 0.05
    xy[scatter] = rng.random((int(scatter.sum()), 2))
    ids = np.arange(n, dtype=np.int64) * 7 + 1000
    names = [f"Painter {k:04d}" for k in range(max(5, n // 300))]
    ranks = np.minimum(rng.zipf(1.6, n), len(names)) - 1
    artist = np.where(rng.random(n) < 0.7, (ranks + island * 3) % len(names), ranks)
    years = np.where(rng.random(n) < 0.08, np.nan, np.clip(1400 + island * 9 + rng.normal(0, 25, n), 1400, 1950))
    frame = pd.DataFrame({"objectid": ids, "x": np.clip(xy[:, 0], 0, 1), "y": np.clip(xy[:, 1], 0, 1)})
    catalog = pd.DataFrame({"objectid": ids, "title": [f"Synthetic painting {i}" for i in range(n)],
                            "artist": [names[a] for a in artist], "style": None, "beginyear": years,
                            "medium": np.where(rng.random(n) < 0.8, "oil on canvas", "tempera on panel")}).set_index(
        "objectid", drop=False)
    return frame, catalog


def synthetic_atlas(n: int, cell: int, seed: int = 0) -> bytes:
    """A JPEG atlas of ``n`` cells (``ceil(sqrt(n))`` per row) of ``cell`` px, each a coloured gradient."""
    from PIL import Image

    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    rng = np.random.default_rng(seed)
    colours = rng.integers(40, 230, (rows, cols, 3)).astype(np.uint8)
    sheet = np.repeat(np.repeat(colours, cell, axis=0), cell, axis=1)
    ramp = (np.arange(cell, dtype=np.int16) * 40 // cell)[None, :, None]
    sheet = np.clip(sheet.astype(np.int16) + np.tile(ramp, (1, cols, 1)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(sheet).save(out, format="JPEG", quality=80)
    return out.getvalue()


def prepare(n: int, seed: int = 0) -> dict[str, Any]:
    """The payload (JSON, gzip), the atlas and the server-side seconds for ``n`` paintings."""
    from ..core.map_regions import describe_regions, fit_regions
    from ..core.layout import ATTRS_KEY
    from ..web.routes_map import payload_of
    from ..web.state import atlas_cell

    frame, catalog = synthetic_map(n, seed)
    started = time.perf_counter()
    frame["region"] = fit_regions(frame, seed=seed)
    regions = describe_regions(frame, catalog)
    regions_s = time.perf_counter() - started
    frame.attrs[ATTRS_KEY] = {"regions": regions}
    started = time.perf_counter()
    body = json.dumps(payload_of(frame, catalog, f"bench-{n}", "synthetic"), separators=(",", ":")).encode()
    packed = gzip.compress(body, compresslevel=6)
    payload_s = time.perf_counter() - started
    atlas = synthetic_atlas(n, atlas_cell(n), seed)
    return {"n": n, "json": body, "gzip": packed, "atlas": atlas, "regions": len(regions),
            "regions_s": round(regions_s, 2), "payload_s": round(payload_s, 2)}


def bench_app(data: dict[str, Any], sent: dict[str, int]):
    """The real map page and static files, with ``data``'s payload and atlas; bytes sent per path in ``sent``."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, Response
    from fastapi.staticfiles import StaticFiles

    from ..web import pages

    app = FastAPI()
    app.mount("/static", StaticFiles(directory=pages.STATIC_DIR), name="static")
    thumb = synthetic_atlas(1, 64)

    @app.middleware("http")
    async def count(request: Request, call_next):
        response = await call_next(request)
        size = int(response.headers.get("content-length", 0) or 0)
        sent[request.url.path] = sent.get(request.url.path, 0) + size
        return response

    @app.get("/map")
    def page() -> HTMLResponse:
        return HTMLResponse(pages.render("map"))

    @app.get("/api/map")
    def api_map() -> Response:
        return Response(data["gzip"], media_type="application/json", headers={"Content-Encoding": "gzip"})

    @app.get("/api/map/atlas.jpg")
    def atlas() -> Response:
        return Response(data["atlas"], media_type="image/jpeg")

    @app.get("/thumbs/{objectid}.jpg")
    def thumbs(objectid: int) -> Response:
        return Response(thumb, media_type="image/jpeg")

    return app


class Server:
    """uvicorn on 127.0.0.1:``port`` in a thread."""

    def __init__(self, app, port: int) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "Server":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


FRAME_JS = """async () => { const out = []; for (let k = 0; k < 8; k++) { const t0 = performance.now();
  await new Promise(res => requestAnimationFrame(() => requestAnimationFrame(res))); out.push(performance.now() - t0); }
  return out; }"""
WHEEL_JS = """async () => { const r = over.getBoundingClientRect(), out = [];
  for (let k = 0; k < 8; k++) { const t0 = performance.now();
    over.dispatchEvent(new WheelEvent('wheel', {deltaY: k < 4 ? -120 : 120, clientX: r.left + r.width / 2,
      clientY: r.top + r.height / 2, bubbles: true, cancelable: true}));
    await new Promise(res => requestAnimationFrame(() => requestAnimationFrame(res))); out.push(performance.now() - t0); }
  return out; }"""
LAYOUT_JS = """async () => { const t0 = performance.now(); artsimMap.setLayout('date');
  await new Promise(res => requestAnimationFrame(res)); const t = performance.now() - t0; artsimMap.setLayout('similarity');
  await new Promise(res => setTimeout(res, 500)); return t; }"""


def measure_page(browser, url: str, n: int) -> dict[str, Any]:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url + "/map")
    page.wait_for_selector("canvas#map[data-painted='1']", timeout=120_000)
    page.wait_for_selector("canvas#map[data-atlas-painted='1']", timeout=120_000)
    page.wait_for_function("() => artsimMap.snapReady === true", timeout=120_000)
    first = page.evaluate("() => [artsimMap.firstPaintMs, artsimMap.atlasPaintMs, artsimMap.state().count]")
    redraws = page.evaluate("() => { const out = []; for (let k = 0; k < 12; k++) out.push(artsimMap.zoomStep(k < 6 ? 1.25 : 0.8)); return out; }")
    page.evaluate("() => document.getElementById('zfit').click()")
    page.wait_for_timeout(500)
    frames = page.evaluate(FRAME_JS)
    wheel = page.evaluate(WHEEL_JS)
    layout = page.evaluate(LAYOUT_JS)
    renderer = page.evaluate("() => { const g = document.createElement('canvas').getContext('webgl');"
                             " const d = g && g.getExtension('WEBGL_debug_renderer_info');"
                             " return d ? g.getParameter(d.UNMASKED_RENDERER_WEBGL) : (g ? 'webgl' : 'none'); }")
    page.close()
    if first[2] != n:
        raise RuntimeError(f"the page drew {first[2]} paintings, not {n}")
    return {"first_paint_s": round(first[0] / 1000, 3), "atlas_paint_s": round(first[1] / 1000, 3),
            "zoom_step_ms_median": round(statistics.median(wheel), 1), "zoom_step_ms_max": round(max(wheel), 1),
            "zoom_steps_ms": [round(v, 1) for v in wheel], "frame_ms_median": round(statistics.median(frames), 1),
            "redraw_ms_median": round(statistics.median(redraws), 1), "redraw_ms_max": round(max(redraws), 1),
            "layout_switch_ms": round(layout, 1), "renderer": renderer, "page_errors": errors}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="artsim bench map_page", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=SIZES, help="paintings per synthetic map (default %(default)s)")
    parser.add_argument("--port", type=int, default=8631, help="127.0.0.1 port of the page's server (0: any free)")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="JSON (default <data_lake>/reports/bench_map_page.json)")
    args = parser.parse_args(argv)
    if not Path(args.chromium).is_file():
        parser.error(f"no Chromium at {args.chromium}: install Debian's chromium or give --chromium")
    from playwright.sync_api import sync_playwright

    load_before = os.getloadavg()
    rows = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            for n in [int(s) for s in args.sizes.split(",") if s]:
                data, sent = prepare(n, args.seed), {}
                with Server(bench_app(data, sent), args.port) as server:
                    row = measure_page(browser, server.url, n)
                row.update({"n": n, "regions": data["regions"], "regions_s": data["regions_s"],
                            "payload_s": data["payload_s"], "json_mb": round(len(data["json"]) / 1e6, 2),
                            "gzip_mb": round(len(data["gzip"]) / 1e6, 2), "atlas_mb": round(len(data["atlas"]) / 1e6, 2),
                            "transfer_mb": round(sum(v for k, v in sent.items() if not k.startswith("/thumbs")) / 1e6, 2)})
                rows.append(row)
                print(f"n={n}: first paint {row['first_paint_s']} s, zoom step {row['zoom_step_ms_median']} ms", flush=True)
        finally:
            browser.close()
    result = {"benchmark": "map_page", "chromium_args": CHROMIUM_ARGS, "cpus": os.cpu_count(),
              "load_average_before": [round(v, 2) for v in load_before],
              "load_average_after": [round(v, 2) for v in os.getloadavg()], "rows": rows}
    print(f"{'n':>8}{'regions':>8}{'server s':>9}{'gzip MB':>8}{'atlas MB':>9}{'sent MB':>8}{'paint s':>8}"
          f"{'atlas s':>8}{'zoom ms':>8}{'max ms':>8}{'frame ms':>9}{'redraw ms':>10}{'layout ms':>10}")
    for r in rows:
        print(f"{r['n']:>8}{r['regions']:>8}{r['regions_s'] + r['payload_s']:>9.2f}{r['gzip_mb']:>8.2f}"
              f"{r['atlas_mb']:>9.2f}{r['transfer_mb']:>8.2f}{r['first_paint_s']:>8.2f}{r['atlas_paint_s']:>8.2f}"
              f"{r['zoom_step_ms_median']:>8.1f}{r['zoom_step_ms_max']:>8.1f}{r['frame_ms_median']:>9.1f}"
              f"{r['redraw_ms_median']:>10.1f}"
              f"{r['layout_switch_ms']:>10.1f}")
    print(f"renderer {rows[0]['renderer'] if rows else '-'}; load average before {result['load_average_before']}, "
          f"after {result['load_average_after']} on {result['cpus']} CPUs")
    out = args.out or Settings.from_env().data_lake / "reports" / "bench_map_page.json"
    atomic_write_text(out, json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
