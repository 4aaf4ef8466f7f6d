"""Ablations: which vector set retrieves same-artist paintings best (plain Python, no Dagster).

Every set is scored with the protocol's ``visual`` method under ``artist`` relevance on the same
queries. Blocks are named ``<model>`` (a backbone's final feature) and ``<model>@<tap>.<stat>``
(its mid-level taps, :mod:`artsim_pipeline.core.fusion`). The sets:

* ``<model> alone``: one backbone's final feature, raw (cosine);
* ``concat (L2 per model)``: the pipeline's blocks, each L2-normalised, concatenated;
* ``concat + standardise``: the same, standardised per dimension and block-balanced, no PCA;
* ``... PCA <n> (pipeline)``: the pipeline's fusion (the fusion file, or refitted the same way);
* ``... whitened PCA <n>``: the same PCA with whitened components;
* ``... whitened PCA <n>, shrinkage 30``: whitened with shrinkage
  (:func:`~artsim_pipeline.core.fusion.whitening_divisors`: ``sqrt(variance + 30 * mean variance)``), the best
  shrinkage of the descriptor study (:mod:`artsim_pipeline.bench.descriptor`);
* ``signed sqrt + standardise + PCA <n>``: every block power-normalised (``sign(x) sqrt|x|``) before the fusion,
  refitted the pipeline's way;
* when the collection has tap blocks, one row per tap set through the pipeline's fusion recipe
  (``fit_fusion(blocks, n_components=pca_dim)`` then ``transform``): ``final only``,
  ``final + mid mean``, ``final + mid mean+std``; a set whose taps are absent is left out, and the set
  the pipeline fuses reuses the pipeline's fusion (without a learned head) instead of fitting it again.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Mapping

import numpy as np

from ..fusion import (
    TAP_SEPARATOR,
    TAP_SET_STATS,
    FusionModel,
    block_model,
    fit_fusion,
    tap_blocks,
    transform,
    with_projection,
)
from ..descriptors import power_normalise
from ..metrics import l2_rows

#: Ablation row name of each tap set (``ARTSIM_TAPS`` value).
TAP_SET_NAMES = {"none": "final only", "mean": "final + mid mean", "mean+std": "final + mid mean+std"}

Ablation = tuple[str, str, Callable[[], np.ndarray]]
#: Shrinkage of the whitened-with-shrinkage row (the descriptor study's best on held-out artists).
WHITEN_SHRINK = 30.0


def concat_l2(blocks: Mapping[str, np.ndarray]) -> np.ndarray:
    """Plain concatenation of the L2-normalised blocks (sorted block order)."""
    return np.concatenate([l2_rows(blocks[name]) for name in sorted(blocks)], axis=1)


def pipeline_blocks(
    blocks: Mapping[str, np.ndarray], pipeline_fusion: FusionModel | None, taps: str | None
) -> dict[str, np.ndarray]:
    """The blocks the pipeline fuses: those of its fusion file, else those of ``taps`` (None: all)."""
    if pipeline_fusion is not None:
        return {name: blocks[name] for name in pipeline_fusion.model_names}
    return dict(blocks) if taps is None else tap_blocks(blocks, taps)


def tap_set_ablations(
    blocks: Mapping[str, np.ndarray], pca_dim: int, pipeline: FusionModel | None = None
) -> list[Ablation]:
    """One ablation per tap set present in ``blocks``; none when there is no tap block.

    The set whose blocks are exactly ``pipeline``'s is scored with ``pipeline`` (its learned head left
    out) rather than fitted a second time by the same recipe.
    """
    taps = [name for name in blocks if TAP_SEPARATOR in name]
    if not taps:
        return []
    out: list[Ablation] = []
    for tap_set, stats in TAP_SET_STATS.items():
        if not all(any(name.endswith(f".{stat}") for name in taps) for stat in stats):
            continue
        chosen = tap_blocks(blocks, tap_set)
        n_taps = sum(TAP_SEPARATOR in name for name in chosen)
        reuse = pipeline is not None and set(pipeline.model_names) == set(chosen)
        out.append((
            TAP_SET_NAMES[tap_set],
            f"ARTSIM_TAPS={tap_set}: {len(chosen) - n_taps} final + {n_taps} tap blocks through the pipeline's "
            f"fusion (standardise, balance, PCA {pca_dim})" + (", the pipeline's own" if reuse else ", refitted"),
            (lambda chosen=chosen: transform(with_projection(pipeline, None), chosen)) if reuse else
            (lambda chosen=chosen: transform(fit_fusion(chosen, n_components=pca_dim), chosen)),
        ))
    return out


def ablation_sets(
    blocks: Mapping[str, np.ndarray], pipeline_fusion: FusionModel | None, pca_dim: int, taps: str | None = None
) -> list[Ablation]:
    """(name, description, vectors thunk) for each vector set compared under visual/artist."""
    blocks = {name: np.asarray(v) for name, v in blocks.items()}
    used = pipeline_blocks(blocks, pipeline_fusion, taps)
    fused = pipeline_fusion or fit_fusion(dict(used), n_components=pca_dim)
    pca_n = fused.output_dim if fused.pca_components is not None else pca_dim
    finals = sorted(name for name in blocks if block_model(name) == name)
    sets: list[Ablation] = [
        (f"{name} alone", f"{name} raw vectors, L2-normalised", (lambda v=blocks[name]: v)) for name in finals
    ]
    sets += [
        ("concat (L2 per model)", "per-model L2-normalised vectors concatenated; no standardisation, no PCA",
         lambda: concat_l2(used)),
        ("concat + standardise", "concatenated, standardised per dimension, block-balanced; no PCA",
         lambda: transform(fit_fusion(dict(used), use_pca=False), used)),
        (f"concat + standardise + PCA {pca_n} (pipeline)",
         "the pipeline's fusion" + (" (fusion file)" if pipeline_fusion is not None else " (refitted)"),
         lambda: transform(fused, used)),
        (f"concat + standardise + whitened PCA {pca_n}", "as the pipeline, PCA components whitened",
         lambda: transform(_whitened(fused, used), used)),
        (f"concat + standardise + whitened PCA {pca_n}, shrinkage {WHITEN_SHRINK:g}",
         f"as the pipeline, PCA components divided by sqrt(variance + {WHITEN_SHRINK:g} x mean variance)",
         lambda: transform(_whitened(fused, used, WHITEN_SHRINK), used)),
        (f"signed sqrt + standardise + PCA {pca_n}",
         "every block power-normalised (sign(x) sqrt|x|) before the pipeline's fusion, refitted",
         lambda: _power_fused(used, pca_dim)),
    ]
    return sets + tap_set_ablations(blocks, pca_dim, fused)


def _whitened(fused: FusionModel, blocks: Mapping[str, np.ndarray], shrink: float = 0.0) -> FusionModel:
    """The same fit with whitened components, with ``shrink`` (the PCA is identical; only ``transform`` differs)."""
    if fused.pca_components is None:
        return fit_fusion(dict(blocks), whiten=True, whiten_shrink=shrink)
    shrunk = {"whiten_shrink": float(shrink)} if shrink > 0 else {}
    return replace(fused, options={**fused.options, "whiten": True, **shrunk})


def _power_fused(blocks: Mapping[str, np.ndarray], pca_dim: int) -> np.ndarray:
    """The blocks signed-square-rooted, then fused by the pipeline's recipe (refitted)."""
    powered = {name: power_normalise(values, 0.5) for name, values in blocks.items()}
    return transform(fit_fusion(powered, n_components=pca_dim), powered)
