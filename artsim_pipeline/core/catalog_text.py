"""Finding paintings by the text of the catalog (title, artist, objectid) and the catalog's facets.

Plain Python (no Dagster, no torch). :class:`CatalogText` is built once per served catalog (the
``SearchEngine.catalog`` frame, indexed by objectid, columns
:data:`~artsim_pipeline.core.search_loaders.CATALOG_COLUMNS`):

* :meth:`CatalogText.find` — every painting whose title, artist or objectid contains the text, ignoring case
  and accents (:func:`~artsim_pipeline.core.scoring.fold_text`), best first: 0 the whole title, artist or
  objectid; 1 a title or artist starting with it; 2 anywhere; ties in catalog order. The answer says when the
  text names one artist (every artist it matches is the same person, by ``artist_key``) and, when nothing
  matches, offers close names (:func:`difflib.get_close_matches` on artists, their words and titles);
* :func:`facets` — what the filters can offer on this catalog: artist, style and medium values with their
  counts, the span of years and how many paintings are dated; a filter without data is ``available: False``.
"""

from __future__ import annotations

import difflib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .scoring import fold_text


@dataclass
class TextMatch:
    """The paintings a text names: ``positions`` in catalog order (rows of the frame), best first."""

    text: str
    positions: np.ndarray
    artist: str | None = None  # the artist's name as the catalog writes it, when the text names one artist
    by_artist: int = 0  # how many of the paintings are by that artist
    suggestions: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return int(self.positions.size)


class CatalogText:
    """The catalog's titles and artists folded once (case, accents) for :meth:`find`."""

    def __init__(self, catalog: pd.DataFrame) -> None:
        self.catalog = catalog
        self.titles = catalog["title"].fillna("").astype(str).map(fold_text)
        self.artists = catalog["artist"].fillna("").astype(str).map(fold_text)
        self.ids = pd.Series(catalog["objectid"].astype(str).to_numpy(), index=catalog.index)
        keys = catalog["artist_key"] if "artist_key" in catalog else self.artists
        self.artist_keys = keys.fillna("").astype(str)
        self._names: dict[str, str] | None = None

    def find(self, text: str) -> TextMatch:
        """Every painting ``text`` names, best first (see the module doc); empty text names none."""
        folded = fold_text(text or "")
        if not folded:
            return TextMatch(text, np.empty(0, dtype=np.int64))
        titles, artists, ids = self.titles, self.artists, self.ids
        found = (titles.str.contains(folded, regex=False) | artists.str.contains(folded, regex=False)
                 | ids.str.contains(folded, regex=False)).to_numpy()
        rank = np.where((titles == folded) | (artists == folded) | (ids == folded), 0,
                        np.where(titles.str.startswith(folded) | artists.str.startswith(folded), 1, 2))
        where = np.flatnonzero(found)
        positions = where[np.argsort(rank[where], kind="stable")].astype(np.int64)
        artist, by_artist = self._one_artist(folded, positions)
        match = TextMatch(text, positions, artist=artist, by_artist=by_artist)
        if not positions.size:
            match.suggestions = self.suggest(folded)
        return match

    def _one_artist(self, folded: str, positions: np.ndarray) -> tuple[str | None, int]:
        """The artist's name when every painting matched by its artist is by one person (same ``artist_key``),
        and how many of ``positions`` are by them; ``(None, 0)`` otherwise."""
        if not positions.size:
            return None, 0
        by_artist = positions[self.artists.to_numpy()[positions].astype(str) != ""]
        by_artist = by_artist[np.char.find(self.artists.to_numpy()[by_artist].astype(str), folded) >= 0]
        keys = set(self.artist_keys.to_numpy()[by_artist].tolist())
        if len(keys) != 1 or "" in keys:
            return None, 0
        names = self.catalog["artist"].iloc[by_artist].fillna("").astype(str)
        return str(names.value_counts().index[0]), int(by_artist.size)

    def suggest(self, folded: str, n: int = 5) -> list[str]:
        """Artists (or titles) of the catalog spelled close to ``folded``, as the catalog writes them."""
        names = self._name_table()
        close = difflib.get_close_matches(folded, list(names), n=n * 3, cutoff=0.72)
        out: list[str] = []
        for key in close:
            if names[key] not in out:
                out.append(names[key])
        return out[:n]

    def _name_table(self) -> dict[str, str]:
        """folded artist, each word of it (3+ letters) and title -> the name shown (artists before titles)."""
        if self._names is None:
            names: dict[str, str] = {}
            artists = self.catalog["artist"].fillna("").astype(str)
            for folded, shown in zip(self.artists, artists):
                if folded:
                    names.setdefault(folded, shown)
                    for word in folded.split():
                        if len(word) >= 3:
                            names.setdefault(word, shown)
            titles = self.catalog["title"].fillna("").astype(str)
            for folded, shown in zip(self.titles, titles):
                if folded and folded != "untitled":
                    names.setdefault(folded, shown)
            self._names = names
        return self._names


def _counted(values: pd.Series, limit: int, split: str | None = None) -> list[dict[str, Any]]:
    """``[{"value", "count"}]`` of the non-empty ``values`` (each split on ``split``), most frequent first."""
    counts: Counter[str] = Counter()
    for value in values.dropna().astype(str):
        parts = value.split(split) if split else [value]
        counts.update(p.strip() for p in parts if p.strip())
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], fold_text(kv[0])))
    return [{"value": v, "count": int(c)} for v, c in ranked[:limit]]


def facets(catalog: pd.DataFrame, limit: int = 500) -> dict[str, Any]:
    """What the search filters can offer on ``catalog`` (see the module doc)."""
    years = pd.concat([pd.to_numeric(catalog[c], errors="coerce") for c in ("beginyear", "endyear")], axis=1)
    dated = years.notna().any(axis=1)
    low, high = years.min().min(), years.max().max()
    out: dict[str, Any] = {"total": int(len(catalog))}
    for name, column, split in (("artist", "artist", None), ("style", "style", ";"), ("medium", "medium", None)):
        values = _counted(catalog[column], limit, split) if column in catalog else []
        known = int(catalog[column].fillna("").astype(str).str.strip().ne("").sum()) if column in catalog else 0
        out[name] = {"available": known > 0, "with_value": known, "values": values}
    out["years"] = {"available": bool(dated.any()), "with_value": int(dated.sum()),
                    "min": int(low) if dated.any() else None, "max": int(high) if dated.any() else None}
    return out


__all__ = ["CatalogText", "TextMatch", "facets"]
