"""The re-ranking study: every option of :mod:`artsim_pipeline.core.rerank`, chosen on held-out artists.

Plain Python (no Dagster). Re-ranking has no training, but its parameters are chosen, so they are chosen
where they are not measured at the same time:

1. for each method (``qe``, ``dba``, ``dba_qe``) every parameter set of :data:`GRID` is measured on the
   held-out artist splits of the learned-head study (:func:`~artsim_pipeline.core.head.heldout_artists`,
   seeds :data:`~.learned.SPLIT_SEEDS`): leave-one-out same-artist retrieval among the held-out paintings
   only, their own database augmented without the rest (the honest protocol of
   :class:`~artsim_pipeline.core.rerank.LeaveOneOut`); the mean P@5 over the splits picks the parameters
   (ties: mean mAP, then the grid's order);
2. each method with its chosen parameters, ``none`` and the settings' option are measured on all queries
   (the protocol's queries and sample).

Block ``reranking``: ``{available, heldout_seeds, configured: label, configured_wins: bool, rows: [{label,
method, dba_top, qe_top, alpha, chosen, configured, heldout_precision_at_5, heldout_map, precision_at_5,
map, n_queries}], grid: [{label, heldout_precision_at_5, heldout_map}]}``. ``configured_wins``: the
settings' option beats ``none`` on the held-out splits and on all queries (P@5 and mAP) — the rule an
option must meet to be the default.
"""

from __future__ import annotations

from itertools import product
from typing import Any, Callable

import numpy as np

from ..head import heldout_artists, split_rows, splittable_artists
from ..rerank import RerankOptions
from .learned import SPLIT_SEEDS
from .protocol import ItemMeta, evaluate_method
from .sampling import QuerySample

K = 5
_TOPS = (1, 3, 5, 8)
_ALPHAS = (1.0, 3.0)
#: Parameter sets measured per method on the held-out splits.
GRID: dict[str, list[RerankOptions]] = {
    "qe": [RerankOptions("qe", qe_top=n, alpha=a) for n, a in product(_TOPS, _ALPHAS)],
    "dba": [RerankOptions("dba", dba_top=m, alpha=a) for m, a in product(_TOPS, _ALPHAS)],
    "dba_qe": [RerankOptions("dba_qe", dba_top=m, qe_top=n, alpha=a)
               for m, n, a in product(_TOPS, (1, 3, 5), _ALPHAS)],
}


def _measure(vectors: np.ndarray, meta: ItemMeta, option: RerankOptions,
             sample: QuerySample | None) -> tuple[float, float, int]:
    result = evaluate_method(vectors, meta, "visual", "artist", ks=(K,), sample=sample, rerank=option)
    return result.mean(f"precision@{K}"), result.mean("map"), result.n_queries


def evaluate_reranking(
    vectors: np.ndarray,
    meta: ItemMeta,
    configured: RerankOptions,
    *,
    seeds: tuple[int, ...] = SPLIT_SEEDS,
    grid: dict[str, list[RerankOptions]] | None = None,
    sample: QuerySample | None = QuerySample(),
    log: Callable[[str], None] = lambda _msg: None,
) -> dict[str, Any]:
    """The report's ``reranking`` block (module doc) for fused ``vectors [N, d]`` (rows as ``meta``)."""
    grid = GRID if grid is None else grid
    if len(meta) != len(vectors):
        raise ValueError(f"metadata for {len(meta)} paintings, vectors for {len(vectors)}")
    n_artists = len(splittable_artists(meta.artist_keys))
    if n_artists < 3:
        return {"available": False,
                "reason": f"{n_artists} artists with at least 2 paintings; a held-out third needs at least 3"}
    x = np.asarray(vectors, dtype=np.float32)
    splits = []
    for seed in seeds:
        held_rows = split_rows(meta.artist_keys, heldout_artists(meta.artist_keys, seed))[1]
        splits.append((x[held_rows], meta.subset(held_rows)))

    def heldout(option: RerankOptions) -> tuple[float, float]:
        values = [_measure(v, m, option, None)[:2] for v, m in splits]
        return float(np.mean([p for p, _ in values])), float(np.mean([a for _, a in values]))

    measured: dict[RerankOptions, tuple[float, float]] = {}
    for options in grid.values():
        for option in options:
            measured[option] = heldout(option)
    for option in (RerankOptions("none"), configured):
        if option not in measured:
            measured[option] = heldout(option)
    chosen = {method: max(options, key=lambda o: measured[o]) for method, options in grid.items() if options}
    log(f"eval: reranking: {len(measured)} options on {len(seeds)} held-out splits; chosen "
        + ", ".join(o.label for o in chosen.values()))

    rows = []
    for option in dict.fromkeys([RerankOptions("none"), *chosen.values(), configured]):
        p_all, map_all, n_queries = _measure(x, meta, option, sample)
        p_held, map_held = measured[option]
        rows.append({
            "label": option.label, "method": option.method, "dba_top": option.dba_top, "qe_top": option.qe_top,
            "alpha": option.alpha, "chosen": option in chosen.values(), "configured": option == configured,
            "heldout_precision_at_5": p_held, "heldout_map": map_held,
            "precision_at_5": p_all, "map": map_all, "n_queries": n_queries,
        })
    by_label = {row["label"]: row for row in rows}
    none, mine = by_label[RerankOptions("none").label], by_label[configured.label]
    wins = configured.method != "none" and all(
        mine[key] > none[key] for key in ("heldout_precision_at_5", "heldout_map", "precision_at_5", "map"))
    return {
        "available": True,
        "heldout_seeds": [int(s) for s in seeds],
        "configured": configured.label,
        "configured_wins": bool(wins),
        "rows": rows,
        "grid": [{"label": o.label, "heldout_precision_at_5": v[0], "heldout_map": v[1]}
                 for o, v in measured.items()],
    }
