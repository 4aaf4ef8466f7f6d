"""Hybrid re-ranking: visual similarity blended with a metadata score (plain Python, no Dagster).

Metadata score of a candidate against the query (defaults from the original notebook), at most 1.0:

* style: +0.4 when the two paintings share at least one style ("; "-separated lists);
* artist: +0.3 when the normalised artist names are equal (:func:`normalize_artist`);
* medium: +0.2 when the normalised media are equal, else +0.1 when they share a content *word*
  (stop words such as "on", "and", "of" do not count; "oil on canvas" vs "oil on panel" shares "oil");
* date: +0.1 when the representative years are at most 50 years apart (missing date: no bonus).

Final score = 0.7 * visual + 0.3 * metadata. Every number lives in :class:`ScoringWeights`.
Re-ranking order: final score desc (compared to ``FINAL_DECIMALS`` decimals, so finals equal up to
float rounding tie), then visual desc, then objectid asc.

Each rule has a scalar form (one pair / one query: :func:`metadata_score`, :func:`rerank`) and a
vectorised form (a query against N paintings, many queries at once: :func:`metadata_scores` over a
:class:`MetadataTable`, :func:`rerank_order`); the tests hold them equal, to the last float bit.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

META_KEYS = ("artist", "style", "medium", "beginyear", "endyear", "displaydate")

ARTIST_PREFIXES = (
    "attributed to",
    "workshop of",
    "studio of",
    "circle of",
    "follower of",
    "followers of",
    "school of",
    "style of",
    "manner of",
    "imitator of",
    "copy after",
    "after",
)
ARTIST_SUFFIXES = ("and workshop", "and studio", "and assistants")

MEDIUM_STOP_WORDS = frozenset(
    {"a", "an", "and", "the", "on", "of", "in", "with", "over", "or", "to", "onto", "into", "laid", "mounted"}
)

#: Final scores are compared rounded to this many decimals (0.5*0.3 and 0.5*0.1 + 0.5*0.2 tie).
FINAL_DECIMALS = 12

_YEAR = re.compile(r"(?<!\d)(\d{4})(?!\d)")
_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class ScoringWeights:
    """Weights of the hybrid score. ``use_artist``/``use_style`` let an evaluation drop the label it measures."""

    visual: float = 0.7
    metadata: float = 0.3
    style: float = 0.4
    artist: float = 0.3
    medium_exact: float = 0.2
    medium_partial: float = 0.1
    date: float = 0.1
    date_window_years: int = 50
    candidate_factor: int = 3
    use_artist: bool = True
    use_style: bool = True

    def n_candidates(self, k: int) -> int:
        """How many visual neighbours to fetch before re-ranking down to ``k``."""
        return max(k, k * self.candidate_factor)


def is_missing(value: Any) -> bool:
    """True for None, NaN/NA and blank strings."""
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


@functools.lru_cache(maxsize=1 << 16)  # a pure function of catalog strings, called per candidate and query
def fold_text(text: str) -> str:
    """Lowercase, strip accents, collapse whitespace (like DuckDB ``lower(strip_accents(...))``)."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(plain.lower().split())


def normalize_artist(name: Any) -> str:
    """Comparable artist name: folded, without attribution prefixes/suffixes; ``""`` when missing.

    "Attributed to Jean-Honoré Fragonard" -> "jean-honore fragonard";
    "Rembrandt van Rijn and Workshop" -> "rembrandt van rijn";
    "American 19th Century" -> "american 19th century" (kept, only folded).
    """
    if is_missing(name):
        return ""
    return _artist_key(str(name))


@functools.lru_cache(maxsize=1 << 16)
def _artist_key(name: str) -> str:
    text = fold_text(name)
    changed = True
    while changed:
        changed = False
        for prefix in ARTIST_PREFIXES:
            if text.startswith(prefix + " ") and len(text) > len(prefix) + 1:
                text = text[len(prefix) + 1:].strip()
                changed = True
        for suffix in ARTIST_SUFFIXES:
            if text.endswith(" " + suffix):
                text = text[: -len(suffix) - 1].strip()
                changed = True
    return text


def styles_of(value: Any) -> frozenset[str]:
    """The set of folded styles from a "; "-separated string or an iterable of strings."""
    if isinstance(value, (list, tuple, set, frozenset)):
        parts: Iterable[Any] = value
    elif is_missing(value):
        return frozenset()
    else:
        parts = str(value).split(";")
    folded = (fold_text(str(p)) for p in parts if not is_missing(p))
    return frozenset(p for p in folded if p)


def normalize_medium(value: Any) -> str:
    """Folded medium text; ``""`` when missing."""
    return "" if is_missing(value) else fold_text(str(value))


def medium_words(value: Any) -> frozenset[str]:
    """Content words of a medium (stop words dropped)."""
    return frozenset(w for w in _WORD.findall(normalize_medium(value)) if w not in MEDIUM_STOP_WORDS)


def representative_year(meta: Mapping[str, Any]) -> int | None:
    """``beginyear``, else ``endyear``, else the first 4-digit year in ``displaydate``; else None."""
    for key in ("beginyear", "endyear"):
        value = meta.get(key)
        if is_missing(value):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            return int(number)
    display = meta.get("displaydate")
    if not is_missing(display):
        match = _YEAR.search(str(display))
        if match:
            return int(match.group(1))
    return None


def metadata_bonuses(
    query_meta: Mapping[str, Any], cand_meta: Mapping[str, Any], weights: ScoringWeights = ScoringWeights()
) -> dict[str, float]:
    """The metadata bonuses that apply to ``cand_meta`` against ``query_meta`` (see module doc), by name:
    ``style``, ``artist``, ``medium`` (exact) or ``medium_partial``, ``date``; absent when 0."""
    bonuses: dict[str, float] = {}
    if weights.use_style and styles_of(query_meta.get("style")) & styles_of(cand_meta.get("style")):
        bonuses["style"] = weights.style
    if weights.use_artist:
        artist = normalize_artist(query_meta.get("artist"))
        if artist and artist == normalize_artist(cand_meta.get("artist")):
            bonuses["artist"] = weights.artist
    q_medium, c_medium = normalize_medium(query_meta.get("medium")), normalize_medium(cand_meta.get("medium"))
    if q_medium and q_medium == c_medium:
        bonuses["medium"] = weights.medium_exact
    elif medium_words(q_medium) & medium_words(c_medium):
        bonuses["medium_partial"] = weights.medium_partial
    q_year, c_year = representative_year(query_meta), representative_year(cand_meta)
    if q_year is not None and c_year is not None and abs(q_year - c_year) <= weights.date_window_years:
        bonuses["date"] = weights.date
    return {key: value for key, value in bonuses.items() if value}


def metadata_score(
    query_meta: Mapping[str, Any], cand_meta: Mapping[str, Any], weights: ScoringWeights = ScoringWeights()
) -> float:
    """Sum of the metadata bonuses for ``cand_meta`` against ``query_meta`` (:func:`metadata_bonuses`)."""
    score = 0.0
    for value in metadata_bonuses(query_meta, cand_meta, weights).values():
        score += value
    return score


def final_score(visual: Any, metadata: Any, weights: ScoringWeights = ScoringWeights()) -> Any:
    """``weights.visual * visual + weights.metadata * metadata`` (floats or arrays alike)."""
    return weights.visual * visual + weights.metadata * metadata


def rerank(
    query_meta: Mapping[str, Any],
    candidates: pd.DataFrame,
    weights: ScoringWeights = ScoringWeights(),
    k: int = 10,
) -> pd.DataFrame:
    """Re-rank visual candidates by the hybrid score; return the top ``k``.

    ``candidates`` has ``objectid``, ``visual`` and any of the metadata columns in ``META_KEYS``
    (absent ones count as missing). Returns ``objectid, visual, metadata, final`` sorted by
    ``final`` desc (compared to 12 decimals), ties broken by ``visual`` desc then ``objectid`` asc.
    """
    missing = [c for c in ("objectid", "visual") if c not in candidates.columns]
    if missing:
        raise ValueError(f"candidates lack column(s) {missing}")
    meta_cols = [c for c in META_KEYS if c in candidates.columns]
    records = candidates[meta_cols].to_dict("records") if meta_cols else [{} for _ in range(len(candidates))]
    objectid = candidates["objectid"].to_numpy()
    visual = candidates["visual"].to_numpy(dtype=np.float64)
    metadata = np.array([metadata_score(query_meta, rec, weights) for rec in records], dtype=np.float64)
    final = final_score(visual, metadata, weights)
    # Finals equal up to float rounding count as tied (e.g. 0.5*0.3 + 0.5*0.2 vs 0.5*0.5); a stable sort
    top = np.lexsort((objectid, -visual, -np.round(final, FINAL_DECIMALS)))[:k]
    return pd.DataFrame({"objectid": objectid[top], "visual": visual[top], "metadata": metadata[top],
                         "final": final[top]})


def rerank_order(final: np.ndarray, visual: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The order :func:`rerank` sorts candidates in, for every row of ``[q, m]`` arrays at once.

    Final desc (rounded to ``FINAL_DECIMALS``), then visual desc, then id asc; returns ``[q, m]``
    positions into each row.
    """
    final = np.asarray(final, dtype=np.float64)
    return np.lexsort((np.broadcast_to(ids, final.shape), -np.asarray(visual), -np.round(final, FINAL_DECIMALS)),
                      axis=-1)


# ---------------------------------------------------------------- vectorised metadata score

def text_codes(values: Sequence[str]) -> np.ndarray:
    """Integer code per string (first seen first); -1 for ``""``."""
    seen: dict[str, int] = {}
    return np.array([seen.setdefault(v, len(seen)) if v else -1 for v in values], dtype=np.int64)


def _bits(sets: Sequence[frozenset[str]]) -> tuple[np.ndarray, list[str]]:
    """``[N, V]`` float32 0/1 membership matrix over the sorted vocabulary of ``sets``."""
    vocab = sorted(set().union(*sets)) if sets else []
    where = {word: j for j, word in enumerate(vocab)}
    bits = np.zeros((len(sets), len(vocab)), dtype=np.float32)
    for i, words in enumerate(sets):
        for word in words:
            bits[i, where[word]] = 1.0
    return bits, vocab


def shares(bits: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``[len(rows), N]`` bool: row ``rows[i]`` of a membership matrix shares a member with item j."""
    if bits.shape[1] == 0:
        return np.zeros((len(rows), bits.shape[0]), dtype=bool)
    return (bits[rows] @ bits.T) > 0.5


def distinct_rows(bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of a membership matrix and each item's row among them (no columns: one empty row)."""
    if bits.shape[1] == 0 or len(bits) == 0:
        return bits[:1], np.zeros(len(bits), dtype=np.int64)
    sets, inverse = np.unique(bits, axis=0, return_inverse=True)
    return sets, inverse.reshape(-1).astype(np.int64)


def shares_through_sets(sets: np.ndarray, inverse: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """:func:`shares` of the membership matrix ``sets[inverse]``, computed between its distinct rows ``sets`` and
    spread to the items (the same bits: items with the same members share with the same others)."""
    return shares(sets, inverse[np.asarray(rows, dtype=np.int64)])[:, inverse]


@dataclass
class MetadataTable:
    """The metadata of N paintings, precomputed once for :func:`metadata_scores`."""

    artist_codes: np.ndarray  # int [N]: normalize_artist(artist), -1 missing
    style_bits: np.ndarray  # float32 [N, S]: styles_of(style)
    styles: list[str]  # the style vocabulary (columns of style_bits)
    medium_codes: np.ndarray  # int [N]: normalize_medium(medium), -1 missing
    medium_word_bits: np.ndarray  # float32 [N, W]: medium_words(medium)
    years: np.ndarray  # float64 [N]: representative_year, NaN missing

    def __len__(self) -> int:
        return int(len(self.artist_codes))

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]]) -> "MetadataTable":
        """From one metadata mapping per painting (keys as in :data:`META_KEYS`)."""
        style_bits, styles = _bits([styles_of(r.get("style")) for r in records])
        word_bits, _ = _bits([medium_words(r.get("medium")) for r in records])
        years = np.array(
            [np.nan if (y := representative_year(r)) is None else float(y) for r in records], dtype=np.float64
        )
        return cls(
            artist_codes=text_codes([normalize_artist(r.get("artist")) for r in records]),
            style_bits=style_bits,
            styles=styles,
            medium_codes=text_codes([normalize_medium(r.get("medium")) for r in records]),
            medium_word_bits=word_bits,
            years=years,
        )

    @functools.cached_property
    def style_sets(self) -> tuple[np.ndarray, np.ndarray]:
        """:func:`distinct_rows` of ``style_bits`` (a few dozen sets of styles for thousands of paintings)."""
        return distinct_rows(self.style_bits)

    @functools.cached_property
    def medium_word_sets(self) -> tuple[np.ndarray, np.ndarray]:
        """:func:`distinct_rows` of ``medium_word_bits``."""
        return distinct_rows(self.medium_word_bits)

    def subset(self, rows: np.ndarray) -> "MetadataTable":
        rows = np.asarray(rows, dtype=np.int64)
        return MetadataTable(self.artist_codes[rows], self.style_bits[rows], self.styles, self.medium_codes[rows],
                             self.medium_word_bits[rows], self.years[rows])


def _bonus_values(weights: ScoringWeights) -> np.ndarray:
    """float64 [32]: the metadata score of every combination of bonuses, indexed by the bits of
    :func:`metadata_scores` (1 style, 2 artist, 4 exact medium, 8 partial medium, 16 date), each summed in the
    scalar form's order (style, artist, medium, date) from 0.0, so the same float bits."""
    bits = np.arange(32)
    score = np.zeros(32, dtype=np.float64)
    if weights.use_style:
        score += np.where(bits & 1, weights.style, 0.0)
    if weights.use_artist:
        score += np.where(bits & 2, weights.artist, 0.0)
    score += np.where(bits & 4, weights.medium_exact, np.where(bits & 8, weights.medium_partial, 0.0))
    score += np.where(bits & 16, weights.date, 0.0)
    return score


def metadata_scores(table: MetadataTable, rows: np.ndarray, weights: ScoringWeights = ScoringWeights()) -> np.ndarray:
    """``[len(rows), N]``: :func:`metadata_score` of every painting against each query row.

    The same bonuses added in the same order as the scalar form, so even the float rounding matches: each
    pair's bonuses are bits of a small code, and the code looks its score up in :func:`_bonus_values`
    (one float64 pass over the ``[q, N]`` cells instead of one per bonus); shared styles and medium words are
    found between the distinct sets of them (:func:`shares_through_sets`).
    """
    rows = np.asarray(rows, dtype=np.int64)
    code = np.zeros((len(rows), len(table)), dtype=np.uint8)
    if weights.use_style:
        code |= shares_through_sets(*table.style_sets, rows)
    if weights.use_artist:
        q = table.artist_codes[rows][:, None]
        code |= ((q >= 0) & (q == table.artist_codes[None, :])).view(np.uint8) << 1
    qm = table.medium_codes[rows][:, None]
    exact = (qm >= 0) & (qm == table.medium_codes[None, :])
    code |= exact.view(np.uint8) << 2
    code |= (~exact & shares_through_sets(*table.medium_word_sets, rows)).view(np.uint8) << 3
    with np.errstate(invalid="ignore"):
        close = np.abs(table.years[rows][:, None] - table.years[None, :]) <= weights.date_window_years
    code |= close.view(np.uint8) << 4
    return _bonus_values(weights)[code]
