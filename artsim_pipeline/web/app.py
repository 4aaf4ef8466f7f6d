"""``artsim serve``: the search page, the collection map and a JSON API (FastAPI on uvicorn).

:func:`create_app` only wires the app: the server's state (:mod:`artsim_pipeline.web.state`), one router
per concern, the static files and the middleware. Routes (OpenAPI at ``/openapi.json``, interactive docs at
``/docs``, served offline):

* ``GET /`` — the search page (``/?objectid=...&k=...&artist=...`` is a search's shareable link);
  ``GET /painting/{objectid}`` — a painting's page; ``GET /map`` — the collection map;
  ``GET /status`` — what the lake holds (``GET /api/status``, as ``artsim status --json``): these page
  and status routes are :mod:`artsim_pipeline.web.routes_pages`;
* ``POST /api/search`` — ``multipart/form-data`` with an ``image`` file *or* an ``objectid`` field,
  plus ``k``, ``face_crop``, ``artist``, ``style``, ``medium``, ``years`` (or ``year_from`` /
  ``year_to``; fields and response shapes: :mod:`artsim_pipeline.web.payloads`); a raw ``image/*`` body
  with the options as query parameters also works.
  ``GET /api/search?objectid=...`` is the same for an objectid: :mod:`artsim_pipeline.web.routes_search`;
* ``GET /api/paintings/{objectid}`` (with every catalog field under ``metadata``),
  ``GET /api/paintings?q=...&offset=...&limit=...`` (paintings by title/artist, paged) and
  ``GET /api/facets`` (the filters' values with counts): :mod:`artsim_pipeline.web.routes_browse`;
* ``GET /api/map`` — every painting's place on the map, its region, the named regions and the layouts
  (202 while it is being computed); ``GET /api/map/atlas.jpg`` — all thumbnails in one image, in the
  map's order; ``POST /api/map/search`` — search within a selection: :mod:`artsim_pipeline.web.routes_map`;
* ``GET /thumbs/{objectid}.jpg?size=256`` — resized JPEG from the image cache, with an ``ETag`` and
  ``Cache-Control: no-cache`` (revalidated: 304 while the image is unchanged):
  :mod:`artsim_pipeline.web.routes_thumbs`;
* ``GET /healthz`` (:mod:`artsim_pipeline.web.routes_health`); ``/static/...`` — the pages' CSS and
  JavaScript (``static/``), Swagger UI. Every ``GET`` route answers ``HEAD`` too (:mod:`artsim_pipeline.web.head`).

Image queries pass a :class:`~artsim_pipeline.web.gate.QueryGate` (a few at a time, a bounded queue,
then 503 with ``Retry-After``); objectid queries need no model and never wait behind them. Every
response carries a Content-Security-Policy (no inline script or style, no framing), ``nosniff`` and
``X-Frame-Options``; error bodies never show the server's absolute paths.

The engine (index, catalog, models) is loaded once and reused; a newly published index generation is
picked up by the next request (see :mod:`artsim_pipeline.web.state`). ``artsim serve`` opens its port with
the index and catalog loaded and loads the models in the background: ``/healthz`` says
``"image_search": "loading"`` until they are ready, and an upload that arrives first waits for them. Uploads stay in memory and are
capped in bytes and pixels (see :mod:`artsim_pipeline.web.uploads`).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import uvicorn
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image

from ..core.model_thread import ModelThread
from ..core.search import SearchEngine
from ..core.search_query import IndexNotBuiltError, QueryError
from ..core.lake import DataLake, lake_for
from . import pages
from .gate import QueryGate
from .head import HeadAsGet
from .map_cache import MapCache
from .payloads import error_response
from .public import public_message
from .routes_browse import browse_router, painting_router
from .routes_health import health_router
from .routes_map import map_router
from .routes_pages import page_router
from .routes_search import SearchService, search_router
from .routes_thumbs import thumbs_router
from .served import Served
from .state import EngineHolder
from .thumbnails import ThumbnailCache
from .uploads import DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD_BYTES

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    # the pages load their scripts and styles from /static only; images may be blobs (the query preview)
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; "
                               "style-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def create_app(
    lake: DataLake | Path | str,
    engine_factory: Callable[[], SearchEngine] | None = None,
    *,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    map_seed: int = 0,
    eager: bool = True,
    precompute_map: bool = True,
    stale: Callable[[], list[dict[str, Any]]] | None = None,
    gate: QueryGate | None = None,
) -> FastAPI:
    """The ASGI app for the data lake ``lake``.

    ``engine_factory`` builds a :class:`SearchEngine` (default: ``SearchEngine(lake)`` with its
    defaults); it is called at start-up (``eager``) and again whenever a new index generation is
    published. With ``precompute_map``, the map of each generation is computed in the background (unless
    the lake holds one) as soon as it is served; otherwise on the first ``/api/map`` request. ``stale``
    lists what ``artsim run`` would re-run (Dagster's view; the status page shows it when given).
    ``gate`` admits image queries (default :class:`QueryGate` with its defaults).
    """
    lake = lake if isinstance(lake, DataLake) else DataLake(lake)
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = int(max_pixels)  # Pillow's own guard must not refuse what we accept
    factory = engine_factory or (lambda: SearchEngine(lake))
    holder = EngineHolder(lake, factory)
    maps = MapCache(lake, seed=map_seed)
    thumbs = ThumbnailCache()
    gate = gate or QueryGate()
    if precompute_map:
        holder.listeners.append(maps.start)

    app = FastAPI(title="artsim", version="0.1.0", lifespan=_lifespan(holder, eager), docs_url=None, redoc_url=None,
                  description="Find paintings of the National Gallery of Art similar to an image or a painting.")
    app.state.holder, app.state.maps, app.state.thumbs, app.state.gate = holder, maps, thumbs, gate
    app.state.limits = {"max_upload_bytes": int(max_upload_bytes), "max_pixels": int(max_pixels)}
    # Swagger UI's own files first: the /static mount would otherwise answer its paths with 404
    app.mount("/static/swagger-ui", StaticFiles(directory=pages.swagger_ui_dir()), name="swagger-ui")
    app.mount("/static", StaticFiles(directory=pages.STATIC_DIR), name="static")
    app.add_middleware(HeadAsGet)  # HEAD answered wherever GET is
    app.middleware("http")(security_headers)

    public = functools.partial(public_message, lake=lake)
    served_or_error = served_or_error_of(holder, public)
    # the routers, in this order (the OpenAPI schema lists their paths so)
    app.include_router(page_router(lake, max_upload_bytes, stale))  # pages and /api/status
    app.include_router(browse_router(served_or_error))  # /api/paintings?q=..., /api/facets
    app.include_router(health_router(holder, gate, app.state.limits, served_or_error, public))
    app.include_router(search_router(SearchService(served_or_error, public, gate, max_upload_bytes, max_pixels)))
    app.include_router(painting_router(served_or_error))  # /api/paintings/{objectid}
    app.include_router(map_router(maps, served_or_error))
    app.include_router(thumbs_router(thumbs, served_or_error))
    return app


def _lifespan(holder: EngineHolder, eager: bool):
    """The app's lifespan: with ``eager``, load index, catalog and models once, before the first request."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        if eager:
            try:
                await run_in_threadpool(holder.get)
            except QueryError as exc:
                log.warning("artsim serve: %s", exc)
        yield

    return lifespan


async def security_headers(request: Request, call_next):
    """Middleware: every response carries :data:`SECURITY_HEADERS` (unless the route set its own)."""
    response = await call_next(request)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def served_or_error_of(holder: EngineHolder, public: Callable[[str], str]) -> Callable[[], Served | JSONResponse]:
    """A function giving ``holder``'s served engine, or the 503 response saying why there is none."""

    def served_or_error() -> Served | JSONResponse:
        try:
            return holder.get()
        except IndexNotBuiltError as exc:
            return error_response(503, public(str(exc)), hint="run `artsim run` first")
        except QueryError as exc:
            return error_response(503, public(str(exc)))

    return served_or_error


def exposure_warning(host: str) -> str | None:
    """A warning when ``host`` is not a loopback address: the server has no authentication."""
    name = host.strip().strip("[]")
    try:
        loopback = ipaddress.ip_address(name).is_loopback
    except ValueError:
        loopback = name.lower() in ("localhost", "localhost.localdomain")
    if loopback:
        return None
    return (f"artsim serve: WARNING: listening on {host}, reachable from other machines; the server has no "
            "authentication (anyone who reaches it can search and upload). Use the default 127.0.0.1, or put "
            "it behind a proxy that authenticates.")


def serve(settings: Any, host: str = "127.0.0.1", port: int = 8000, *, max_upload_mb: float = 20.0,
          max_pixels: int = DEFAULT_MAX_PIXELS, models_explicit: bool = False, log_level: str = "info",
          stale: Callable[[], list[dict[str, Any]]] | None = None) -> int:
    """Run the server until interrupted (``artsim serve``)."""
    lake = lake_for(settings)
    model_thread = ModelThread()  # every engine's model calls on one thread (core/model_thread.py says why)

    def factory() -> SearchEngine:
        # the models load in the background (EngineHolder): the port opens with the index and catalog loaded
        engine = SearchEngine.from_settings(settings, models_explicit=models_explicit, preload_models=False,
                                            model_runner=model_thread)
        for note in engine.notes:
            log.warning("artsim serve: %s", note)
        return engine

    app = create_app(lake, factory, max_upload_bytes=int(max_upload_mb * 1024 * 1024), max_pixels=max_pixels,
                     stale=stale)
    warning = exposure_warning(host)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    print(f"artsim serve: data lake {lake.root if lake.is_remote else lake.root.resolve()}; open http://{host}:{port}/", flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
    return 0
