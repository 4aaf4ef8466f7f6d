"""Image validation: what makes a JPEG file fit to be (or stay) in the lake's image cache.

Plain Python (no Dagster). :func:`verify_image` is the full check a file passes before it is renamed
into ``images/<uuid>.jpg``, in this order: JPEG header (``not_jpeg``), pixel count from the header
*before* decoding against ``max_pixels`` (``decompression_bomb``; default :data:`PILLOW_MAX_PIXELS`,
Pillow's own limit), shorter side against ``min_side`` (``skipped_small``), full decode (``truncated``
or ``corrupt``: ``ImageFile.LOAD_TRUNCATED_IMAGES`` is left off), the decoded pixel count again and,
with ``max_side``, the longer side (``oversize``: an IIIF server that ignored the requested size). A
refused file raises :class:`ImageRejected` carrying the status (``skipped_small`` / ``failed``), the
``"<kind>: <detail>"`` reason and the size read.

:func:`cached_size` is the cheap check of a cache hit: the file must parse as a JPEG header within
``max_pixels`` and end with the JPEG end-of-image marker (read from the last few KiB); only a file
without that marker is fully decoded again. An invalid cached file is deleted (and fetched again by
the caller). For an IIIF download the caller allows at most :data:`IIIF_PIXEL_SLACK` ``* S * S``
pixels and sides up to ``S +`` :data:`IIIF_SIDE_SLACK`.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .storage import is_remote

log = logging.getLogger(__name__)

_EOI = b"\xff\xd9"
_TAIL_BYTES = 4096
#: Pillow's own decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``); artsim never accepts more by default.
PILLOW_MAX_PIXELS = 89_478_485
#: An IIIF download is asked for at most S x S pixels; the header may claim at most this many times S * S.
IIIF_PIXEL_SLACK = 4
#: Rounding slack (pixels) when checking that an IIIF image fits the requested !S,S box.
IIIF_SIDE_SLACK = 1


class ImageRejected(Exception):
    """An image that is not stored: ``status`` is ``skipped_small`` or ``failed``."""

    def __init__(self, status: str, reason: str, width: int = 0, height: int = 0) -> None:
        super().__init__(reason)
        self.status, self.reason, self.width, self.height = status, reason, width, height


def raise_pillow_limit(max_pixels: int) -> None:
    """Raise Pillow's global decompression-bomb guard to ``max_pixels`` (never lower it)."""
    # Pillow's global guard must not reject (at 2x its limit) an image we accept. Only ever raised;
    # our own per-call check below (header size vs max_pixels) is what enforces the option.
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


def verify_image(
    path: Path, min_side: int, max_pixels: int, content_type: str = "", max_side: int | None = None
) -> tuple[int, int]:
    """Fully validate a JPEG file; return ``(width, height)`` or raise :class:`ImageRejected`.

    Order: JPEG header, pixel count (before decoding), shorter side, full decode, then the decoded
    image's pixel count again and, with ``max_side``, its longer side (``oversize``: e.g. an IIIF
    server that ignored the requested size).
    """
    width = height = 0
    try:
        with Image.open(path, formats=("JPEG",)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageRejected(
                    "failed",
                    f"decompression_bomb: {width}x{height} = {width * height} pixels > max_pixels {max_pixels}",
                    width,
                    height,
                )
            if min(width, height) < min_side:
                raise ImageRejected("skipped_small", f"shorter side {min(width, height)} px < min_side {min_side}", width, height)
            image.load()
            decoded_w, decoded_h = image.im.size if image.im is not None else image.size
            if decoded_w * decoded_h > max_pixels:
                raise ImageRejected(
                    "failed",
                    f"decompression_bomb: decoded {decoded_w}x{decoded_h} pixels > max_pixels {max_pixels}",
                    width,
                    height,
                )
            if max_side is not None and max(decoded_w, decoded_h) > max_side:
                raise ImageRejected(
                    "failed", f"oversize: {decoded_w}x{decoded_h} has a side over {max_side} px (the size asked for)",
                    width, height,
                )
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected("failed", f"decompression_bomb: {exc}", width, height) from None
    except UnidentifiedImageError:
        with open(path, "rb") as handle:
            head = handle.read(24)
        raise ImageRejected("failed", f"not_jpeg: Content-Type {content_type!r}, body starts {head!r}") from None
    except OSError as exc:
        kind = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        raise ImageRejected("failed", f"{kind}: {exc}", width, height) from None
    except Exception as exc:  # Pillow raises many types on malformed data (SyntaxError, struct.error, ...)
        raise ImageRejected("failed", f"corrupt: {type(exc).__name__}: {exc}", width, height) from None
    return width, height


def cached_size(path: Path, max_pixels: int) -> tuple[int, int] | None:
    """``(width, height)`` of a valid cached file, ``None`` if absent; an invalid file is deleted."""
    if not path.is_file():
        return None
    try:
        data = path.read_bytes() if is_remote(path) else None  # a remote image: one GET, header and tail
        with Image.open(path if data is None else io.BytesIO(data), formats=("JPEG",)) as image:
            width, height = image.size
        if width * height > max_pixels:
            raise ValueError("over max_pixels")
        if data is None:
            size = path.stat().st_size
            with open(path, "rb") as handle:
                handle.seek(max(0, size - _TAIL_BYTES))
                has_eoi = _EOI in handle.read()
        else:
            has_eoi = _EOI in data[-_TAIL_BYTES:]
        if not has_eoi:  # rare (trailing bytes after the marker, or damage): decode it all to decide
            verify_image(path if data is None else io.BytesIO(data), 0, max_pixels)
        return width, height
    except Exception as exc:
        log.warning("cached image %s is invalid (%s); fetching it again", path, exc)
        path.unlink(missing_ok=True)
        return None


__all__ = ["IIIF_PIXEL_SLACK", "IIIF_SIDE_SLACK", "ImageRejected", "PILLOW_MAX_PIXELS", "cached_size",
           "raise_pillow_limit", "verify_image"]
