"""The search API of ``artsim serve`` (an ``APIRouter`` the app includes).

* ``POST /api/search`` — ``multipart/form-data`` with an ``image`` file *or* an ``objectid`` field, plus
  ``k``, ``offset``, ``face_crop``, ``include_self``, ``artist``, ``style``, ``medium``, ``years`` (or
  ``year_from`` / ``year_to``; fields and response shapes: :mod:`artsim_pipeline.web.payloads`); a urlencoded
  form, or a raw ``image/*`` body with the options as query parameters, also works;
* ``GET /api/search?objectid=...`` — the same for an objectid.

Image queries pass the :class:`~artsim_pipeline.web.gate.QueryGate` (503 with ``Retry-After`` when it is
full); objectid queries need no model and never wait behind them. Uploads stay in memory, capped in bytes and
pixels (:mod:`artsim_pipeline.web.uploads`). A page of results skips ``offset`` ranks ("Load more") and says
whether more can follow (``more``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import parse_qsl

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from ..core.search_query import IndexNotBuiltError, QueryError
from .gate import Busy, QueryGate
from .payloads import (FORM_FIELDS, MAX_DEPTH, MAX_K, SEARCH_REQUEST_DOC, error_response, int_field, nga_url,
                       painting_json, search_filters, truthy)
from .served import Served
from .state import catalog_row
from .uploads import UploadError, check_image, parse_multipart, read_body, too_large


async def read_search_request(request: Request, max_upload_bytes: int) -> tuple[dict[str, str], tuple[str, bytes] | None]:
    """The search fields and the uploaded image (name, bytes), if any, of a ``POST /api/search``: a multipart
    form, a urlencoded form or a raw image body, with query parameters as fields; raises :class:`UploadError`."""
    fields = {k: v for k, v in request.query_params.items() if k in FORM_FIELDS}
    content_type = request.headers.get("content-type", "")
    image = None
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
        fields.update({k: v for k, v in parse_qsl(body.decode("utf-8", "replace")) if k in FORM_FIELDS})
    elif body:
        image = ("upload", body)
    if image is not None and len(image[1]) > max_upload_bytes:
        raise UploadError(413, too_large(image[0], len(image[1]), max_upload_bytes))
    return fields, image


@dataclass
class SearchService:
    """Answers search requests on the served engine: ``served_or_error`` gives it (or the error response),
    ``public`` hides the server's paths in messages, ``gate`` admits image queries."""

    served_or_error: Callable[[], Served | JSONResponse]
    public: Callable[[str], str]
    gate: QueryGate
    max_upload_bytes: int
    max_pixels: int

    def run(self, served: Served, query: Any, fields: dict[str, str]) -> JSONResponse:
        """The page of results of ``query`` (image bytes or an objectid) with the options in ``fields``."""
        k = int_field(fields.get("k") or 10, "k", 1, MAX_K)
        offset = int_field(fields.get("offset") or 0, "offset", 0, MAX_DEPTH - k)  # "Load more": ranks past it
        filters = search_filters(fields)
        face_crop = truthy(fields.get("face_crop", ""))
        include_self = truthy(fields.get("include_self", ""))  # an objectid query leaves itself out by default
        if isinstance(query, (bytes, bytearray)):  # the models' work: a few at a time (QueryGate)
            with self.gate.admit():
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

    async def answer(self, fields: dict[str, str], image: tuple[str, bytes] | None) -> Response:
        """The response to a search by ``image`` (name, bytes) or by the objectid in ``fields``."""
        served = self.served_or_error()
        if isinstance(served, JSONResponse):
            return served
        try:
            objectid = (fields.get("objectid") or "").strip()
            if image is not None and objectid:
                raise UploadError(400, "give an image or an objectid, not both")
            if image is not None:
                name, data = image
                check_image(data, self.max_pixels, name or "upload")
                if served.image_search == "failed":  # the server's models, not the upload: as an index error
                    return error_response(503, self.public(f"image search is unavailable: {served.image_search_error}"))
                query: Any = data  # bytes: decoded in memory by the engine, never written to disk
            elif objectid:
                query = int_field(objectid, "objectid", 0, 2**63 - 1)
            else:
                raise UploadError(400, "give an image (multipart field 'image' or an image/* body) or an objectid")
            return await run_in_threadpool(self.run, served, query, fields)
        except UploadError as exc:
            return error_response(exc.status, exc.message)
        except Busy as exc:
            return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "2"})
        except IndexNotBuiltError as exc:
            return error_response(503, self.public(str(exc)), hint="run `artsim run` first")
        except QueryError as exc:
            status = 404 if "not in the collection" in str(exc) else 400
            return error_response(status, self.public(str(exc)))


def search_router(service: SearchService) -> APIRouter:
    """``POST /api/search`` and ``GET /api/search`` answered by ``service`` (see the module doc)."""
    router = APIRouter()

    @router.post("/api/search", summary="Find the paintings most similar to an uploaded image or a painting",
                 openapi_extra=SEARCH_REQUEST_DOC)
    async def api_search(request: Request) -> Response:
        try:
            fields, image = await read_search_request(request, service.max_upload_bytes)
        except UploadError as exc:
            return error_response(exc.status, exc.message)
        return await service.answer(fields, image)

    @router.get("/api/search", summary="Find the paintings most similar to a painting of the collection")
    async def api_search_get(request: Request, objectid: int = Query(..., description="the query painting"),
                             k: int = Query(10, ge=1, le=MAX_K), offset: int = Query(0, ge=0, lt=MAX_DEPTH),
                             face_crop: bool = False, include_self: bool = False,
                             artist: str | None = None, style: str | None = None, medium: str | None = None,
                             years: str | None = Query(None, examples=["1600-1700"])) -> Response:
        fields = {k_: str(v) for k_, v in dict(objectid=objectid, k=k, offset=offset, face_crop=face_crop,
                                                include_self=include_self,
                                                artist=artist,
                                                style=style, medium=medium, years=years).items() if v is not None}
        return await service.answer(fields, None)

    return router


__all__ = ["SearchService", "read_search_request", "search_router"]
