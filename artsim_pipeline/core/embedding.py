"""Batched image embedding: decode/resize in worker threads, overlapped with the forward pass.

Plain Python (no Dagster import). The flow for one batch of the pipeline:

1. worker threads open each image file (JPEGs are DCT-downscaled while decoding when the image is
   at least twice the size the model needs), crop the optional face box, resize and centre-crop
   to ``uint8 [S, S, 3]`` arrays; PIL releases the GIL for decoding and resampling, so this
   runs beside the forward pass of the previous batch;
2. the main thread stacks a batch, normalises it in one fused multiply-subtract (the NHWC ->
   NCHW permute is free and is the channels_last layout) and runs the model under
   ``torch.inference_mode`` (optionally ``bf16`` autocast);
3. :func:`embed_batch_to_parquet` writes ``<lake>/embeddings/<model>/<batch>.parquet`` atomically.

Vectors are the raw (not L2-normalised) float32 backbone features. Each row also carries the model's
mid-level tap features (:attr:`~artsim_pipeline.core.models.ModelSpec.taps`), computed in the same
forward pass: column ``tap:<module>.<stat>`` (stat ``mean`` or ``std`` per channel over space).

Parquet schema of ``embeddings/<model>/<batch>.parquet``: ``objectid`` int64, ``uuid`` string,
``variant`` string (``full`` | ``face``), ``vector`` fixed_size_list<float32>[dim], then one
``tap:<module>.<stat>`` fixed_size_list<float32>[channels] per tap block; schema metadata
``artsim.model``, ``artsim.weights_id``, ``artsim.dim``, ``artsim.precision``, ``artsim.taps``.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Iterator, Sequence, Sized, TypeVar, Union

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from PIL import Image

from .models import LoadedModel, ModelSpec, clamp_box, normalize_batch, prepare_image
from .progress import Progress
from .storage import DataLake, atomic_path, read_table, readable

K = TypeVar("K", bound=Hashable)
ImageSource = Union[Image.Image, str, "os.PathLike[str]"]
CropBox = tuple[float, float, float, float]

PRECISIONS = ("fp32", "bf16")
#: bf16 is accepted for a model only if every image's bf16 vector has at least this cosine
#: similarity with its fp32 vector.
BF16_MIN_COSINE = 0.995
VARIANTS = ("full", "face")
#: Block name of a model's final pooled feature (its tap blocks are ``<module>.<stat>``).
FINAL = "final"
TAP_PREFIX = "tap:"
CROP_COLUMNS = ("crop_x0", "crop_y0", "crop_x1", "crop_y1")


class ImageReadError(RuntimeError):
    """An image could not be read or prepared; the message names its key and source."""


# --------------------------------------------------------------------------- preparation


def load_and_prepare(
    source: ImageSource, spec: ModelSpec, crop_box: CropBox | None = None, fast_decode: bool = True
) -> np.ndarray:
    """Open ``source`` (a path or a PIL image) and prepare it for ``spec``: ``uint8 [S, S, 3]``.

    With ``fast_decode`` a JPEG file is decoded at 1/2, 1/4 or 1/8 scale (libjpeg DCT scaling)
    when that still leaves at least ``resize_size`` pixels on the short side of the (cropped)
    region, which makes decoding large images several times cheaper.
    """
    if isinstance(source, Image.Image):
        return prepare_image(source, spec, crop_box)
    with Image.open(readable(source)) as image:
        if fast_decode and image.format == "JPEG":
            width, height = image.size
            region = clamp_box(crop_box, image.size) if crop_box is not None else (0, 0, width, height)
            short = min(region[2] - region[0], region[3] - region[1])
            need = spec.resize_size / short
            if need <= 0.5:
                image.draft("RGB", (math.ceil(width * need), math.ceil(height * need)))
                scale = image.size[0] / width
                if crop_box is not None and scale != 1.0:
                    crop_box = tuple(v * scale for v in region)  # type: ignore[assignment]
        image.load()
        return prepare_image(image, spec, crop_box)


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _prepare_one(key: Any, source: ImageSource, box: CropBox | None, spec: ModelSpec, fast_decode: bool) -> np.ndarray:
    try:
        return load_and_prepare(source, spec, box, fast_decode)
    except Exception as exc:  # noqa: BLE001 - re-raised with the item named
        where = "in-memory image" if isinstance(source, Image.Image) else str(source)
        raise ImageReadError(f"cannot prepare image {key!r} ({where}, crop={box}): {exc}") from exc


# --------------------------------------------------------------------------- inference


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def _autocast(model: LoadedModel, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "bf16":
        return torch.autocast(device_type=model.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def forward(model: LoadedModel, x: torch.Tensor, precision: str = "fp32") -> np.ndarray:
    """Bare forward pass of a normalised ``[N, 3, S, S]`` tensor: ``float32 [N, dim]`` array."""
    _check_precision(precision)
    with torch.inference_mode(), _autocast(model, precision):
        y = model.module(x)
    return np.ascontiguousarray(y.float().cpu().numpy(), dtype=np.float32)


def forward_blocks(model: LoadedModel, x: torch.Tensor, precision: str = "fp32") -> dict[str, np.ndarray]:
    """One forward pass with the tap features: ``{"final": [N, dim], "<tap>.<stat>": [N, C], ...}``."""
    _check_precision(precision)
    with model.capture_taps() as taps, torch.inference_mode(), _autocast(model, precision):
        y = model.module(x)
    blocks = {FINAL: y, **{name: taps[name] for name in model.spec.tap_blocks}}
    return {name: np.ascontiguousarray(v.float().cpu().numpy(), dtype=np.float32) for name, v in blocks.items()}


def forward_prepared(
    model: LoadedModel, batch: np.ndarray, precision: str = "fp32", channels_last: bool | None = None,
    taps: bool = False,
) -> Any:
    """Normalise a ``uint8 [N, S, S, 3]`` batch and run the model: ``float32 [N, dim]``, or with ``taps``
    every block (:func:`forward_blocks`)."""
    cl = model.spec.channels_last if channels_last is None else channels_last
    model.use_memory_format(cl)
    x = normalize_batch(batch, model.spec, model.device, channels_last=cl)
    return forward_blocks(model, x, precision) if taps else forward(model, x, precision)


def iter_embeddings(
    model: LoadedModel,
    items: Iterable[tuple[K, ImageSource, CropBox | None]],
    *,
    batch_size: int = 32,
    precision: str = "fp32",
    channels_last: bool | None = None,
    num_workers: int = 2,
    prefetch_batches: int = 2,
    fast_decode: bool = True,
    taps: bool = False,
) -> Iterator[tuple[list[K], Any]]:
    """Stream ``(keys, float32 [n, dim])`` per batch of ``items`` = ``(key, image, crop_box)``
    (with ``taps``: ``(keys, {block: float32 [n, width]})``, see :func:`forward_blocks`).

    ``image`` is a path or a PIL image; ``crop_box`` is ``(x0, y0, x1, y1)`` pixels or None.
    ``num_workers`` threads prepare up to ``prefetch_batches`` batches ahead of the batch in
    the forward pass (``num_workers=0``: everything in the calling thread).
    ``channels_last=None`` uses the model's default (on for CNNs, off for ViT).
    """
    _check_precision(precision)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    spec = model.spec
    cl = spec.channels_last if channels_last is None else channels_last

    def run(keys: list[K], arrays: list[np.ndarray]) -> tuple[list[K], Any]:
        return keys, forward_prepared(model, np.stack(arrays), precision, cl, taps=taps)

    if num_workers <= 0:
        for chunk in _chunks(items, batch_size):
            yield run([k for k, _, _ in chunk], [_prepare_one(k, s, b, spec, fast_decode) for k, s, b in chunk])
        return

    pending: deque[tuple[list[K], list[Future[np.ndarray]]]] = deque()
    with ThreadPoolExecutor(max_workers=num_workers, thread_name_prefix="artsim-embed") as pool:
        try:
            for chunk in _chunks(items, batch_size):
                futures = [pool.submit(_prepare_one, k, s, b, spec, fast_decode) for k, s, b in chunk]
                pending.append(([k for k, _, _ in chunk], futures))
                if len(pending) > prefetch_batches:
                    keys, futs = pending.popleft()
                    yield run(keys, [f.result() for f in futs])
            while pending:
                keys, futs = pending.popleft()
                yield run(keys, [f.result() for f in futs])
        finally:
            for _, futs in pending:
                for fut in futs:
                    fut.cancel()


def embed_images(
    model: LoadedModel,
    items: Iterable[tuple[K, ImageSource, CropBox | None]],
    *,
    batch_size: int = 32,
    precision: str = "fp32",
    channels_last: bool | None = None,
    num_workers: int = 2,
    fast_decode: bool = True,
    progress: Callable[[str], None] | None = None,
    taps: bool = False,
) -> tuple[list[K], Any]:
    """Embed every ``(key, image, crop_box)``: ``(keys, float32 [N, dim])`` in input order
    (with ``taps``: ``(keys, {block: float32 [N, width]})`` with the ``final`` and tap blocks).

    ``progress`` (optional) gets a line about every 10% of the items and one at the end, e.g.
    ``efficientnet_lite0: 64/256 images (25%), 30.1 images/s`` (counting every model input: full
    images and face crops alike).
    """
    if progress is not None and not isinstance(items, Sized):
        items = list(items)
    ticker = Progress(progress, len(items) if isinstance(items, Sized) else 0, model.name)
    keys: list[K] = []
    parts: list[dict[str, np.ndarray]] = []
    for batch_keys, vectors in iter_embeddings(
        model, items, batch_size=batch_size, precision=precision, channels_last=channels_last,
        num_workers=num_workers, fast_decode=fast_decode, taps=True,
    ):
        keys.extend(batch_keys)
        parts.append(vectors)
        ticker.update(len(keys))
    ticker.finish()
    blocks = {name: np.concatenate([p[name] for p in parts], axis=0) for name in parts[0]} if parts else {
        FINAL: np.zeros((0, model.dim), dtype=np.float32)}
    return keys, blocks if taps else blocks[FINAL]


# --------------------------------------------------------------------------- parquet


def _vector_type(width: int) -> pa.DataType:
    return pa.list_(pa.field("item", pa.float32(), nullable=False), width)


def embeddings_schema(dim: int, tap_widths: dict[str, int] | None = None) -> pa.Schema:
    """Schema of an embeddings file: one row per (image, variant), tap blocks after ``vector``."""
    return pa.schema(
        [
            pa.field("objectid", pa.int64(), nullable=False),
            pa.field("uuid", pa.string(), nullable=False),
            pa.field("variant", pa.string(), nullable=False),
            pa.field("vector", _vector_type(dim), nullable=False),
            *[pa.field(TAP_PREFIX + name, _vector_type(width), nullable=False)
              for name, width in (tap_widths or {}).items()],
        ]
    )


@dataclass(frozen=True)
class EmbedBatchResult:
    """What :func:`embed_batch_to_parquet` wrote (for Dagster metadata and the benchmark)."""

    path: Path
    images: int
    full_rows: int
    face_rows: int
    seconds: float

    @property
    def rows(self) -> int:
        return self.full_rows + self.face_rows

    @property
    def images_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("nan")


def batch_items(images: pd.DataFrame) -> list[tuple[tuple[int, str], str, CropBox | None]]:
    """Embedding items for a batch DataFrame: a ``full`` item per row, a ``face`` item per crop box.

    Keys are ``(row position, variant)``. Crop columns are optional; a row is a face row only if
    all four crop values are present (not NaN/None).
    """
    missing = [c for c in ("objectid", "uuid", "path") if c not in images.columns]
    if missing:
        raise ValueError(f"images DataFrame lacks column(s) {missing}; it has {list(images.columns)}")
    has_crop = all(c in images.columns for c in CROP_COLUMNS)
    boxes = images[list(CROP_COLUMNS)].to_numpy(dtype=np.float64, na_value=np.nan) if has_crop else None
    items: list[tuple[tuple[int, str], str, CropBox | None]] = []
    for pos, path in enumerate(images["path"].tolist()):
        items.append(((pos, "full"), str(path), None))
        if boxes is not None and not np.isnan(boxes[pos]).any():
            items.append(((pos, "face"), str(path), tuple(float(v) for v in boxes[pos])))  # type: ignore[arg-type]
    return items


def embed_batch_to_parquet(
    model: LoadedModel,
    images: pd.DataFrame,
    lake: DataLake | Path | str,
    batch: str,
    *,
    batch_size: int = 32,
    precision: str = "fp32",
    channels_last: bool | None = None,
    num_workers: int = 2,
    fast_decode: bool = True,
    progress: Callable[[str], None] | None = None,
) -> EmbedBatchResult:
    """Embed one batch's images and write ``<lake>/embeddings/<model>/<batch>.parquet`` atomically.

    ``images`` has columns ``objectid``, ``uuid``, ``path`` and optionally ``crop_x0``, ``crop_y0``,
    ``crop_x1``, ``crop_y1`` (NaN = no face). Rows: one ``full`` per image, then a ``face`` row right
    after it when the image has a crop box. The file's schema metadata records the model, its
    weights id, dim and precision. ``progress`` (optional) gets a line about every 10% of the
    vectors (full images and face crops) and one at the end, e.g.
    ``efficientnet_lite0: 64/256 images (25%), 30.1 images/s``.
    """
    lake = lake if isinstance(lake, DataLake) else DataLake(Path(lake))
    target = lake.embeddings_path(model.name, batch)
    started = time.perf_counter()
    items = batch_items(images)
    keys, blocks = embed_images(
        model, items, batch_size=batch_size, precision=precision, channels_last=channels_last,
        num_workers=num_workers, fast_decode=fast_decode, progress=progress, taps=True,
    )
    tap_names = model.spec.tap_blocks
    if not keys:  # an empty batch still gets the full schema (tap widths from a dry pass)
        blocks = _empty_blocks(model, precision)
    positions = np.fromiter((pos for pos, _ in keys), dtype=np.int64, count=len(keys))
    variants = [variant for _, variant in keys]
    objectids = images["objectid"].to_numpy(dtype=np.int64)[positions]
    uuids = images["uuid"].astype(str).to_numpy()[positions]
    schema = embeddings_schema(model.dim, {name: blocks[name].shape[1] for name in tap_names}).with_metadata(
        {
            "artsim.model": model.name,
            "artsim.weights_id": model.weights_id,
            "artsim.dim": str(model.dim),
            "artsim.precision": precision,
            "artsim.taps": ",".join(model.spec.taps),
        }
    )
    table = pa.Table.from_arrays(
        [
            pa.array(objectids, type=pa.int64()),
            pa.array(uuids, type=pa.string()),
            pa.array(variants, type=pa.string()),
            *[_fixed_list(blocks[name]) for name in (FINAL, *tap_names)],
        ],
        schema=schema,
    )
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp)
    face_rows = variants.count("face")
    return EmbedBatchResult(
        path=target, images=len(images), full_rows=len(variants) - face_rows, face_rows=face_rows,
        seconds=time.perf_counter() - started,
    )


def _fixed_list(vectors: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), type=pa.float32()), vectors.shape[1])


def _empty_blocks(model: LoadedModel, precision: str) -> dict[str, np.ndarray]:
    """Zero-row blocks with the model's real widths (one dry forward pass of a blank image)."""
    size = model.spec.input_size
    one = forward_prepared(model, np.zeros((1, size, size, 3), dtype=np.uint8), precision, taps=True)
    return {name: np.zeros((0, v.shape[1]), dtype=np.float32) for name, v in one.items()}


def read_embedding_blocks(
    paths: Path | str | Iterable[Path | str], blocks: Sequence[str] | None = None
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Read embeddings files with their tap blocks: ``(meta, {block: float32 [N, width]})``.

    ``blocks`` names the blocks to read (``final`` and ``<module>.<stat>``); ``None`` reads every block
    the files share. A named block missing from a file is an error naming the file.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    tables = [read_table(p) for p in paths]
    if not tables:
        empty, _ = read_embeddings([])
        return empty, {}
    available = [
        [FINAL] + [n[len(TAP_PREFIX):] for n in t.column_names if n.startswith(TAP_PREFIX)] for t in tables
    ]
    wanted = list(blocks) if blocks is not None else [n for n in available[0] if all(n in a for a in available)]
    out: dict[str, np.ndarray] = {}
    for name in wanted:
        column = "vector" if name == FINAL else TAP_PREFIX + name
        for table, path in zip(tables, paths):
            if column not in table.column_names:
                raise ValueError(f"{path}: no embeddings block {name!r} (column {column!r}); re-run the embeddings")
        widths = {_vector_dim(t, p, column) for t, p in zip(tables, paths)}
        if len(widths) > 1:
            raise ValueError(f"embeddings block {name!r} has different widths {sorted(widths)} across files")
        width = widths.pop()
        out[name] = np.concatenate([_vectors(t.column(column), width) for t in tables], axis=0)
    meta = pd.concat([t.select(["objectid", "uuid", "variant"]).to_pandas() for t in tables], ignore_index=True)
    return meta, out


def read_embeddings(paths: Path | str | Iterable[Path | str]) -> tuple[pd.DataFrame, np.ndarray]:
    """Read embeddings files: ``(meta [objectid, uuid, variant], float32 [N, dim])`` row-aligned.

    All files must have the same vector length. No files -> an empty frame and a ``[0, 0]`` array.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    tables = [read_table(p) for p in paths]
    if not tables:
        empty = pd.DataFrame({"objectid": pd.Series(dtype="int64"), "uuid": pd.Series(dtype=object),
                              "variant": pd.Series(dtype=object)})
        return empty, np.zeros((0, 0), dtype=np.float32)
    dims = {_vector_dim(t, p) for t, p in zip(tables, paths)}
    if len(dims) > 1:
        raise ValueError(f"embeddings files have different vector lengths {sorted(dims)}")
    dim = dims.pop()
    vectors = np.concatenate([_vectors(t.column("vector"), dim) for t in tables], axis=0)
    meta = pd.concat([t.select(["objectid", "uuid", "variant"]).to_pandas() for t in tables], ignore_index=True)
    return meta, vectors


def _vector_dim(table: pa.Table, path: Any, column: str = "vector") -> int:
    kind = table.schema.field(column).type
    if pa.types.is_fixed_size_list(kind):
        return int(kind.list_size)
    lengths = pc.unique(pc.list_value_length(table.column(column))).to_pylist()
    if len(lengths) > 1:
        raise ValueError(f"{path}: vectors of different lengths {sorted(lengths)}")
    return int(lengths[0]) if lengths else 0


def _vectors(column: pa.ChunkedArray, dim: int) -> np.ndarray:
    parts = []
    for chunk in column.chunks:
        values = chunk.flatten()  # respects slicing offsets for both list kinds
        parts.append(values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dim))
    if not parts:
        return np.zeros((0, dim), dtype=np.float32)
    return np.concatenate(parts, axis=0)


# --------------------------------------------------------------------------- bf16 acceptance


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``a`` with the same row of ``b``."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    num = (a64 * b64).sum(axis=1)
    den = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    return num / np.maximum(den, 1e-30)


def check_bf16(
    model: LoadedModel,
    images: Sequence[ImageSource],
    *,
    batch_size: int = 16,
    channels_last: bool | None = None,
) -> float:
    """Minimum over ``images`` of the cosine similarity between fp32 and bf16 embeddings."""
    if not images:
        raise ValueError("check_bf16 needs at least one image")
    items = [(i, image, None) for i, image in enumerate(images)]
    _, fp32 = embed_images(model, items, batch_size=batch_size, precision="fp32",
                           channels_last=channels_last, num_workers=0)
    _, bf16 = embed_images(model, items, batch_size=batch_size, precision="bf16",
                           channels_last=channels_last, num_workers=0)
    return float(cosine_rows(fp32, bf16).min())


def bf16_acceptable(
    model: LoadedModel,
    images: Sequence[ImageSource],
    *,
    threshold: float = BF16_MIN_COSINE,
    batch_size: int = 16,
) -> bool:
    """True when bf16 keeps every image's vector within ``threshold`` cosine of fp32."""
    return check_bf16(model, images, batch_size=batch_size) >= threshold


__all__ = [
    "BF16_MIN_COSINE", "CROP_COLUMNS", "EmbedBatchResult", "ImageReadError", "PRECISIONS", "VARIANTS",
    "batch_items", "bf16_acceptable", "check_bf16", "cosine_rows", "embed_batch_to_parquet", "embed_images",
    "embeddings_schema", "FINAL", "forward", "forward_blocks", "forward_prepared", "iter_embeddings",
    "load_and_prepare", "read_embedding_blocks", "read_embeddings",
]
