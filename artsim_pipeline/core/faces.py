"""Face detection (MTCNN, facenet-pytorch) and the face crop used by the face-aware embeddings.

Plain Python (no Dagster). :class:`FaceDetector` runs MTCNN on a downscaled copy of each image
(longer side <= ``max_side``) and maps the boxes back to full-resolution pixel coordinates
(clipped to the image). Faces with probability >= ``threshold`` are kept; the *union box* encloses
them all, and the *crop box* is the union box grown by ``margin`` (a fraction of the union box's
width/height on each side), clipped to the image, in integer pixels usable with ``Image.crop``.
No kept face: ``face_count`` 0 and no crop (downstream uses the whole image).

Batching: MTCNN only batches images of equal size, so images are grouped by their downscaled size
and each group goes through one ``detect`` call (one at a time if a batch call fails).

:func:`detect_faces_in_files` returns one row per file; the caller adds ``objectid``/``uuid``.
Parquet-friendly schema (:data:`FACES_SCHEMA`, written by :func:`write_faces`):

============================  ==================  ==================================================
column                        type                meaning
============================  ==================  ==================================================
path                          string              the image file
width, height                 int64               full-resolution size (0 if the file did not open)
face_count                    int64               faces with probability >= threshold
probabilities                 list<double>        their probabilities, highest first
boxes                         list<list<double>>  their boxes ``[x0, y0, x1, y1]``, full-res pixels
x0, y0, x1, y1                double              union box of the kept faces; NaN when none
crop_x0, crop_y0,             int64 (nullable)    crop box (union + margin, clipped); null when
crop_x1, crop_y1                                  none (pandas ``Int64``)
error                         string              why the file could not be read; empty otherwise
============================  ==================  ==================================================

Threads: the constructor caps torch's intra-op threads at the CPUs this process may use (or sets
``num_threads`` when given); that is process-wide, as torch threads are.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
from PIL import Image

from .progress import Progress
from .storage import lake_path, readable, write_table

log = logging.getLogger(__name__)

UNION_COLUMNS = ("x0", "y0", "x1", "y1")
CROP_COLUMNS = ("crop_x0", "crop_y0", "crop_x1", "crop_y1")
FACES_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("face_count", pa.int64()),
        ("probabilities", pa.list_(pa.float64())),
        ("boxes", pa.list_(pa.list_(pa.float64()))),
        *[(name, pa.float64()) for name in UNION_COLUMNS],
        *[(name, pa.int64()) for name in CROP_COLUMNS],
        ("error", pa.string()),
    ]
)

#: Key columns the pipeline adds in front of the faces table.
KEY_COLUMNS = {"objectid": pa.int64(), "uuid": pa.string()}


@dataclass
class FaceResult:
    """Faces found in one image (coordinates in the full-resolution image)."""

    face_count: int
    probabilities: list[float]
    boxes: list[list[float]]  # kept faces, [x0, y0, x1, y1]
    union_box: tuple[float, float, float, float] | None
    crop_box: tuple[int, int, int, int] | None
    error: str = ""


def union_box(boxes: Any, probs: Any, threshold: float) -> tuple[float, float, float, float] | None:
    """The smallest box enclosing every box whose probability is >= ``threshold`` (None if none)."""
    if boxes is None or probs is None:
        return None
    array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray([np.nan if p is None else p for p in np.ravel(np.asarray(probs, dtype=object))], dtype=np.float64)
    if len(scores) != len(array):
        raise ValueError(f"{len(array)} boxes but {len(scores)} probabilities")
    keep = array[scores >= threshold]  # NaN compares False
    if len(keep) == 0:
        return None
    return (float(keep[:, 0].min()), float(keep[:, 1].min()), float(keep[:, 2].max()), float(keep[:, 3].max()))


def crop_box_with_margin(box: Sequence[float], width: int, height: int, margin: float) -> tuple[int, int, int, int]:
    """``box`` grown by ``margin`` × its width/height on each side, clipped to the image, as integer pixels.

    The result is rounded outwards (floor/ceil) and never empty.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    x0, y0, x1, y1 = (float(v) for v in box)
    dx, dy = margin * (x1 - x0), margin * (y1 - y0)
    cx0 = min(max(0, math.floor(x0 - dx)), width - 1)
    cy0 = min(max(0, math.floor(y0 - dy)), height - 1)
    cx1 = max(min(width, math.ceil(x1 + dx)), cx0 + 1)
    cy1 = max(min(height, math.ceil(y1 + dy)), cy0 + 1)
    return (int(cx0), int(cy0), int(cx1), int(cy1))


@dataclass
class _Prepared:
    small: Image.Image  # RGB, longer side <= max_side
    width: int  # full resolution
    height: int


def available_cpus() -> int:
    """The cores this process may use (its CPU affinity where the OS tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class _Raw:
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    probs: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))


class FaceDetector:
    """MTCNN face detector with downscaling, batching by size and the union/crop logic."""

    def __init__(
        self,
        threshold: float = 0.90,
        margin: float = 0.10,
        max_side: int = 1024,
        device: str = "cpu",
        num_threads: int | None = None,
        min_face_size: int = 20,
    ) -> None:
        import torch
        from facenet_pytorch import MTCNN

        if max_side < 32:
            raise ValueError(f"max_side must be >= 32, got {max_side}")
        self.threshold = threshold
        self.margin = margin
        self.max_side = max_side
        self.device = _resolve_device(device)
        if num_threads is not None:
            torch.set_num_threads(max(1, num_threads))
        elif torch.get_num_threads() > available_cpus():
            torch.set_num_threads(available_cpus())
        self._torch = torch
        self.mtcnn = MTCNN(keep_all=True, device=self.device, min_face_size=min_face_size)
        self.mtcnn.eval()

    # -- preparation -----------------------------------------------------------------------------
    def target_size(self, width: int, height: int) -> tuple[int, int]:
        """The detection size for a ``width``×``height`` image (longer side <= ``max_side``)."""
        scale = min(1.0, self.max_side / max(width, height))
        return max(1, round(width * scale)), max(1, round(height * scale))

    def _prepare(self, image: Image.Image, full_size: tuple[int, int] | None = None) -> _Prepared:
        width, height = full_size or image.size
        target = self.target_size(width, height)
        small = image if image.mode == "RGB" else image.convert("RGB")
        if small.size != target:
            small = small.resize(target, Image.Resampling.BILINEAR)
        return _Prepared(small, width, height)

    def _load(self, path: Path) -> _Prepared:
        from .preprocessing import displayed_size, oriented  # the one EXIF rule (it imports torch: here, not at load)

        with Image.open(readable(path)) as image:
            width, height = displayed_size(image)  # boxes are on the image as displayed
            target = self.target_size(width, height)
            turned = (width, height) != image.size
            if image.format == "JPEG" and target != (width, height):
                image.draft("RGB", target[::-1] if turned else target)  # DCT-domain downscale, never below target
            image.load()
            return self._prepare(oriented(image), (width, height))

    # -- detection -------------------------------------------------------------------------------
    def _run(self, smalls: list[Image.Image]) -> list[_Raw]:
        with self._torch.inference_mode():
            try:
                boxes, probs = self.mtcnn.detect(smalls)
            except Exception:
                if len(smalls) == 1:
                    raise
                log.warning("batched face detection of %d images failed; one at a time", len(smalls), exc_info=True)
                return [self._run([small])[0] for small in smalls]
        out = []
        for image_boxes, image_probs in zip(boxes, probs):
            if image_boxes is None:
                out.append(_Raw())
                continue
            box_array = np.asarray(image_boxes, np.float32).reshape(-1, 4)
            prob_array = np.asarray(image_probs, np.float32).reshape(-1)
            out.append(_Raw(box_array, prob_array))
        return out

    def _result(self, raw: _Raw, prepared: _Prepared) -> FaceResult:
        sx = prepared.width / prepared.small.size[0]
        sy = prepared.height / prepared.small.size[1]
        boxes = raw.boxes.astype(np.float64) * np.array([sx, sy, sx, sy])
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, prepared.width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, prepared.height)
        keep = raw.probs >= self.threshold
        kept_boxes, kept_probs = boxes[keep], raw.probs[keep].astype(np.float64)
        order = np.argsort(-kept_probs, kind="stable")
        kept_boxes, kept_probs = kept_boxes[order], kept_probs[order]
        union = union_box(kept_boxes, kept_probs, self.threshold)
        crop = crop_box_with_margin(union, prepared.width, prepared.height, self.margin) if union else None
        return FaceResult(
            face_count=int(len(kept_probs)),
            probabilities=[float(p) for p in kept_probs],
            boxes=[[float(v) for v in box] for box in kept_boxes],
            union_box=union,
            crop_box=crop,
        )

    def _detect_prepared(self, prepared: list[_Prepared]) -> list[FaceResult]:
        groups: dict[tuple[int, int], list[int]] = {}
        for index, item in enumerate(prepared):
            groups.setdefault(item.small.size, []).append(index)
        results: list[FaceResult | None] = [None] * len(prepared)
        for indices in groups.values():
            try:
                raws = self._run([prepared[i].small for i in indices])
            except Exception as exc:
                log.warning("face detection failed for %d image(s): %s", len(indices), exc)
                for i in indices:
                    results[i] = FaceResult(0, [], [], None, None, error=f"detect: {type(exc).__name__}: {exc}")
                continue
            for i, raw in zip(indices, raws):
                results[i] = self._result(raw, prepared[i])
        return [r for r in results if r is not None]

    def detect(self, images: list[Image.Image]) -> list[FaceResult]:
        """One :class:`FaceResult` per image, in order (boxes in each image's own pixel coordinates)."""
        return self._detect_prepared([self._prepare(image) for image in images])


def _row(path: Path, width: int, height: int, result: FaceResult) -> dict[str, Any]:
    row: dict[str, Any] = {
        "path": str(path),
        "width": width,
        "height": height,
        "face_count": result.face_count,
        "probabilities": list(result.probabilities),
        "boxes": [list(b) for b in result.boxes],
    }
    row.update(zip(UNION_COLUMNS, result.union_box or (math.nan,) * 4))
    row.update(zip(CROP_COLUMNS, result.crop_box or (None,) * 4))
    row["error"] = result.error
    return row


def empty_faces_frame() -> pd.DataFrame:
    return _typed(pd.DataFrame({name: [] for name in FACES_SCHEMA.names}))


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    dtypes = {"path": "object", "width": "int64", "height": "int64", "face_count": "int64", "error": "object",
              "probabilities": "object", "boxes": "object"}
    dtypes.update({name: "float64" for name in UNION_COLUMNS})
    dtypes.update({name: "Int64" for name in CROP_COLUMNS})
    return frame.astype(dtypes)


def detect_faces_in_files(
    paths: list[Path],
    detector: FaceDetector,
    batch_size: int = 16,
    *,
    progress: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Detect faces in image files, ``batch_size`` files at a time; one row per path (schema above).

    ``progress`` (optional) gets a line about every 10% of the files and one at the end, e.g.
    ``faces: 130/1300 images (10%), 11.2 images/s, 37 with a face``.
    """
    rows: list[dict[str, Any] | None] = [None] * len(paths)
    step = max(1, batch_size)
    ticker = Progress(progress, len(paths), "faces")
    with_face = 0
    for start in range(0, len(paths), step):
        loaded: list[tuple[int, Path, _Prepared]] = []
        for index in range(start, min(start + step, len(paths))):
            path = lake_path(paths[index])
            try:
                loaded.append((index, path, detector._load(path)))
            except Exception as exc:  # missing, not an image, truncated, ...
                log.warning("cannot read %s for face detection: %s", path, exc)
                rows[index] = _row(path, 0, 0, FaceResult(0, [], [], None, None, error=f"{type(exc).__name__}: {exc}"))
        results = detector._detect_prepared([prepared for _, _, prepared in loaded])
        for (index, path, prepared), result in zip(loaded, results):
            rows[index] = _row(path, prepared.width, prepared.height, result)
            with_face += result.face_count > 0
        done = min(start + step, len(paths))
        if ticker.due(done):
            ticker.update(done, f"{with_face} with a face")
    ticker.finish(f"{with_face} with a face")
    if not rows:
        return empty_faces_frame()
    return _typed(pd.DataFrame(rows, columns=FACES_SCHEMA.names))


def faces_table(df: pd.DataFrame) -> pa.Table:
    """``df`` as an Arrow table with :data:`FACES_SCHEMA` types (extra columns, e.g. objectid, kept).

    Works for an empty frame too (a batch with no usable image): its list columns may have been
    inferred as float64, which Arrow cannot convert to a list type, so they are made object columns.
    """
    list_columns = [name for name in ("probabilities", "boxes") if name in df.columns and df[name].dtype != object]
    if list_columns:
        if len(df) and any(df[name].notna().any() for name in list_columns):
            raise TypeError(f"faces columns {list_columns} must hold lists, got {[str(df[n].dtype) for n in list_columns]}")
        df = df.assign(**{name: pd.Series([None] * len(df), index=df.index, dtype=object) for name in list_columns})
    schema = pa.Schema.from_pandas(df, preserve_index=False)
    for name in FACES_SCHEMA.names:
        if name in schema.names:
            schema = schema.set(schema.get_field_index(name), FACES_SCHEMA.field(name))
    for name, kind in KEY_COLUMNS.items():  # added by face_crops; typed even when the batch is empty
        if name in schema.names:
            schema = schema.set(schema.get_field_index(name), pa.field(name, kind))
    return pa.Table.from_pandas(df, schema=schema, preserve_index=False)


def write_faces(df: pd.DataFrame, path: Path) -> None:
    """Write a faces table to Parquet atomically, with the documented column types."""
    write_table(faces_table(df), path)
