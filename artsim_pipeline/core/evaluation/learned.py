"""The learned similarity head, measured on artists it never trained on (plain Python, no Dagster).

The head (:mod:`artsim_pipeline.core.head`) learns from artist labels, so measuring it on the
artists it trained on would flatter it. Here, for each seed in ``SPLIT_SEEDS``:

1. the artists (the catalog's ``artist_key``, the protocol's artist relevance) with at least two
   paintings are split by :func:`~artsim_pipeline.core.head.heldout_artists` (a third held out, the
   rule the head's own epoch choice uses), the rest (and the artists with one painting) train;
2. a head is trained (:func:`~artsim_pipeline.core.head.train_head`, ``max_epochs`` = ``ARTSIM_EPOCHS``,
   or ``EVAL_EPOCHS`` when the pipeline serves no head) on the training artists' paintings only;
3. leave-one-out same-artist retrieval is measured among the held-out paintings only (queries and
   candidates), with the protocol's ``visual`` method (:func:`.protocol.evaluate_method`): P@5 and
   full-ranking mAP of the fused vectors as they are (``pca``) and through the head (``learned``).

The block reports per-split rows and their means; ``delta_precision_at_5`` = learned - pca.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np

from ..head import SimilarityHead, heldout_artists, split_rows, splittable_artists, train_head  # noqa: F401 (re-exported)
from .protocol import ItemMeta, evaluate_method

#: Training budget (maximum epochs) of the evaluation when the pipeline serves no head (ARTSIM_EPOCHS=0).
EVAL_EPOCHS = 150
SPLIT_SEEDS = (0, 1, 2)
K = 5

Trainer = Callable[..., SimilarityHead]


def _retrieval(vectors: np.ndarray, meta: ItemMeta) -> tuple[float, float, int]:
    result = evaluate_method(vectors, meta, "visual", "artist", ks=(K,))
    return result.mean(f"precision@{K}"), result.mean("map"), result.n_queries


def evaluate_learned(
    vectors: np.ndarray,
    meta: ItemMeta,
    epochs: int,
    *,
    seeds: Sequence[int] = SPLIT_SEEDS,
    train: Trainer = train_head,
    log: Callable[[str], None] = lambda _msg: None,
) -> dict[str, Any]:
    """The report's ``learned`` block for fused ``vectors [N, d]`` (rows as ``meta``).

    ``epochs`` is the ``ARTSIM_EPOCHS`` setting: > 0 serves a head and is the budget here too;
    0 (no head) evaluates what a head would give with ``EVAL_EPOCHS``.
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if len(meta) != len(vectors):
        raise ValueError(f"metadata for {len(meta)} paintings, vectors for {len(vectors)}")
    budget = int(epochs) if epochs > 0 else EVAL_EPOCHS
    block: dict[str, Any] = {"enabled": epochs > 0, "epochs": budget, "seeds": [int(s) for s in seeds]}
    n_artists = len(splittable_artists(meta.artist_keys))
    if n_artists < 3:
        return {**block, "available": False,
                "reason": f"{n_artists} artists with at least 2 paintings; a held-out third needs at least 3"}
    x = np.asarray(vectors, dtype=np.float32)
    splits = []
    for i, seed in enumerate(seeds, start=1):
        held = heldout_artists(meta.artist_keys, seed)
        train_rows, held_rows = split_rows(meta.artist_keys, held)
        started = time.perf_counter()
        head = train(x[train_rows], [meta.artist_keys[r] for r in train_rows], budget, seed=int(seed))
        seconds = time.perf_counter() - started
        sub = meta.subset(held_rows)
        p_pca, map_pca, n_queries = _retrieval(x[held_rows], sub)
        p_learned, map_learned, _ = _retrieval(head.apply(x[held_rows]), sub)
        splits.append({
            "seed": int(seed), "heldout_artists": len(held), "heldout_paintings": int(len(held_rows)),
            "train_paintings": int(len(train_rows)), "n_queries": n_queries,
            "precision_at_5_pca": p_pca, "precision_at_5_learned": p_learned,
            "map_pca": map_pca, "map_learned": map_learned,
            "epochs": int(head.info.get("epochs", 0)), "train_seconds": round(seconds, 2), "artists": held,
        })
        log(f"eval: learned head {i}/{len(seeds)}: split seed {seed}, {len(held)} held-out artists, "
            f"P@5 {p_pca:.3f} -> {p_learned:.3f}, {head.info.get('epochs', 0)} epochs in {seconds:.1f}s")

    def mean(key: str) -> float:
        return float(np.mean([row[key] for row in splits]))

    return {
        **block,
        "available": True,
        "heldout_artists": {"per_split": [row["heldout_artists"] for row in splits],
                            "mean": mean("heldout_artists")},
        "precision_at_5_pca": mean("precision_at_5_pca"),
        "precision_at_5_learned": mean("precision_at_5_learned"),
        "delta_precision_at_5": mean("precision_at_5_learned") - mean("precision_at_5_pca"),
        "map_pca": mean("map_pca"),
        "map_learned": mean("map_learned"),
        "train_seconds": round(mean("train_seconds"), 2),
        "splits": splits,
    }
