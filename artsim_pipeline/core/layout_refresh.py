"""The collection map's refresh rule: extend the stored map, or lay it out from scratch.

Plain Python (no Dagster); the ``collection_map`` asset calls :func:`refresh_collection_map`.

Rule: when the stored map (``DataLake.collection_map_path``) is readable, was computed under the fit
of the new generation (``generation.json`` key ``fit.fit_id``; a generation without ``fit`` is its own
fit, mode ``full``), and the new generation reused that fit (``fit.mode == "incremental"``), the map
is extended with :func:`~artsim_pipeline.core.layout.place_new`: paintings already on it keep their
place, removed ones go, and new or re-embedded ones (vectors differing from those of the map's own
generation) are placed. Otherwise (a refit, no or an unreadable map, the map's generation no longer in
the lake, too few of its paintings left) the map is laid out from scratch. Either way the result is
written atomically with the generation id and fit id in its metadata.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .layout import (ATTRS_KEY, CannotPlace, bundle_vectors, changed_ids, compute_layout, load_layout, place_new,
                     save_layout)


@dataclass(frozen=True)
class MapRefresh:
    """What :func:`refresh_collection_map` did: ``mode`` ``full`` or ``placed``, ``placed`` paintings
    placed into the kept map (0 when full), why (``reason``) and how long it took."""

    frame: pd.DataFrame
    generation: str
    fit_id: str
    mode: str
    placed: int
    reason: str
    seconds: float


def generation_fit(generation) -> tuple[str, str]:
    """(mode ``full``/``incremental``, fit id) of a loaded generation (no ``fit``: full, its own id)."""
    fit = generation.manifest.get("fit") or {}
    mode = fit.get("mode") if fit.get("mode") in ("full", "incremental") else "full"
    return mode, str(fit.get("fit_id") or generation.id)


def _extendable(lake, generation, fit_id: str, vectors: np.ndarray, ids: np.ndarray):
    """(stored map, its re-embedded ids, "") when it can be extended, else (None, None, why not)."""
    from .generations import load_generation

    try:
        previous, made_for = load_layout(lake.collection_map_path)
    except FileNotFoundError:
        return None, None, "no stored map"
    except (OSError, ValueError, KeyError) as exc:
        return None, None, f"the stored map is unreadable ({type(exc).__name__})"
    if previous.attrs[ATTRS_KEY].get("fit") != fit_id:
        return None, None, "the stored map was laid out under another fit"
    if made_for == generation.id:
        return previous, np.zeros(0, np.int64), ""
    try:
        old_bundle = load_generation(lake, made_for).bundles["full"]
    except (OSError, ValueError, KeyError, TypeError):
        return None, None, "the stored map's generation is no longer in the lake"
    return previous, changed_ids(old_bundle, vectors, ids), ""


def refresh_collection_map(lake, generation, seed: int = 0) -> MapRefresh:
    """Lay out (or extend, see the module doc) the map of ``generation``'s ``full`` index and save it."""
    started = time.perf_counter()
    fit_mode, fit_id = generation_fit(generation)
    vectors, ids = bundle_vectors(generation.bundles["full"])
    frame, placed = None, 0
    if fit_mode == "incremental":
        previous, changed, reason = _extendable(lake, generation, fit_id, vectors, ids)
        if previous is not None:
            try:
                frame = place_new(previous, vectors, ids, seed=seed, changed=changed)
                placed = int(frame.attrs[ATTRS_KEY]["placed"])
                reason = f"fit {fit_id} kept: {placed} placed, {len(changed)} of them re-embedded"
            except CannotPlace as exc:
                reason = str(exc)
    else:
        reason = "the index was fitted anew" if generation.manifest.get("fit") else "no fit record: a full fit"
    mode = "placed" if frame is not None else "full"
    if frame is None:
        frame = compute_layout(vectors, ids, seed=seed)
    save_layout(frame, lake.collection_map_path, generation=generation.id, fit=fit_id)
    return MapRefresh(frame, generation.id, fit_id, mode, placed, reason, round(time.perf_counter() - started, 2))


__all__ = ["MapRefresh", "generation_fit", "refresh_collection_map"]
