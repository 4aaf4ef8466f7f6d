"""``GET /thumbs/{objectid}.jpg?size=256`` of ``artsim serve`` (an ``APIRouter`` the app includes): a resized
JPEG of the painting from the image cache, at the nearest of :data:`THUMB_SIZES` at least as large as asked,
with an ``ETag`` and ``Cache-Control: no-cache`` (revalidated: 304 while the image is unchanged). The
thumbnails are kept in memory (:class:`~artsim_pipeline.web.thumbnails.ThumbnailCache`).
"""

from __future__ import annotations

import logging
from typing import Callable

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from .payloads import error_response
from .served import Served
from .thumbnails import ThumbnailCache

log = logging.getLogger(__name__)

THUMB_SIZES = (64, 128, 256, 512, 1024)
#: Thumbnails are revalidated on every use (a replaced image shows at once; unchanged: a 304 by ETag).
THUMB_CACHE = "no-cache"


def thumbs_router(thumbs: ThumbnailCache, served_or_error: Callable[[], Served | JSONResponse]) -> APIRouter:
    """``/thumbs/{objectid}.jpg`` from the served engine's image cache (see the module doc)."""
    router = APIRouter()

    @router.get("/thumbs/{objectid}.jpg", summary="A resized JPEG of the painting from the image cache (ETag)")
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

    return router


__all__ = ["THUMB_CACHE", "THUMB_SIZES", "thumbs_router"]
