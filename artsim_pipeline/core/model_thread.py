"""One thread for every model call of a long-lived process (the web server's search engine).

torch runs its CPU kernels on an OpenMP team that belongs to the Python thread that calls it: a server whose
requests run on a pool of worker threads gets one team per thread that ever ran a model, and their spinning
threads compete for the cores from then on. Measured on the mirror lake (2 cores, three offline backbones, a
512 px photo): the embedding stage of an image search took 81 ms p50 while only one thread had run the models,
175 ms from a second thread, and 190 ms back on the first thread afterwards (the slowdown stays for the process);
``OMP_WAIT_POLICY=PASSIVE`` made every call slow (200 ms). So the server runs every model call (loading, the
warm-up, forward passes, face detection) on one :class:`ModelThread`; the rest of a query (decoding, FAISS, the
geometric check, re-ranking) stays on the request's thread. A command that runs in one thread needs none
(``SearchEngine``'s default runs a model call where it is made).

Plain Python: no torch, no Dagster.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")


def run_here(call: Callable[[], T]) -> T:
    """The default model runner: ``call()`` on the calling thread."""
    return call()


class ModelThread:
    """Runs model calls on one thread, started on first use: ``runner(call)`` returns ``call()``'s value (or
    raises its exception) once that thread ran it. A call made from that thread itself (a forward pass inside a
    model call) runs at once, so nested calls cannot wait on themselves."""

    def __init__(self, name: str = "artsim-models") -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name, initializer=self._mark)
        self._ident: int | None = None

    def _mark(self) -> None:
        self._ident = threading.get_ident()

    def __call__(self, call: Callable[[], T]) -> T:
        if threading.get_ident() == self._ident:
            return call()
        return self._pool.submit(call).result()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


__all__ = ["ModelThread", "run_here"]
