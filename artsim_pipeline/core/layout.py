"""2-D layout of the collection (the ``collection_map``): fused vectors -> PCA -> t-SNE -> [0, 1]².

Plain Python (no Dagster). :func:`compute_layout` is deterministic for a given ``seed`` and input
order-independent (rows are sorted by objectid first). At 10,000 paintings it runs in well under a
minute on two CPU cores (PCA to 32 dimensions, Barnes-Hut t-SNE with a capped iteration count).

The layout is stored as Parquet (columns ``objectid``, ``x``, ``y``; the index generation it was
computed from in the schema metadata ``artsim.generation``) at ``DataLake.collection_map_path``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .storage import read_table, write_table

LAYOUT_FORMAT_VERSION = 1
PCA_DIM = 32
TSNE_MAX_ITER = 400
TSNE_ANGLE = 0.6  # Barnes-Hut accuracy/speed trade-off (sklearn's default 0.5)
GENERATION_KEY = b"artsim.generation"
FORMAT_KEY = b"artsim.layout_format"


def _normalise(xy: np.ndarray) -> np.ndarray:
    """Scale both axes by the same factor into [0, 1] (aspect kept), centred."""
    xy = np.asarray(xy, dtype=np.float64)
    low, high = xy.min(axis=0), xy.max(axis=0)
    span = float(np.max(high - low))
    if not np.isfinite(span) or span <= 0:
        return np.full_like(xy, 0.5)
    out = (xy - low) / span
    out += (1.0 - (high - low) / span) / 2.0  # centre the shorter axis
    return out


def compute_layout(vectors: np.ndarray, objectids: np.ndarray | list[int], seed: int = 0,
                   *, max_iter: int = TSNE_MAX_ITER, pca_dim: int = PCA_DIM, n_jobs: int | None = None) -> pd.DataFrame:
    """2-D map of ``vectors`` (``[N, D]``, rows = ``objectids``): DataFrame ``objectid, x, y`` in [0, 1].

    PCA to ``pca_dim`` dimensions, then Barnes-Hut t-SNE (PCA initialisation, perplexity
    ``min(30, (N - 1) / 3)``). Fewer than 5 paintings: the first two principal components.
    Deterministic: same input and ``seed`` give the same layout (rows sorted by objectid).
    """
    x = np.asarray(vectors, dtype=np.float32)
    ids = np.asarray(objectids, dtype=np.int64)
    if x.ndim != 2 or len(x) != len(ids):
        raise ValueError(f"vectors must be [N, D] with one row per objectid, got {x.shape} for {len(ids)} ids")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("objectids must be unique")
    if not np.all(np.isfinite(x)):
        raise ValueError("vectors contain NaN or infinite values")
    order = np.argsort(ids, kind="stable")
    x, ids = x[order], ids[order]
    n = len(ids)
    if n == 0:
        return pd.DataFrame({"objectid": ids, "x": np.zeros(0), "y": np.zeros(0)})
    if n == 1:
        xy = np.full((1, 2), 0.5)
    else:
        from sklearn.decomposition import PCA

        dim = max(1, min(pca_dim, n - 1, x.shape[1]))
        reduced = PCA(n_components=dim, random_state=seed).fit_transform(x.astype(np.float64))
        if n < 5 or dim < 2:
            xy = np.zeros((n, 2))
            xy[:, : min(2, reduced.shape[1])] = reduced[:, :2]
        else:
            from sklearn.manifold import TSNE

            perplexity = float(min(30.0, (n - 1) / 3.0))
            kwargs: dict[str, Any] = dict(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                                          learning_rate="auto", method="barnes_hut", angle=TSNE_ANGLE,
                                          n_jobs=n_jobs)
            try:
                tsne = TSNE(max_iter=max(250, int(max_iter)), **kwargs)
            except TypeError:  # scikit-learn < 1.5 calls it n_iter
                tsne = TSNE(n_iter=max(250, int(max_iter)), **kwargs)
            xy = tsne.fit_transform(reduced.astype(np.float32))
        xy = _normalise(xy)
    return pd.DataFrame({"objectid": ids, "x": xy[:, 0].astype(np.float64), "y": xy[:, 1].astype(np.float64)})


def bundle_layout(bundle, seed: int = 0) -> pd.DataFrame:
    """:func:`compute_layout` of every vector stored in a FAISS index bundle (``core.index.IndexBundle``)."""
    ids = np.asarray(bundle.ids, dtype=np.int64)
    vectors = bundle.index.reconstruct_batch(ids) if len(ids) else np.zeros((0, bundle.index.d), np.float32)
    return compute_layout(vectors, ids, seed=seed)


def save_layout(frame: pd.DataFrame, path: Path, generation: str | None = None) -> None:
    """Write the layout atomically, recording the index generation it was computed from."""
    import pyarrow as pa

    table = pa.Table.from_pandas(frame[["objectid", "x", "y"]], preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[FORMAT_KEY] = str(LAYOUT_FORMAT_VERSION).encode()
    if generation:
        meta[GENERATION_KEY] = generation.encode()
    table = table.replace_schema_metadata(meta)
    write_table(table, path)


def load_layout(path: Path) -> tuple[pd.DataFrame, str | None]:
    """(layout, generation it was computed from or None); raises FileNotFoundError when absent."""
    table = read_table(path)
    meta = table.schema.metadata or {}
    generation = meta.get(GENERATION_KEY)
    frame = table.to_pandas()[["objectid", "x", "y"]]
    frame["objectid"] = frame["objectid"].astype("int64")
    return frame, generation.decode() if generation else None


def benchmark(n: int = 10_000, dim: int = 512, seed: int = 0) -> dict[str, float]:
    """Seconds :func:`compute_layout` takes on ``n`` clustered unit vectors (for the report)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, dim))
    x = centres[rng.integers(0, 40, n)] + 0.5 * rng.standard_normal((n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    started = time.perf_counter()
    compute_layout(x.astype(np.float32), np.arange(n), seed=seed)
    return {"n": n, "dim": dim, "seconds": time.perf_counter() - started}


__all__ = ["bundle_layout", "compute_layout", "load_layout", "save_layout", "benchmark"]
