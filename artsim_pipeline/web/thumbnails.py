"""Images made from the image cache: resized JPEG thumbnails (:func:`make_thumbnail`, kept in memory by
:class:`ThumbnailCache` with their ``ETag``) and the map's atlas, every map painting's thumbnail in one JPEG
grid (:func:`make_atlas`, built once per served generation and catalog by :class:`AtlasCache`)."""

from __future__ import annotations

import hashlib
import io
import math
import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image

from ..core.preprocessing import oriented
from ..core.storage import readable

from .served import Served


class ThumbnailCache:
    """Resized JPEG thumbnails of cached images, in memory (LRU bounded by bytes)."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, tuple[bytes, str]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def etag_for(path: Path, size: int) -> str:
        st = path.stat()
        key = f"{path.name}:{st.st_size}:{st.st_mtime_ns}:{size}".encode()
        return '"' + hashlib.sha1(key).hexdigest()[:20] + '"'

    def get(self, path: Path, size: int) -> tuple[bytes, str]:
        etag = self.etag_for(path, size)
        key = (str(path), size, etag)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        data = make_thumbnail(path, size)
        with self._lock:
            self._items[key] = (data, etag)
            self._bytes += len(data)
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, (old, _) = self._items.popitem(last=False)
                self._bytes -= len(old)
        return data, etag


def _fitted(path: Path, size: int) -> Image.Image:
    """The image at ``path`` as displayed (EXIF orientation applied), fitted into ``size``×``size``
    (JPEG draft decoding: cheap)."""
    with Image.open(readable(path)) as image:
        if image.format == "JPEG":
            image.draft("RGB", (size, size))
        image = oriented(image).convert("RGB")
        image.thumbnail((size, size), Image.Resampling.LANCZOS if size > 96 else Image.Resampling.BILINEAR)
        return image


def make_thumbnail(path: Path, size: int) -> bytes:
    """JPEG of the image at ``path`` fitted into ``size``×``size``."""
    out = io.BytesIO()
    _fitted(path, size).save(out, format="JPEG", quality=82, optimize=size > 96)
    return out.getvalue()


#: Atlas cell size (px) by collection size: the atlas stays under ~6,000 px a side (browsers' image limits).
def atlas_cell(n: int) -> int:
    return 32 if n <= 16384 else 16


def make_atlas(paths: list[Path | None], cell: int) -> tuple[bytes, int]:
    """One JPEG holding every image of ``paths`` (in order) fitted and centred in a ``cell``-pixel square,
    row by row, ``cols`` per row; returns (JPEG, cols). A missing or unreadable image leaves its cell grey."""
    cols = max(1, math.ceil(math.sqrt(len(paths))))
    rows = max(1, math.ceil(len(paths) / cols))
    sheet = Image.new("RGB", (cols * cell, rows * cell), (58, 58, 62))
    for i, path in enumerate(paths):
        if path is None:
            continue
        try:
            image = _fitted(path, cell)
        except Exception:  # noqa: BLE001 - one bad file leaves one grey cell
            continue
        x, y = (i % cols) * cell, (i // cols) * cell
        sheet.paste(image, (x + (cell - image.width) // 2, y + (cell - image.height) // 2))
    out = io.BytesIO()
    sheet.save(out, format="JPEG", quality=80)
    return out.getvalue(), cols


class AtlasCache:
    """The map's atlas (:func:`make_atlas`) of the served generation, built once, on first request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._atlas: tuple[str, bytes, int, int, str] | None = None  # generation, jpeg, cell, cols, etag

    def get(self, served: Served, objectids: list[int]) -> tuple[bytes, int, int, str]:
        generation = f"{served.generation or ''}:{served.catalog_version}"  # the catalog may change alone
        with self._lock:  # one build at a time; the others wait for it and share it
            if self._atlas is None or self._atlas[0] != generation:
                cell = atlas_cell(len(objectids))
                data, cols = make_atlas([served.engine.image_path(o) for o in objectids], cell)
                etag = '"atlas-' + hashlib.sha1(data).hexdigest()[:20] + '"'
                self._atlas = (generation, data, cell, cols, etag)
            _, data, cell, cols, etag = self._atlas
        return data, cell, cols, etag
