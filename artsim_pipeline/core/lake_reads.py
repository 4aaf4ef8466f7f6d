"""Reading the data lake: the one home of each reader the assets, the status and search share (plain Python).

================================  ==============================================================
reader                            returns
================================  ==============================================================
:func:`catalog_paintings`         ``tables/filtered_paintings.parquet`` (optionally some columns,
                                  one batch), sorted by objectid
:func:`current_catalog`           (active batch keys, objectids now in the catalog)
:func:`current_collection`        per variant, the aligned vectors (:class:`.collection.CollectionVectors`)
                                  of the paintings now in the catalog, every model's fusion blocks
:func:`usable_images`             one batch's usable images (``objectid, uuid, path``): the rows of
                                  ``image_status/<batch>.parquet`` whose status is in
                                  :data:`.image_status.USABLE`
================================  ==============================================================

The served generation is read through :mod:`.generations` (``current_generation_id``, ``load_generation``),
which checks the pointer's id and the files' checksums.

One collection read per run: :func:`current_collection` keeps the last collection it read (every stored
block) for a local lake and hands it out again while none of the files it came from changed (same size and
modification time), so ``pca_model``, ``faiss_index`` and ``eval_report`` in one in-process run read it once.
"""

from __future__ import annotations

import threading
from typing import Iterable, Sequence

import pandas as pd

from .collection import CollectionVectors, load_collection
from .fusion import in_tap_set
from .image_status import USABLE
from .storage import read_parquet
from .lake import DataLake

_cache_lock = threading.Lock()
_cached: tuple[tuple, dict[str, CollectionVectors]] | None = None


def catalog_paintings(lake: DataLake, columns: Sequence[str] | None = None, batch: str | None = None) -> pd.DataFrame:
    """The filtered catalog (``filtered_paintings``), one row per painting, sorted by objectid."""
    filters = [("batch_key", "=", batch)] if batch is not None else None
    wanted = None if columns is None else list(dict.fromkeys(["objectid", *columns]))
    paintings = read_parquet(lake.filtered_paintings_parquet, columns=wanted, filters=filters)
    return paintings.sort_values("objectid").reset_index(drop=True)


def current_catalog(lake: DataLake) -> tuple[list[str], list[int]]:
    """Active batch keys and the objectids currently in ``filtered_paintings``."""
    paintings = catalog_paintings(lake, columns=["batch_key"])
    return sorted(paintings["batch_key"].dropna().unique().tolist()), paintings["objectid"].astype(int).tolist()


def usable_images(lake: DataLake, batch: str) -> pd.DataFrame:
    """The batch's images the embeddings and face crops may use: ``objectid, uuid, path`` (+ status columns)."""
    status = read_parquet(lake.image_status_path(batch))
    usable = status[status["status"].isin(USABLE)].reset_index(drop=True)
    usable["path"] = [str(lake.image_path(uuid)) for uuid in usable["uuid"]]
    return usable


def _signature(lake: DataLake, models: tuple[str, ...], batches: Iterable[str]) -> tuple | None:
    """Size and mtime of every file a collection read depends on (None for a remote lake: not cached)."""
    if lake.is_remote:
        return None
    paths = [lake.filtered_paintings_parquet] + [lake.embeddings_path(m, b) for m in models for b in batches]
    stats = []
    for path in paths:
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        stats.append((str(path), st.st_ino, st.st_size, st.st_mtime_ns))  # atomic writes: a new inode
    return (str(lake.root), models, tuple(stats))


def current_collection(lake: DataLake, models: Sequence[str], tap_set: str | None = None) -> dict[str, CollectionVectors]:
    """The aligned vectors (per variant) of the paintings now in the catalog.

    ``tap_set`` (``none`` | ``mean`` | ``mean+std``) keeps the fusion blocks of that tap set; ``None`` every
    stored block (the evaluation's tap-set ablations). Repeated reads of unchanged files come from memory.
    """
    global _cached
    models = tuple(models)
    active, ids = current_catalog(lake)
    key = _signature(lake, models, active)
    with _cache_lock:
        hit = _cached[1] if _cached is not None and key is not None and _cached[0] == key else None
    if hit is None:
        hit = load_collection(lake, models, active, keep_ids=ids, tap_set=None)
        for vectors in hit.values():  # shared by every caller of this run: nobody may write into it
            for array in (vectors.objectids, vectors.uuids, *vectors.blocks.values()):
                array.flags.writeable = False
        with _cache_lock:
            _cached = (key, hit) if key is not None else None
    if tap_set is None:
        return hit
    return {
        variant: CollectionVectors(vectors.variant, vectors.objectids, vectors.uuids,
                                   {name: v for name, v in vectors.blocks.items() if in_tap_set(name, tap_set)})
        for variant, vectors in hit.items()
    }
