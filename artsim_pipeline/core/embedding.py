"""Batched image embedding: decode/resize in worker threads, overlapped with the forward pass.

Plain Python (no Dagster import). The flow for one batch of the pipeline:

1. worker threads open each image file (JPEGs are DCT-downscaled while decoding when the image is
   at least twice the size the model needs), crop the optional face box, resize and centre-crop
   to ``uint8 [S, S, 3]`` arrays; PIL releases the GIL for decoding and resampling, so this
   runs beside the forward pass of the previous batch;
2. the main thread stacks a batch, normalises it in one fused multiply-subtract (the NHWC ->
   NCHW permute is free and is the channels_last layout) and runs the model under
   ``torch.inference_mode`` (optionally ``bf16`` autocast);
3. :func:`artsim_pipeline.core.embedding_store.embed_batch_to_parquet` writes
   ``<lake>/embeddings/<model>/<batch>.parquet`` atomically (its schema is documented there).

Vectors are the raw (not L2-normalised) float32 backbone features; with ``taps`` the model's mid-level
tap features (:attr:`~artsim_pipeline.core.models.ModelSpec.taps`, pooled per channel over space) come
from the same forward pass.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Hashable, Iterable, Iterator, Sequence, Sized, TypeVar, Union

import numpy as np
from PIL import Image

from .preprocessing import central_window, clamp_box, displayed_size, normalize_batch, oriented, prepare_image
from .progress import Progress
from .storage import readable

if TYPE_CHECKING:
    import torch

    from .models import LoadedModel, ModelSpec

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

    The image's EXIF orientation is applied (after the draft decode), so ``crop_box`` is in pixels of
    the image as displayed; an image over :data:`~artsim_pipeline.core.preprocessing.MAX_ASPECT`:1 is embedded from
    its central window (:func:`~artsim_pipeline.core.preprocessing.prepare_image`).
    """
    if isinstance(source, Image.Image):
        return prepare_image(oriented(source), spec, crop_box)
    with Image.open(readable(source)) as image:
        crop_box = _draft_for(image, spec, crop_box, fast_decode)
        image.load()
        return prepare_image(oriented(image), spec, crop_box)


def _draft_for(image: Image.Image, spec: ModelSpec, crop_box: CropBox | None, fast_decode: bool) -> CropBox | None:
    """Ask the opened (not yet decoded) ``image`` for ``spec``'s JPEG draft scale (see :func:`load_and_prepare`);
    returns ``crop_box`` in the pixels that will be decoded."""
    width, height = image.size  # as stored (draft works on these)
    if fast_decode and image.format == "JPEG":
        # crop boxes are in the pixels of the image as displayed (EXIF orientation applied); the scale
        # factors below do not depend on the orientation. (Read here only: a PNG's EXIF read decodes it.)
        shown = displayed_size(image)
        region = central_window(clamp_box(crop_box, shown) if crop_box is not None else (0, 0, *shown))
        short = min(region[2] - region[0], region[3] - region[1])
        need = spec.resize_size / short
        if need <= 0.5:
            image.draft("RGB", (math.ceil(width * need), math.ceil(height * need)))
            scale = image.size[0] / width
            if crop_box is not None and scale != 1.0:
                crop_box = tuple(v * scale for v in region)  # type: ignore[assignment]
    return crop_box


def load_and_prepare_many(source: Any, specs: Sequence[ModelSpec], crop_box: CropBox | None = None,
                          fast_decode: bool = True) -> list[np.ndarray]:
    """:func:`load_and_prepare` of one image for each of ``specs`` (a query's models), decoding it once per
    distinct decoded size rather than once per model: models whose draft scales agree (or every model, for
    a PNG or a small JPEG) share one decode. The arrays are the same as :func:`load_and_prepare`'s.

    ``source``: a path, bytes, a file-like object (read once) or a PIL image."""
    if isinstance(source, Image.Image):
        return [load_and_prepare(source, spec, crop_box, fast_decode) for spec in specs]
    if isinstance(source, (bytes, bytearray)) or hasattr(source, "read"):
        data = bytes(source) if isinstance(source, (bytes, bytearray)) else source.read()

        def reopen() -> Any:
            return io.BytesIO(data)
    else:
        def reopen() -> Any:
            return readable(source)
    decoded: dict[tuple[Any, ...], Image.Image] = {}
    arrays = []
    for spec in specs:
        with Image.open(reopen()) as image:
            box = _draft_for(image, spec, crop_box, fast_decode)
            key = (image.mode, image.size, tuple(image.tile))  # after draft() (header only): what load() decodes
            if key not in decoded:
                image.load()
                decoded[key] = oriented(image)
        arrays.append(prepare_image(decoded[key], spec, box))
    return arrays


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
        import torch  # a model is loaded, so torch is already imported (this module's readers need none)

        return torch.autocast(device_type=model.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def forward(model: LoadedModel, x: torch.Tensor, precision: str = "fp32") -> np.ndarray:
    """Bare forward pass of a normalised ``[N, 3, S, S]`` tensor: ``float32 [N, dim]`` array."""
    import torch  # lazily: the lake's readers (collection, status) import this module and need no model

    _check_precision(precision)
    with torch.inference_mode(), _autocast(model, precision):
        y = model.module(x)
    return np.ascontiguousarray(y.float().cpu().numpy(), dtype=np.float32)


def forward_blocks(model: LoadedModel, x: torch.Tensor, precision: str = "fp32") -> dict[str, np.ndarray]:
    """One forward pass with the tap features: ``{"final": [N, dim], "<tap>.<stat>": [N, C], ...}``."""
    import torch  # lazily, as in forward()

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
        num_workers=num_workers, fast_decode=fast_decode, taps=taps,
    ):
        keys.extend(batch_keys)
        parts.append(vectors if taps else {FINAL: vectors})  # no tap statistics when nobody asked for them
        ticker.update(len(keys))
    ticker.finish()
    blocks = {name: np.concatenate([p[name] for p in parts], axis=0) for name in parts[0]} if parts else {
        FINAL: np.zeros((0, model.dim), dtype=np.float32)}
    return keys, blocks if taps else blocks[FINAL]


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
    "BF16_MIN_COSINE", "CROP_COLUMNS", "FINAL", "ImageReadError", "PRECISIONS", "VARIANTS", "bf16_acceptable",
    "check_bf16", "cosine_rows", "embed_images", "forward", "forward_blocks", "forward_prepared",
    "iter_embeddings", "load_and_prepare",
]
