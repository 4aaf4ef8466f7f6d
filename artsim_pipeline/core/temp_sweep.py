"""Temp-file sweep: the ``atomic_path`` temp files a killed run leaves in the lake, removed once stale.

Plain Python (no Dagster). Every lake writer goes through ``storage.atomic_path``: a temp file
``.<name>.<random>.tmp`` beside the target, renamed into place when complete. Python-level interrupts
delete their temp file at once; a hard kill (SIGKILL, power loss) orphans it. :func:`sweep_stale_temp_files`
removes such files from one folder once older than an age limit (a younger one may belong to a live run
sharing the lake); :func:`sweep_lake_temp_files` sweeps ``images/`` and every output folder of
:data:`LAKE_TEMP_DIRS` (recursively). An object-store lake never holds temp files (they are local).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from .storage import is_remote
from .lake import DataLake

log = logging.getLogger(__name__)


def sweep_stale_temp_files(images_dir: Path, older_than_s: float, recursive: bool = False) -> int:
    """Remove temp files (``.<name>.*.tmp``, see ``storage.atomic_path``) left by killed runs.

    Only files older than ``older_than_s`` go (a younger one may belong to a live run sharing the lake).
    Returns how many were removed. An object-store lake never holds temp files (they are local): 0.
    """
    if is_remote(images_dir) or not images_dir.is_dir():
        return 0
    cutoff = time.time() - older_than_s
    removed = 0
    for tmp in images_dir.rglob(".*.tmp") if recursive else images_dir.glob(".*.tmp"):
        try:
            if tmp.is_file() and tmp.stat().st_mtime <= cutoff:
                tmp.unlink()
                removed += 1
        except FileNotFoundError:
            pass
    if removed:
        log.info("removed %d stale temp file(s) from %s", removed, images_dir)
    return removed


#: Lake folders (besides ``images/``, swept by every :func:`cache_images` call) where writers leave
#: ``atomic_path`` temp files when killed: swept by :func:`sweep_lake_temp_files`.
LAKE_TEMP_DIRS = ("tables", "image_status", "faces", "embeddings", "index", "reports", "raw")


def sweep_lake_temp_files(lake: DataLake, older_than_s: float = 3600.0) -> int:
    """Sweep stale temp files from the lake's output folders (:data:`LAKE_TEMP_DIRS`, recursively),
    ``images/`` and the catalog's folder (not recursively); returns how many were removed. Run by
    ``filtered_paintings`` on every refresh."""
    removed = sweep_stale_temp_files(lake.images_dir, older_than_s)
    removed += sweep_stale_temp_files(lake.work_dir, older_than_s)  # a new catalog.duckdb's temp file
    for name in LAKE_TEMP_DIRS:
        removed += sweep_stale_temp_files(lake.root / name, older_than_s, recursive=True)
    return removed


__all__ = ["LAKE_TEMP_DIRS", "sweep_lake_temp_files", "sweep_stale_temp_files"]
