"""2-D layout of the collection (the ``collection_map``): fused vectors -> PCA -> t-SNE -> [0, 1]².

Plain Python (no Dagster). Two entry points, both deterministic for a given ``seed`` and input
order-independent (rows are sorted by objectid first):

* :func:`compute_layout`: from scratch. PCA to :data:`PCA_DIM` dimensions, then openTSNE with FFT
  gradients over FAISS neighbours (:mod:`.layout_tsne`); 131,072 paintings in a few minutes on two
  cores (``artsim bench layout``).
* :func:`place_new`: an existing layout plus new paintings. Paintings already in it keep their
  coordinates exactly, ids no longer present are dropped, and the new ones are placed against the
  fixed old ones (openTSNE's ``transform``: each starts at the median of its nearest old neighbours).

Normalisation rule: a from-scratch layout is mapped into [0, 1]² by one affine map ``xy = scale *
raw + offset`` (both axes by the same factor, the longer one spanning [0, 1], the shorter centred).
That map is kept with the layout (``frame.attrs["artsim.layout"]["transform"]`` and the Parquet
metadata), and :func:`place_new` maps the placed points with the *same* map, so old points never
move; a placed point that lands outside [0, 1]² is clipped onto the edge. Only the next from-scratch
layout renormalises.

The layout is stored as Parquet at ``DataLake.collection_map_path``: columns ``objectid`` (int64),
``x``, ``y`` (float64 in [0, 1]); schema metadata ``artsim.generation`` (the index generation it was
computed from), ``artsim.fit`` (the fit id of that generation: placement is only valid under the
same fit), ``artsim.layout_transform`` (JSON ``{"scale": s, "offset": [ox, oy]}``) and
``artsim.layout_format``. A map with named regions (:mod:`.map_regions`) also has the column
``region`` (int32, ``-1`` noise) and ``artsim.regions`` (JSON list of the regions' ``id, label, centre,
size, representatives``), loaded into ``frame.attrs["artsim.layout"]["regions"]``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from .layout_tsne import fit_embedding, place_embedding
from .storage import read_table, write_table

LAYOUT_FORMAT_VERSION = 2  # 2: openTSNE; the fit id and the normalisation map in the metadata
PCA_DIM = 32
TSNE_MAX_ITER = 750  # all iterations, the first 250 with early exaggeration (openTSNE's defaults)
MIN_PLACE_REFERENCE = 16  # fewer old paintings than this: lay out from scratch instead
ATTRS_KEY = "artsim.layout"  # frame.attrs entry: "transform", and "generation"/"fit" (loaded) or "placed"
GENERATION_KEY = b"artsim.generation"
FIT_KEY = b"artsim.fit"
TRANSFORM_KEY = b"artsim.layout_transform"
FORMAT_KEY = b"artsim.layout_format"
REGIONS_KEY = b"artsim.regions"


class CannotPlace(ValueError):
    """:func:`place_new` cannot extend this layout (no normalisation map, too few old paintings)."""


def _normalise(xy: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """(xy mapped into [0, 1]², the map ``{"scale": s, "offset": [ox, oy]}``): see the module doc."""
    xy = np.asarray(xy, dtype=np.float64)
    low, high = xy.min(axis=0), xy.max(axis=0)
    span = float(np.max(high - low))
    if not np.isfinite(span) or span <= 0:
        return np.full_like(xy, 0.5), {"scale": 0.0, "offset": [0.5, 0.5]}
    scale = 1.0 / span
    offset = -low * scale + (1.0 - (high - low) * scale) / 2.0  # centre the shorter axis
    return xy * scale + offset, {"scale": scale, "offset": [float(offset[0]), float(offset[1])]}


def _frame(ids: np.ndarray, xy: np.ndarray, transform: dict[str, Any]) -> pd.DataFrame:
    frame = pd.DataFrame({"objectid": ids.astype(np.int64), "x": xy[:, 0].astype(np.float64),
                          "y": xy[:, 1].astype(np.float64)})
    frame.attrs[ATTRS_KEY] = {"transform": transform}
    return frame


def _checked(vectors: np.ndarray, objectids) -> tuple[np.ndarray, np.ndarray]:
    """Validated float32 vectors and int64 ids, sorted by objectid."""
    x = np.asarray(vectors, dtype=np.float32)
    ids = np.asarray(objectids, dtype=np.int64)
    if x.ndim != 2 or len(x) != len(ids):
        raise ValueError(f"vectors must be [N, D] with one row per objectid, got {x.shape} for {len(ids)} ids")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("objectids must be unique")
    if not np.all(np.isfinite(x)):
        raise ValueError("vectors contain NaN or infinite values")
    order = np.argsort(ids, kind="stable")
    return x[order], ids[order]


def _pca(fit_rows: np.ndarray, dim: int, seed: int):
    # scikit-learn here: the server imports this module to read stored maps; only a fit needs it
    from sklearn.decomposition import PCA

    return PCA(n_components=max(1, min(dim, len(fit_rows) - 1, fit_rows.shape[1])),
               random_state=seed).fit(fit_rows.astype(np.float64))


def compute_layout(vectors: np.ndarray, objectids: np.ndarray | list[int], seed: int = 0,
                   *, max_iter: int = TSNE_MAX_ITER, pca_dim: int = PCA_DIM, n_jobs: int | None = None) -> pd.DataFrame:
    """2-D map of ``vectors`` (``[N, D]``, rows = ``objectids``): DataFrame ``objectid, x, y`` in [0, 1].

    PCA to ``pca_dim`` dimensions, then openTSNE (PCA initialisation, perplexity ``min(30, (N - 1) /
    3)``, ``max_iter`` iterations in all). Fewer than 5 paintings: the first two principal
    components. Deterministic: same input, ``seed`` and ``n_jobs`` give the same layout.
    """
    x, ids = _checked(vectors, objectids)
    n = len(ids)
    if n == 0:
        return _frame(ids, np.zeros((0, 2)), {"scale": 0.0, "offset": [0.5, 0.5]})
    if n == 1:
        return _frame(ids, np.full((1, 2), 0.5), {"scale": 0.0, "offset": [0.5, 0.5]})
    pca = _pca(x, pca_dim, seed)
    reduced = pca.transform(x.astype(np.float64)).astype(np.float32)
    if n < 5 or reduced.shape[1] < 2:
        raw = np.zeros((n, 2))
        raw[:, : min(2, reduced.shape[1])] = reduced[:, :2]
    else:
        raw = fit_embedding(reduced, seed, n_iter=max(250, int(max_iter)), n_jobs=n_jobs)
    xy, transform = _normalise(raw)
    return _frame(ids, xy, transform)


def place_new(previous: pd.DataFrame, vectors: np.ndarray, objectids: np.ndarray | list[int], seed: int = 0,
              *, changed: np.ndarray | list[int] = (), pca_dim: int = PCA_DIM,
              n_jobs: int | None = None) -> pd.DataFrame:
    """``previous`` (a layout from :func:`compute_layout`, :func:`place_new` or :func:`load_layout`)
    extended to exactly ``objectids``: old ids keep their ``x, y``, absent ones are dropped, new ones
    and the ``changed`` ids (old paintings whose vector changed) are placed (see the module doc).
    ``vectors`` has one row per objectid; the kept old rows are the reference. Raises
    :class:`CannotPlace` when ``previous`` has no normalisation map or fewer than
    :data:`MIN_PLACE_REFERENCE` of its paintings remain."""
    x, ids = _checked(vectors, objectids)
    transform = (previous.attrs.get(ATTRS_KEY) or {}).get("transform")
    if not transform or float(transform.get("scale", 0.0)) <= 0:
        raise CannotPlace("the previous layout has no normalisation map to place new paintings with")
    old_ids = np.setdiff1d(np.asarray(previous["objectid"], dtype=np.int64), np.asarray(changed, dtype=np.int64))
    old = np.isin(ids, old_ids)
    if int(old.sum()) < MIN_PLACE_REFERENCE:
        raise CannotPlace(f"only {int(old.sum())} paintings of the previous layout remain "
                          f"(placing needs {MIN_PLACE_REFERENCE})")
    by_id = previous.set_index(previous["objectid"].astype(np.int64))[["x", "y"]]
    xy = np.empty((len(ids), 2))
    xy[old] = by_id.loc[ids[old]].to_numpy(dtype=np.float64)
    if not old.all():
        scale, offset = float(transform["scale"]), np.asarray(transform["offset"], dtype=np.float64)
        pca = _pca(x[old], pca_dim, seed)  # the old paintings' feature space
        reference = pca.transform(x[old].astype(np.float64))
        new = pca.transform(x[~old].astype(np.float64))
        placed = place_embedding(reference, (xy[old] - offset) / scale, new, seed, n_jobs=n_jobs)
        xy[~old] = np.clip(placed * scale + offset, 0.0, 1.0)
    frame = _frame(ids, xy, dict(transform))
    frame.attrs[ATTRS_KEY]["placed"] = int((~old).sum())
    return frame


def bundle_vectors(bundle) -> tuple[np.ndarray, np.ndarray]:
    """(vectors ``[N, d]`` float32, objectids int64) stored in a FAISS index bundle (``core.index.IndexBundle``)."""
    ids = np.asarray(bundle.ids, dtype=np.int64)
    vectors = bundle.index.reconstruct_batch(ids) if len(ids) else np.zeros((0, bundle.index.d), np.float32)
    return np.asarray(vectors, dtype=np.float32), ids


def changed_ids(old_bundle, vectors: np.ndarray, objectids: np.ndarray, tolerance: float = 1e-4) -> np.ndarray:
    """Objectids in both ``old_bundle`` and ``objectids`` whose vector differs there by more than
    ``tolerance`` in some coordinate (re-embedded paintings: placed anew, not kept)."""
    ids = np.asarray(objectids, dtype=np.int64)
    shared = np.isin(ids, np.asarray(old_bundle.ids, dtype=np.int64))
    if not shared.any():
        return np.zeros(0, np.int64)
    before = np.asarray(old_bundle.index.reconstruct_batch(ids[shared]), dtype=np.float32)
    now = np.asarray(vectors, dtype=np.float32)[shared]
    if before.shape != now.shape:
        return ids[shared]
    return ids[shared][np.abs(before - now).max(axis=1) > tolerance]


def bundle_layout(bundle, seed: int = 0) -> pd.DataFrame:
    """:func:`compute_layout` of every vector stored in a FAISS index bundle."""
    vectors, ids = bundle_vectors(bundle)
    return compute_layout(vectors, ids, seed=seed)


def save_layout(frame: pd.DataFrame, path: Path, generation: str | None = None, fit: str | None = None,
                regions: list[dict[str, Any]] | None = None) -> None:
    """Write the layout atomically, recording the index generation and fit it was computed under and its
    normalisation map (from ``frame.attrs``, when it has one); with ``regions``, ``frame`` has a
    ``region`` column and the regions' descriptions are stored beside it."""
    columns = ["objectid", "x", "y"] + (["region"] if regions is not None else [])
    if regions is not None and "region" not in frame.columns:
        raise ValueError("regions given but the map has no region column")
    table = pa.Table.from_pandas(frame[columns], preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[FORMAT_KEY] = str(LAYOUT_FORMAT_VERSION).encode()
    if generation:
        meta[GENERATION_KEY] = generation.encode()
    if fit:
        meta[FIT_KEY] = fit.encode()
    transform = (frame.attrs.get(ATTRS_KEY) or {}).get("transform")
    if transform:
        meta[TRANSFORM_KEY] = json.dumps(transform).encode()
    if regions is not None:
        meta[REGIONS_KEY] = json.dumps(regions).encode()
    write_table(table.replace_schema_metadata(meta), path)


def load_layout(path: Path) -> tuple[pd.DataFrame, str | None]:
    """(layout, generation it was computed from or None); raises FileNotFoundError when absent.

    ``frame.attrs["artsim.layout"]`` holds ``generation``, ``fit``, ``transform`` and ``regions`` (None when
    absent); a map with regions has the ``region`` column too."""
    table = read_table(path)
    meta = table.schema.metadata or {}
    generation, fit = meta.get(GENERATION_KEY), meta.get(FIT_KEY)
    regions = json.loads(meta[REGIONS_KEY]) if REGIONS_KEY in meta and "region" in table.column_names else None
    frame = table.to_pandas()[["objectid", "x", "y"] + (["region"] if regions is not None else [])]
    frame["objectid"] = frame["objectid"].astype("int64")
    transform = json.loads(meta[TRANSFORM_KEY]) if TRANSFORM_KEY in meta else None
    frame.attrs[ATTRS_KEY] = {"generation": generation.decode() if generation else None,
                              "fit": fit.decode() if fit else None, "transform": transform, "regions": regions}
    return frame, generation.decode() if generation else None


__all__ = ["CannotPlace", "bundle_layout", "bundle_vectors", "changed_ids", "compute_layout", "load_layout",
           "place_new",
           "save_layout"]
