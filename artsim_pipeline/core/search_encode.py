"""Query encoding: a parsed query to the backbones' feature blocks (then fused by the engine), and its face crop.

Plain Python (no Dagster). The stages, with the loaded backbones and fusion of
:mod:`~artsim_pipeline.core.search_loaders`:

* :func:`prepare_inputs` — every model's ``uint8 [S, S, 3]`` input, prepared exactly like the
  collection's images (:func:`~artsim_pipeline.core.embedding.load_and_prepare`: JPEG draft decoding,
  crop, resize, centre crop);
* :func:`forward_inputs` — every fusion block ``[1, width]`` (each model's final feature and its taps,
  keyed by :func:`~artsim_pipeline.core.fusion.block_key`), one bare forward pass per model
  (the engine then applies the variant's fusion transform: standardise, PCA, L2);
* :func:`stored_vector` — an objectid's vector as the collection indexed it (read back from FAISS);
* :func:`detect_query_faces` — MTCNN's face count and crop box of an image query (a path query goes
  through the pipeline's own file decoding, as the ``face_crops`` asset does).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from .faces import FaceDetector, detect_faces_in_files
from .fusion import block_key
from .search_query import ParsedQuery, QueryError
from .search_loaders import IndexVariant

if TYPE_CHECKING:
    from .models import LoadedModel

CropBox = tuple[float, float, float, float]


def prepare_inputs(models: Sequence[LoadedModel], source: Any, crop_box: CropBox | None = None) -> list[np.ndarray]:
    """Each model's ``uint8 [S, S, 3]`` input, prepared exactly like the collection's images."""
    # here, not at the top: the preparation is an image query's (an objectid query needs none)
    from .embedding import load_and_prepare_many

    # one decode shared by the models whose draft scales agree (an upload was decoded once per model)
    src = io.BytesIO(source.getvalue()) if isinstance(source, io.BytesIO) else source
    return load_and_prepare_many(src, [model.spec for model in models], crop_box, fast_decode=True)


def forward_inputs(models: Sequence[LoadedModel], arrays: Sequence[np.ndarray], precision: str) -> dict[str, np.ndarray]:
    """Every fusion block ``[1, width]`` (each model's final feature and taps) for prepared inputs
    (the bare forward passes, one per model)."""
    from .embedding import forward_prepared  # torch: only an image query runs a forward pass

    blocks: dict[str, np.ndarray] = {}
    for model, array in zip(models, arrays):
        for name, values in forward_prepared(model, array[None], precision, taps=True).items():
            blocks[block_key(model.name, name)] = values
    return blocks


def stored_vector(variant: IndexVariant | None, objectid: int) -> np.ndarray | None:
    """The fused vector ``variant``'s index holds for ``objectid`` (None when it is not there)."""
    if variant is None or objectid not in variant.ids:
        return None
    return variant.bundle.index.reconstruct_batch(np.array([objectid], dtype=np.int64))[0]


def detect_query_faces(detector: FaceDetector, parsed: ParsedQuery) -> tuple[int, Any]:
    """(face count, crop box or None) of an image query; a detection failure is a :class:`QueryError`."""
    if parsed.path is not None:  # the pipeline's own file path (same decoding as face_crops)
        row = detect_faces_in_files([parsed.path], detector).iloc[0]
        if row["error"]:
            raise QueryError(f"query {parsed.label!r}: face detection could not read it ({row['error']})")
        columns = ("crop_x0", "crop_y0", "crop_x1", "crop_y1")
        box = None if pd.isna(row["crop_x0"]) else tuple(int(row[c]) for c in columns)
        return int(row["face_count"]), box
    result = detector.detect([parsed.pil()])[0]
    if result.error:
        raise QueryError(f"query {parsed.label!r}: face detection failed ({result.error})")
    return result.face_count, result.crop_box


__all__ = ["detect_query_faces", "forward_inputs", "prepare_inputs", "stored_vector"]
