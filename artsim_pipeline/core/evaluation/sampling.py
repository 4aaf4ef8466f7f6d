"""Which paintings query the evaluation (plain Python, no Dagster).

Full-ranking leave-one-out costs ``n log n`` per query, so ``n^2 log n`` with every painting as a
query. :class:`QuerySample` keeps it linear in the collection:

* up to ``full_up_to`` (5,000) eligible queries, every one is evaluated (the 1,698-painting mirror
  and the 4,020-painting catalog are evaluated exactly as before sampling existed);
* beyond it, a fixed-size sample of ``size`` (2,000) queries, each still ranked against the whole
  collection (exact), so its metrics are the full protocol's for those queries and the 95%
  intervals of the report are those of a sample of that size.

The sample is seeded and keyed on objectids: the ``size`` eligible queries with the smallest
``splitmix64(objectid ^ splitmix64(seed))``. It depends on nothing else (not on row order nor on
other methods), every method and relevance of one report uses the same rule, and a refresh that adds
paintings keeps the sampled queries of the previous report except those the newcomers displace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

FULL_UP_TO = 5_000
SAMPLE_SIZE = 2_000
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)


def splitmix64(values: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser of each value (uint64 in, uint64 out; wraps modulo 2^64)."""
    x = np.asarray(values).astype(np.uint64) + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _MIX_1
    x = (x ^ (x >> np.uint64(27))) * _MIX_2
    return x ^ (x >> np.uint64(31))


@dataclass(frozen=True)
class QuerySample:
    """Evaluate every eligible query up to ``full_up_to`` of them, else a seeded sample of ``size``."""

    full_up_to: int = FULL_UP_TO
    size: int = SAMPLE_SIZE
    seed: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.size <= self.full_up_to:
            raise ValueError(f"query sample: need 2 <= size <= full_up_to, got size={self.size}, "
                             f"full_up_to={self.full_up_to}")

    def rows(self, eligible: np.ndarray, objectids: np.ndarray) -> np.ndarray:
        """The query rows (sorted) among ``eligible`` rows; ``objectids [N]`` names every row."""
        eligible = np.asarray(eligible, dtype=np.int64)
        if len(eligible) <= self.full_up_to:
            return eligible
        salt = splitmix64(np.array([self.seed]))[0]
        keys = splitmix64(np.asarray(objectids, dtype=np.int64)[eligible].astype(np.uint64) ^ salt)
        return np.sort(eligible[np.argsort(keys, kind="stable")[: self.size]])

    def describe(self) -> dict[str, Any]:
        """The rule, JSON-ready (for the report's settings)."""
        return {
            "full_up_to": int(self.full_up_to),
            "size": int(self.size),
            "seed": int(self.seed),
            "rule": f"every eligible query up to {self.full_up_to:,}; beyond, the {self.size:,} with the smallest "
                    "splitmix64(objectid ^ splitmix64(seed)), each ranked against the whole collection",
        }
