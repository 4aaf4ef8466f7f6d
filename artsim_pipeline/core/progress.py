"""Progress lines for long steps: about every 10% of the work, and once at the end (plain Python).

A :class:`Progress` is told how much is done (``update(done)``, counts only grow) and emits a short
line when ``done`` reaches the next 10% mark or the total, e.g.::

    faces: 130/1300 images (10%), 11.2 images/s

Each mark is reported once, so work that advances in batches (16 images at a time) still gives
about ten lines; :meth:`Progress.finish` emits the final line if ``update(total)`` has not.
"""

from __future__ import annotations

import time
from typing import Callable

Emit = Callable[[str], None]


def progress_line(label: str, done: int, total: int, elapsed_s: float, unit: str = "images", detail: str = "") -> str:
    """``"<label>: <done>/<total> <unit> (<pct>%), <rate> <unit>/s[, <detail>]"``."""
    pct = 100.0 * done / total if total else 100.0
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    line = f"{label}: {done}/{total} {unit} ({pct:.0f}%), {rate:.1f} {unit}/s"
    return f"{line}, {detail}" if detail else line


class Progress:
    """Reports ``done``/``total`` to ``emit`` about every ``1/steps`` of the work and at the end.

    ``emit=None`` makes every call a no-op (the callers' default: no progress output).
    """

    def __init__(
        self,
        emit: Emit | None,
        total: int,
        label: str,
        unit: str = "images",
        steps: int = 10,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.emit = emit
        self.total = max(0, int(total))
        self.label = label
        self.unit = unit
        self.step = max(1, self.total // max(1, steps))
        self.clock = clock
        self.started = clock()
        self.done = 0
        self._next = self.step
        self._finished = False

    def elapsed(self) -> float:
        return self.clock() - self.started

    def due(self, done: int) -> bool:
        """True when ``done`` reaches the next mark or the total and that has not been reported yet."""
        return not self._finished and (done >= self._next or done >= self.total)

    def update(self, done: int, detail: str = "") -> str | None:
        """Record ``done``; emit and return the line when a mark is reached (else ``None``)."""
        done = int(done)
        self.done = max(self.done, done)
        if not self.due(done):
            return None
        self._next = (done // self.step + 1) * self.step
        self._finished = done >= self.total
        line = progress_line(self.label, done, self.total, self.elapsed(), self.unit, detail)
        if self.emit is not None:
            self.emit(line)
        return line

    def advance(self, n: int = 1, detail: str = "") -> str | None:
        """``update(done + n)``."""
        return self.update(self.done + int(n), detail)

    def finish(self, detail: str = "") -> str | None:
        """Emit the final ``total/total`` line unless it was already emitted."""
        if self._finished:
            return None
        return self.update(self.total, detail)


__all__ = ["Emit", "Progress", "progress_line"]
