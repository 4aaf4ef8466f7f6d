"""Fuse several models' embeddings into one vector per image (plain Python, no Dagster).

Pipeline, fitted once on the whole collection and then applied to any vector:

1. concatenate the models' vectors in a fixed model order (e.g. 2048 + 1536 + 768 = 4352 dims);
2. standardise every dimension with the collection's mean and standard deviation
   (a dimension that never varies keeps ``scale = 1``), so one vector's transform never depends
   on its own statistics;
3. optionally balance the blocks (``block_balance``): each model's standardised block is divided
   by ``sqrt(dim)`` so every model contributes the same expected squared norm (``1`` per block)
   whatever its width; without it a 2048-d model outweighs a 768-d one by 2048/768 in every
   dot product;
4. optionally PCA to ``min(n_components, n_samples - 1, n_features)`` dimensions
   (``whiten`` divides each component by its standard deviation, or with ``whiten_shrink`` ``s`` by
   ``sqrt(variance + s * mean variance)``: :func:`whitening_divisors`);

Steps 2–4 are fitted on every vector up to :data:`FIT_MAX_ROWS` (32,768) of them, beyond that on a seeded
uniform sample of that many rows (``options["n_samples_fitted"]``, and ``options["n_samples_seen"]``): the
covariance of a few thousand dimensions is estimated well long before that (n ≫ d), and the fit's cost
and memory then stop growing with the collection (``artsim bench scale``); every row is still
transformed, in chunks of :data:`TRANSFORM_CHUNK` rows so its float64 working copy stays bounded. The
NGA catalog and the mirror are far below the threshold: their fit uses every row, as before.
5. optionally a learned projection (``projection``, the ``similarity_head`` asset's weight,
   :mod:`artsim_pipeline.core.head`; attached with :func:`with_projection`);
6. L2-normalise each row, so inner product equals cosine similarity.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, Mapping, Sequence

import numpy as np

from artsim_pipeline.core.storage import atomic_path

FUSION_FORMAT_VERSION = 1
#: Values of ``ARTSIM_TAPS``: which mid-level statistics of each backbone's taps join its final feature
#: (the taps themselves are declared per model in the registry, :mod:`artsim_pipeline.core.models`).
TAP_SET_STATS: dict[str, tuple[str, ...]] = {"none": (), "mean": ("mean",), "mean+std": ("mean", "std")}
TAP_SETS = tuple(TAP_SET_STATS)
PCA_RANDOM_STATE = 0
#: Beyond this many rows the fusion is fitted on a seeded sample of this many (see the module docstring).
FIT_MAX_ROWS = 32_768
#: Rows per chunk of :func:`transform` (its float64 working copy: ``TRANSFORM_CHUNK x features``).
TRANSFORM_CHUNK = 8_192
_EPS = 1e-12


@dataclass
class FusionModel:
    """Fitted fusion: standardisation statistics, block weights and (optional) PCA."""

    model_names: tuple[str, ...]
    dims: tuple[int, ...]
    mean: np.ndarray  # [n_features] collection mean of the concatenated vectors
    scale: np.ndarray  # [n_features] collection std (1 where the dimension is constant)
    block_weights: np.ndarray  # [n_features] 1/sqrt(dim) per model block, or ones
    pca_components: np.ndarray | None  # [n_components, n_features]
    pca_mean: np.ndarray | None  # [n_features] mean of the weighted standardised data
    explained_variance: np.ndarray | None  # [n_components]
    explained_variance_ratio: np.ndarray | None  # [n_components]
    options: dict[str, Any] = field(default_factory=dict)
    projection: np.ndarray | None = None  # [d_out, output dim of PCA]: the learned similarity head

    @property
    def n_features(self) -> int:
        """Width of the concatenated input."""
        return int(sum(self.dims))

    @property
    def output_dim(self) -> int:
        """Width of the fused output vectors."""
        if self.projection is not None:
            return int(self.projection.shape[0])
        return int(self.pca_components.shape[0]) if self.pca_components is not None else self.n_features


def _concat(
    blocks: Mapping[str, np.ndarray], names: tuple[str, ...], dims: tuple[int, ...] | None
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Validate the blocks and concatenate them in ``names`` order as a new float64 array.

    Models in ``blocks`` that are not in ``names`` are ignored. Each block is copied straight into
    its columns (no float64 copy per block before the concatenation): the result is the only copy.
    """
    arrays = []
    n_rows: int | None = None
    for i, name in enumerate(names):
        if name not in blocks:
            raise ValueError(f"fusion input is missing model {name!r} (have {sorted(blocks)})")
        arr = np.asarray(blocks[name])
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2:
            raise ValueError(f"model {name!r}: expected a 2-d array [n, dim], got shape {arr.shape}")
        if dims is not None and arr.shape[1] != dims[i]:
            raise ValueError(f"model {name!r}: expected dim {dims[i]}, got {arr.shape[1]}")
        if n_rows is None:
            n_rows = arr.shape[0]
        elif arr.shape[0] != n_rows:
            raise ValueError(f"model {name!r}: has {arr.shape[0]} rows, expected {n_rows} like the other models")
        arrays.append(arr)
    widths = tuple(int(a.shape[1]) for a in arrays)
    x = np.empty((n_rows or 0, sum(widths)), dtype=np.float64)
    start = 0
    for name, arr, width in zip(names, arrays, widths):
        part = x[:, start:start + width]
        part[...] = arr
        if not np.all(np.isfinite(part)):
            raise ValueError(f"model {name!r}: contains NaN or infinite values")
        start += width
    return x, widths


def _n_rows(blocks: Mapping[str, np.ndarray], names: Sequence[str]) -> int | None:
    """The row count shared by the 2-d arrays of ``names`` in ``blocks``; None when they are not all there,
    2-d and of one length (then :func:`_concat` raises the error naming the model)."""
    shapes = [getattr(blocks.get(name), "shape", None) for name in names]
    if not shapes or any(shape is None or len(shape) != 2 for shape in shapes):
        return None
    counts = {int(shape[0]) for shape in shapes}
    return counts.pop() if len(counts) == 1 else None


def _column_std(x: np.ndarray, block: int = 512) -> np.ndarray:
    """``x.std(axis=0)``, bit for bit, a block of at least ``block`` columns at a time (no full-size temporary)."""
    cuts = list(range(0, x.shape[1], block))
    if len(cuts) > 1 and x.shape[1] - cuts[-1] < block:
        cuts.pop()  # the last block takes the remainder: every block keeps >= ``block`` columns
    cuts.append(x.shape[1])
    return np.concatenate([x[:, a:b].std(axis=0) for a, b in zip(cuts[:-1], cuts[1:])])


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, _EPS)


def fit_rows(n: int, max_rows: int = FIT_MAX_ROWS, seed: int = PCA_RANDOM_STATE) -> np.ndarray | None:
    """The rows a fit over ``n`` vectors uses: None (all of them) up to ``max_rows``, else a seeded sorted
    uniform sample of ``max_rows`` row numbers."""
    if n <= max_rows:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))


def fit_fusion(
    blocks: dict[str, np.ndarray],
    n_components: int = 512,
    whiten: bool = False,
    block_balance: bool = True,
    use_pca: bool = True,
    max_rows: int = FIT_MAX_ROWS,
    whiten_shrink: float = 0.0,
) -> FusionModel:
    """Fit standardisation (+ block balance + PCA) on the collection's vectors.

    ``blocks`` maps model name -> ``[n_images, dim]`` array, rows aligned across models.
    The model order is the sorted model names, so the fit does not depend on dict order.
    Beyond ``max_rows`` rows the fit uses a seeded sample of that many (:func:`fit_rows`).
    ``whiten_shrink`` (with ``whiten``): the shrinkage of :func:`whitening_divisors` (0: plain whitening).
    """
    if not blocks:
        raise ValueError("fit_fusion needs at least one model's vectors")
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}")
    if whiten_shrink < 0:
        raise ValueError(f"whiten_shrink must be >= 0, got {whiten_shrink}")
    if max_rows < 2:
        raise ValueError(f"max_rows must be >= 2, got {max_rows}")
    names = tuple(sorted(blocks))
    n_seen = _n_rows(blocks, names)
    rows = fit_rows(n_seen, max_rows) if n_seen is not None else None
    if rows is not None:
        blocks = {name: np.asarray(blocks[name])[rows] for name in names}
    x, dims = _concat(blocks, names, None)
    n_samples, n_features = x.shape
    if n_samples < 1:
        raise ValueError("fit_fusion needs at least one vector")

    mean = x.mean(axis=0)
    std = _column_std(x)
    scale = np.where(std > 1e-8 * np.maximum(np.abs(mean), 1.0), std, 1.0)
    weights = np.concatenate(
        [np.full(d, 1.0 / np.sqrt(d) if block_balance else 1.0) for d in dims]
    )
    # (x - mean) / scale * weights, in place: the same float operations, no second [n, features] array
    z = x
    del x
    z -= mean
    z /= scale
    z *= weights

    components = pca_mean = variance = ratio = None
    n_out = n_features
    if use_pca:
        n_out = min(n_components, n_samples - 1, n_features)
        if n_out < 1:
            raise ValueError(f"PCA needs at least 2 vectors, got {n_samples}; fit with use_pca=False")
        # scikit-learn here: every CLI command (--help included) imports this module; only a fit needs it
        from sklearn.decomposition import PCA

        # copy=False: PCA centres z in place instead of copying it (z is not used afterwards)
        pca = PCA(n_components=n_out, svd_solver="auto", random_state=PCA_RANDOM_STATE, copy=False)
        pca.fit(z)
        components = pca.components_.astype(np.float64)
        pca_mean = pca.mean_.astype(np.float64)
        variance = pca.explained_variance_.astype(np.float64)
        ratio = pca.explained_variance_ratio_.astype(np.float64)

    options = {
        "format_version": FUSION_FORMAT_VERSION,
        "n_components_requested": int(n_components),
        "n_components": int(n_out),
        "n_samples_fitted": int(n_samples),
        "whiten": bool(whiten),
        "block_balance": bool(block_balance),
        "use_pca": bool(use_pca),
    }
    if whiten and whiten_shrink > 0:  # recorded only when used: other fits' files and fingerprints are as before
        options["whiten_shrink"] = float(whiten_shrink)
    if rows is not None:  # recorded only for a sampled fit: a full fit's file and fingerprint are as before
        options["n_samples_seen"] = int(n_seen)
    return FusionModel(names, dims, mean, scale, weights, components, pca_mean, variance, ratio, options)


def transform(model: FusionModel, blocks: dict[str, np.ndarray]) -> np.ndarray:
    """Fuse new vectors with a fitted model: float32 ``[n, output_dim]``, L2-normalised rows.

    Raises ``ValueError`` naming the model when one is missing or has the wrong width;
    extra models in ``blocks`` are ignored.
    """
    n = _n_rows(blocks, model.model_names)
    if n is not None and n > TRANSFORM_CHUNK:
        parts = [transform(model, {name: np.asarray(blocks[name])[start:start + TRANSFORM_CHUNK]
                                   for name in model.model_names})
                 for start in range(0, n, TRANSFORM_CHUNK)]
        return np.concatenate(parts, axis=0)
    z, _ = _concat(blocks, model.model_names, model.dims)  # a new array: standardised in place
    z -= model.mean
    z /= model.scale
    z *= model.block_weights
    if model.pca_components is not None:
        z -= model.pca_mean
        z = z @ model.pca_components.T
        if model.options.get("whiten"):
            z = z / whitening_divisors(model)
    if model.projection is not None:
        z = _l2_normalise(z) @ model.projection.T  # the head was trained on the L2-normalised fused vectors
    return _l2_normalise(z).astype(np.float32)


def whitening_divisors(model: FusionModel) -> np.ndarray:
    """What a whitened fusion divides its PCA components by: ``sqrt(variance)``, or with shrinkage
    (``options["whiten_shrink"]`` = ``s`` > 0) ``sqrt(variance + s * mean(variance))``, which keeps the
    strong components' relative weight where plain whitening lets the noisy weak ones count as much."""
    variance = np.asarray(model.explained_variance, dtype=np.float64)
    shrink = float(model.options.get("whiten_shrink", 0.0))
    if shrink > 0:
        return np.sqrt(np.maximum(variance + shrink * variance.mean(), _EPS))
    return np.sqrt(np.maximum(variance, _EPS))


def residual_share(model: FusionModel, blocks: dict[str, np.ndarray]) -> float:
    """Share of the standardised, weighted energy of ``blocks`` that the fitted PCA does not keep.

    ``1 - ||P(z - mu)||^2 / ||z - mu||^2`` summed over rows (``mu`` the fit's PCA mean): for the
    fit's own vectors this is ``1 - explained_variance_ratio.sum()``; for new vectors it measures
    how far they drifted from what the fit describes (0.0 without PCA).
    """
    if model.pca_components is None:
        return 0.0
    x, _ = _concat(blocks, model.model_names, model.dims)
    if x.shape[0] == 0:
        return 0.0
    z = (x - model.mean) / model.scale * model.block_weights - model.pca_mean
    total = float(np.einsum("ij,ij->", z, z))
    kept = z @ model.pca_components.T
    return float(max(0.0, 1.0 - float(np.einsum("ij,ij->", kept, kept)) / max(total, _EPS)))


def with_projection(model: FusionModel, projection: np.ndarray | None) -> FusionModel:
    """``model`` followed by a learned projection (``None``: without one). The input must match its output."""
    if projection is None:
        return replace(model, projection=None)
    weight = np.asarray(projection, dtype=np.float64)
    base = replace(model, projection=None).output_dim
    if weight.ndim != 2 or weight.shape[1] != base:
        raise ValueError(f"projection of shape {weight.shape} does not fit the fusion's {base}-d output")
    return replace(model, projection=weight)


def _arrays(model: FusionModel) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {
        "mean": model.mean,
        "scale": model.scale,
        "block_weights": model.block_weights,
    }
    if model.pca_components is not None:
        arrays.update(
            pca_components=model.pca_components,
            pca_mean=model.pca_mean,
            explained_variance=model.explained_variance,
            explained_variance_ratio=model.explained_variance_ratio,
        )
    if model.projection is not None:
        arrays["projection"] = model.projection
    return arrays


def _meta(model: FusionModel) -> dict[str, Any]:
    return {
        "model_names": list(model.model_names),
        "dims": list(model.dims),
        "options": model.options,
        "has_pca": model.pca_components is not None,
        **({"has_projection": True} if model.projection is not None else {}),
    }


def fusion_fingerprint(model: FusionModel) -> str:
    """sha256 of what the model computes (metadata + every array's dtype, shape and bytes).

    Deterministic, unlike the bytes of the ``.npz`` file (its zip entries carry the write time):
    the same fit gives the same fingerprint, so it can serve as a data version.
    """
    digest = hashlib.sha256(json.dumps(_meta(model), sort_keys=True).encode("utf-8"))
    for name, arr in sorted(_arrays(model).items()):
        arr = np.ascontiguousarray(arr)
        digest.update(f"|{name}|{arr.dtype.str}|{arr.shape}|".encode("utf-8"))
        digest.update(arr.tobytes())
    return digest.hexdigest()


def save_fusion(model: FusionModel, path: Path | str) -> None:
    """Write the model as one ``.npz`` file, atomically (temp file + fsync + rename)."""
    arrays: dict[str, np.ndarray] = {"meta_json": np.array(json.dumps(_meta(model), sort_keys=True)), **_arrays(model)}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(buffer.getvalue())
            handle.flush()
            os.fsync(handle.fileno())


def load_fusion(path: Path | str | BinaryIO) -> FusionModel:
    """Read a model written by :func:`save_fusion` (a path, or an open binary file / buffer)."""
    source = path if hasattr(path, "read") else Path(path)
    with np.load(source, allow_pickle=False) as data:
        meta = json.loads(str(data["meta_json"]))
        version = meta["options"].get("format_version")
        if version != FUSION_FORMAT_VERSION:
            raise ValueError(f"{path}: unsupported fusion format version {version!r}")
        pca = meta["has_pca"]
        return FusionModel(
            model_names=tuple(meta["model_names"]),
            dims=tuple(int(d) for d in meta["dims"]),
            mean=data["mean"],
            scale=data["scale"],
            block_weights=data["block_weights"],
            pca_components=data["pca_components"] if pca else None,
            pca_mean=data["pca_mean"] if pca else None,
            explained_variance=data["explained_variance"] if pca else None,
            explained_variance_ratio=data["explained_variance_ratio"] if pca else None,
            options=dict(meta["options"]),
            projection=data["projection"] if meta.get("has_projection") else None,
        )


# ---------------------------------------------------------------- block names (final feature + taps)
#
# A fusion block is named ``<model>`` for a backbone's final pooled feature and ``<model>@<module>.<stat>``
# for one of its mid-level taps (e.g. ``efficientnet_lite0@blocks.3.mean``); every block is standardised
# and balanced on its own (steps 2-3 above), so each tap weighs as much as a final feature.

TAP_SEPARATOR = "@"


def block_key(model: str, block: str) -> str:
    """Fusion block name of ``block`` (``final`` or ``<module>.<stat>``) of ``model``."""
    return model if block == "final" else f"{model}{TAP_SEPARATOR}{block}"


def block_model(name: str) -> str:
    """The backbone a fusion block comes from."""
    return name.split(TAP_SEPARATOR, 1)[0]


def block_models(names: Sequence[str]) -> tuple[str, ...]:
    """The distinct backbones of ``names``, in first-seen order."""
    return tuple(dict.fromkeys(block_model(name) for name in names))


def in_tap_set(name: str, tap_set: str) -> bool:
    """Whether block ``name`` is used under ``ARTSIM_TAPS=tap_set`` (``none`` | ``mean`` | ``mean+std``)."""
    if tap_set not in TAP_SETS:
        raise ValueError(f"tap set must be one of {', '.join(TAP_SETS)}, got {tap_set!r}")
    if TAP_SEPARATOR not in name:
        return True
    return name.rsplit(".", 1)[-1] in TAP_SET_STATS[tap_set]


def tap_blocks(blocks: Mapping[str, np.ndarray], tap_set: str) -> dict[str, np.ndarray]:
    """The blocks of ``blocks`` used under ``tap_set`` (final features always; then taps by statistic)."""
    return {name: values for name, values in blocks.items() if in_tap_set(name, tap_set)}
