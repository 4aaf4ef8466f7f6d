"""Query parsing for the search engine: what a query is, and the errors a user can fix.

Plain Python (no Dagster). A :data:`Query` is an image — a file path, ``bytes`` or a PIL image — or
an objectid of the collection (an ``int`` or a numeric string; a string naming an existing file is
always an image). :func:`parse_query` resolves it to a :class:`ParsedQuery`:

==========  ======================  ================================================================
field       type                    meaning
==========  ======================  ================================================================
kind        str                     ``"image"`` or ``"objectid"``
label       str                     how messages and responses name the query (the path as given,
                                    ``<N bytes>``, ``<PIL image>``, ``objectid N``)
path        Path | None             the image file (a path query)
data        bytes | None            the image bytes (a bytes query)
image       PIL.Image | None        the image itself (a PIL query)
objectid    int | None              the painting (an objectid query)
==========  ======================  ================================================================

An image must open (its header only, nothing decoded: :func:`check_image`) and be within the
aspect-ratio limit (:func:`~artsim_pipeline.core.preprocessing.check_aspect`: a thin strip would be
scaled up to gigabytes); an objectid must be in the catalog. Every failure raises
:class:`QueryError` with a message naming the input; :class:`IndexNotBuiltError` (a lake without a
catalog or an index) is a :class:`QueryError` too.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from .preprocessing import AspectRatioError, check_aspect, open_oriented, oriented
from .storage import readable

Query = Union[str, "os.PathLike[str]", bytes, bytearray, int, Image.Image]

_NUMERIC = re.compile(r"^\s*\d+\s*$")


class QueryError(ValueError):
    """The query cannot be answered as given (bad input or missing data); the message names the input."""


class IndexNotBuiltError(QueryError):
    """The data lake has no catalog or search index yet (the pipeline has not run)."""


@dataclass
class ParsedQuery:
    """A query resolved to an image source or an objectid (fields: see the module doc)."""

    kind: str  # "image" | "objectid"
    label: str
    path: Path | None = None
    data: bytes | None = None
    image: Image.Image | None = None
    objectid: int | None = None

    def source(self) -> Any:
        """A fresh source for ``Image.open`` / ``load_and_prepare`` (path, buffer or PIL image)."""
        if self.path is not None:
            return readable(self.path)
        if self.data is not None:
            return io.BytesIO(self.data)
        return self.image

    def pil(self) -> Image.Image:
        if self.image is not None:
            image = oriented(self.image)
            return image.convert("RGB") if image.mode != "RGB" else image
        return open_oriented(self.source())


def parse_query(query: Query, rows: Mapping[int, Any], catalog_name: str) -> ParsedQuery:
    """``query`` resolved and checked; ``rows`` are the catalog's paintings by objectid, ``catalog_name``
    the catalog file named in the message for an unknown objectid."""
    if isinstance(query, Image.Image):
        return check_image(ParsedQuery("image", "<PIL image>", image=query))
    if isinstance(query, (bytes, bytearray)):
        return check_image(ParsedQuery("image", f"<{len(query)} bytes>", data=bytes(query)))
    if isinstance(query, (int, np.integer)) and not isinstance(query, bool):
        return check_objectid(int(query), str(query), rows, catalog_name)
    if isinstance(query, (str, os.PathLike)):
        text = os.fspath(query)
        path = Path(text).expanduser()
        if path.is_file():
            return check_image(ParsedQuery("image", text, path=path))
        if isinstance(query, str) and _NUMERIC.match(text):
            return check_objectid(int(text), text.strip(), rows, catalog_name)
        if path.exists():
            raise QueryError(f"query {text!r} is a directory, not an image file")
        raise QueryError(f"query {text!r}: no such file (and not a numeric objectid)")
    raise QueryError(f"query of type {type(query).__name__} is not an image path, bytes, PIL image or objectid")


def check_image(parsed: ParsedQuery) -> ParsedQuery:
    """``parsed`` when its image opens (header only) and is within the aspect-ratio limit, else :class:`QueryError`."""
    try:
        if parsed.image is not None:
            size = parsed.image.size
        else:
            with Image.open(parsed.source()) as image:
                size = image.size  # identifies the format without decoding
    except UnidentifiedImageError as exc:
        raise QueryError(f"query {parsed.label!r} is not a readable image: not an image file we can read "
                         "(JPEG, PNG, WebP, GIF, BMP, TIFF)") from exc
    except (OSError, ValueError) as exc:
        raise QueryError(f"query {parsed.label!r} is not a readable image: the file cannot be opened as an image "
                         f"({exc})") from exc
    try:
        check_aspect(size, "the image")  # a thin strip would be scaled up to gigabytes
    except AspectRatioError as exc:
        raise QueryError(f"query {parsed.label!r} cannot be searched: {exc}") from exc
    return parsed


def check_objectid(objectid: int, label: str, rows: Mapping[int, Any], catalog_name: str) -> ParsedQuery:
    """The objectid query, or :class:`QueryError` when ``objectid`` is not in the catalog ``rows``."""
    if objectid not in rows:
        raise QueryError(f"objectid {label} is not in the collection (catalog {catalog_name}, "
                         f"{len(rows)} paintings)")
    return ParsedQuery("objectid", f"objectid {objectid}", objectid=objectid)


__all__ = ["IndexNotBuiltError", "ParsedQuery", "Query", "QueryError", "check_image", "check_objectid", "parse_query"]
