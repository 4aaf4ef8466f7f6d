"""Pooling of backbone feature maps into descriptors, and the descriptor options the study compares.

Plain Python (no Dagster; torch only inside the functions that take tensors). A backbone's final feature
map ``[N, C, H, W]`` becomes one vector per image by:

* ``gap``: global average pooling (what the registry's networks do; the pipeline's ``final`` block);
* ``gem``: generalised mean ``(mean x^p)^(1/p)`` of the map clamped at :data:`GEM_EPS` (``p = 3`` by
  default: between the average, ``p = 1``, and the maximum, ``p -> inf``);
* ``rmac``: regional maximum activations (:func:`rmac_regions`: the whole map and square windows of
  2 and 3 per side, overlapping), each region's maxima L2-normalised, then summed;

a mid-level tap's map by its per-channel mean (the pipeline's tap blocks), and an early layer's map by its
channel covariance (``gram``: the upper triangle of ``(F - mean)(F - mean)^T / HW``, a style summary in the
sense of texture statistics).

Input variants (``orig``, ``flip``: mirrored left-right, ``scale<f>``: resized ``f`` times the model's
sizes) are averaged per descriptor by the caller (:func:`average_variants`).

Stored-vector option: :func:`power_normalise` (signed ``|x|^p``) of the blocks before the fusion; PCA
whitening with shrinkage is the fusion's (:func:`artsim_pipeline.core.fusion.whitening_divisors`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    # torch here: the evaluation imports this module, and only these descriptors need torch
    import torch

GEM_P = 3.0
GEM_EPS = 1e-6
POOLINGS = ("gap", "gem", "rmac")


def gem(x: torch.Tensor, p: float = GEM_P) -> torch.Tensor:
    """Generalised-mean pooling of ``[N, C, H, W]`` over space: ``[N, C]``."""
    return x.clamp(min=GEM_EPS).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


def rmac_regions(height: int, width: int, levels: Sequence[int] = (1, 2, 3)) -> list[tuple[int, int, int, int]]:
    """Square regions ``(y0, y1, x0, x1)`` of an ``height x width`` map: per level ``l`` an ``l x l`` grid of
    windows of side ``ceil(2 * short / (l + 1))`` (level 1: the largest centred square), evenly spaced."""
    short = min(height, width)
    regions = []
    for level in levels:
        side = max(1, int(np.ceil(2 * short / (level + 1)))) if level > 1 else short
        ys = np.linspace(0, height - side, level).round().astype(int) if level > 1 else [(height - side) // 2]
        xs = np.linspace(0, width - side, level).round().astype(int) if level > 1 else [(width - side) // 2]
        regions += [(int(y), int(y) + side, int(x), int(x) + side) for y in ys for x in xs]
    return list(dict.fromkeys(regions))


def rmac(x: torch.Tensor) -> torch.Tensor:
    """R-MAC of ``[N, C, H, W]``: the sum of the L2-normalised per-region channel maxima, ``[N, C]``."""
    # torch here: the evaluation imports this module, and only these descriptors need torch
    import torch

    out = torch.zeros(x.shape[:2], dtype=x.dtype, device=x.device)
    for y0, y1, x0, x1 in rmac_regions(int(x.shape[2]), int(x.shape[3])):
        region = x[:, :, y0:y1, x0:x1].amax(dim=(2, 3))
        out += region / region.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return out


def gram(x: torch.Tensor) -> torch.Tensor:
    """Channel covariance of ``[N, C, H, W]`` over space, its upper triangle (diagonal included): ``[N, C(C+1)/2]``."""
    # torch here: the evaluation imports this module, and only these descriptors need torch
    import torch

    n, c = x.shape[:2]
    f = x.reshape(n, c, -1)
    f = f - f.mean(dim=2, keepdim=True)
    cov = f @ f.transpose(1, 2) / f.shape[2]
    rows, cols = torch.triu_indices(c, c)
    return cov[:, rows, cols]


def pool_final(x: torch.Tensor, pooling: str) -> torch.Tensor:
    """The final map ``[N, C, H, W]`` pooled by ``pooling`` (one of :data:`POOLINGS`)."""
    if pooling == "gap":
        return x.mean(dim=(2, 3))
    if pooling == "gem":
        return gem(x)
    if pooling == "rmac":
        return rmac(x)
    raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")


def average_variants(per_variant: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per block, the mean over input variants of its descriptors (blocks present in every variant)."""
    if not per_variant:
        raise ValueError("average_variants needs at least one variant")
    names = [name for name in per_variant[0] if all(name in v for v in per_variant)]
    return {name: np.mean([np.asarray(v[name], dtype=np.float64) for v in per_variant], axis=0).astype(np.float32)
            for name in names}


def power_normalise(values: np.ndarray, power: float) -> np.ndarray:
    """Signed power normalisation ``sign(x) |x|^power`` (``power = 0.5``: the signed square root)."""
    if not 0.0 < power <= 1.0:
        raise ValueError(f"power must be in (0, 1], got {power}")
    values = np.asarray(values)
    return np.sign(values) * np.abs(values) ** power

