"""Download (or copy from a local mirror) painting images into the data lake, once, validated.

Plain Python (no Dagster). :func:`cache_images` takes one :class:`ImageJob` per painting and
returns a status table (one row per job):

==========  =========  ==============================================================
column      dtype      meaning
==========  =========  ==============================================================
objectid    int64      the painting's NGA object id
uuid        str        its image uuid (the cache key: ``<lake>/images/<uuid>.jpg``)
status      str        ``ok`` (stored now), ``cached`` (already there, not fetched),
                       ``skipped_small`` (shorter side < ``min_side``; not stored) or
                       ``failed`` (not stored; retried on the next call)
reason      str        why, for ``skipped_small``/``failed`` (``"<kind>: <detail>"``,
                       kinds: bad_uuid, no_iiifurl, host_not_allowed, not_in_mirror,
                       http, not_jpeg, truncated, corrupt, decompression_bomb,
                       oversize, error); empty otherwise
bytes       int64      file size (ok/cached) or bytes received (skipped/failed), else 0
seconds     float64    time spent on this image (in its worker thread)
width       int64      image width in pixels, 0 if unknown
height      int64      image height in pixels, 0 if unknown
path        str        the cached file (ok/cached), empty otherwise
==========  =========  ==============================================================

``df.attrs["wall_seconds"]`` holds the batch's wall time (used by :func:`summarize_status`).

How an image gets into the cache: the IIIF URL ``{iiifurl}/full/!S,S/0/default.jpg`` (S =
``image_size``) must be on a host of ``image_hosts`` (``ARTSIM_IMAGE_HOSTS``; https, or plain http
for 127.0.0.1/localhost only), else it fails as ``host_not_allowed`` without a request; redirects
are followed by hand and only to allowed hosts. It is streamed through :meth:`HttpClient.download`
(timeouts, retries with exponential backoff + jitter, ``Retry-After``, per-host rate limit) into a
temp file beside the target (``storage.atomic_path``); the temp file is opened with Pillow (JPEG
only), checked against ``max_pixels`` (default: Pillow's own limit) from the header *before*
decoding (decompression bombs; for an IIIF download the limit is at most ``4 * S * S``, as the
server was asked for at most ``S``×``S``), checked against ``min_side``, then fully decoded (``Image.load``; truncated or corrupt files raise, since
``ImageFile.LOAD_TRUNCATED_IMAGES`` is left off), the decoded size checked again (IIIF: no side
over ``S``, else ``oversize``) and only then renamed into place (on an object-store lake: uploaded
with one PUT, the temp file being local). So a file at
``images/<uuid>.jpg`` was always fully verified when it was written, and an interrupted run leaves
no partial file under that name: Python-level interrupts (exceptions, Ctrl-C) delete their temp
files at once, and temp files orphaned by a hard kill are swept by the next call once older than
``stale_temp_s`` (an age limit so two runs sharing a lake do not delete each other's live files).

Cache hits are checked cheaply: the file must parse as a JPEG header within ``max_pixels`` and end
with the JPEG end-of-image marker (read from the last few KiB); only a file without that marker is
fully decoded again. An invalid cached file is deleted and fetched again. The cache is keyed by
uuid only: changing ``image_size`` does not refetch images already cached.

Mirror mode (``mirror_images_dir`` set, a local NGA-like folder with ``<uuid>.jpg`` files): the
file is hard-linked into the lake when possible (same filesystem, permitted), else copied, through
the same temp-file + validation path; there is no HTTP fallback and no resizing. A hard-linked
file shares its inode with the mirror; artsim never writes cached files in place.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pandas as pd
import requests
from PIL import Image, ImageFile, UnidentifiedImageError

from ..config import DEFAULT_IMAGE_HOSTS, url_host_problem
from .http import FetchError, HttpClient, UrlRefusedError
from .progress import Progress
from .storage import DataLake, InvalidIdError, LakeWriteError, atomic_path, is_remote, safe_id

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)

STATUSES = ("ok", "cached", "skipped_small", "failed")
#: THE "usable image" rule: statuses whose image is in the cache (what faces, embeddings, the status and
#: the lake check count as stored).
USABLE = ("ok", "cached")
STATUS_DTYPES: dict[str, str] = {
    "objectid": "int64",
    "uuid": "object",
    "status": "object",
    "reason": "object",
    "bytes": "int64",
    "seconds": "float64",
    "width": "int64",
    "height": "int64",
    "path": "object",
}
_EOI = b"\xff\xd9"
_TAIL_BYTES = 4096
#: Pillow's own decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``); artsim never accepts more by default.
PILLOW_MAX_PIXELS = 89_478_485
#: An IIIF download is asked for at most S x S pixels; the header may claim at most this many times S * S.
IIIF_PIXEL_SLACK = 4
#: Rounding slack (pixels) when checking that an IIIF image fits the requested !S,S box.
IIIF_SIDE_SLACK = 1


@dataclass(frozen=True)
class ImageJob:
    """One painting to cache."""

    objectid: int
    uuid: str
    iiifurl: str | None  # IIIF base URL, e.g. https://api.nga.gov/iiif/<uuid>


@dataclass
class ImageCacheOptions:
    """Knobs for :func:`cache_images` (see :meth:`from_settings` for the ``ARTSIM_*`` mapping)."""

    image_size: int = 1200
    min_side: int = 300
    workers: int = 8
    requests_per_second: float = 10.0
    timeout_s: float = 30.0
    retries: int = 5
    max_pixels: int = PILLOW_MAX_PIXELS  # decompression-bomb limit, checked from the header before decoding
    mirror_images_dir: Path | None = None
    max_bytes: int = 200_000_000  # refuse bodies larger than this
    stale_temp_s: float = 3600.0  # orphaned temp files older than this are removed at the start of a call
    image_hosts: tuple[str, ...] = DEFAULT_IMAGE_HOSTS  # IIIF URLs (and redirects) only to these hosts

    @classmethod
    def from_settings(cls, settings: "Settings", mirror_images_dir: Path | None = None) -> "ImageCacheOptions":
        return cls(
            image_size=settings.image_size,
            min_side=settings.min_side,
            workers=settings.download_workers,
            requests_per_second=settings.requests_per_second,
            timeout_s=settings.http_timeout_s,
            retries=settings.http_retries,
            mirror_images_dir=mirror_images_dir,
            image_hosts=settings.image_hosts,
        )


class BatchFailedError(RuntimeError):
    """Too large a share of a batch's images failed."""


class _Rejected(Exception):
    """An image that is not stored: ``status`` is ``skipped_small`` or ``failed``."""

    def __init__(self, status: str, reason: str, width: int = 0, height: int = 0) -> None:
        super().__init__(reason)
        self.status, self.reason, self.width, self.height = status, reason, width, height


def iiif_image_url(iiifurl: str, size: int) -> str:
    """The IIIF image API URL of the whole image fitted into ``size``×``size`` as a JPEG."""
    return f"{iiifurl.rstrip('/')}/full/!{size},{size}/0/default.jpg"


def _raise_pillow_limit(max_pixels: int) -> None:
    # Pillow's global guard must not reject (at 2x its limit) an image we accept. Only ever raised;
    # our own per-call check below (header size vs max_pixels) is what enforces the option.
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


def verify_image(
    path: Path, min_side: int, max_pixels: int, content_type: str = "", max_side: int | None = None
) -> tuple[int, int]:
    """Fully validate a JPEG file; return ``(width, height)`` or raise :class:`_Rejected`.

    Order: JPEG header, pixel count (before decoding), shorter side, full decode, then the decoded
    image's pixel count again and, with ``max_side``, its longer side (``oversize``: e.g. an IIIF
    server that ignored the requested size).
    """
    width = height = 0
    try:
        with Image.open(path, formats=("JPEG",)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise _Rejected(
                    "failed",
                    f"decompression_bomb: {width}x{height} = {width * height} pixels > max_pixels {max_pixels}",
                    width,
                    height,
                )
            if min(width, height) < min_side:
                raise _Rejected("skipped_small", f"shorter side {min(width, height)} px < min_side {min_side}", width, height)
            image.load()
            decoded_w, decoded_h = image.im.size if image.im is not None else image.size
            if decoded_w * decoded_h > max_pixels:
                raise _Rejected(
                    "failed",
                    f"decompression_bomb: decoded {decoded_w}x{decoded_h} pixels > max_pixels {max_pixels}",
                    width,
                    height,
                )
            if max_side is not None and max(decoded_w, decoded_h) > max_side:
                raise _Rejected(
                    "failed", f"oversize: {decoded_w}x{decoded_h} has a side over {max_side} px (the size asked for)",
                    width, height,
                )
    except _Rejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _Rejected("failed", f"decompression_bomb: {exc}", width, height) from None
    except UnidentifiedImageError:
        with open(path, "rb") as handle:
            head = handle.read(24)
        raise _Rejected("failed", f"not_jpeg: Content-Type {content_type!r}, body starts {head!r}") from None
    except OSError as exc:
        kind = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        raise _Rejected("failed", f"{kind}: {exc}", width, height) from None
    except Exception as exc:  # Pillow raises many types on malformed data (SyntaxError, struct.error, ...)
        raise _Rejected("failed", f"corrupt: {type(exc).__name__}: {exc}", width, height) from None
    return width, height


def image_url_problem(url: str, hosts: tuple[str, ...]) -> str | None:
    """Why artsim will not fetch the image ``url`` (``None`` when it may): its host must be in ``hosts``."""
    problem = url_host_problem(url, tuple(hosts))
    return None if problem is None else f"{problem} (ARTSIM_IMAGE_HOSTS)"


def _cached_size(path: Path, options: ImageCacheOptions) -> tuple[int, int] | None:
    """``(width, height)`` of a valid cached file, ``None`` if absent; an invalid file is deleted."""
    if not path.is_file():
        return None
    try:
        data = path.read_bytes() if is_remote(path) else None  # a remote image: one GET, header and tail
        with Image.open(path if data is None else io.BytesIO(data), formats=("JPEG",)) as image:
            width, height = image.size
        if width * height > options.max_pixels:
            raise ValueError("over max_pixels")
        if data is None:
            size = path.stat().st_size
            with open(path, "rb") as handle:
                handle.seek(max(0, size - _TAIL_BYTES))
                has_eoi = _EOI in handle.read()
        else:
            has_eoi = _EOI in data[-_TAIL_BYTES:]
        if not has_eoi:  # rare (trailing bytes after the marker, or damage): decode it all to decide
            verify_image(path if data is None else io.BytesIO(data), 0, options.max_pixels)
        return width, height
    except Exception as exc:
        log.warning("cached image %s is invalid (%s); fetching it again", path, exc)
        path.unlink(missing_ok=True)
        return None


def sweep_stale_temp_files(images_dir: Path, older_than_s: float, recursive: bool = False) -> int:
    """Remove temp files (``.<name>.*.tmp``, see ``storage.atomic_path``) left by killed runs.

    Only files older than ``older_than_s`` go (a younger one may belong to a live run sharing the lake).
    Returns how many were removed. An object-store lake never holds temp files (they are local): 0.
    """
    if is_remote(images_dir) or not images_dir.is_dir():
        return 0
    cutoff = time.time() - older_than_s
    removed = 0
    for tmp in images_dir.rglob(".*.tmp") if recursive else images_dir.glob(".*.tmp"):
        try:
            if tmp.is_file() and tmp.stat().st_mtime <= cutoff:
                tmp.unlink()
                removed += 1
        except FileNotFoundError:
            pass
    if removed:
        log.info("removed %d stale temp file(s) from %s", removed, images_dir)
    return removed


#: Lake folders (besides ``images/``, swept by every :func:`cache_images` call) where writers leave
#: ``atomic_path`` temp files when killed: swept by :func:`sweep_lake_temp_files`.
LAKE_TEMP_DIRS = ("tables", "image_status", "faces", "embeddings", "index", "reports", "raw")


def sweep_lake_temp_files(lake: DataLake, older_than_s: float = 3600.0) -> int:
    """Sweep stale temp files from the lake's output folders (:data:`LAKE_TEMP_DIRS`, recursively) and
    ``images/``; returns how many were removed. Run by ``filtered_paintings`` on every refresh."""
    removed = sweep_stale_temp_files(lake.images_dir, older_than_s)
    for name in LAKE_TEMP_DIRS:
        removed += sweep_stale_temp_files(lake.root / name, older_than_s, recursive=True)
    return removed


def _link_or_copy(src: Path, tmp: Path) -> None:
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)


def _cache_one(job: ImageJob, lake: DataLake, options: ImageCacheOptions, client: HttpClient) -> dict[str, Any]:
    start = time.perf_counter()
    row: dict[str, Any] = {
        "objectid": int(job.objectid),
        "uuid": str(job.uuid),
        "status": "failed",
        "reason": "",
        "bytes": 0,
        "seconds": 0.0,
        "width": 0,
        "height": 0,
        "path": "",
    }
    received = 0
    try:
        try:
            uuid = safe_id(job.uuid, "image uuid")
        except InvalidIdError as exc:
            raise _Rejected("failed", f"bad_uuid: {exc}") from None
        target = lake.image_path(uuid)
        cached = _cached_size(target, options)
        if cached is not None:
            width, height = cached
            if min(width, height) < options.min_side:  # cached under a lower min_side: keep, do not use
                raise _Rejected("skipped_small", f"shorter side {min(width, height)} px < min_side {options.min_side}", width, height)
            row.update(status="cached", bytes=target.stat().st_size, width=width, height=height, path=str(target))
            return row
        with atomic_path(target) as tmp:
            if options.mirror_images_dir is not None:
                src = Path(options.mirror_images_dir) / f"{uuid}.jpg"
                if not src.is_file():
                    raise _Rejected("failed", f"not_in_mirror: {src.name} not found in the mirror")
                _link_or_copy(src, tmp)
                content_type = "image/jpeg"
                max_side, max_pixels = None, options.max_pixels  # mirror files are not resized
            else:
                iiifurl = job.iiifurl
                if not isinstance(iiifurl, str) or not iiifurl.startswith(("http://", "https://")):
                    raise _Rejected("failed", f"no_iiifurl: {iiifurl!r} is not an http(s) IIIF base URL")
                try:  # the URL and every redirect are checked against the allowlist before anything is sent
                    download = client.download(
                        iiif_image_url(iiifurl, options.image_size), tmp, options.max_bytes,
                        url_check=lambda url: image_url_problem(url, options.image_hosts),
                    )
                except UrlRefusedError as exc:
                    raise _Rejected("failed", f"host_not_allowed: {exc}") from None
                except FetchError as exc:
                    raise _Rejected("failed", f"http: {exc}") from None
                content_type = download.content_type
                max_side = options.image_size + IIIF_SIDE_SLACK
                max_pixels = min(options.max_pixels, IIIF_PIXEL_SLACK * options.image_size * options.image_size)
            received = tmp.stat().st_size
            width, height = verify_image(tmp, options.min_side, max_pixels, content_type, max_side)
        row.update(status="ok", bytes=received, width=width, height=height, path=str(target))
    except _Rejected as rejected:
        row.update(status=rejected.status, reason=rejected.reason, bytes=received, width=rejected.width, height=rejected.height)
    except LakeWriteError:
        raise  # disk full, read-only: every image would fail the same way; the batch stops, saying so once
    except Exception as exc:  # one bad image must not take the batch down
        log.warning("image %s (objectid %s) failed: %s: %s", job.uuid, job.objectid, type(exc).__name__, exc,
                    exc_info=log.isEnabledFor(logging.DEBUG))
        row.update(status="failed", reason=f"error: {type(exc).__name__}: {exc}", bytes=received)
    finally:
        row["seconds"] = time.perf_counter() - start
    return row


def _make_client(options: ImageCacheOptions) -> HttpClient:
    client = HttpClient(timeout_s=options.timeout_s, retries=options.retries, requests_per_second=options.requests_per_second)
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=max(10, options.workers))
    client.session.mount("http://", adapter)
    client.session.mount("https://", adapter)
    return client


def empty_status_frame() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in STATUS_DTYPES.items()})


def cache_images(
    jobs: list[ImageJob],
    lake: DataLake,
    options: ImageCacheOptions,
    client: HttpClient | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Cache every job's image under ``lake.images_dir``; return the status table (module docstring).

    Jobs sharing a uuid are fetched once. An exception from ``progress`` (or Ctrl-C) stops the
    batch: queued images are cancelled, images in flight finish or clean up, and it propagates.
    """
    wall_start = time.perf_counter()
    _raise_pillow_limit(options.max_pixels)
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        log.warning("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set in this process: truncated JPEGs cannot be detected")
    lake.images_dir.mkdir(parents=True, exist_ok=True)
    sweep_stale_temp_files(lake.images_dir, options.stale_temp_s)
    own_client = client is None
    http = _make_client(options) if client is None else client

    first_by_uuid: dict[str, ImageJob] = {}
    for job in jobs:
        first_by_uuid.setdefault(str(job.uuid), job)
    total = len(first_by_uuid)
    results: dict[str, dict[str, Any]] = {}
    counts = dict.fromkeys(STATUSES, 0)
    ticker = Progress(log.info, total, "images")
    mode = f"mirror {options.mirror_images_dir}" if options.mirror_images_dir is not None else "IIIF"
    log.info("caching %d image(s) from %s with %d worker(s)", total, mode, options.workers)

    pool = ThreadPoolExecutor(max_workers=max(1, options.workers), thread_name_prefix="artsim-image")
    try:
        futures = {pool.submit(_cache_one, job, lake, options, http): key for key, job in first_by_uuid.items()}
        for done, future in enumerate(as_completed(futures), start=1):
            row = future.result()
            results[futures[future]] = row
            counts[row["status"]] += 1
            if ticker.due(done):
                ticker.update(done, " ".join(f"{status}={counts[status]}" for status in STATUSES))
            if progress is not None:
                progress(done, total)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
        if own_client:
            http.session.close()

    rows = [dict(results[str(job.uuid)], objectid=int(job.objectid)) for job in jobs]
    frame = pd.DataFrame(rows, columns=list(STATUS_DTYPES)) if rows else empty_status_frame()
    frame = frame.astype(STATUS_DTYPES)
    frame.attrs["wall_seconds"] = time.perf_counter() - wall_start
    summary = summarize_status(frame)
    log.info(
        "cached images: %d ok, %d cached, %d skipped_small, %d failed in %.1fs (%.1f images/s)",
        summary["ok"], summary["cached"], summary["skipped_small"], summary["failed"],
        summary["wall_seconds"], summary["images_per_s"] or 0.0,
    )
    return frame


def failure_share(df: pd.DataFrame) -> float:
    """Share of rows with status ``failed`` (0.0 for an empty table)."""
    return float((df["status"] == "failed").sum() / len(df)) if len(df) else 0.0


def summarize_status(df: pd.DataFrame) -> dict[str, Any]:
    """Counts per status, bytes, wall time, images/s, failure share and failure kinds.

    ``images_per_s`` is rows / ``df.attrs["wall_seconds"]``; ``None`` when the wall time is unknown.
    """
    summary: dict[str, Any] = {"total": int(len(df))}
    for status in STATUSES:
        summary[status] = int((df["status"] == status).sum())
    summary["bytes"] = int(df["bytes"].sum())
    summary["bytes_downloaded"] = int(df.loc[df["status"] == "ok", "bytes"].sum())
    wall = df.attrs.get("wall_seconds")
    summary["wall_seconds"] = float(wall) if wall is not None else None
    summary["images_per_s"] = (len(df) / wall) if wall else None
    summary["failure_share"] = failure_share(df)
    failed = df.loc[df["status"] == "failed", "reason"].astype(str)
    summary["failure_kinds"] = {str(k): int(v) for k, v in failed.str.split(":", n=1).str[0].value_counts().items()}
    return summary


def check_failure_share(df: pd.DataFrame, max_share: float) -> float:
    """Return the failure share; raise :class:`BatchFailedError` when it exceeds ``max_share``."""
    share = failure_share(df)
    if share > max_share:
        summary = summarize_status(df)
        examples = df.loc[df["status"] == "failed", ["uuid", "reason"]].head(3).to_dict("records")
        raise BatchFailedError(
            f"{summary['failed']} of {summary['total']} images failed ({share:.1%} > max {max_share:.1%}); "
            f"ok={summary['ok']} cached={summary['cached']} skipped_small={summary['skipped_small']}; "
            f"failure kinds {summary['failure_kinds']}; e.g. {examples}"
        )
    return share


def write_status(df: pd.DataFrame, path: Path) -> None:
    """Write the status table to Parquet atomically (temp file + rename)."""
    with atomic_path(path) as tmp:  # pandas' writer (not storage.write_table): it keeps df.attrs (wall_seconds)
        df.to_parquet(tmp, index=False, write_page_checksum=True)


def invalidate_changed_images(lake: DataLake, previous_status: pd.DataFrame | None, versions: dict[str, str]) -> list[str]:
    """Delete cached images whose source version changed since ``previous_status`` was written.

    ``versions`` maps uuid -> current source version (e.g. IIIF URL + NGA ``modified``); the previous
    status table carries a ``source_version`` column. The cache is keyed by uuid, so without this an
    image NGA re-published under the same uuid would never be fetched again. Returns the uuids dropped.
    """
    if previous_status is None or "source_version" not in previous_status.columns:
        return []
    before = dict(zip(previous_status["uuid"].astype(str), previous_status["source_version"].astype(str)))
    changed = [uuid for uuid, version in versions.items() if uuid in before and before[uuid] != version]
    for uuid in changed:
        lake.image_path(uuid).unlink(missing_ok=True)
    if changed:
        log.info("%d image(s) changed upstream; their cached copies were dropped", len(changed))
    return changed
