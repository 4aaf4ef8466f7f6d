"""Image preparation for the backbones: orientation, the aspect-ratio limit, crop/resize/centre-crop, normalisation.

Plain Python (no Dagster). The one geometry every embedding goes through (the collection's images in
the pipeline, the queries in the search engine):

* :func:`oriented` / :func:`open_oriented` / :func:`displayed_size` — the image as displayed: its EXIF
  orientation (:data:`EXIF_ORIENTATION`, values 2-8) applied;
* :func:`check_aspect` / :func:`central_window` — the :data:`MAX_ASPECT`:1 limit: a thinner image is
  refused (:class:`AspectRatioError`) where it is checked, and narrowed to its central window where it
  is prepared;
* :func:`prepare_image` — crop (optional, :func:`clamp_box`), resize the short side to the model's
  ``resize_size``, centre-crop ``input_size``: ``uint8 [S, S, 3]`` RGB (torchvision's
  ``Resize + CenterCrop`` geometry);
* :func:`normalize_batch` — ``uint8 [N, H, W, 3]`` to the normalised ``float32 [N, 3, H, W]`` the
  model reads (its ``mean`` / ``std``).

``spec`` arguments are :class:`~artsim_pipeline.core.models.ModelSpec` entries of the registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps

if TYPE_CHECKING:
    import torch

    from .model_spec import ModelSpec


#: The longest long-side / short-side ratio an image (or its crop) may have to be prepared. Resizing
#: the short side to the model's size scales the long side by the same factor, so a thin strip
#: (a 205-byte 1x30000 PNG) would otherwise become a multi-gigabyte image.
MAX_ASPECT = 20

#: EXIF tag of the orientation; values 2-8 ask for a flip/rotation, 5-8 swap width and height.
EXIF_ORIENTATION = 0x0112


class AspectRatioError(ValueError):
    """An image is too thin to prepare (its aspect ratio is over :data:`MAX_ASPECT`)."""


def central_window(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """``box`` narrowed along its long side to its central ``MAX_ASPECT``:1 window (``box`` when within)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    short = max(1, min(w, h))
    longest = short * MAX_ASPECT
    if w > longest:
        x0 += (w - longest) // 2
        x1 = x0 + longest
    elif h > longest:
        y0 += (h - longest) // 2
        y1 = y0 + longest
    return (x0, y0, x1, y1)


def check_aspect(size: tuple[int, int], what: str = "image") -> None:
    """Raise :class:`AspectRatioError` when ``size``'s long/short side ratio is over :data:`MAX_ASPECT`."""
    w, h = size
    short, long = min(w, h), max(w, h)
    if short <= 0 or long / short > MAX_ASPECT:
        ratio = (f"{long / short:.2f}".rstrip("0").rstrip(".") + ":1") if short > 0 else "infinite"
        raise AspectRatioError(
            f"{what} is {w}x{h} pixels: aspect ratio {ratio} is over the limit of {MAX_ASPECT}:1 (MAX_ASPECT)"
        )


def exif_orientation(image: Image.Image) -> int:
    """The image's EXIF orientation (1 = upright; 1 when absent or unreadable)."""
    try:
        value = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - damaged EXIF: show the pixels as stored
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def displayed_size(image: Image.Image) -> tuple[int, int]:
    """``(width, height)`` of ``image`` as displayed: swapped when its EXIF orientation turns it a quarter."""
    width, height = image.size
    return (height, width) if exif_orientation(image) >= 5 else (width, height)


def oriented(image: Image.Image) -> Image.Image:
    """``image`` as displayed: its EXIF orientation applied (``image`` itself when already upright).

    Call it after ``draft``/``load`` (it decodes); the result carries no orientation tag, so applying
    it twice is harmless.
    """
    if exif_orientation(image) == 1:
        return image
    return ImageOps.exif_transpose(image)


def open_oriented(source: Any) -> Image.Image:
    """Open and decode an image file (path or binary file object) as displayed: RGB, EXIF orientation
    applied; the file is closed on return."""
    with Image.open(source) as image:
        image.load()
        upright = oriented(image)
        return upright.convert("RGB") if upright.mode != "RGB" or upright is image else upright


def prepare_image(
    image: Image.Image, spec: ModelSpec, crop_box: tuple[float, float, float, float] | None = None
) -> np.ndarray:
    """Crop (optional), resize the short side, centre-crop: ``uint8`` array ``[S, S, 3]`` (RGB).

    Same geometry as torchvision's ``Resize(resize_size) + CenterCrop(input_size)`` on PIL images.
    ``crop_box`` is ``(x0, y0, x1, y1)`` in pixels of ``image``; it is clamped to the image. An image
    (or crop) whose aspect ratio is over :data:`MAX_ASPECT` (a scroll, a thin strip) is first narrowed
    to its central window of ``MAX_ASPECT``:1: the centre crop keeps only its middle anyway, and the
    resize then costs what a ``MAX_ASPECT``:1 image costs, however long the strip (a 1×30000 strip
    would otherwise be scaled up to gigabytes). ``image`` is used as stored: apply its EXIF
    orientation first (:func:`oriented`).
    """
    box = clamp_box(crop_box, image.size) if crop_box is not None else (0, 0, *image.size)
    box = central_window(box)
    if box == (0, 0, *image.size):
        box = None
    if image.mode != "RGB":
        image = image.convert("RGB")
    if box is not None:
        image = image.crop(box)
    w, h = image.size
    r = spec.resize_size
    if w <= h:
        nw, nh = r, int(r * h / w)
    else:
        nw, nh = int(r * w / h), r
    if (nw, nh) != (w, h):
        image = image.resize((nw, nh), spec.resample)
    s = spec.input_size
    left = int(round((nw - s) / 2.0))
    top = int(round((nh - s) / 2.0))
    if (left, top, s, s) != (0, 0, nw, nh):
        image = image.crop((left, top, left + s, top + s))
    return np.array(image, dtype=np.uint8)  # writable copy (torch.from_numpy needs one)


def clamp_box(box: tuple[float, float, float, float], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Round a crop box to whole pixels inside an image of ``size``; raise if nothing is left."""
    w, h = size
    x0, y0, x1, y1 = (float(v) for v in box)
    ix0, iy0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    ix1, iy1 = min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))
    if ix1 - ix0 < 2 or iy1 - iy0 < 2:
        raise ValueError(f"crop box {tuple(box)} is empty inside a {w}x{h} image")
    return ix0, iy0, ix1, iy1


def normalize_batch(batch: np.ndarray | torch.Tensor, spec: ModelSpec, device: torch.device | str = "cpu",
                    channels_last: bool = False) -> torch.Tensor:
    """``uint8 [N, H, W, 3]`` -> normalised ``float32 [N, 3, H, W]`` on ``device``.

    The NHWC -> NCHW permute is free and already *is* the channels_last layout; a contiguous
    (NCHW) copy is made only when ``channels_last`` is false.
    """
    # torch here, not at the top: the geometry above serves queries (an objectid search, the aspect check of
    # an upload) that load no model, and importing torch costs ~2 s and ~300 MB
    import torch

    x = torch.from_numpy(batch) if isinstance(batch, np.ndarray) else batch
    x = x.to(device, non_blocking=True).permute(0, 3, 1, 2)
    x = x.float() if channels_last else x.contiguous().float()
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    # (x / 255 - mean) / std  ==  x * (1 / (255 std)) - mean / std
    return x.mul_(1.0 / (255.0 * std)).sub_(mean / std)


__all__ = [
    "AspectRatioError", "EXIF_ORIENTATION", "MAX_ASPECT", "central_window", "check_aspect", "clamp_box",
    "displayed_size", "exif_orientation", "normalize_batch", "open_oriented", "oriented", "prepare_image",
]
