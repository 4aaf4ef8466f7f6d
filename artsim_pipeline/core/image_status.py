"""The image status table (what :func:`~artsim_pipeline.core.image_cache.cache_images` did with each
painting's image) and THE usable-image rule (:data:`USABLE`).

Plain Python (no Dagster). Schema (:data:`STATUS_DTYPES`), written to ``image_status/<batch>.parquet``
by :func:`write_status`:

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

Which rows count as stored (faces, embeddings, ``artsim status`` and the lake check) is :data:`USABLE`.
:func:`summarize_status` counts a table; :func:`check_failure_share` stops a batch whose share of
``failed`` rows is over the limit (:class:`BatchFailedError`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from .storage import atomic_path

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


class BatchFailedError(RuntimeError):
    """Too large a share of a batch's images failed."""


def empty_status_frame() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in STATUS_DTYPES.items()})


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


__all__ = ["BatchFailedError", "STATUSES", "STATUS_DTYPES", "USABLE", "check_failure_share", "empty_status_frame",
           "failure_share", "summarize_status", "write_status"]
