"""Search filters: which paintings a query may return, decided in DuckDB before any ranking.

Plain Python (no Dagster). :class:`SearchFilters` holds the restrictions, all case- and
accent-insensitive:

* ``artist`` — :func:`~artsim_pipeline.core.scoring.normalize_artist` of the text must be a
  *substring* of the catalog's ``artist_key`` ("rembrandt" matches "rembrandt van rijn" and
  "attributed to rembrandt van rijn");
* ``style`` / ``medium`` — substring of the painting's style list / medium;
* ``year_min`` / ``year_max`` — the painting's ``[beginyear, endyear]`` interval (one of them
  standing for both when the other is missing) overlaps the range; undated paintings are excluded.

:func:`allowed_ids` runs them as one ``SELECT objectid FROM filtered_paintings WHERE ...`` on the
engine's in-memory DuckDB copy of the catalog (columns
:data:`~artsim_pipeline.core.search_resources.CATALOG_COLUMNS`); the index search is then
restricted to the objectids it returns. :func:`parse_years` reads the ``--years`` / ``years`` text.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import duckdb
import numpy as np

from .scoring import fold_text, normalize_artist
from .search_query import QueryError

_YEARS = re.compile(r"^\s*(\d{1,4})?\s*(?:(\.\.|[-–:])\s*(\d{1,4})?)?\s*$")


def parse_years(text: str) -> tuple[int | None, int | None]:
    """``"1600-1700"`` -> (1600, 1700); ``"1650"`` -> (1650, 1650); ``"1600-"`` / ``"-1700"`` open-ended."""
    match = _YEARS.match(text or "")
    if not match or (match.group(1) is None and match.group(3) is None):
        raise QueryError(f"year range {text!r} is not like 1600-1700, 1650, 1600- or -1700")
    low = int(match.group(1)) if match.group(1) is not None else None
    if match.group(2) is None:  # a single year
        return low, low
    high = int(match.group(3)) if match.group(3) is not None else None
    if low is not None and high is not None and low > high:
        raise QueryError(f"year range {text!r}: the first year is after the second")
    return low, high


@dataclass(frozen=True)
class SearchFilters:
    """Restrictions applied in DuckDB before ranking (see the module doc for the matching rules)."""

    artist: str | None = None
    style: str | None = None
    medium: str | None = None
    year_min: int | None = None
    year_max: int | None = None

    @classmethod
    def create(cls, artist: str | None = None, style: str | None = None, medium: str | None = None,
               years: str | tuple[int | None, int | None] | None = None) -> "SearchFilters":
        low, high = parse_years(years) if isinstance(years, str) else (years or (None, None))
        return cls(artist or None, style or None, medium or None, low, high)

    @property
    def is_empty(self) -> bool:
        return all(v is None for v in asdict(self).values())

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def allowed_ids(db: duckdb.DuckDBPyConnection, filters: SearchFilters) -> np.ndarray:
    """Objectids of the ``filtered_paintings`` table of ``db`` that pass ``filters``, ascending ``int64``.

    Runs on its own cursor: searches run concurrently (the web server's thread pool)."""
    where, params = [], {}
    if filters.artist:
        where.append("contains(coalesce(artist_key, ''), $artist)")
        params["artist"] = normalize_artist(filters.artist)
    if filters.style:
        where.append("contains(lower(strip_accents(coalesce(style, ''))), $style)")
        params["style"] = fold_text(filters.style)
    if filters.medium:
        where.append("contains(lower(strip_accents(coalesce(medium, ''))), $medium)")
        params["medium"] = fold_text(filters.medium)
    if filters.year_min is not None:
        where.append("coalesce(endyear, beginyear) >= $year_min")
        params["year_min"] = int(filters.year_min)
    if filters.year_max is not None:
        where.append("coalesce(beginyear, endyear) <= $year_max")
        params["year_max"] = int(filters.year_max)
    sql = "SELECT objectid FROM filtered_paintings" + (" WHERE " + " AND ".join(where) if where else "")
    with db.cursor() as cursor:
        rows = cursor.execute(sql + " ORDER BY objectid", params).fetchall()
    return np.array([r[0] for r in rows], dtype=np.int64)


__all__ = ["SearchFilters", "allowed_ids", "parse_years"]
