"""A search's last stage: its candidates presented as the top ``k`` results, explained (plain Python).

* :func:`present_results` — the metadata re-rank of the candidates against the query painting's catalog row
  (:func:`~artsim_pipeline.core.scoring.rerank`; an image query has none), then each of the top ``k`` as a
  :class:`~artsim_pipeline.core.search_results.SearchResult` with its plain cosine, its explanation and, for an
  objectid query, its near-duplicate label (cosine at the calibration's near-duplicate level);
* :func:`explanations` — what agreed (:mod:`~artsim_pipeline.core.explain`): the query's per-block projection
  against each painting's stored one, per backbone and tap depth, in words, plus the metadata bonuses that
  applied; None where the served generation has no explanations;
* :func:`stored_projection` — an indexed painting's stored per-block projection (the query side of an objectid
  query's explanations).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from .explain import Explainer, summary as explanation_summary
from .scoring import ScoringWeights, metadata_bonuses, rerank
from .search_loaders import CATALOG_COLUMNS
from .search_results import SearchResult, make_result


def stored_projection(explainer: Explainer | None, objectid: int) -> np.ndarray | None:
    """The stored per-block projection of an indexed painting (None without explanations or the painting)."""
    if explainer is None:
        return None
    row = explainer.rows([objectid])[0]
    return None if np.isnan(row).any() else row


def explanations(explainer: Explainer | None, query: np.ndarray | None, query_meta: dict[str, Any],
                 ranked: pd.DataFrame, rows: Mapping[int, dict[str, Any]],
                 weights: ScoringWeights) -> list[dict[str, Any] | None]:
    """Each ranked painting's explanation (:mod:`~artsim_pipeline.core.explain`): the parts of the fused
    vector that agreed, and the metadata bonuses that applied; None where the index has none."""
    ids = ranked["objectid"].to_numpy(dtype=np.int64)
    if explainer is None or query is None:
        return [None] * len(ids)
    out = []
    for oid, why in zip(ids, explainer.explain(query, ids)):
        if why is not None:
            bonuses = metadata_bonuses(query_meta, rows[int(oid)], weights) if query_meta else {}
            why["metadata"] = bonuses
            why["summary"] = explanation_summary(why["levels"], bonuses, weights.date_window_years)
        out.append(why)
    return out


def present_results(rows: Mapping[int, dict[str, Any]], query_meta: dict[str, Any], cand_ids: np.ndarray,
                    cand_scores: np.ndarray, cosines: np.ndarray, weights: ScoringWeights, k: int, *,
                    explainer: Explainer | None, query_projection: np.ndarray | None, query_objectid: int | None,
                    duplicate_at: float | None, image_path: Callable[[int], Path | None]) -> list[SearchResult]:
    """The top ``k`` results: the metadata re-rank, each one's explanation and near-duplicate label (a painting
    other than ``query_objectid`` whose cosine reaches ``duplicate_at``; None: no labels)."""
    candidates = pd.DataFrame([rows[int(i)] for i in cand_ids], columns=list(CATALOG_COLUMNS))
    candidates["visual"] = cand_scores.astype(np.float64)
    ranked = rerank(query_meta, candidates, weights, k)
    cosine_of = dict(zip(cand_ids.tolist(), cosines.astype(np.float64).tolist()))
    ranked["cosine"] = [cosine_of[int(i)] for i in ranked["objectid"]]
    whys = explanations(explainer, query_projection, query_meta, ranked, rows, weights)
    results = []
    for i, (row, why) in enumerate(zip(ranked.itertuples(index=False), whys)):
        oid = int(row.objectid)
        path = image_path(oid)
        near_duplicate = duplicate_at is not None and row.objectid != query_objectid and row.cosine >= duplicate_at
        results.append(make_result(i + 1, rows[oid], str(path) if path else "", row, why, near_duplicate))
    return results


__all__ = ["explanations", "present_results", "stored_projection"]
