"""The HTML page routes and the lake's status API of ``artsim serve`` (an ``APIRouter`` the app includes).

Routes (the pages are left out of the OpenAPI schema; they are templates, :mod:`artsim_pipeline.web.pages`):

* ``GET /`` — the search page (``/?objectid=...&k=...&artist=...`` is a search's shareable link),
  told the upload limit in MiB;
* ``GET /painting/{objectid}`` — a painting's page; ``GET /map`` — the collection map;
  ``GET /docs`` — Swagger UI over ``/openapi.json``, served offline;
* ``GET /status`` — what the lake holds, read from ``GET /api/status``: the JSON of
  ``artsim status --json`` (:func:`~artsim_pipeline.core.status.lake_status`) with the lake's path
  hidden (``"<data lake>"``), errors without the server's absolute paths and, with ``stale`` (Dagster's
  view), what ``artsim run`` would re-run (``stale``; else ``stale_note`` says why it is unknown).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, JSONResponse

from ..core.lake import DataLake
from ..core.status import lake_status
from . import pages
from .public import public_message

log = logging.getLogger(__name__)


def page_router(lake: DataLake, max_upload_bytes: int,
                stale: Callable[[], list[dict[str, Any]]] | None = None) -> APIRouter:
    """The page routes and ``/api/status`` for the data lake ``lake`` (see the module doc)."""
    router = APIRouter()

    def public(text: str) -> str:
        return public_message(text, lake)

    # ------------------------------------------------------------------ pages
    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index_page() -> HTMLResponse:
        return HTMLResponse(pages.render("search", limit_mb=f"{max_upload_bytes / 1048576:.3g}"))

    @router.get("/map", response_class=HTMLResponse, include_in_schema=False)
    def map_page() -> HTMLResponse:
        return HTMLResponse(pages.render("map"))

    @router.get("/painting/{objectid}", response_class=HTMLResponse, include_in_schema=False)
    def painting_page(objectid: int) -> HTMLResponse:
        return HTMLResponse(pages.render("painting", objectid=int(objectid)))

    @router.get("/status", response_class=HTMLResponse, include_in_schema=False)
    def status_page() -> HTMLResponse:
        return HTMLResponse(pages.render("status"))

    @router.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    def docs_page() -> HTMLResponse:
        return HTMLResponse(pages.render("docs"))

    # ------------------------------------------------------------------ status
    @router.get("/api/status", summary="What the lake holds: paintings cached, embedded, indexed; failures, rejects, "
                "what would re-run (as `artsim status --json`)")
    def api_status(worst: int = Query(50, ge=0, le=1000)) -> JSONResponse:
        status = lake_status(lake, worst=worst)
        status["lake"] = "<data lake>"
        status["errors"] = [public(e) for e in status["errors"]]
        if stale is not None:
            try:
                status["stale"] = stale()
            except Exception as exc:  # noqa: BLE001 - the rest of the status still stands
                log.warning("status: what would re-run is unknown: %s", exc)
                status["stale_note"] = public(f"Dagster's records could not be read ({type(exc).__name__})")
        else:
            status["stale_note"] = "the server was started without Dagster's records"
        return JSONResponse(status)

    return router


__all__ = ["page_router"]
