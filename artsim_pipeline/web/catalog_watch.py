"""The server follows the catalog, not only the index generation (issue 32 #3).

``artsim run`` rewrites the catalog (``filtered_paintings`` in ``catalog.duckdb`` and its Parquet copy
``tables/filtered_paintings.parquet``) whenever the NGA source changed, but publishes a new index
generation only when vectors changed: a changed title alone, or a removal whose index rebuild failed,
leaves ``index/CURRENT`` as it was. :class:`CatalogWatch` therefore stamps the catalog's files on every
request (two ``os.stat``; an object-store lake's Parquet copy at most every :data:`REMOTE_POLL_S`
seconds) and, when the stamp changed, one request loads the catalog again and compares its content hash
with the served one. A different catalog is served through a copy of the engine (:func:`with_catalog`:
the same index, models and fusion; a new catalog, per-painting rows and filter table), swapped in by one
reference assignment like a new generation. Every answer reads the catalog of the engine it got, so an
answer is all old or all new catalog; search results, the map, title lookups and thumbnails only ever
show paintings of that catalog (a painting still in the index but gone from the catalog is dropped).
"""

from __future__ import annotations

import copy
import logging
import os
import time
from typing import Any

import pandas as pd

from ..core.catalog import frame_fingerprint
from ..core.lake import DataLake
from ..core.search import SearchEngine
from ..core.search_loaders import catalog_database, catalog_rows, load_catalog

log = logging.getLogger(__name__)

#: How often (seconds) the server stats an object-store lake's catalog copy (one request each time).
REMOTE_POLL_S = 2.0


def catalog_version(catalog: pd.DataFrame) -> str:
    """Content hash of a served catalog (rows by objectid, every column the engine keeps)."""
    return frame_fingerprint(catalog.sort_index().reset_index(drop=True))


def with_catalog(engine: SearchEngine, catalog: pd.DataFrame) -> SearchEngine:
    """A shallow copy of ``engine`` answering from ``catalog`` (its index, fusion and models shared)."""
    fresh = copy.copy(engine)
    fresh.catalog = catalog
    fresh._rows = catalog_rows(catalog)
    fresh._db = catalog_database(catalog)
    return fresh


def _stat(path: Any) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class CatalogWatch:
    """Notices a rewritten catalog and gives the served engine's copy that answers from it."""

    def __init__(self, lake: DataLake) -> None:
        self.lake = lake
        self._stamp: Any = "never"
        self._polled: tuple[float, Any] | None = None
        self.reloads = 0

    def stamp(self) -> Any:
        """The catalog files' state: ``catalog.duckdb`` and the Parquet copy (stat, or the remote info)."""
        database = _stat(self.lake.catalog_db)
        parquet = self.lake.filtered_paintings_parquet
        if not self.lake.is_remote:
            return (database, _stat(parquet))
        now = time.monotonic()
        if self._polled is None or now - self._polled[0] >= REMOTE_POLL_S:
            try:
                info = parquet.fs.info(parquet.path)
                remote = (info.get("ETag") or info.get("etag"), info.get("size"), str(info.get("LastModified")))
            except Exception:  # noqa: BLE001 - absent or unreachable: nothing new to follow
                remote = None
            self._polled = (now, remote)
        return (database, self._polled[1])

    def changed(self) -> bool:
        """True when the catalog's files changed since the served catalog was read (one or two stats)."""
        return self.stamp() != self._stamp

    def adopt(self, stamp: Any) -> None:
        """The served engine read the catalog as it was at ``stamp`` (taken before it was loaded)."""
        self._stamp = stamp

    def follow(self, engine: SearchEngine, served_version: str) -> SearchEngine | None:
        """``engine`` answering from the current catalog when its content differs from ``served_version``;
        None when it is the same (or cannot be read: the served catalog stays)."""
        stamp = self.stamp()
        notes: list[str] = []
        try:
            catalog = load_catalog(self.lake, notes)
        except Exception as exc:  # noqa: BLE001 - keep serving; retried when the files change again
            log.warning("the catalog changed but cannot be read, still serving the one loaded: %s", exc)
            self._stamp = stamp
            return None
        self._stamp = stamp
        if catalog_version(catalog) == served_version:
            return None
        self.reloads += 1
        served = set(engine.catalog.index)
        current = set(catalog.index)
        log.warning("the catalog changed: serving %d paintings (%d gone, %d new)%s", len(current),
                    len(served - current), len(current - served), "; " + "; ".join(notes) if notes else "")
        return with_catalog(engine, catalog)

