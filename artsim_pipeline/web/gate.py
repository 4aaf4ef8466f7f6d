"""Admission for image queries: :class:`QueryGate` runs a few at a time with a bounded queue and refuses the
rest with :class:`Busy` (the API answers 503 with ``Retry-After``)."""

from __future__ import annotations

import contextlib
import threading


class Busy(Exception):
    """Every image-query slot is taken and the queue is full: answer 503 with ``Retry-After``."""


class QueryGate:
    """Admission for image queries (decode, resize, face detection, the backbones): at most ``running``
    at once and ``waiting`` queued, each waiting at most ``wait_s``; beyond that :class:`Busy`.

    Only image queries pass it: an objectid query needs no model and never waits behind an upload.
    """

    def __init__(self, running: int = 2, waiting: int = 32, wait_s: float = 30.0) -> None:
        self.running, self.waiting, self.wait_s = int(running), int(waiting), float(wait_s)
        self._slots = threading.BoundedSemaphore(self.running)
        self._lock = threading.Lock()
        self._queued = 0
        self.refused = 0

    @contextlib.contextmanager
    def admit(self):
        with self._lock:
            if self._queued >= self.running + self.waiting:
                self.refused += 1
                raise Busy(f"the server is busy with {self._queued} image searches; retry in a few seconds")
            self._queued += 1
        try:
            if not self._slots.acquire(timeout=self.wait_s):
                with self._lock:
                    self.refused += 1
                raise Busy(f"no image-search slot became free within {self.wait_s:.0f}s; retry in a few seconds")
            try:
                yield
            finally:
                self._slots.release()
        finally:
            with self._lock:
                self._queued -= 1
