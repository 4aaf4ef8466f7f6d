"""Search results: the ranked paintings a query returns, as objects, JSON and a text table.

Plain Python (no Dagster). One :class:`SearchResult` per ranked painting:

===========  =====  =====================================================================
field        type   meaning
===========  =====  =====================================================================
rank         int    1 = most similar
objectid     int    the painting's NGA object id
title        str    catalog title (``""`` when missing, as every text field)
artist       str    catalog artist
date         str    :func:`display_date` of its catalog row
style        str    catalog style list
medium       str    catalog medium
image_path   str    its cached image (``""`` when it has none)
visual       float  the visual score that ranks: the cosine similarity of the query's vector and the
                    painting's, re-ranked with the collection's neighbourhoods when ``ARTSIM_RERANK``
                    is on (:mod:`~artsim_pipeline.core.rerank`)
cosine       float  the plain cosine similarity of the two fused vectors (FAISS), before re-ranking
metadata     float  metadata score against the query painting's row (0 for an image query)
final        float  the match: ``w.visual * visual + w.metadata * metadata`` (the ranking key) for an objectid
                    query; for an image query (no catalog data) the visual score itself
near_duplicate bool  an objectid query's result whose cosine with the query painting is at near-duplicate
                    level (another image of the same work; :mod:`~artsim_pipeline.core.identify`)
explanation  dict   what agreed (:mod:`~artsim_pipeline.core.explain`): ``backbones``/``depths``
                    cosines, ``levels`` (words per depth), ``metadata`` bonuses that applied,
                    ``summary`` (a sentence); None when the served index has no explanations
===========  =====  =====================================================================

:class:`SearchResponse` is the list of them plus what the engine did (query, kind, variant, faces,
filters, notes, per-stage timings), ``match_basis`` (how ``final`` is made, in words) and, for an image query,
``identified`` (``{objectid, title, attribution, confidence}`` or None) and ``identification`` (``{verdict:
identified | not_in_collection, basis: embedding | geometry | None, score, threshold, inliers, inlier_threshold,
confidence, method, closest_objectid}``, or None when the
served generation has no calibration; :mod:`~artsim_pipeline.core.identify`); :meth:`SearchResponse.as_dict` is the JSON the CLI and the web
API print. :func:`format_results` is the CLI's aligned text table.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import pandas as pd

from .search_filters import SearchFilters


@dataclass(frozen=True)
class SearchResult:
    """One ranked painting. Scores: ``final = w.visual * visual + w.metadata * metadata``."""

    rank: int
    objectid: int
    title: str
    artist: str
    date: str
    style: str
    medium: str
    image_path: str
    visual: float
    metadata: float
    final: float
    cosine: float | None = None
    explanation: dict[str, Any] | None = None
    near_duplicate: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class SearchResponse(list):
    """The ranked :class:`SearchResult` list, plus what the engine did to get it.

    ``kind`` is ``"image"`` or ``"objectid"``; ``variant`` the index searched (``full``/``face``);
    ``face_count``/``face_box`` the faces found in an image query (``face_crop=True``; None when
    detection did not run); ``notes`` human-readable remarks (e.g. no face found);
    ``timings_ms`` per stage.
    """

    def __init__(self, results: Sequence[SearchResult] = (), *, query: str = "", kind: str = "image",
                 objectid: int | None = None, variant: str = "full", face_count: int | None = None,
                 face_box: tuple[int, int, int, int] | None = None, notes: Sequence[str] = (),
                 filters: SearchFilters | None = None, k: int = 10,
                 timings_ms: dict[str, float] | None = None, match_basis: str = "",
                 identified: dict[str, Any] | None = None, identification: dict[str, Any] | None = None) -> None:
        super().__init__(results)
        self.query = query
        self.kind = kind
        self.objectid = objectid
        self.variant = variant
        self.face_count = face_count
        self.face_box = face_box
        self.notes = list(notes)
        self.filters = filters or SearchFilters()
        self.k = k
        self.timings_ms = dict(timings_ms or {})
        self.match_basis = match_basis
        self.identified = identified
        self.identification = identification

    def to_frame(self) -> pd.DataFrame:
        columns = [f.name for f in SearchResult.__dataclass_fields__.values()]
        return pd.DataFrame([r.as_dict() for r in self], columns=columns)

    def as_dict(self) -> dict[str, Any]:
        return {
            "query": self.query, "kind": self.kind, "objectid": self.objectid, "variant": self.variant,
            "face_count": self.face_count, "face_box": list(self.face_box) if self.face_box else None,
            "filters": self.filters.as_dict(), "k": self.k, "notes": self.notes, "match_basis": self.match_basis,
            "identified": self.identified, "identification": self.identification,
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
            "results": [r.as_dict() for r in self],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.as_dict(), indent=indent, ensure_ascii=False)


def cell_text(value: Any) -> str:
    """A catalog cell as text: ``""`` for None and NaN, else ``str(value)``."""
    if value is None:
        return ""
    try:
        if pd.isna(value):
            return ""
    except (TypeError, ValueError):
        pass
    return str(value)


def _year(value: Any) -> int | None:
    text = cell_text(value)
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if math.isfinite(number) else None


def display_date(row: dict[str, Any]) -> str:
    """``displaydate`` if present, else ``beginyear`` (``beginyear-endyear`` when they differ), else ``""``."""
    text = cell_text(row.get("displaydate")).strip()
    if text:
        return text
    begin, end = _year(row.get("beginyear")), _year(row.get("endyear"))
    if begin is not None and end is not None and end != begin:
        return f"{begin}-{end}"
    year = begin if begin is not None else end
    return "" if year is None else str(year)


IMAGE_MATCH_BASIS = "visual similarity only (an image has no catalog data)"


def hybrid_match_basis(weights: Any) -> str:
    """How an objectid query's match is made, in words (``weights``: the :class:`ScoringWeights` used)."""
    return f"{weights.visual:g} × visual + {weights.metadata:g} × catalog"


def make_result(rank: int, row: dict[str, Any], image_path: str, ranked: Any,
                explanation: dict[str, Any] | None = None, near_duplicate: bool = False) -> SearchResult:
    """The :class:`SearchResult` of a painting's catalog ``row`` and its ``ranked`` scores (``visual``,
    ``metadata``, ``final``, ``objectid``), with its ``explanation``."""
    return SearchResult(
        rank=rank, objectid=int(ranked.objectid), title=cell_text(row.get("title")), artist=cell_text(row.get("artist")),
        date=display_date(row), style=cell_text(row.get("style")), medium=cell_text(row.get("medium")),
        image_path=image_path, visual=float(ranked.visual), metadata=float(ranked.metadata),
        final=float(ranked.final), cosine=float(getattr(ranked, "cosine", ranked.visual)), explanation=explanation,
        near_duplicate=bool(near_duplicate),
    )


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(1, width - 1)] + "…"


def format_results(response: SearchResponse, title_width: int = 40, artist_width: int = 28) -> str:
    """Aligned text table of a response, with a header line and its notes."""
    head = f"query: {response.query} ({response.kind}, {response.variant} index"
    if response.face_count is not None:
        head += f", {response.face_count} face(s)"
    head += ")"
    if not response.filters.is_empty:
        head += "  filters: " + ", ".join(f"{k}={v}" for k, v in response.filters.as_dict().items())
    lines = [head] + identification_lines(response) + [f"note: {note}" for note in response.notes]
    if response.match_basis:
        lines.append(f"match: {response.match_basis}")
    if not response:
        lines.append("no results")
        return "\n".join(lines)
    cols = ("rank", "objectid", "final", "visual", "meta", "title", "artist", "date", "style")
    rows = [
        (str(r.rank), str(r.objectid), f"{r.final:.4f}", f"{r.visual:.4f}", f"{r.metadata:.2f}",
         _cut(r.title, title_width) + (" [near duplicate]" if r.near_duplicate else ""), _cut(r.artist, artist_width), _cut(r.date, 16), _cut(r.style, 24))
        for r in response
    ]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    right = {0, 1, 2, 3, 4}

    def fmt(cells: Sequence[str]) -> str:
        padded = (c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        return "  ".join(padded).rstrip()

    lines += [fmt(cols), fmt(["-" * w for w in widths])] + [fmt(row) for row in rows]
    why = [f"{r.rank:>4}  {r.explanation['summary']}" for r in response if r.explanation]
    if why:
        lines += ["", "why (what agreed, by depth of the backbones' features; metadata that matched):"] + why
    return "\n".join(lines)


def identification_lines(response: SearchResponse) -> list[str]:
    """The sentence above an image query's results: "This is <title> — <artist> (objectid N, confidence 97%)"
    or "Not in the collection (closest: …)"; nothing for an objectid query or without a calibration."""
    verdict = response.identification
    if not verdict:
        return []
    found = response.identified
    if verdict.get("verdict") == "identified" and found:
        how = f"; {verdict['inliers']} keypoints match its image" if verdict.get("basis") == "geometry" else ""
        return [f"This is {found['title'] or 'Untitled'} — {found['attribution'] or 'unknown artist'} "
                f"(objectid {found['objectid']}, confidence {found['confidence']:.0%}{how})"]
    closest = next((r for r in response if r.objectid == verdict.get("closest_objectid")), None)
    closest = closest or (response[0] if len(response) else None)
    where = f"closest: {closest.title or 'Untitled'} — {closest.artist or 'unknown artist'}, objectid " \
            f"{closest.objectid}" if closest is not None else "no close painting"
    return [f"Not in the collection ({where}; confidence {verdict['confidence']:.0%})"]


__all__ = ["IMAGE_MATCH_BASIS", "SearchResponse", "SearchResult", "cell_text", "display_date", "format_results",
           "hybrid_match_basis", "identification_lines", "make_result"]
