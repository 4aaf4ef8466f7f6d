"""The collection map of the served generation (:class:`MapCache`): the lake's ``collection_map`` when it
was laid out for that generation, else computed by the server in a background thread and kept in memory."""

from __future__ import annotations

import logging
import threading
import time

import pandas as pd

from ..core.layout import bundle_layout, load_layout
from ..core.lake import DataLake

from .served import Served

log = logging.getLogger(__name__)


class MapCache:
    """The collection map of the served generation: the lake's Parquet when it matches, else computed
    from the index's vectors (in a background thread) and kept in memory."""

    def __init__(self, lake: DataLake, seed: int = 0) -> None:
        self.lake = lake
        self.seed = seed
        self._maps: dict[str, pd.DataFrame] = {}
        self._lock = threading.Lock()
        self._computing: dict[str, threading.Event] = {}
        self.source: dict[str, str] = {}

    def start(self, served: Served) -> None:
        """Begin computing the map for ``served`` in the background (no-op when known or running)."""
        generation = served.generation or ""
        with self._lock:
            if generation in self._maps or generation in self._computing:
                return
            done = self._computing[generation] = threading.Event()
        threading.Thread(target=self._build, args=(served, generation, done), daemon=True,
                         name=f"artsim-map-{generation[:16]}").start()

    def get(self, served: Served, timeout: float | None = None) -> pd.DataFrame | None:
        """The map (``objectid, x, y``), waiting up to ``timeout`` seconds; None while still computing."""
        generation = served.generation or ""
        if generation not in self._maps:
            self.start(served)
            event = self._computing.get(generation)
            if event is not None:
                event.wait(timeout)
        return self._maps.get(generation)

    def _build(self, served: Served, generation: str, done: threading.Event) -> None:
        try:
            frame = self._from_lake(generation)
            if frame is None:
                started = time.perf_counter()
                frame = bundle_layout(served.engine.variants["full"].bundle, seed=self.seed)
                self.source[generation] = f"computed by the server in {time.perf_counter() - started:.1f}s"
            with self._lock:
                self._maps = {generation: frame, **{k: v for k, v in self._maps.items() if k != generation}}
                # keep at most two generations (the served one and the one before)
                while len(self._maps) > 2:
                    self._maps.pop(next(reversed(self._maps)))
        except Exception:  # noqa: BLE001 - the page says the map is unavailable
            log.exception("collection map for %s failed", generation)
            self.source[generation] = "failed"
        finally:
            with self._lock:
                self._computing.pop(generation, None)
            done.set()

    def _from_lake(self, generation: str) -> pd.DataFrame | None:
        path = self.lake.collection_map_path
        try:
            frame, made_for = load_layout(path)
        except FileNotFoundError:
            return None
        except Exception:  # noqa: BLE001 - unreadable: compute instead
            log.warning("cannot read %s; computing the map", path)
            return None
        if made_for is not None and made_for != generation:
            return None  # stale: computed for another generation
        self.source[generation] = "laid out by the pipeline (collection_map)"
        return frame
