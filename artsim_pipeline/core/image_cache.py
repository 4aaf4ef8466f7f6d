"""Download (or copy from a local mirror) painting images into the data lake, once, validated.

Plain Python (no Dagster). :func:`cache_images` takes one :class:`ImageJob` per painting and
returns the status table (one row per job; schema, the usable-image rule and summaries in
:mod:`~artsim_pipeline.core.image_status`).

How an image gets into the cache: the IIIF URL ``{iiifurl}/full/!S,S/0/default.jpg`` (S =
``image_size``) must be on a host of ``image_hosts`` (``ARTSIM_IMAGE_HOSTS``; https, or plain http
for 127.0.0.1/localhost only), else it fails as ``host_not_allowed`` without a request; redirects
are followed by hand and only to allowed hosts. It is streamed through :meth:`HttpClient.download`
(timeouts, retries with exponential backoff + jitter, ``Retry-After``, per-host rate limit) into a
temp file beside the target (``storage.atomic_path``); the temp file is validated
(:func:`~artsim_pipeline.core.image_validation.verify_image`: JPEG header, pixel count before
decoding, ``min_side``, full decode, decoded size; for an IIIF download at most ``4 * S * S``
pixels, as the server was asked for at most ``S``×``S``, and no side over ``S``) and only then
renamed into place (on an object-store lake: uploaded with one PUT, the temp file being local). So
a file at ``images/<uuid>.jpg`` was always fully verified when it was written, and an interrupted
run leaves no partial file under that name: Python-level interrupts (exceptions, Ctrl-C) delete
their temp files at once, and temp files orphaned by a hard kill are swept by the next call once
older than ``stale_temp_s`` (:mod:`~artsim_pipeline.core.temp_sweep`: an age limit so two runs
sharing a lake do not delete each other's live files).

Cache hits are checked cheaply (:func:`~artsim_pipeline.core.image_validation.cached_size`: JPEG
header and end-of-image marker); an invalid cached file is deleted and fetched again. The cache is
keyed by uuid only: changing ``image_size`` does not refetch images already cached.

Mirror mode (``mirror_images_dir`` set, a local NGA-like folder with ``<uuid>.jpg`` files): the
file is hard-linked into the lake when possible (same filesystem, permitted), else copied, through
the same temp-file + validation path; there is no HTTP fallback and no resizing. A hard-linked
file shares its inode with the mirror; artsim never writes cached files in place.
"""

from __future__ import annotations

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
from PIL import ImageFile

from . import defaults
from .http import DEFAULT_IMAGE_HOSTS, FetchError, HttpClient, UrlRefusedError, url_host_problem
from .image_status import STATUS_DTYPES, STATUSES, empty_status_frame, summarize_status
from .image_validation import (IIIF_PIXEL_SLACK, IIIF_SIDE_SLACK, PILLOW_MAX_PIXELS, ImageRejected, cached_size,
                               raise_pillow_limit, verify_image)
from .progress import Progress
from .storage import InvalidIdError, LakeWriteError, atomic_path, safe_id
from .lake import DataLake
from .temp_sweep import sweep_stale_temp_files

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageJob:
    """One painting to cache."""

    objectid: int
    uuid: str
    iiifurl: str | None  # IIIF base URL, e.g. https://api.nga.gov/iiif/<uuid>


@dataclass
class ImageCacheOptions:
    """Knobs for :func:`cache_images` (see :meth:`from_settings` for the ``ARTSIM_*`` mapping)."""

    image_size: int = defaults.IMAGE_SIZE
    min_side: int = defaults.MIN_SIDE
    workers: int = defaults.DOWNLOAD_WORKERS
    requests_per_second: float = defaults.REQUESTS_PER_SECOND
    timeout_s: float = defaults.HTTP_TIMEOUT_S
    retries: int = defaults.HTTP_RETRIES
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


def iiif_image_url(iiifurl: str, size: int) -> str:
    """The IIIF image API URL of the whole image fitted into ``size``×``size`` as a JPEG."""
    return f"{iiifurl.rstrip('/')}/full/!{size},{size}/0/default.jpg"


def image_url_problem(url: str, hosts: tuple[str, ...]) -> str | None:
    """Why artsim will not fetch the image ``url`` (``None`` when it may): its host must be in ``hosts``."""
    problem = url_host_problem(url, tuple(hosts))
    return None if problem is None else f"{problem} (ARTSIM_IMAGE_HOSTS)"


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
            raise ImageRejected("failed", f"bad_uuid: {exc}") from None
        target = lake.image_path(uuid)
        cached = cached_size(target, options.max_pixels)
        if cached is not None:
            width, height = cached
            if min(width, height) < options.min_side:  # cached under a lower min_side: keep, do not use
                raise ImageRejected("skipped_small", f"shorter side {min(width, height)} px < min_side {options.min_side}", width, height)
            row.update(status="cached", bytes=target.stat().st_size, width=width, height=height, path=str(target))
            return row
        with atomic_path(target) as tmp:
            if options.mirror_images_dir is not None:
                src = Path(options.mirror_images_dir) / f"{uuid}.jpg"
                if not src.is_file():
                    raise ImageRejected("failed", f"not_in_mirror: {src.name} not found in the mirror")
                _link_or_copy(src, tmp)
                content_type = "image/jpeg"
                max_side, max_pixels = None, options.max_pixels  # mirror files are not resized
            else:
                iiifurl = job.iiifurl
                if not isinstance(iiifurl, str) or not iiifurl.startswith(("http://", "https://")):
                    raise ImageRejected("failed", f"no_iiifurl: {iiifurl!r} is not an http(s) IIIF base URL")
                try:  # the URL and every redirect are checked against the allowlist before anything is sent
                    download = client.download(
                        iiif_image_url(iiifurl, options.image_size), tmp, options.max_bytes,
                        url_check=lambda url: image_url_problem(url, options.image_hosts),
                    )
                except UrlRefusedError as exc:
                    raise ImageRejected("failed", f"host_not_allowed: {exc}") from None
                except FetchError as exc:
                    raise ImageRejected("failed", f"http: {exc}") from None
                content_type = download.content_type
                max_side = options.image_size + IIIF_SIDE_SLACK
                max_pixels = min(options.max_pixels, IIIF_PIXEL_SLACK * options.image_size * options.image_size)
            received = tmp.stat().st_size
            width, height = verify_image(tmp, options.min_side, max_pixels, content_type, max_side)
        row.update(status="ok", bytes=received, width=width, height=height, path=str(target))
    except ImageRejected as rejected:
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
    raise_pillow_limit(options.max_pixels)
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
