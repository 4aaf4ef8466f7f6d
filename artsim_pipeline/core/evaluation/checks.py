"""Inputs and side checks of the evaluation (plain Python, no Dagster).

* :class:`VariantInput`: one variant's model blocks (rows = objectids) and its fitted fusion;
  :func:`fused_vectors` gives the pipeline's fused vectors (the fusion file, else refitted the same way),
  :func:`unprojected_vectors` the same without the learned head a served fusion may carry;
* :func:`face_comparison`: visual/artist P@K of the full painting vs the face crop, on the paintings
  that have a face vector (like with like);
* :func:`index_check_rows`: the served ANN index vs exact search, neighbour overlap (recall vs exact
  @K) and same-artist precision@K, over every painting or the rows given (the report's sample);
  ``{n_queries, n_checked, n_paintings, recall_vs_exact_at_K, precision_at_K}``;
  :func:`exact_top_rows` is its exact search (``exact_topk``'s rows, without argpartitioning whole blocks);
* :func:`examples`: a few deterministic queries with their top results (for the examples plot).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..fusion import FusionModel, fit_fusion, tap_blocks, transform, with_projection
from ..recall import check_vectors, exact_topk
from ..metrics import l2_rows
from .protocol import ItemMeta, evaluate_method, relevant_counts

N_EXAMPLES = 4


@dataclass
class VariantInput:
    """One variant's vectors: model blocks (rows = objectids, sorted) and the fitted fusion, if any."""

    objectids: np.ndarray
    uuids: np.ndarray
    blocks: dict[str, np.ndarray]
    fusion: FusionModel | None = None


def fused_vectors(variant: VariantInput, pca_dim: int, taps: str | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """The variant's fused vectors and a description of the fusion (refitted on the ``taps`` blocks,
    all blocks when None, if the variant has no fusion file)."""
    fusion = variant.fusion
    source = "fusion file"
    if fusion is None:
        blocks: Mapping[str, np.ndarray] = variant.blocks if taps is None else tap_blocks(variant.blocks, taps)
        fusion = fit_fusion(dict(blocks), n_components=pca_dim)
        source = "refitted (no fusion file)"
    info = {"source": source, **fusion.options, "models": list(fusion.model_names)}
    if fusion.projection is not None:
        info["similarity_head"] = f"learned projection to {fusion.projection.shape[0]} dims"
    return transform(fusion, variant.blocks), info


def unprojected_vectors(variant: VariantInput, vectors: np.ndarray) -> np.ndarray:
    """``vectors`` without the learned head a served fusion may carry (the PCA fusion alone)."""
    if variant.fusion is None or variant.fusion.projection is None:
        return vectors
    return transform(with_projection(variant.fusion, None), variant.blocks)


def sorted_variant(variant: VariantInput) -> VariantInput:
    """The variant with its rows sorted by objectid."""
    order = np.argsort(variant.objectids, kind="stable")
    if np.all(order == np.arange(len(order))):
        return variant
    return VariantInput(
        variant.objectids[order], variant.uuids[order], {m: v[order] for m, v in variant.blocks.items()}, variant.fusion
    )


def examples(
    vectors: np.ndarray, meta: ItemMeta, uuids: np.ndarray, n: int = N_EXAMPLES, top: int = 5
) -> list[dict[str, Any]]:
    """A few deterministic queries (evenly spaced by objectid among labelled ones) with their top results."""
    labelled = np.flatnonzero(meta.artist_labels >= 0)
    if len(labelled) < 2:
        return []
    picks = labelled[np.unique(np.linspace(0, len(labelled) - 1, min(n, len(labelled))).round().astype(int))]
    scores, rows = exact_topk(l2_rows(vectors).astype(np.float32), l2_rows(vectors[picks]).astype(np.float32), top,
                              exclude_self=True, query_rows=picks)
    out = []
    for q, row, score in zip(picks, rows, scores):
        out.append({
            "objectid": int(meta.objectids[q]),
            "uuid": str(uuids[q]),
            "artist": meta.artists[q],
            "results": [
                {
                    "objectid": int(meta.objectids[r]),
                    "uuid": str(uuids[r]),
                    "artist": meta.artists[r],
                    "score": float(s),
                    "same_artist": bool(meta.artist_labels[r] == meta.artist_labels[q]),
                }
                for r, s in zip(row, score)
            ],
        })
    return out


def face_comparison(
    full: VariantInput, full_vectors: np.ndarray, face: VariantInput | None, meta_full: ItemMeta,
    ks: Sequence[int], pca_dim: int, taps: str | None = None,
) -> dict[str, Any]:
    """Visual/artist P@K of the full vs the face variant over the paintings that have a face vector."""
    if face is None or len(face.objectids) < 2:
        return {"available": False, "reason": "fewer than 2 paintings with a face vector"}
    face = sorted_variant(face)
    pos = {int(o): i for i, o in enumerate(full.objectids)}
    keep = np.array([int(o) in pos for o in face.objectids])
    face_ids = face.objectids[keep]
    rows_full = np.array([pos[int(o)] for o in face_ids], dtype=np.int64)
    face_vectors, face_fusion = fused_vectors(
        VariantInput(face_ids, face.uuids[keep], {m: v[keep] for m, v in face.blocks.items()}, face.fusion), pca_dim, taps
    )
    sub_meta = meta_full.subset(rows_full)
    results = {
        "face variant, face subset": evaluate_method(face_vectors, sub_meta, "visual", "artist", ks),
        "full variant, face subset": evaluate_method(full_vectors[rows_full], sub_meta, "visual", "artist", ks),
        "full variant, all paintings as candidates": evaluate_method(
            full_vectors, meta_full, "visual", "artist", ks, query_rows=rows_full
        ),
    }
    rows = []
    for name, res in results.items():
        row = {"name": name, "n_queries": res.n_queries, "n_candidates": res.n_candidates, "map": res.mean("map")}
        row.update({f"precision_at_{k}": res.mean(f"precision@{k}") for k in ks})
        rows.append(row)
    return {
        "available": True,
        "n_paintings_with_face": int(len(face_ids)),
        "face_fusion": face_fusion,
        "note": "queries: paintings with a face vector and another painting by the same artist among the candidates; "
                "the first two rows rank only the face subset, so they compare like with like",
        "rows": rows,
    }


#: Query rows per product of :func:`exact_top_rows`: those of :func:`~artsim_pipeline.core.recall.exact_topk`.
EXACT_CHUNK = 1024


def exact_top_rows(x: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """``exact_topk(x, x[rows], k, exclude_self=True, query_rows=rows)``'s rows, the same ``[q, k']``.

    The same products (float32, chunks of :data:`EXACT_CHUNK` query rows), then each row's top: its
    ``k``-th largest value (``np.partition`` of the row) bounds the candidates, which are ordered by value
    desc, then column, as ``exact_topk`` orders its top (ties to the lower column). ``exact_topk``
    argpartitions each whole ``[1,024 x N]`` block (int64 positions, 1 GiB a block at 131,072 paintings).
    """
    x = check_vectors(x)
    rows = np.asarray(rows, dtype=np.int64)
    n = x.shape[0]
    k = min(int(k), n - 1)
    if k < 1 or len(rows) == 0:
        return np.zeros((len(rows), max(k, 0)), np.int64)
    queries = x[rows]
    out = np.empty((len(rows), k), np.int64)
    for start in range(0, len(rows), EXACT_CHUNK):
        stop = min(start + EXACT_CHUNK, len(rows))
        sim = queries[start:stop] @ x.T
        sim[np.arange(stop - start), rows[start:stop]] = -np.inf
        for i in range(stop - start):
            row = sim[i]
            kth = np.partition(row, n - k)[n - k]
            cand = np.flatnonzero(row >= kth)
            out[start + i] = cand[np.lexsort((cand, -row[cand]))][:k]
    return out


def index_check_rows(
    found: np.ndarray, objectids: np.ndarray, meta: ItemMeta, ks: Sequence[int], vectors: np.ndarray,
    rows: np.ndarray | None = None,
) -> dict[str, Any]:
    """Served index vs exact search: neighbour overlap and same-artist precision@K.

    ``found [q, kmax]`` holds the index's objectids for the painting rows ``rows`` (default: every
    row, ``q = N``); exact search ranks the whole collection for those rows.
    """
    kmax = max(ks)
    x = l2_rows(vectors).astype(np.float32)
    checked = np.arange(len(objectids)) if rows is None else np.asarray(rows, dtype=np.int64)
    exact_ids = objectids[exact_top_rows(x, checked, kmax)]
    pos = {int(o): i for i, o in enumerate(objectids)}
    labels = meta.artist_labels
    is_query = relevant_counts(meta, "artist")[checked] > 0
    queries = np.flatnonzero(is_query)  # positions in ``checked``
    out: dict[str, Any] = {"n_queries": int(len(queries)), "n_checked": int(len(checked)),
                           "n_paintings": int(len(objectids))}
    for k in ks:
        overlap = [len(set(found[i, :k].tolist()) & set(exact_ids[i, :k].tolist())) / k for i in range(len(checked))]
        hits = [
            sum(1 for o in found[i, :k] if o >= 0 and labels[pos[int(o)]] == labels[checked[i]]) / k for i in queries
        ]
        out[f"recall_vs_exact_at_{k}"] = float(np.mean(overlap))
        out[f"precision_at_{k}"] = float(np.mean(hits)) if hits else float("nan")
    return out
