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
:data:`~artsim_pipeline.core.search_loaders.CATALOG_COLUMNS`); the index search is then
restricted to the objectids it returns. :func:`parse_years` reads the ``--years`` / ``years`` text.
When no painting passes, :func:`removal_report` says in words what each filter removed on its own ("years
1600–1700 removed 1,698 paintings (no painting has a date)").
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


def _conditions(filters: SearchFilters) -> list[tuple[str, str, str, dict[str, Any]]]:
    """One ``(kind, label, SQL condition, parameters)`` per restriction of ``filters``, in the module doc's order."""
    out: list[tuple[str, str, str, dict[str, Any]]] = []
    if filters.artist:
        out.append(("artist", f"artist '{filters.artist}'", "contains(coalesce(artist_key, ''), $artist)",
                    {"artist": normalize_artist(filters.artist)}))
    if filters.style:
        out.append(("style", f"style '{filters.style}'", "contains(lower(strip_accents(coalesce(style, ''))), $style)",
                    {"style": fold_text(filters.style)}))
    if filters.medium:
        out.append(("medium", f"medium '{filters.medium}'",
                    "contains(lower(strip_accents(coalesce(medium, ''))), $medium)",
                    {"medium": fold_text(filters.medium)}))
    years, params, label = [], {}, _years_label(filters.year_min, filters.year_max)
    if filters.year_min is not None:
        years.append("coalesce(endyear, beginyear) >= $year_min")
        params["year_min"] = int(filters.year_min)
    if filters.year_max is not None:
        years.append("coalesce(beginyear, endyear) <= $year_max")
        params["year_max"] = int(filters.year_max)
    if years:
        out.append(("year", label, " AND ".join(years), params))
    return out


def _years_label(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f"year {low}" if low == high else f"years {low}\u2013{high}"
    return f"years from {low}" if low is not None else f"years up to {high}"


def allowed_ids(db: duckdb.DuckDBPyConnection, filters: SearchFilters) -> np.ndarray:
    """Objectids of the ``filtered_paintings`` table of ``db`` that pass ``filters``, ascending ``int64``.

    Runs on its own cursor: searches run concurrently (the web server's thread pool)."""
    where, params = [], {}
    for _, _, condition, values in _conditions(filters):
        where.append(condition)
        params.update(values)
    sql = "SELECT objectid FROM filtered_paintings" + (" WHERE " + " AND ".join(where) if where else "")
    with db.cursor() as cursor:
        rows = cursor.execute(sql + " ORDER BY objectid", params).fetchall()
    return np.array([r[0] for r in rows], dtype=np.int64)


# the column a filter needs, to say "no painting has a date" rather than only a count
_NEEDS = {"artist": ("artist_key", "an artist"), "style": ("style", "a style"), "medium": ("medium", "a medium"),
          "year": ("coalesce(beginyear, endyear)", "a date")}


def removal_report(db: duckdb.DuckDBPyConnection, filters: SearchFilters) -> list[str]:
    """In words, what each restriction of ``filters`` removes from the catalog on its own, and whether they
    leave nothing only together: ``["years 1600–1700 removed 1,698 paintings (no painting has a date)"]``."""
    conditions = _conditions(filters)
    if not conditions:
        return []
    lines, survivors = [], []
    with db.cursor() as cursor:
        total = cursor.execute("SELECT count(*) FROM filtered_paintings").fetchone()[0]
        for kind, label, condition, values in conditions:
            kept = cursor.execute(f"SELECT count(*) FROM filtered_paintings WHERE {condition}", values).fetchone()[0]
            column, noun = _NEEDS[kind]
            with_value = cursor.execute(f"SELECT count(*) FROM filtered_paintings WHERE nullif(trim(CAST({column} "
                                        "AS VARCHAR)), '') IS NOT NULL").fetchone()[0]
            why = (f" (no painting has {noun})" if with_value == 0 else
                   f" ({total - with_value:,} have no {noun.split()[-1]})" if with_value < total and kept < total
                   else "")
            lines.append(f"{label} removed {total - kept:,} of {total:,} paintings{why}")
            survivors.append(kept)
    if len(conditions) > 1 and all(survivors):
        lines.append("each filter alone leaves some paintings; together they leave none")
    return lines


__all__ = ["SearchFilters", "allowed_ids", "parse_years", "removal_report"]
