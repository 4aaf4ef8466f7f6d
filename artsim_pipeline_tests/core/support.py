"""Helpers shared by the core tests (test modules never import each other):

* :func:`assert_monotonic_to_total` checks the progress lines of a long step (``N/total``, strictly
  increasing, ending at ``total/total``);
* :func:`random_records` makes messy painting metadata rows (keys ``artist``, ``style``, ``medium``,
  ``beginyear``, ``endyear``, ``displaydate``; name variants, ``None`` and ``""`` included);
* :func:`clustered` makes unit-norm float32 vectors in Gaussian clusters, :func:`objectids` distinct
  int64 ids in descending order (neither the row number nor sorted).
"""

from __future__ import annotations

import re

import numpy as np

COUNT = re.compile(r"(\d+)/(\d+)\b")


def counts(lines: list[str]) -> list[tuple[int, int]]:
    """``(done, total)`` of each progress line (the first ``N/M`` in it)."""
    out = []
    for line in lines:
        match = COUNT.search(line)
        assert match, line
        out.append((int(match.group(1)), int(match.group(2))))
    return out


def assert_monotonic_to_total(lines: list[str], total: int) -> list[int]:
    """Every line has ``N/total``; N strictly increases and the last line is ``total/total``."""
    pairs = counts(lines)
    assert pairs, "no progress lines"
    done = [d for d, _ in pairs]
    assert all(t == total for _, t in pairs), pairs
    assert done == sorted(set(done)), pairs
    assert done[-1] == total, pairs
    return done


ARTISTS = ["Rembrandt van Rijn", "Attributed to Rembrandt van Rijn", "Rembrandt van Rijn and Workshop", "Claude Monet",
           "claude  MONET", "Édouard Manet", "Edouard Manet", None, ""]
STYLES = ["Baroque", "Baroque; Dutch Golden Age", "Impressionism", "impressionism; Realism", "Realism", None, ""]
MEDIA = ["oil on canvas", "Oil on canvas", "oil on panel", "tempera on panel", "pastel on paper", "on and of", None, ""]
DATES = [(1650, 1655, "1650-1655"), (None, 1700, ""), (None, None, "c. 1872"), (None, None, "undated"),
         (1890.0, None, None), (float("nan"), None, "1601"), (None, None, None)]


def random_records(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    records = []
    for _ in range(n):
        begin, end, display = DATES[rng.integers(len(DATES))]
        records.append({
            "artist": ARTISTS[rng.integers(len(ARTISTS))],
            "style": STYLES[rng.integers(len(STYLES))],
            "medium": MEDIA[rng.integers(len(MEDIA))],
            "beginyear": begin,
            "endyear": end,
            "displaydate": display,
        })
    return records


def clustered(n: int, dim: int = 64, n_clusters: int = 40, spread: float = 1.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim))
    x = centres[rng.integers(0, n_clusters, n)] + spread * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def objectids(n: int) -> np.ndarray:
    return (np.arange(n, dtype=np.int64) * 7 + 1000)[::-1].copy()
