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

Regions (:mod:`.map_regions`): an extended map carries its regions over (kept paintings keep their
region, new ones join their nearest kept neighbours' region); a from-scratch map (or a stored map
without regions) is clustered anew. Either way the regions are named again from the catalog
(``filtered_paintings``; unnamed, ``region <n>``, when the catalog cannot be read) and stored with
the map.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .generations import REQUIRED_VARIANT, load_generation
from .layout import (ATTRS_KEY, CannotPlace, bundle_vectors, changed_ids, compute_layout, load_layout, place_new,
                     save_layout)
from .map_regions import carry_regions, describe_regions, fit_regions, noise_share
from .search_loaders import load_catalog


@dataclass(frozen=True)
class MapRefresh:
    """What :func:`refresh_collection_map` did: the map (with its ``region`` column), its ``regions``
    (:func:`~.map_regions.describe_regions`) and the share of paintings in none, ``mode`` ``full`` or
    ``placed``, ``placed`` paintings placed into the kept map (0 when full), why (``reason``) and how
    long it took."""

    frame: pd.DataFrame
    regions: list
    noise_share: float
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
        old_bundle = load_generation(lake, made_for).bundles[REQUIRED_VARIANT]
    except (OSError, ValueError, KeyError, TypeError):
        return None, None, "the stored map's generation is no longer in the lake"
    return previous, changed_ids(old_bundle, vectors, ids), ""


def refresh_collection_map(lake, generation, seed: int = 0) -> MapRefresh:
    """Lay out (or extend, see the module doc) the map of ``generation``'s ``full`` index and save it."""
    started = time.perf_counter()
    fit_mode, fit_id = generation_fit(generation)
    vectors, ids = bundle_vectors(generation.bundles[REQUIRED_VARIANT])
    frame, placed, previous = None, 0, None
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
    kept = previous[~previous["objectid"].isin(changed)] if mode == "placed" else None  # re-embedded: vote anew
    regions = name_regions(lake, frame, kept, seed=seed)
    save_layout(frame, lake.collection_map_path, generation=generation.id, fit=fit_id, regions=regions)
    return MapRefresh(frame, regions, noise_share(frame["region"].to_numpy()), generation.id, fit_id, mode, placed,
                      reason, round(time.perf_counter() - started, 2))


def map_catalog(lake) -> pd.DataFrame | None:
    """The catalog the regions are named from (indexed by objectid), None when it cannot be read."""
    try:
        return load_catalog(lake, [])
    except Exception:  # noqa: BLE001 - the regions stay unnamed ("region <n>"), the map still stands
        return None


def name_regions(lake, frame: pd.DataFrame, previous: pd.DataFrame | None, seed: int = 0) -> list:
    """Set ``frame["region"]`` (carried over from ``previous`` when it has regions, else clustered) and
    return the regions' descriptions, named from the lake's catalog."""
    if previous is not None and "region" in previous.columns:
        frame["region"] = carry_regions(previous, frame)
    else:
        frame["region"] = fit_regions(frame, seed=seed)
    return describe_regions(frame, map_catalog(lake))


__all__ = ["MapRefresh", "generation_fit", "map_catalog", "name_regions", "refresh_collection_map"]
