"""The JSON API's shapes: its search request (fields and OpenAPI body) and the JSON of a painting.

Search request fields (:data:`FORM_FIELDS`; a multipart form, a urlencoded form or query parameters):

============  ========  ====================================================================
field         type      meaning
============  ========  ====================================================================
objectid      int       the query painting (or an ``image`` file / an ``image/*`` body)
k             int       number of results, 1 to :data:`MAX_K` (default 10)
offset        int       results to skip ("Load more"): ranks ``offset+1`` to ``offset+k``; at most
                        :data:`MAX_DEPTH` ranks in all
face_crop     bool      ``1``/``true``/``on``/``yes``: search with the detected face
include_self  bool      an objectid query keeps the painting itself among its results (default: left out)
artist        str       filter (see :mod:`artsim_pipeline.core.search_filters`)
style         str       filter
medium        str       filter
years         str       ``1600-1700``, ``1650``, ``1600-`` or ``-1700``
year_from     str       or the range's ends apart (``years`` wins when both are given)
year_to       str
============  ========  ====================================================================

A painting (:func:`painting_json`): ``objectid``, ``title``, ``artist``, ``date``
(:func:`~artsim_pipeline.core.search_results.display_date`), ``style``, ``medium``, ``beginyear`` /
``endyear`` (int or null), ``thumbnail`` (``/thumbs/<objectid>.jpg``) and ``nga_url`` (its nga.gov
page). Errors are ``{"detail": message, ...}`` (:func:`error_response`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from fastapi.responses import JSONResponse

from ..core.search_filters import SearchFilters
from ..core.search_results import display_date
from .uploads import UploadError

NGA_PAGE = "https://www.nga.gov/collection/art-object-page.{objectid}.html"
MAX_K = 100
#: How deep "Load more" goes: ``offset + k`` ranks at most.
MAX_DEPTH = 1000
FORM_FIELDS = ("objectid", "k", "offset", "face_crop", "artist", "style", "medium", "years", "year_from", "year_to",
               "include_self")

SEARCH_REQUEST_DOC = {
    "requestBody": {
        "required": False,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "image": {"type": "string", "format": "binary", "description": "the query image"},
                        "objectid": {"type": "integer", "description": "or: a painting of the collection"},
                        "k": {"type": "integer", "default": 10, "minimum": 1, "maximum": MAX_K},
                        "offset": {"type": "integer", "default": 0, "minimum": 0, "maximum": MAX_DEPTH - 1},
                        "face_crop": {"type": "boolean", "default": False},
                        "include_self": {"type": "boolean", "default": False,
                                         "description": "an objectid query keeps the painting itself"},
                        "artist": {"type": "string"}, "style": {"type": "string"}, "medium": {"type": "string"},
                        "years": {"type": "string", "example": "1600-1700"},
                    },
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def nga_url(objectid: int) -> str:
    return NGA_PAGE.format(objectid=int(objectid))


def error_response(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": message, **extra}, status_code=status)


def truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "on", "yes")


def int_field(value: Any, name: str, low: int, high: int) -> int:
    """``value`` as an int within ``[low, high]``, else :class:`~artsim_pipeline.web.uploads.UploadError` (400)."""
    try:
        number = int(str(value).strip())
    except ValueError:
        raise UploadError(400, f"{name} must be an integer, got {value!r}") from None
    if not low <= number <= high:
        raise UploadError(400, f"{name} must be between {low} and {high}, got {number}")
    return number


def search_filters(fields: dict[str, str]) -> SearchFilters:
    """The filters of a search request's fields (``year_from``/``year_to`` when ``years`` is empty)."""
    years = (fields.get("years") or "").strip()
    low, high = (fields.get("year_from") or "").strip(), (fields.get("year_to") or "").strip()
    if not years and (low or high):
        years = f"{low}-{high}" if low != high else low
    return SearchFilters.create(artist=(fields.get("artist") or "").strip() or None,
                                style=(fields.get("style") or "").strip() or None,
                                medium=(fields.get("medium") or "").strip() or None, years=years or None)


def json_value(value: Any) -> Any:
    """A catalog value as JSON: numpy scalars as Python ones, NaN/inf as null, anything else as text."""
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


def painting_json(row: dict[str, Any], objectid: int) -> dict[str, Any]:
    return {
        "objectid": int(objectid), "title": row.get("title") or "", "artist": row.get("artist") or "",
        "date": display_date(row), "style": row.get("style") or "", "medium": row.get("medium") or "",
        "beginyear": _year(row.get("beginyear")), "endyear": _year(row.get("endyear")),
        "thumbnail": f"/thumbs/{int(objectid)}.jpg", "nga_url": nga_url(objectid),
    }


def _year(value: Any) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) else None


__all__ = [
    "FORM_FIELDS", "MAX_DEPTH", "MAX_K", "NGA_PAGE", "SEARCH_REQUEST_DOC", "error_response", "int_field", "json_value",
    "nga_url",
    "painting_json", "search_filters", "truthy",
]
