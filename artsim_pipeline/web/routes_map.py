"""The collection map's API routes of ``artsim serve`` (an ``APIRouter`` the app includes).

* ``GET /api/map`` — every indexed painting's place on the map (202 while it is being computed). One
  JSON object, gzip-compressed when the client accepts it, built once per served generation:

  - per painting, in the same order (parallel arrays): ``objectid``, ``x``, ``y`` (the similarity
    layout, t-SNE, in [0, 1]), ``region`` (``-1``: none), ``artist``, ``year`` (``beginyear``, null when
    unknown), ``title``;
  - ``regions``: ``id, label, centre [x, y], size, representatives`` (objectids), from the stored map
    (:mod:`artsim_pipeline.core.map_regions`; clustered here when the map was computed by the server);
  - ``layouts``: ``similarity`` (the ``x, y`` above), ``date`` (``x, y, axis``) and ``grid``
    (``x, y, cols``): :mod:`artsim_pipeline.core.layout_views`;
  - ``atlas``: the URL, cell size and columns of ``GET /api/map/atlas.jpg``.
* ``GET /api/map/atlas.jpg`` — every map painting's thumbnail in one JPEG grid, in ``/api/map``'s order.
* ``POST /api/map/search`` — "search within these": JSON ``{"objectid": query, "objectids": [...], "k":
  50}``; the selected paintings ranked by the cosine of their fused vectors to the query's (the visual
  score of the index, without re-ranking or metadata bonuses: the general search has no objectid
  restriction).
"""

from __future__ import annotations

import gzip
import json
import math
import threading
from typing import Any, Callable

import numpy as np
import pandas as pd
from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from ..core.layout import ATTRS_KEY
from ..core.layout_views import date_layout, grid_layout
from ..core.map_regions import describe_regions, fit_regions
from .payloads import error_response
from .map_cache import MapCache
from .served import Served
from .thumbnails import AtlasCache, atlas_cell

MAX_WITHIN = 200_000
MAX_WITHIN_K = 500


def _years(rows: pd.DataFrame) -> np.ndarray:
    return pd.to_numeric(rows.get("beginyear", pd.Series(np.nan, index=rows.index)), errors="coerce").to_numpy(float)


def _regions(frame: pd.DataFrame, catalog: pd.DataFrame) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The stored map's regions, or (a map computed by the server) clustered and named here."""
    stored = (frame.attrs.get(ATTRS_KEY) or {}).get("regions")
    if stored is not None and "region" in frame.columns:
        return frame["region"].to_numpy(np.int32), stored
    named = frame[["objectid", "x", "y"]].copy()
    named["region"] = fit_regions(named)
    return named["region"].to_numpy(np.int32), describe_regions(named, catalog)


def map_payload(served: Served, frame: pd.DataFrame, source: str) -> dict[str, Any]:
    """The ``/api/map`` object (see the module doc) of ``frame`` (``objectid, x, y[, region]``)."""
    return payload_of(frame, served.engine.catalog, served.generation, source, served.catalog_version)


def payload_of(frame: pd.DataFrame, catalog: pd.DataFrame, generation: str | None, source: str,
               catalog_version: str = "") -> dict[str, Any]:
    """:func:`map_payload` of a map and a catalog indexed by objectid (also the page bench's payload)."""
    kept = frame[frame["objectid"].isin(catalog.index)]
    kept.attrs = frame.attrs
    rows = catalog.loc[kept["objectid"].to_numpy()]
    ids = kept["objectid"].to_numpy(np.int64)
    x, y = kept["x"].to_numpy(float), kept["y"].to_numpy(float)
    region, regions = _regions(kept, catalog)
    years = _years(rows)
    dx, dy, axis = date_layout(ids, y, years)
    gx, gy, cols = grid_layout(x, y)

    def rounded(values: np.ndarray) -> list[float]:
        return np.round(values, 5).tolist()

    return {
        "status": "ok", "generation": generation, "count": int(len(kept)), "source": source,
        "objectid": ids.tolist(), "x": rounded(x), "y": rounded(y), "region": region.tolist(),
        "artist": rows["artist"].fillna("").astype(str).tolist(),
        "year": [int(v) if np.isfinite(v) else None for v in years],
        "title": rows["title"].fillna("").astype(str).tolist(),
        "regions": regions,
        "layouts": {"similarity": {"x": "x", "y": "y"}, "date": {"x": rounded(dx), "y": rounded(dy), "axis": axis},
                    "grid": {"x": rounded(gx), "y": rounded(gy), "cols": cols}},
        "atlas": {"url": f"/api/map/atlas.jpg?generation={generation or ''}&catalog={catalog_version}",
                  "cell": atlas_cell(len(kept)), "cols": max(1, math.ceil(math.sqrt(len(kept))))},
    }


class PayloadCache:
    """The encoded ``/api/map`` payload (JSON bytes and their gzip) of the last served generation and catalog."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entry: tuple[int, str, str, bytes, bytes] | None = None  # id(frame), generation, catalog, json, gzip

    def get(self, served: Served, frame: pd.DataFrame, source: str) -> tuple[bytes, bytes]:
        key = (id(frame), served.generation or "", served.catalog_version)  # a followed catalog: new titles
        with self._lock:
            if self._entry is None or self._entry[:3] != key:
                body = json.dumps(map_payload(served, frame, source), separators=(",", ":")).encode()
                self._entry = (*key, body, gzip.compress(body, compresslevel=6))
            return self._entry[3], self._entry[4]


def _within(served: Served, body: dict[str, Any]) -> JSONResponse:
    """``POST /api/map/search``: the selection ranked by cosine to the query painting (module doc)."""
    try:
        query = int(body.get("objectid"))
        ids = np.unique(np.asarray([int(v) for v in body.get("objectids") or []], dtype=np.int64))
        k = int(body.get("k", 50))
    except (TypeError, ValueError):
        return error_response(400, "give 'objectid' (a number) and 'objectids' (a list of numbers)")
    if not len(ids):
        return error_response(400, "the selection is empty: select paintings on the map first")
    if len(ids) > MAX_WITHIN or not 1 <= k <= MAX_WITHIN_K:
        return error_response(400, f"at most {MAX_WITHIN} objectids and k from 1 to {MAX_WITHIN_K}")
    variant = served.engine.variants["full"]
    if query not in variant.ids:
        return error_response(404, f"objectid {query} is not in the index")
    ids = ids[np.isin(ids, np.fromiter(variant.ids, np.int64))]
    if not len(ids):
        return error_response(400, "none of the selected paintings is in the index")
    index = variant.bundle.index
    scores = np.asarray(index.reconstruct_batch(ids), np.float32) @ np.asarray(
        index.reconstruct_batch(np.array([query], np.int64)), np.float32)[0]
    order = np.argsort(-scores, kind="stable")[:k]
    catalog = served.engine.catalog
    results = []
    for i in order:
        oid = int(ids[i])
        row = catalog.loc[oid] if oid in catalog.index else None
        results.append({"objectid": oid, "score": round(float(scores[i]), 4),
                        "title": "" if row is None or pd.isna(row["title"]) else str(row["title"]),
                        "artist": "" if row is None or pd.isna(row["artist"]) else str(row["artist"]),
                        "thumbnail": f"/thumbs/{oid}.jpg"})
    return JSONResponse({"query": query, "within": int(len(ids)), "results": results})


def map_router(maps: MapCache, served_or_error: Callable[[], Served | JSONResponse]) -> APIRouter:
    """``/api/map``, its atlas and the search within a selection (see the module doc)."""
    router = APIRouter()
    payloads, atlases = PayloadCache(), AtlasCache()

    @router.get("/api/map", summary="Every indexed painting's place on the map of the collection (x, y in [0, 1]), "
                "its region, artist, year and title; the named regions; the date and grid layouts")
    async def api_map(request: Request, wait: float = Query(2.0, ge=0, le=60)) -> Response:
        served = served_or_error()
        if isinstance(served, JSONResponse):
            return served
        frame = await run_in_threadpool(maps.get, served, wait)
        if frame is None:
            status = maps.source.get(served.generation or "", "computing")
            if status == "failed":
                return error_response(500, "the collection map could not be computed (see the server log)")
            return JSONResponse({"status": "computing", "generation": served.generation}, status_code=202,
                                headers={"Retry-After": "2"})
        body, packed = await run_in_threadpool(payloads.get, served, frame, maps.source.get(served.generation or "", ""))
        if "gzip" in request.headers.get("accept-encoding", ""):
            return Response(packed, media_type="application/json",
                            headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})
        return Response(body, media_type="application/json", headers={"Vary": "Accept-Encoding"})

    @router.get("/api/map/atlas.jpg", summary="Every map painting's thumbnail in one JPEG grid, in /api/map's order")
    async def api_map_atlas(request: Request) -> Response:
        served = served_or_error()
        if isinstance(served, JSONResponse):
            return served
        frame = await run_in_threadpool(maps.get, served, 0)
        if frame is None:
            return JSONResponse({"status": "computing"}, status_code=202, headers={"Retry-After": "2"})
        ids = [int(v) for v in frame["objectid"] if int(v) in served.engine.catalog.index]
        data, _, _, etag = await run_in_threadpool(atlases.get, served, ids)
        headers = {"ETag": etag, "Cache-Control": "public, max-age=86400"}
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(data, media_type="image/jpeg", headers=headers)

    @router.post("/api/map/search", summary="Search within a selection: the selected paintings ranked by "
                 "visual similarity (cosine of the fused vectors) to a query painting")
    async def api_map_search(request: Request) -> Response:
        served = served_or_error()
        if isinstance(served, JSONResponse):
            return served
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return error_response(400, "the body must be JSON: {\"objectid\": ..., \"objectids\": [...]}")
        if not isinstance(body, dict):
            return error_response(400, "the body must be a JSON object")
        return await run_in_threadpool(_within, served, body)

    return router


__all__ = ["PayloadCache", "map_payload", "map_router", "payload_of"]
