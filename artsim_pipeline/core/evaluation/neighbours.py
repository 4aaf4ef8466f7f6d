"""The leave-one-out's database side, built with its IVF neighbour search grouped by list (plain Python, no Dagster).

:func:`augmented_database` = :meth:`~artsim_pipeline.core.rerank.Augmented.build` of the collection, the same
arrays bit for bit. Beyond :data:`~artsim_pipeline.core.rerank.EXACT_NEIGHBOURS_MAX` paintings the neighbour
table comes from an IVF index over the collection (:func:`~artsim_pipeline.core.index.build_index`, as
``rerank.neighbour_table`` builds it), searched with every painting as a query. In row order, each query
reads its probed lists from memory: at 131,072 paintings the lists (256 MiB) are far larger than the cache, so
the search streams about 16 lists per query. :class:`ListOrderSearch` passes the queries to FAISS grouped by
the list each painting lives in (paintings of one list probe nearly the same lists, which then stay in the
cache) and puts the results back in row order. A query's result does not depend on the other queries of the
batch (its probes, distances and heap are its own), so the table is the same (``test_evaluation_neighbours.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..index import build_index
from ..recall import check_vectors
from ..rerank import EXACT_NEIGHBOURS_MAX, Augmented, RerankOptions


def list_order(index: Any) -> np.ndarray:
    """The ids an IVF index holds, list by list (each list's ids in their stored order)."""
    import faiss

    ivf = faiss.extract_index_ivf(index)
    lists = ivf.invlists
    parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
             for i in range(ivf.nlist) if lists.list_size(i)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


class ListOrderSearch:
    """An IVF index over rows ``0..n-1`` whose search of all ``n`` rows runs them grouped by list (module doc).

    Any other batch of queries is searched as it comes."""

    def __init__(self, index: Any) -> None:
        self.index = index
        self.order = list_order(index)

    def search(self, queries: np.ndarray, k: int, params: Any = None) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.order)
        if len(queries) != n or n != self.index.ntotal:
            return self.index.search(queries, k, params=params)
        sims, found = self.index.search(np.ascontiguousarray(queries[self.order]), k, params=params)
        out_sims, out_found = np.empty_like(sims), np.empty_like(found)
        out_sims[self.order], out_found[self.order] = sims, found
        return out_sims, out_found


def augmented_database(x: np.ndarray, options: RerankOptions) -> Augmented:
    """``Augmented.build(x, options)``, its IVF neighbour search (beyond the exact size) grouped by list."""
    x = check_vectors(x)
    n = len(x)
    if not options.uses_dba or n <= EXACT_NEIGHBOURS_MAX or min(options.dba_top + 1, n - 1) < 1:
        return Augmented.build(x, options)
    bundle = build_index(x, np.arange(n, dtype=np.int64))  # the index neighbour_table builds when given none
    return Augmented.build(x, options, ListOrderSearch(bundle.index), bundle.info.get("nprobe"), bundle.ids)
