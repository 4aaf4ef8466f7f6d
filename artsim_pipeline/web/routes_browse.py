"""Browsing the collection by its catalog: paintings by title or artist, paged, one painting, and the filters'
facets (``APIRouter`` objects the app includes).

* ``GET /api/paintings?q=...&offset=...&limit=...`` — every painting whose title, artist or objectid contains
  ``q`` (ignoring case and accents; best match first: :mod:`artsim_pipeline.core.catalog_text`), one page of
  them: ``{"total", "offset", "limit", "count", "items": [...], "artist", "message", "suggestions"}``. Each
  item is a painting (:func:`~artsim_pipeline.web.payloads.painting_json`) plus ``attribution`` (the artist as
  the catalog writes it), ``thumb_url`` and ``page_url``. ``artist`` is the artist's name when ``q`` names one
  artist; ``message`` says what was found in words ("60 paintings by Claude Monet", "No painting by or titled
  'Kazimir Malevich' in the collection") and ``suggestions`` lists close names when nothing matched. ``paintings``
  repeats ``items`` and ``count`` is their number, for the callers of the first version of this route;
* ``GET /api/facets`` — what the search filters can offer on this catalog: artist, style and medium values
  with counts, the span of years; a filter the catalog has no data for is ``"available": false``;
* ``GET /api/paintings/{objectid}`` — one painting of the catalog (:func:`painting_router`): the painting's
  JSON with every catalog field under ``metadata``, whether it is ``indexed`` and ``has_face_vector``; 404
  when it is not in the collection.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from .payloads import error_response, json_value, painting_json
from .served import Served
from .state import catalog_row

MAX_PAGE = 200


def _item(row: dict[str, Any], objectid: int) -> dict[str, Any]:
    item = painting_json(row, objectid)
    item.update(attribution=item["artist"], thumb_url=f"/thumbs/{objectid}.jpg?size=256",
                page_url=f"/painting/{objectid}")
    return item


def _plural(n: int) -> str:
    return f"{n:,} painting" + ("" if n == 1 else "s")


def _message(q: str, total: int, artist: str | None, by_artist: int, suggestions: list[str]) -> str:
    if not q.strip():
        return f"{_plural(total)} in the collection"
    if total == 0:
        near = f"; did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        return f"No painting by or titled '{q.strip()}' in the collection{near}"
    if artist is not None and by_artist == total:
        return f"{_plural(total)} by {artist}"
    if artist is not None:
        return f"{_plural(total)} match '{q.strip()}' ({by_artist:,} by {artist})"
    return f"{_plural(total)} match '{q.strip()}'"


def browse_router(served_or_error: Callable[[], Served | JSONResponse]) -> APIRouter:
    """``/api/paintings`` (a text lookup, paged) and ``/api/facets`` over the served catalog."""
    router = APIRouter()

    @router.get("/api/paintings", summary="Paintings by title, artist or objectid, paged (ignores case and accents; "
                "best match first), with their total and, when the text names one artist, the artist")
    def api_paintings(q: str = "", offset: int = Query(0, ge=0),
                      limit: int = Query(20, ge=1, le=MAX_PAGE)) -> JSONResponse:
        served = served_or_error()
        if isinstance(served, JSONResponse):
            return served
        catalog = served.engine.catalog
        match = served.catalog_text.find(q)
        if q.strip():
            positions, artist, suggestions = match.positions, match.artist, match.suggestions
        else:  # no text: the whole catalog, in its order
            positions, artist, suggestions = np.arange(len(catalog)), None, []
        total = len(positions)
        rows = catalog.iloc[list(positions[offset:offset + limit])].to_dict("records")
        items = [_item({k: (None if v != v else v) for k, v in r.items()}, int(r["objectid"])) for r in rows]
        return JSONResponse({
            "query": q, "total": total, "offset": offset, "limit": limit, "count": len(items), "items": items,
            "paintings": items, "artist": artist, "suggestions": suggestions,
            "by_artist": match.by_artist, "message": _message(q, total, artist, match.by_artist, suggestions),
        })

    @router.get("/api/facets", summary="What the search filters can offer on this collection: artist, style and "
                "medium values with counts, the span of years (a filter without data is unavailable)")
    def api_facets() -> JSONResponse:
        served = served_or_error()
        if isinstance(served, JSONResponse):
            return served
        return JSONResponse({"generation": served.generation, **served.facets})

    return router


def painting_router(served_or_error: Callable[[], Served | JSONResponse]) -> APIRouter:
    """``/api/paintings/{objectid}``: one painting of the served catalog (see the module doc)."""
    router = APIRouter()

    @router.get("/api/paintings/{objectid}", summary="One painting of the catalog")
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

    return router


__all__ = ["browse_router", "painting_router"]
