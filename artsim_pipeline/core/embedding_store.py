"""Embeddings files: ``<lake>/embeddings/<model>/<batch>.parquet``, written per batch and read back.

Plain Python (no Dagster import). :func:`embed_batch_to_parquet` embeds one batch's images (full image
and face crop, :mod:`artsim_pipeline.core.embedding`) and writes the file atomically;
:func:`read_embeddings` / :func:`read_embedding_blocks` read files back row-aligned.

Schema: ``objectid`` int64, ``uuid`` string, ``variant`` string (``full`` | ``face``), ``vector``
fixed_size_list<float32>[dim] (the raw, not L2-normalised final feature), then one
``tap:<module>.<stat>`` fixed_size_list<float32>[channels] per tap block (the model's mid-level features,
:attr:`~artsim_pipeline.core.models.ModelSpec.taps`, stat ``mean`` or ``std`` per channel over space);
schema metadata ``artsim.model``, ``artsim.weights_id``, ``artsim.dim``, ``artsim.precision``,
``artsim.taps``. Rows: one ``full`` per image, then a ``face`` row right after it when the image has a
crop box.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .embedding import CROP_COLUMNS, FINAL, CropBox, embed_images, forward_prepared
from .storage import is_remote, lake_path, read_table, write_table
from .lake import DataLake

if TYPE_CHECKING:
    from .models import LoadedModel

TAP_PREFIX = "tap:"


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
    """What :func:`embed_batch_to_parquet` wrote (for Dagster metadata and the benchmark): ``encoded``
    rows went through the model, ``reused`` rows were taken from the batch's previous file."""

    path: Path
    images: int
    full_rows: int
    face_rows: int
    seconds: float
    encoded: int = 0
    reused: int = 0

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


def item_keys(items: Sequence[tuple[Any, str, CropBox | None]]) -> list[str]:
    """Each item's content key: the SHA-256 of its image file's bytes, its variant and its crop box
    (so a replaced image or a moved face box is a new key; an unchanged one keeps its key)."""
    digests: dict[str, str] = {}
    out = []
    for (_, variant), path, box in items:
        if path not in digests:
            digests[path] = hashlib.sha256(lake_path(path).read_bytes()).hexdigest()  # an s3:// image too
        crop = "" if box is None else ",".join(f"{v:.6f}" for v in box)
        out.append(hashlib.sha256(f"{digests[path]}|{variant}|{crop}".encode()).hexdigest()[:32])
    return out


def stored_rows(target: Any, expected: dict[str, str]) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    """``({item key: row}, {block: rows})`` of the batch's previous file, when it was written with the same
    ``expected`` schema metadata (model, weights, dim, precision, taps, reuse version); else nothing."""
    try:
        table = read_table(target)
    except Exception:  # noqa: BLE001 - absent or unreadable: everything is encoded again
        return {}, {}
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    keys = meta.get("artsim.item_keys", "").split(",") if meta.get("artsim.item_keys") else []
    if any(meta.get(k) != v for k, v in expected.items()) or len(keys) != table.num_rows:
        return {}, {}
    blocks = {FINAL if n == "vector" else n[len(TAP_PREFIX):]: _vectors(table.column(n), _vector_dim(table, target, n))
              for n in table.column_names if n == "vector" or n.startswith(TAP_PREFIX)}
    return {k: i for i, k in enumerate(keys)}, blocks


def _reuse_or_embed(model: LoadedModel, items: list, keys: list[str], reusable: tuple[dict[str, int], dict[str, np.ndarray]],
                    **embed: Any) -> tuple[list[tuple[int, str]], dict[str, np.ndarray] | None, int]:
    """(every item's (position, variant), its blocks in item order, how many went through the model): the
    items whose key the previous file holds are copied from it, the others embedded."""
    rows, stored = reusable
    todo = [n for n, key in enumerate(keys) if key not in rows] if stored else list(range(len(items)))
    new_keys, new_blocks = embed_images(model, [items[n] for n in todo], taps=True, **embed)
    if len(todo) == len(items):
        return new_keys, (new_blocks if new_keys else None), len(todo)
    fresh = dict(zip(todo, range(len(todo))))
    blocks = {}
    for name, stored_block in stored.items():
        if name not in new_blocks and todo:
            return _reuse_or_embed(model, items, keys, ({}, {}), **embed)  # another block set: start over
        width = stored_block.shape[1]
        out = np.empty((len(items), width), dtype=np.float32)
        for n in range(len(items)):
            out[n] = new_blocks[name][fresh[n]] if n in fresh else stored_block[rows[keys[n]]]
        blocks[name] = out
    return [item[0] for item in items], blocks, len(todo)


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
    reuse_version: str | None = None,
) -> EmbedBatchResult:
    """Embed one batch's images and write ``<lake>/embeddings/<model>/<batch>.parquet`` atomically.

    ``images`` has columns ``objectid``, ``uuid``, ``path`` and optionally ``crop_x0``, ``crop_y0``,
    ``crop_x1``, ``crop_y1`` (NaN = no face). Rows: one ``full`` per image, then a ``face`` row right
    after it when the image has a crop box. The file's schema metadata records the model, its
    weights id, dim and precision. ``progress`` (optional) gets a line about every 10% of the
    vectors (full images and face crops) and one at the end, e.g.
    ``efficientnet_lite0: 64/256 images (25%), 30.1 images/s``.

    With ``reuse_version`` (the asset's code version), each row's content key (:func:`item_keys`) is
    recorded, and a row whose key the batch's previous file holds — written with the same model,
    weights, precision, taps and ``reuse_version`` — is copied from it instead of encoded again: removing
    a painting encodes nothing, a replaced image encodes that image alone.
    """
    lake = lake if isinstance(lake, DataLake) else DataLake(Path(lake))
    target = lake.embeddings_path(model.name, batch)
    started = time.perf_counter()
    items = batch_items(images)
    identity = {"artsim.model": model.name, "artsim.weights_id": model.weights_id, "artsim.dim": str(model.dim),
                "artsim.precision": precision, "artsim.taps": ",".join(model.spec.taps)}
    keys_of_items = item_keys(items) if reuse_version is not None else []
    reusable = stored_rows(target, {**identity, "artsim.reuse_version": reuse_version}) if keys_of_items else ({}, {})
    keys, blocks, encoded = _reuse_or_embed(
        model, items, keys_of_items, reusable, batch_size=batch_size, precision=precision,
        channels_last=channels_last, num_workers=num_workers, fast_decode=fast_decode, progress=progress,
    )
    tap_names = model.spec.tap_blocks
    if not keys:  # an empty batch still gets the full schema (tap widths from a dry pass)
        blocks = _empty_blocks(model, precision)
    positions = np.fromiter((pos for pos, _ in keys), dtype=np.int64, count=len(keys))
    variants = [variant for _, variant in keys]
    objectids = images["objectid"].to_numpy(dtype=np.int64)[positions]
    uuids = images["uuid"].astype(str).to_numpy()[positions]
    reuse = {"artsim.reuse_version": reuse_version, "artsim.item_keys": ",".join(keys_of_items)} if keys_of_items else {}
    schema = embeddings_schema(model.dim, {name: blocks[name].shape[1] for name in tap_names}).with_metadata(
        {**identity, **reuse})
    table = pa.Table.from_arrays(
        [
            pa.array(objectids, type=pa.int64()),
            pa.array(uuids, type=pa.string()),
            pa.array(variants, type=pa.string()),
            *[_fixed_list(blocks[name]) for name in (FINAL, *tap_names)],
        ],
        schema=schema,
    )
    write_table(table, target)  # page checksums, verified on every read (storage.read_table)
    face_rows = variants.count("face")
    return EmbedBatchResult(
        path=target, images=len(images), full_rows=len(variants) - face_rows, face_rows=face_rows,
        seconds=time.perf_counter() - started, encoded=encoded, reused=len(variants) - encoded,
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
    if isinstance(paths, (str, os.PathLike)) or is_remote(paths):  # one file (an s3:// one too)
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


__all__ = [
    "EmbedBatchResult", "TAP_PREFIX", "batch_items", "embed_batch_to_parquet", "embeddings_schema", "item_keys",
    "read_embedding_blocks", "read_embeddings", "stored_rows",
]
