"""The map's other layouts, derived from the similarity layout and the catalog (plain Python, no Dagster).

* :func:`date_layout`: ``x`` = the painting's year (``beginyear``) between the collection's earliest and
  latest (on ``[0, DATED_SPAN]``), jittered by up to half a year's width so that one year is a band,
  not a line; ``y`` = its similarity-layout ``y`` (so that alike paintings of a decade stay together).
  Undated paintings stand in a strip of their own on the right (``x`` in ``[UNDATED_X, 1]``).
* :func:`grid_layout`: every painting in its own cell of a ``⌈√n⌉``-column grid, in the similarity
  layout's order (rows by ``y``, each row by ``x``): no two thumbnails overlap, neighbours on the map
  stay near. A sort, O(n log n), instead of a linear assignment (O(n³), out of reach at 131,072).

Both are deterministic and in ``[0, 1]²`` like the similarity layout; their rows are the input's rows.
"""

from __future__ import annotations

import math

import numpy as np

DATED_SPAN = 0.9
UNDATED_X = 0.94


def _jitter(objectids: np.ndarray, salt: int) -> np.ndarray:
    """A deterministic value in [-0.5, 0.5) per objectid (a hash, not a random stream: order-free)."""
    h = (np.asarray(objectids, dtype=np.uint64) * np.uint64(2654435761) + np.uint64(salt)) % np.uint64(1_000_003)
    return h.astype(np.float64) / 1_000_003 - 0.5


def date_layout(objectids: np.ndarray, y: np.ndarray, years: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """(x, y, axis) of the date layout (see the module doc); ``years`` has NaN where unknown. ``axis`` is
    ``{"from": first year, "to": last year, "span": DATED_SPAN, "undated_x": UNDATED_X}`` for the ticks."""
    years = np.asarray(years, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    dated = np.isfinite(years) & (years > 0)
    x = np.empty(len(years))
    first, last = (float(years[dated].min()), float(years[dated].max())) if dated.any() else (0.0, 0.0)
    width = max(last - first + 1.0, 1.0)
    x[dated] = (years[dated] - first + 0.5 + 0.9 * _jitter(objectids[dated], 1)) / width * DATED_SPAN
    x[~dated] = UNDATED_X + (1.0 - UNDATED_X) * (0.5 + _jitter(objectids[~dated], 2))
    return np.clip(x, 0.0, 1.0), np.clip(y + 0.004 * _jitter(objectids, 3), 0.0, 1.0), \
        {"from": int(first), "to": int(last), "span": DATED_SPAN, "undated_x": UNDATED_X}


def grid_layout(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(x, y, columns) of the grid layout: cell centres, one painting per cell (see the module doc)."""
    n = len(x)
    cols = max(1, math.ceil(math.sqrt(n)))
    by_y = np.argsort(np.asarray(y), kind="stable")
    gx, gy = np.empty(n), np.empty(n)
    for row, start in enumerate(range(0, n, cols)):
        members = by_y[start:start + cols]
        members = members[np.argsort(np.asarray(x)[members], kind="stable")]
        gx[members] = (np.arange(len(members)) + 0.5) / cols
        gy[members] = (row + 0.5) / cols
    return gx, gy, cols


__all__ = ["date_layout", "grid_layout"]
