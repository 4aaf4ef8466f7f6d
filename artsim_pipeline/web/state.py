"""The server's long-lived engine: one :class:`SearchEngine`, as served (:class:`~artsim_pipeline.web.served.Served`),
held by :class:`EngineHolder` and hot-reloaded when ``index/CURRENT`` changes.

Hot reload: every request stats ``index/CURRENT`` (one ``os.stat``, a few microseconds; on an
object-store lake the pointer is read at most every :data:`REMOTE_POLL_S` seconds). When its
(inode, size, mtime) (remote: its content) changes and the id it names differs from the served generation, one request
builds a complete new engine (index, catalog, models) while the others keep using the old one; the
new engine then replaces the old one in a single reference assignment, so a request sees one whole
engine, old or new, never a mix. A failed reload keeps the old engine serving and is retried when the
pointer changes again. The catalog is followed the same way when a refresh rewrites it without a new
generation (:mod:`~artsim_pipeline.web.catalog_watch`).

Models: an engine built without them (``artsim serve``) is served at once and loads them in a background
thread (:func:`load_models_in_background`; an image query arriving first waits for them); a reload loads
the new engine's models before the swap, so uploads never wait on a reload.

The server's other state has its own modules, whose names this one also offers: the served engine
(:mod:`~artsim_pipeline.web.served`), admission of image queries
(:mod:`~artsim_pipeline.web.gate`), the collection map per generation (:mod:`~artsim_pipeline.web.map_cache`),
thumbnails and the map's atlas (:mod:`~artsim_pipeline.web.thumbnails`) and response messages without the
server's paths (:mod:`~artsim_pipeline.web.public`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable

import pandas as pd
from PIL import Image

from ..core.generations import current_generation_id
from ..core.search import SearchEngine
from ..core.search_query import IndexNotBuiltError, QueryError
from ..core.lake import DataLake
from .catalog_watch import CatalogWatch
from .gate import Busy, QueryGate
from .map_cache import MapCache
from .public import public_message
from .served import Served
from .thumbnails import AtlasCache, ThumbnailCache, atlas_cell, make_atlas, make_thumbnail

__all__ = ["REMOTE_POLL_S", "AtlasCache", "Busy", "EngineHolder", "MapCache", "QueryGate", "Served", "ThumbnailCache",
           "atlas_cell", "catalog_row", "load_models_in_background", "make_atlas", "make_thumbnail", "public_message"]

log = logging.getLogger(__name__)

EngineFactory = Callable[[], SearchEngine]

#: How often (seconds) the server reads ``index/CURRENT`` of an object-store lake (one GET each time).
REMOTE_POLL_S = 2.0


class EngineHolder:
    """Loads the engine once and swaps it atomically when a new index generation is published."""

    def __init__(self, lake: DataLake, factory: EngineFactory) -> None:
        self.lake = lake
        self._factory = factory
        self._served: Served | None = None
        self._error: str | None = None
        self._stamp: tuple[int, int, int] | None | str = "never"
        self._reload_lock = threading.Lock()
        self._polled: tuple[float, tuple | None] | None = None  # remote lake: (when, stamp) of the last read
        self.reloads = 0
        self.listeners: list[Callable[[Served], None]] = []
        self.catalog = CatalogWatch(lake)  # the catalog is followed too, not only the generation

    def _pointer_stamp(self) -> tuple | None:
        if self.lake.is_remote:
            now = time.monotonic()
            if self._polled is None or now - self._polled[0] >= REMOTE_POLL_S:
                generation = self._pointer_id()
                self._polled = (now, ("remote", generation) if generation else None)
            return self._polled[1]
        try:
            st = os.stat(self.lake.index_pointer_path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _pointer_id(self) -> str | None:
        try:
            return current_generation_id(self.lake)  # the id checked, as every reader of the pointer does
        except ValueError:  # a damaged pointer names nothing (the engine keeps what it serves)
            return None

    def get(self) -> Served:
        """The engine to answer this request with; raises :class:`IndexNotBuiltError` / :class:`QueryError`."""
        stamp = self._pointer_stamp()
        if stamp != self._stamp:
            # only one request reloads; the others keep the old engine (or wait when there is none yet)
            if self._reload_lock.acquire(blocking=self._served is None):
                try:
                    if stamp != self._stamp:
                        self._reload(stamp)
                finally:
                    self._reload_lock.release()
        served = self._served
        if served is None:
            raise IndexNotBuiltError(self._error or "no search index; run `artsim run` first")
        return self._follow_catalog(served)

    def _follow_catalog(self, served: Served) -> Served:
        """``served``, or its engine answering from the catalog when the catalog changed (one request
        reloads it, the others keep the served one): see :mod:`~artsim_pipeline.web.catalog_watch`."""
        if served.image_search == "loading":
            # the copy shares the models only once they are in (one load per server): followed right after
            return served
        if not self.catalog.changed() or not self._reload_lock.acquire(blocking=False):
            return served
        try:
            current = self._served or served
            engine = self.catalog.follow(current.engine, current.catalog_version)
            if engine is not None:  # the same one-reference swap as a new generation
                self._served = current = Served(engine, image_search=current.image_search,
                                                image_search_error=current.image_search_error)
            return current
        finally:
            self._reload_lock.release()

    def _reload(self, stamp: tuple[int, int, int] | None) -> None:
        current = self._served
        if current is not None and stamp is not None and self._pointer_id() == current.generation:
            self._stamp = stamp  # touched, not changed
            return
        started = time.perf_counter()
        catalog_stamp = self.catalog.stamp()  # before the engine reads the catalog: a later change is followed
        try:
            engine = self._factory()
            if current is not None and not engine.models_loaded:
                engine.load_models()  # a reload: the old engine answers uploads until the new one has its models
        except (IndexNotBuiltError, QueryError) as exc:
            self._error = str(exc)
            self._stamp = stamp
            if current is not None:
                log.warning("index reload failed, still serving generation %s: %s", current.generation, exc)
            return
        except Exception as exc:  # noqa: BLE001 - keep serving what we have; retried on the next change
            self._error = f"the search index could not be loaded ({type(exc).__name__}: {exc})"
            self._stamp = stamp
            log.exception("index reload failed")
            return
        served = Served(engine)
        if not engine.models_loaded:  # the first engine: objectid queries and pages at once, models behind them
            served.image_search = "loading"
            threading.Thread(target=load_models_in_background, args=(served,), daemon=True,
                             name="artsim-models").start()
        self._served = served  # THE swap: one reference assignment
        self._stamp, self._error = stamp, None
        self.catalog.adopt(catalog_stamp)
        if current is not None:
            self.reloads += 1
            log.warning("serving index generation %s (was %s), loaded in %.1fs", served.generation,
                        current.generation, time.perf_counter() - started)
        for listener in self.listeners:
            try:
                listener(served)
            except Exception:  # noqa: BLE001
                log.exception("listener failed")

    @property
    def error(self) -> str | None:
        return self._error


def load_models_in_background(served: Served) -> None:
    """Load ``served``'s backbones (an upload arriving meanwhile waits for them in ``engine.models``), warm
    them up with one small forward pass (the first real upload then runs at model speed) and say so in
    ``served.image_search``."""
    started = time.perf_counter()
    try:
        engine = served.engine
        engine.forward(engine.prepare(Image.new("RGB", (64, 64), (128, 128, 128))))
    except Exception as exc:  # noqa: BLE001 - uploads then get 503 with the reason; objectid queries go on
        served.image_search, served.image_search_error = "failed", str(exc)
        log.warning("artsim serve: the models could not be loaded: %s", exc)
        return
    served.image_search = "ready"
    log.warning("artsim serve: image search ready (models loaded in %.1fs)", time.perf_counter() - started)

def catalog_row(engine: SearchEngine, objectid: int) -> dict[str, Any] | None:
    """The painting's catalog row (``SearchEngine.catalog``), None when it is not in the catalog."""
    catalog = engine.catalog
    if int(objectid) not in catalog.index:
        return None
    row = catalog.loc[int(objectid)].to_dict()
    return {k: (None if _missing(v) else v) for k, v in row.items()}


def _missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False
