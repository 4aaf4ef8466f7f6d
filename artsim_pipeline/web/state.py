"""The server's long-lived state: one :class:`SearchEngine` (hot-reloaded when ``index/CURRENT``
changes), the collection map per generation and a small thumbnail cache.

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
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import math
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd
from PIL import Image

from ..core.layout import bundle_layout, load_layout
from ..core.preprocessing import oriented
from ..core.catalog_text import CatalogText, facets
from ..core.search import SearchEngine
from ..core.search_query import IndexNotBuiltError, QueryError
from ..core.storage import readable
from ..core.lake import DataLake
from .catalog_watch import CatalogWatch, catalog_version

log = logging.getLogger(__name__)

EngineFactory = Callable[[], SearchEngine]

#: How often (seconds) the server reads ``index/CURRENT`` of an object-store lake (one GET each time).
REMOTE_POLL_S = 2.0


@dataclass
class Served:
    """One engine, as served: searches on it run concurrently (see :class:`QueryGate` for uploads)."""

    engine: SearchEngine
    loaded_at: float = field(default_factory=time.time)
    #: image search: ``ready`` (models loaded), ``loading`` (in the background; uploads wait) or ``failed``
    image_search: str = "ready"
    image_search_error: str | None = None

    @property
    def generation(self) -> str | None:
        return self.engine.generation

    @functools.cached_property
    def catalog_text(self) -> CatalogText:
        """The catalog's text folded for lookups by title or artist (:mod:`~artsim_pipeline.core.catalog_text`):
        computed once per served generation, not on every lookup."""
        return CatalogText(self.engine.catalog)

    @functools.cached_property
    def facets(self) -> dict[str, Any]:
        """What the search filters can offer on this catalog, with counts
        (:func:`~artsim_pipeline.core.catalog_text.facets`)."""
        return facets(self.engine.catalog)

    @functools.cached_property
    def catalog_version(self) -> str:
        """Content hash of the catalog this engine answers from (:mod:`~artsim_pipeline.web.catalog_watch`)."""
        return catalog_version(self.engine.catalog)


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


def public_message(text: str, lake: DataLake) -> str:
    """``text`` for a response body: the lake's absolute root becomes ``<data lake>`` and other absolute
    paths are cut to their last two parts (the server log keeps the full message)."""
    roots = {str(lake.root)}
    with contextlib.suppress(Exception):
        roots.add(str(Path(str(lake.root)).resolve()))
    for root in sorted(roots, key=len, reverse=True):
        if len(root) > 1:
            text = text.replace(root, "<data lake>")
    return _ABSOLUTE_PATH.sub(lambda m: ".../" + "/".join(m.group(0).rstrip("/").split("/")[-2:]), text)


_ABSOLUTE_PATH = re.compile(r"(?<![\w<>.:/])/(?:[\w.\-]+/){2,}[\w.\-]*")


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
        from ..core.generations import current_generation_id

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


class ThumbnailCache:
    """Resized JPEG thumbnails of cached images, in memory (LRU bounded by bytes)."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, tuple[bytes, str]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def etag_for(path: Path, size: int) -> str:
        st = path.stat()
        key = f"{path.name}:{st.st_size}:{st.st_mtime_ns}:{size}".encode()
        return '"' + hashlib.sha1(key).hexdigest()[:20] + '"'

    def get(self, path: Path, size: int) -> tuple[bytes, str]:
        etag = self.etag_for(path, size)
        key = (str(path), size, etag)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        data = make_thumbnail(path, size)
        with self._lock:
            self._items[key] = (data, etag)
            self._bytes += len(data)
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, (old, _) = self._items.popitem(last=False)
                self._bytes -= len(old)
        return data, etag


def _fitted(path: Path, size: int) -> Image.Image:
    """The image at ``path`` as displayed (EXIF orientation applied), fitted into ``size``×``size``
    (JPEG draft decoding: cheap)."""
    with Image.open(readable(path)) as image:
        if image.format == "JPEG":
            image.draft("RGB", (size, size))
        image = oriented(image).convert("RGB")
        image.thumbnail((size, size), Image.Resampling.LANCZOS if size > 96 else Image.Resampling.BILINEAR)
        return image


def make_thumbnail(path: Path, size: int) -> bytes:
    """JPEG of the image at ``path`` fitted into ``size``×``size``."""
    out = io.BytesIO()
    _fitted(path, size).save(out, format="JPEG", quality=82, optimize=size > 96)
    return out.getvalue()


#: Atlas cell size (px) by collection size: the atlas stays under ~6,000 px a side (browsers' image limits).
def atlas_cell(n: int) -> int:
    return 32 if n <= 16384 else 16


def make_atlas(paths: list[Path | None], cell: int) -> tuple[bytes, int]:
    """One JPEG holding every image of ``paths`` (in order) fitted and centred in a ``cell``-pixel square,
    row by row, ``cols`` per row; returns (JPEG, cols). A missing or unreadable image leaves its cell grey."""
    cols = max(1, math.ceil(math.sqrt(len(paths))))
    rows = max(1, math.ceil(len(paths) / cols))
    sheet = Image.new("RGB", (cols * cell, rows * cell), (58, 58, 62))
    for i, path in enumerate(paths):
        if path is None:
            continue
        try:
            image = _fitted(path, cell)
        except Exception:  # noqa: BLE001 - one bad file leaves one grey cell
            continue
        x, y = (i % cols) * cell, (i // cols) * cell
        sheet.paste(image, (x + (cell - image.width) // 2, y + (cell - image.height) // 2))
    out = io.BytesIO()
    sheet.save(out, format="JPEG", quality=80)
    return out.getvalue(), cols


class AtlasCache:
    """The map's atlas (:func:`make_atlas`) of the served generation, built once, on first request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._atlas: tuple[str, bytes, int, int, str] | None = None  # generation, jpeg, cell, cols, etag

    def get(self, served: Served, objectids: list[int]) -> tuple[bytes, int, int, str]:
        generation = f"{served.generation or ''}:{served.catalog_version}"  # the catalog may change alone
        with self._lock:  # one build at a time; the others wait for it and share it
            if self._atlas is None or self._atlas[0] != generation:
                cell = atlas_cell(len(objectids))
                data, cols = make_atlas([served.engine.image_path(o) for o in objectids], cell)
                etag = '"atlas-' + hashlib.sha1(data).hexdigest()[:20] + '"'
                self._atlas = (generation, data, cell, cols, etag)
            _, data, cell, cols, etag = self._atlas
        return data, cell, cols, etag


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
