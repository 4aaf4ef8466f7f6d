"""``artsim serve``: the search page, the collection map and a JSON API (FastAPI on uvicorn).

Routes (OpenAPI at ``/openapi.json``, interactive docs at ``/docs``, served offline):

* ``GET /`` — the search page (``/?objectid=...&k=...&artist=...`` is a search's shareable link);
  ``GET /painting/{objectid}`` — a painting's page; ``GET /map`` — the collection map;
  ``GET /status`` — what the lake holds (``GET /api/status``, as ``artsim status --json``): these page
  and status routes are :mod:`artsim_pipeline.web.routes_pages`;
* ``POST /api/search`` — ``multipart/form-data`` with an ``image`` file *or* an ``objectid`` field,
  plus ``k``, ``face_crop``, ``artist``, ``style``, ``medium``, ``years`` (or ``year_from`` /
  ``year_to``; fields and response shapes: :mod:`artsim_pipeline.web.payloads`); a raw ``image/*`` body
  with the options as query parameters also works.
  ``GET /api/search?objectid=...`` is the same for an objectid;
* ``GET /api/paintings/{objectid}`` (with every catalog field under ``metadata``),
  ``GET /api/paintings?q=...&offset=...&limit=...`` (paintings by title/artist, paged) and
  ``GET /api/facets`` (the filters' values with counts): :mod:`artsim_pipeline.web.routes_browse`;
* ``GET /api/map`` — every painting's place on the map, its region, the named regions and the layouts
  (202 while it is being computed); ``GET /api/map/atlas.jpg`` — all thumbnails in one image, in the
  map's order; ``POST /api/map/search`` — search within a selection: :mod:`artsim_pipeline.web.routes_map`;
* ``GET /thumbs/{objectid}.jpg?size=256`` — resized JPEG from the image cache, with an ``ETag`` and
  ``Cache-Control: no-cache`` (revalidated: 304 while the image is unchanged);
* ``GET /healthz``; ``/static/...`` — the pages' CSS and JavaScript (``static/``), Swagger UI.
  Every ``GET`` route answers ``HEAD`` too (:mod:`artsim_pipeline.web.head`).

Image queries pass a :class:`~artsim_pipeline.web.state.QueryGate` (a few at a time, a bounded queue,
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
import logging
import sys
from pathlib import Path
from typing import Any, Callable

from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from ..core.search import SearchEngine
from ..core.search_query import IndexNotBuiltError, QueryError
from ..core.lake import DataLake, lake_at
from . import pages
from .head import HeadAsGet
from .payloads import (FORM_FIELDS, MAX_DEPTH, MAX_K, SEARCH_REQUEST_DOC, error_response, int_field, json_value,
                       nga_url, painting_json, search_filters, truthy)
from .routes_browse import browse_router
from .routes_map import map_router
from .routes_pages import page_router
from .state import (Busy, EngineHolder, MapCache, QueryGate, Served, ThumbnailCache, catalog_row,
                    public_message)
from .uploads import (DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD_BYTES, UploadError, check_image, parse_multipart,
                      read_body, too_large)

log = logging.getLogger(__name__)

THUMB_SIZES = (64, 128, 256, 512, 1024)
#: Thumbnails are revalidated on every use (a replaced image shows at once; unchanged: a 304 by ETag).
THUMB_CACHE = "no-cache"
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
    from PIL import Image

    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = int(max_pixels)  # Pillow's own guard must not refuse what we accept
    factory = engine_factory or (lambda: SearchEngine(lake))
    holder = EngineHolder(lake, factory)
    maps = MapCache(lake, seed=map_seed)
    thumbs = ThumbnailCache()
    gate = gate or QueryGate()
    if precompute_map:
        holder.listeners.append(maps.start)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        if eager:  # load index, catalog and models once, before the first request
            try:
                await run_in_threadpool(holder.get)
            except QueryError as exc:
                log.warning("artsim serve: %s", exc)
        yield

    app = FastAPI(title="artsim", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Find paintings of the National Gallery of Art similar to an image or a painting.")
    app.state.holder, app.state.maps, app.state.thumbs, app.state.gate = holder, maps, thumbs, gate
    app.state.limits = {"max_upload_bytes": int(max_upload_bytes), "max_pixels": int(max_pixels)}
    # Swagger UI's own files first: the /static mount would otherwise answer its paths with 404
    app.mount("/static/swagger-ui", StaticFiles(directory=pages.swagger_ui_dir()), name="swagger-ui")
    app.mount("/static", StaticFiles(directory=pages.STATIC_DIR), name="static")
    app.add_middleware(HeadAsGet)  # HEAD answered wherever GET is

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    def public(text: str) -> str:
        return public_message(text, lake)

    def served_or_error() -> Served | JSONResponse:
        try:
            return holder.get()
        except IndexNotBuiltError as exc:
            return error_response(503, public(str(exc)), hint="run `artsim run` first")
        except QueryError as exc:
            return error_response(503, public(str(exc)))

    # ------------------------------------------------------------------ pages and status (routes_pages)
    app.include_router(page_router(lake, max_upload_bytes, stale))
    app.include_router(browse_router(served_or_error))  # /api/paintings?q=..., /api/facets

    # ------------------------------------------------------------------ health
    @app.get("/healthz", summary="Is an index served? Which generation, how many paintings, which models")
    def healthz() -> JSONResponse:
        served = served_or_error()
        if isinstance(served, JSONResponse):
            return JSONResponse({"status": "no_index", "detail": public(holder.error or "no index"),
                                 "hint": "run `artsim run` first"}, status_code=503)
        engine = served.engine
        return JSONResponse({
            "status": "ok", "generation": engine.generation, "paintings": int(len(engine.catalog)),
            "indexed": int(len(engine.variants["full"].ids)), "variants": sorted(engine.variants),
            "models": list(engine.model_names), "reloads": holder.reloads, "limits": app.state.limits,
            "image_search": served.image_search,
            **({"image_search_error": public(served.image_search_error)} if served.image_search_error else {}),
            "image_queries": {"running_at_once": gate.running, "queue": gate.waiting, "refused": gate.refused},
        })

    # ------------------------------------------------------------------ search
    def run_search(served: Served, query: Any, fields: dict[str, str]) -> JSONResponse:
        k = int_field(fields.get("k") or 10, "k", 1, MAX_K)
        offset = int_field(fields.get("offset") or 0, "offset", 0, MAX_DEPTH - k)  # "Load more": ranks past it
        filters = search_filters(fields)
        face_crop = truthy(fields.get("face_crop", ""))
        include_self = truthy(fields.get("include_self", ""))  # an objectid query leaves itself out by default
        if isinstance(query, (bytes, bytearray)):  # the models' work: a few at a time (QueryGate)
            with gate.admit():
                response = served.engine.search(query, k=offset + k, face_crop=face_crop, filters=filters,
                                           include_self=include_self)
        else:  # an objectid: index lookups only, never queued behind an upload
            response = served.engine.search(query, k=offset + k, face_crop=face_crop, filters=filters,
                                           include_self=include_self)
        payload = response.as_dict()
        payload["generation"], payload["offset"], payload["k"] = served.generation, offset, k
        payload["results"] = payload["results"][offset:]
        # "Load more" can go on: this page came back full (the index's probes reach only so deep) and the next
        # page of k is within MAX_DEPTH
        payload["more"] = len(payload["results"]) == k and offset + 2 * k <= MAX_DEPTH
        for result in payload["results"]:
            result.pop("image_path", None)  # a server path; the thumbnail URL stands for it
            result["thumbnail"] = f"/thumbs/{result['objectid']}.jpg"
            result["nga_url"] = nga_url(result["objectid"])
        if response.objectid is not None:
            row = catalog_row(served.engine, response.objectid) or {}
            payload["query_painting"] = painting_json(row, response.objectid)
        return JSONResponse(payload)

    async def search_request(request: Request, fields: dict[str, str], image: tuple[str, bytes] | None) -> Response:
        served = served_or_error()
        if isinstance(served, JSONResponse):
            return served
        try:
            objectid = (fields.get("objectid") or "").strip()
            if image is not None and objectid:
                raise UploadError(400, "give an image or an objectid, not both")
            if image is not None:
                name, data = image
                check_image(data, max_pixels, name or "upload")
                if served.image_search == "failed":  # the server's models, not the upload: as an index error
                    return error_response(503, public(f"image search is unavailable: {served.image_search_error}"))
                query: Any = data  # bytes: decoded in memory by the engine, never written to disk
            elif objectid:
                query = int_field(objectid, "objectid", 0, 2**63 - 1)
            else:
                raise UploadError(400, "give an image (multipart field 'image' or an image/* body) or an objectid")
            return await run_in_threadpool(run_search, served, query, fields)
        except UploadError as exc:
            return error_response(exc.status, exc.message)
        except Busy as exc:
            return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "2"})
        except IndexNotBuiltError as exc:
            return error_response(503, public(str(exc)), hint="run `artsim run` first")
        except QueryError as exc:
            status = 404 if "not in the collection" in str(exc) else 400
            return error_response(status, public(str(exc)))

    @app.post("/api/search", summary="Find the paintings most similar to an uploaded image or a painting",
              openapi_extra=SEARCH_REQUEST_DOC)
    async def api_search(request: Request) -> Response:
        fields = {k: v for k, v in request.query_params.items() if k in FORM_FIELDS}
        content_type = request.headers.get("content-type", "")
        image = None
        try:
            # room for the form's other parts; the message names the upload limit
            body = await read_body(request, max_upload_bytes + 64 * 1024, max_upload_bytes)
            if content_type.startswith("multipart/form-data"):
                form = parse_multipart(body, content_type)
                fields.update({k: v for k, v in form.fields.items() if k in FORM_FIELDS})
                upload = form.files.get("image") or next(iter(form.files.values()), None)
                if upload is not None and upload[1]:
                    image = upload
                elif upload is not None and not fields.get("objectid"):
                    raise UploadError(400, f"{upload[0] or 'upload'}: empty file (0 bytes): choose an image")
            elif content_type.startswith("application/x-www-form-urlencoded"):
                from urllib.parse import parse_qsl

                fields.update({k: v for k, v in parse_qsl(body.decode("utf-8", "replace")) if k in FORM_FIELDS})
            elif body:
                image = ("upload", body)
            if image is not None and len(image[1]) > max_upload_bytes:
                raise UploadError(413, too_large(image[0], len(image[1]), max_upload_bytes))
        except UploadError as exc:
            return error_response(exc.status, exc.message)
        return await search_request(request, fields, image)

    @app.get("/api/search", summary="Find the paintings most similar to a painting of the collection")
    async def api_search_get(request: Request, objectid: int = Query(..., description="the query painting"),
                             k: int = Query(10, ge=1, le=MAX_K), offset: int = Query(0, ge=0, lt=MAX_DEPTH),
                             face_crop: bool = False, include_self: bool = False,
                             artist: str | None = None, style: str | None = None, medium: str | None = None,
                             years: str | None = Query(None, examples=["1600-1700"])) -> Response:
        fields = {k_: str(v) for k_, v in dict(objectid=objectid, k=k, offset=offset, face_crop=face_crop,
                                                include_self=include_self,
                                                artist=artist,
                                                style=style, medium=medium, years=years).items() if v is not None}
        return await search_request(request, fields, None)

    # ------------------------------------------------------------------ paintings
    @app.get("/api/paintings/{objectid}", summary="One painting of the catalog")
    def api_painting(objectid: int) -> JSONResponse:
        served = served_or_error()
        if isinstance(served, JSONResponse):
            return served
        row = catalog_row(served.engine, objectid)
        if row is None:
            return error_response(404, f"objectid {objectid} is not in the collection")
        payload = painting_json(row, objectid)
        payload["metadata"] = {key: json_value(value) for key, value in row.items() if key != "image_path"}
        payload["indexed"] = int(objectid) in served.engine.variants["full"].ids
        payload["has_face_vector"] = "face" in served.engine.variants and int(objectid) in served.engine.variants["face"].ids
        return JSONResponse(payload)

    # ------------------------------------------------------------------ map (routes_map)
    app.include_router(map_router(maps, served_or_error))

    # ------------------------------------------------------------------ thumbnails
    @app.get("/thumbs/{objectid}.jpg", summary="A resized JPEG of the painting from the image cache (ETag)")
    def thumbnail(objectid: int, request: Request, size: int = Query(256)) -> Response:
        served = served_or_error()
        if isinstance(served, JSONResponse):
            return served
        size = min(THUMB_SIZES, key=lambda s: (s < size, abs(s - size)))  # the nearest allowed size >= asked
        path = served.engine.image_path(objectid)
        if path is None or not path.is_file():
            return error_response(404, f"no cached image for objectid {objectid}")
        try:
            etag = thumbs.etag_for(path, size)
            if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
                return Response(status_code=304, headers={"ETag": etag, "Cache-Control": THUMB_CACHE})
            data, etag = thumbs.get(path, size)
        except OSError as exc:
            log.warning("thumbnail of %s: %s", objectid, exc)
            return error_response(404, f"the cached image of objectid {objectid} cannot be read ({type(exc).__name__})")
        return Response(data, media_type="image/jpeg",
                        headers={"ETag": etag, "Cache-Control": THUMB_CACHE})

    return app


def exposure_warning(host: str) -> str | None:
    """A warning when ``host`` is not a loopback address: the server has no authentication."""
    import ipaddress

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
    import uvicorn

    lake = lake_at(settings.data_lake, settings.work_dir)

    def factory() -> SearchEngine:
        # the models load in the background (EngineHolder): the port opens with the index and catalog loaded
        engine = SearchEngine.from_settings(settings, models_explicit=models_explicit, preload_models=False)
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
