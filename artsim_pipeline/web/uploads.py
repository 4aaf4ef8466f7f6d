"""Uploads kept in memory, with limits: bytes (while the body is read), pixels (from the header, before
any decoding: decompression bombs are refused) and format (non-images get a clear 4xx message).

Nothing uploaded is ever written to disk: the multipart body is parsed with python-multipart's
streaming parser into in-memory buffers (Starlette's ``request.form()`` would spool large files to
temporary files).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

from PIL import Image, UnidentifiedImageError
from python_multipart.multipart import MultipartParser, parse_options_header

from ..core.preprocessing import AspectRatioError, check_aspect

DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
#: Formats a browser or a phone sends; anything else is refused before decoding.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO")
_FORMATS = "JPEG, PNG, WebP, GIF, BMP, TIFF"
_MAX_FIELD_BYTES = 64 * 1024  # a text field of the form (objectid, filters)


def _mb(n: int) -> str:
    """Bytes as megabytes in words: ``"25 MB"``, ``"0.4 MB"``."""
    mb = n / (1024 * 1024)
    return f"{mb:.0f} MB" if mb >= 10 else f"{mb:.1f} MB" if mb >= 0.1 else f"{n:,} bytes"


def too_large(name: str | None, size: int | None, limit: int) -> str:
    """The message for an upload over ``limit`` bytes: ``"photo.jpg: too large: 25 MB, the limit is 20 MB"``."""
    what = f"{name}: " if name else ""
    return (f"{what}too large: {_mb(size)}, the limit is {_mb(limit)}" if size is not None
            else f"{what}too large: over the limit of {_mb(limit)}")


class UploadError(Exception):
    """A request the client must fix; ``status`` is the HTTP status (400, 413, 415)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class ParsedForm:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # name -> (filename, data)


async def read_body(request, max_bytes: int, limit_shown: int | None = None) -> bytes:
    """The request body, refused with 413 as soon as it exceeds ``max_bytes`` (never buffered past it); the
    message names ``limit_shown`` (the upload limit, without the room left for the form's other fields)."""
    shown = max_bytes if limit_shown is None else limit_shown
    length = request.headers.get("content-length")
    if length is not None:
        try:
            if int(length) > max_bytes:
                raise UploadError(413, too_large("upload", int(length), shown))
        except ValueError:
            raise UploadError(400, f"bad Content-Length {length!r}") from None
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_bytes:
            raise UploadError(413, too_large("upload", None, shown))
        chunks.append(chunk)
    return b"".join(chunks)


def parse_multipart(body: bytes, content_type: str) -> ParsedForm:
    """Parse a ``multipart/form-data`` body held in memory into fields and files (both in memory)."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise UploadError(400, "multipart/form-data without a boundary")
    form = ParsedForm()
    state: dict = {"headers": {}, "field": b"", "value": b"", "data": []}

    def on_part_begin() -> None:
        state.update(headers={}, data=[], field=b"", value=b"")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        state["data"].append(data[start:end])

    def on_part_end() -> None:
        disposition = state["headers"].get(b"content-disposition", b"")
        _, options = parse_options_header(disposition)
        name = options.get(b"name", b"").decode("utf-8", "replace")
        data = b"".join(state["data"])
        if b"filename" in options:
            filename = options[b"filename"].decode("utf-8", "replace")
            if form.files:  # which one to search would be a guess: say so instead
                first = next(iter(form.files.values()))[0]
                raise UploadError(400, f"one image per search: the form holds {first!r} and {filename!r}")
            form.files[name] = (filename, data)
        else:
            if len(data) > _MAX_FIELD_BYTES:
                raise UploadError(413, f"form field {name!r} is too long")
            form.fields[name] = data.decode("utf-8", "replace")

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_part_data": on_part_data, "on_part_end": on_part_end,
    })
    try:
        parser.write(body)
        parser.finalize()
    except UploadError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser error is the client's malformed body
        raise UploadError(400, f"malformed multipart body ({type(exc).__name__}: {exc})") from None
    return form


def check_image(data: bytes, max_pixels: int, name: str = "upload") -> tuple[str, int, int]:
    """(format, width, height) of an uploaded image, read from its header only; raises :class:`UploadError`.

    Refused: an empty file, anything Pillow does not identify as an image (415), a format outside
    :data:`ALLOWED_FORMATS` (415), more than ``max_pixels`` pixels (413: decompression bombs), a thin
    strip (400: aspect ratio over :data:`~artsim_pipeline.core.preprocessing.MAX_ASPECT`), all before the query
    waits for a model slot.
    """
    if not data:
        raise UploadError(400, f"{name}: empty file (0 bytes): choose an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                fmt, (width, height) = image.format or "", image.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(413, f"{name}: too many pixels to decode safely (over {max_pixels:,} pixels)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise UploadError(415, f"{name}: not an image file we can read (supported: {_FORMATS})") from None
    if fmt not in ALLOWED_FORMATS:
        raise UploadError(415, f"{name}: a {fmt or 'unknown'} image, a format we do not search "
                               f"(supported: {_FORMATS})")
    if width < 1 or height < 1:
        raise UploadError(400, f"{name}: the image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise UploadError(413, f"{name}: too many pixels: {width}x{height} = {width * height:,} pixels, the limit "
                               f"is {max_pixels:,} pixels")
    try:
        check_aspect((width, height), name)  # EXIF rotation keeps the ratio
    except AspectRatioError as exc:
        raise UploadError(400, str(exc)) from None
    return fmt, width, height
