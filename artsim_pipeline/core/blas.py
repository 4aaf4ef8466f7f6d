"""One BLAS thread where a product is small: the search's fusion of one query, the evaluation's per-query passes.

Plain Python (no Dagster). A product of a few rows against a matrix reads the matrix once whatever the threads,
so BLAS's other threads only add their wake-ups and hand-offs (and, on a machine whose cores are busy, wait for a
core); every cell is the same dot product either way, so no number changes. Without threadpoolctl both helpers
are no-ops (an optional speed-up only).
"""

from __future__ import annotations

import contextlib
from typing import Any


def blas_controller() -> Any:
    """threadpoolctl's controller of the loaded BLAS libraries (None without threadpoolctl). Finding them reads
    every loaded library: a caller that limits often (the search engine, once per query) keeps one."""
    try:
        from threadpoolctl import ThreadpoolController

        return ThreadpoolController().select(user_api="blas")
    except Exception:  # noqa: BLE001 - optional speed-up only
        return None


def one_blas_thread(blas: Any = None) -> contextlib.AbstractContextManager[Any]:
    """BLAS limited to one thread within the block, through ``blas`` (a :func:`blas_controller`; found now
    when not given); a no-op without threadpoolctl. One vector through the fusion is a gemv: limited, it costs
    ~0.2 ms instead of several ms."""
    blas = blas if blas is not None else blas_controller()
    return blas.limit(limits=1) if blas is not None else contextlib.nullcontext()


__all__ = ["blas_controller", "one_blas_thread"]
