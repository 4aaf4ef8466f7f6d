"""Named regions of the collection map: density clusters of the 2-D layout, named from the catalog.

Plain Python (no Dagster). :mod:`.layout_refresh` calls it after each layout or placement; the web map
draws the labels and lists the regions.

**Clustering the layout, not the fused vectors.** Regions are found with scikit-learn's HDBSCAN on the
map's own ``x, y`` (``[0, 1]²``):

* a region is something the curator *sees*: a cluster found in the 64-D fused space can be split or
  scattered by t-SNE, and its label would then sit between several islands of the map. Clustering
  the drawn points guarantees that every region is one contiguous island under its label;
* t-SNE already concentrates the fused vectors' neighbourhood structure (perplexity 30) into 2-D, which
  is the structure density clustering needs; in 64-D, distances concentrate and HDBSCAN finds mostly
  noise, and it costs O(n²) there where a 2-D k-d tree keeps it near O(n log n) (131,072 points in a
  few seconds, ``artsim bench map_page``);
* the incremental rule below is then the same neighbourhood a viewer uses: a new painting belongs to
  the region it is drawn in.

``min_cluster_size`` grows with the collection (:func:`default_min_cluster_size`: about √n / 3.5, at
least 8) and ``min_samples`` is 3 (:data:`MIN_SAMPLES`: density from the 3rd neighbour). On the
1,698-painting mirror, ``min_cluster_size`` 21 with ``min_samples`` 10 made one region of 704 paintings
("various artists") and seven small ones; 12 and 3 give 43 regions of at most 104 paintings, 22 % noise,
and twice the share of each region's dominant artist (0.46 against 0.22, weighted by size). HDBSCAN's
"leaf" selection scored alike on the mirror but cut round, well separated islands into many pieces.
Points HDBSCAN leaves out are noise (region ``-1``). scikit-learn's HDBSCAN builds its spanning tree in O(n²) (137 s at 131,072
points on two cores), so above :data:`FIT_SAMPLE` paintings it clusters a fixed random sample of that
size (seeded) and the others join a region by the same neighbour vote as newly placed paintings.

**Stable across an incremental placement** (:func:`carry_regions`): paintings already on the map keep
their region id; a newly placed one takes the majority region of its :data:`JOIN_K` nearest kept
paintings on the map (noise when the majority is noise). Only a from-scratch layout (a refit)
clusters again.

**Names** (:func:`describe_regions`): from the members' catalog rows: who (the dominant artist; or
two, ``"A & B"``; or the three most frequent when they make :data:`MOSTLY` of the region, ``"A, B, C and
others"``; else the dominant style with ``various artists``, or ``various artists``), the period as
decades of ``beginyear`` between its 10th and 90th percentile, and the dominant medium's first word,
e.g. ``"Claude Monet, 1870s–1900s, oil"``; a part the catalog does not know is left out. Each region
also keeps its centre (the medoid), its size and :data:`REPRESENTATIVES` representative objectids (the
members nearest the medoid, the medoid first).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

NOISE = -1
JOIN_K = 5  # kept neighbours a newly placed painting votes with
MIN_SAMPLES = 3  # HDBSCAN's density estimate: the 3rd nearest neighbour
REPRESENTATIVES = 4
DOMINANT = 0.5  # share of the members that makes an artist, a style or a medium "the" one
SECOND = 0.2  # share of a second artist named beside the first when neither dominates alone
MOSTLY = 0.4  # share of the three most frequent artists that names them ("A, B, C and others")
MEDOID_CANDIDATES = 256  # the medoid is searched among the members nearest the median point
MEDOID_SAMPLE = 4096  # ... by their distances to at most this many members
FIT_SAMPLE = 16_384  # HDBSCAN runs on at most this many paintings (the rest vote, see the module doc)


def default_min_cluster_size(n: int) -> int:
    """HDBSCAN's ``min_cluster_size`` for ``n`` paintings: about √n / 3.5, at least 8."""
    return max(8, int(round(np.sqrt(max(n, 1)) / 3.5)))


def _xy(frame: pd.DataFrame) -> np.ndarray:
    xy = frame[["x", "y"]].to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(xy)):
        raise ValueError("the map has NaN or infinite coordinates: cannot find regions")
    return xy


def fit_regions(frame: pd.DataFrame, *, min_cluster_size: int | None = None, seed: int = 0,
                fit_sample: int = FIT_SAMPLE) -> np.ndarray:
    """Region id per row of ``frame`` (``objectid, x, y``): HDBSCAN on the layout (on a sample of
    ``fit_sample`` rows when larger, see the module doc), ids 0.. by decreasing size (ties: by the
    smallest objectid), noise ``-1``. Deterministic for a given ``seed``."""
    n = len(frame)
    if n > fit_sample:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=fit_sample, replace=False))
        sample = frame.iloc[rows].copy()
        sample["region"] = fit_regions(sample, min_cluster_size=min_cluster_size, fit_sample=fit_sample)
        return carry_regions(sample, frame)
    size = int(min_cluster_size or default_min_cluster_size(n))
    if n < 2 * size:
        return np.full(n, NOISE, dtype=np.int32)
    # scikit-learn here: the server imports this module; only fitting regions needs it
    from sklearn.cluster import HDBSCAN

    raw = HDBSCAN(min_cluster_size=size, min_samples=min(size, MIN_SAMPLES), copy=True).fit_predict(_xy(frame))
    ids = frame["objectid"].to_numpy(dtype=np.int64)
    found = [c for c in np.unique(raw) if c >= 0]
    order = sorted(found, key=lambda c: (-int((raw == c).sum()), int(ids[raw == c].min())))
    out = np.full(n, NOISE, dtype=np.int32)
    for new, old in enumerate(order):
        out[raw == old] = new
    return out


def carry_regions(previous: pd.DataFrame, frame: pd.DataFrame, k: int = JOIN_K) -> np.ndarray:
    """Region id per row of ``frame`` given the ``previous`` map's regions (``objectid, x, y, region``):
    kept paintings keep theirs, new ones join the majority of their ``k`` nearest kept paintings on the
    map (ties: the nearer region; noise when the majority is noise)."""
    if "region" not in previous.columns:
        raise ValueError("the previous map has no regions to carry over")
    before = pd.Series(previous["region"].to_numpy(np.int32), index=previous["objectid"].to_numpy(np.int64))
    ids = frame["objectid"].to_numpy(dtype=np.int64)
    kept = np.isin(ids, before.index.to_numpy())
    out = np.full(len(ids), NOISE, dtype=np.int32)
    out[kept] = before.loc[ids[kept]].to_numpy()
    if kept.all() or not kept.any():
        return out
    # scipy here: the server imports this module; only carrying regions over needs it
    from scipy.spatial import cKDTree

    xy = _xy(frame)
    k = int(min(k, kept.sum()))
    _, rows = cKDTree(xy[kept]).query(xy[~kept], k=k)
    votes = out[kept][np.asarray(rows).reshape(-1, k)]
    out[~kept] = [_vote(list(v)) for v in votes]
    return out


def _vote(regions: list[int]) -> int:
    """The most frequent region of ``regions`` (nearest first); a tie goes to the one seen first."""
    counts = Counter(regions)
    best = max(counts.values())
    return int(next(r for r in regions if counts[r] == best))


def _dominant(values: pd.Series, share: float = DOMINANT) -> tuple[str, float] | None:
    values = values.dropna().astype(str).str.strip()
    values = values[values != ""]
    if values.empty:
        return None
    counts = values.value_counts()
    top, count = str(counts.index[0]), int(counts.iloc[0])
    return (top, count / len(values)) if count / len(values) >= share else None


def _who(members: pd.DataFrame) -> str:
    artists = members.get("artist", pd.Series(dtype=object)).fillna("").astype(str).str.strip()
    artists = artists[artists != ""]
    if not artists.empty:
        counts = artists.value_counts() / len(artists)
        if counts.iloc[0] >= DOMINANT:
            return str(counts.index[0])
        if len(counts) > 1 and counts.iloc[0] + counts.iloc[1] >= DOMINANT and counts.iloc[1] >= SECOND:
            return f"{counts.index[0]} & {counts.index[1]}"
        if len(counts) > 3 and counts.iloc[:3].sum() >= MOSTLY:
            return f"{counts.index[0]}, {counts.index[1]}, {counts.index[2]} and others"
    style = _dominant(members.get("style", pd.Series(dtype=object)))
    return f"{style[0]}, various artists" if style else "various artists"


def period(years: pd.Series) -> str | None:
    """``"1870s–1900s"`` (the decades of the 10th and 90th percentile of ``years``), ``"1870s"``, or None."""
    years = pd.to_numeric(years, errors="coerce").dropna()
    years = years[(years > 0) & (years < 2200)]
    if years.empty:
        return None
    low, high = (int(np.floor(np.percentile(years, q) / 10) * 10) for q in (10, 90))
    return f"{low}s" if low == high else f"{low}s–{high}s"


def _medium(members: pd.DataFrame) -> str | None:
    media = members.get("medium", pd.Series(dtype=object)).dropna().astype(str).str.strip().str.lower()
    first = media.str.split(r"[\s,;]+", n=1, regex=True).str[0]
    found = _dominant(first[first != ""])
    return found[0] if found else None


def region_label(members: pd.DataFrame) -> str:
    """The name of a region from its members' catalog rows (``artist, style, beginyear, medium``)."""
    parts = [_who(members), period(members.get("beginyear", pd.Series(dtype=float))), _medium(members)]
    return ", ".join(p for p in parts if p)


def _medoid_order(xy: np.ndarray) -> np.ndarray:
    """Rows of ``xy`` by distance to the medoid (the medoid first); the medoid is the one of the
    :data:`MEDOID_CANDIDATES` members nearest the median point with the least summed distance to (an
    evenly spaced sample of :data:`MEDOID_SAMPLE` of) the members."""
    near = np.argsort(((xy - np.median(xy, axis=0)) ** 2).sum(axis=1), kind="stable")[:MEDOID_CANDIDATES]
    others = xy[:: max(1, len(xy) // MEDOID_SAMPLE)]
    total = np.sqrt(((xy[near][:, None, :] - others[None, :, :]) ** 2).sum(axis=2)).sum(axis=1)
    medoid = xy[near[int(np.argmin(total))]]
    return np.argsort(((xy - medoid) ** 2).sum(axis=1), kind="stable")


def describe_regions(frame: pd.DataFrame, catalog: pd.DataFrame | None) -> list[dict[str, Any]]:
    """One dict per region of ``frame`` (``objectid, x, y, region``), by id: ``id, label, centre [x, y]
    (the medoid), size, representatives`` (objectids nearest the medoid). ``catalog`` is indexed by
    objectid (columns as ``filtered_paintings``); paintings missing from it only count in ``size``."""
    out = []
    regions = frame["region"].to_numpy(np.int32)
    catalog = catalog if catalog is not None else pd.DataFrame()
    for rid in sorted(int(r) for r in np.unique(regions) if r >= 0):
        sub = frame[regions == rid]
        xy = _xy(sub)
        order = _medoid_order(xy)
        ids = sub["objectid"].to_numpy(np.int64)
        members = catalog.loc[catalog.index.intersection(ids)] if len(catalog) else pd.DataFrame()
        out.append({"id": rid, "label": region_label(members) if len(members) else f"region {rid + 1}",
                    "centre": [round(float(v), 5) for v in xy[order[0]]], "size": int(len(sub)),
                    "representatives": [int(ids[i]) for i in order[:REPRESENTATIVES]]})
    return out


def noise_share(regions: np.ndarray) -> float:
    """Share of the paintings in no region."""
    regions = np.asarray(regions)
    return float((regions < 0).mean()) if len(regions) else 0.0


__all__ = ["NOISE", "carry_regions", "default_min_cluster_size", "describe_regions", "fit_regions", "noise_share",
           "period", "region_label"]
