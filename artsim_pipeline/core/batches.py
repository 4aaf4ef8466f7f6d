"""Image batches: each painting is assigned to a batch once and keeps it.

The manifest (DuckDB table ``batch_manifest``: objectid, batch_key, assigned_at) only grows: new
paintings fill new batches (``batch-00000``, ``batch-00001``, ...), nothing is reshuffled when NGA adds
or removes rows. A batch's *active members* are its manifest rows still in ``filtered_paintings``; its
fingerprint hashes what downstream work depends on (objectid, uuid, IIIF URL, image modification date,
size), so a batch is recomputed only when that changes.
"""

from __future__ import annotations

import duckdb
import pandas as pd

from .catalog import frame_fingerprint, scalar

BATCH_PREFIX = "batch-"

MANIFEST_DDL = """
CREATE TABLE IF NOT EXISTS batch_manifest (
    objectid BIGINT PRIMARY KEY,
    batch_key VARCHAR NOT NULL,
    assigned_at TIMESTAMP NOT NULL DEFAULT current_timestamp
)
"""

FINGERPRINT_COLUMNS = ("objectid", "uuid", "iiifurl", "image_modified", "width", "height")


def batch_key(number: int) -> str:
    """``batch-00042`` for 42."""
    return f"{BATCH_PREFIX}{number:05d}"


def assign_batches(con: duckdb.DuckDBPyConnection, batch_size: int) -> list[str]:
    """Give every unassigned painting in ``filtered_paintings`` a batch; returns the new batch keys."""
    con.execute(MANIFEST_DDL)
    new_ids = [
        row[0]
        for row in con.execute(
            "SELECT DISTINCT objectid FROM filtered_paintings"
            " WHERE objectid NOT IN (SELECT objectid FROM batch_manifest) ORDER BY objectid"
        ).fetchall()
    ]
    if not new_ids:
        return []
    last = scalar(con, "SELECT max(TRY_CAST(replace(batch_key, ?, '') AS INTEGER)) FROM batch_manifest", [BATCH_PREFIX])
    first_number = 0 if last is None else last + 1
    rows = pd.DataFrame(
        {
            "objectid": new_ids,
            "batch_key": [batch_key(first_number + i // batch_size) for i in range(len(new_ids))],
        }
    )
    con.register("new_assignments", rows)
    try:
        con.execute("INSERT INTO batch_manifest (objectid, batch_key) SELECT objectid, batch_key FROM new_assignments")
    finally:
        con.unregister("new_assignments")
    return sorted(rows["batch_key"].unique().tolist())


def fingerprints_of(paintings: pd.DataFrame) -> dict[str, str]:
    """``{batch_key: fingerprint}`` for a frame of paintings with a ``batch_key`` column.

    The fingerprint hashes what a batch's images depend on (:data:`FINGERPRINT_COLUMNS`, rows ordered
    by objectid); it is the Dagster data version of the batch's ``image_batch`` partition.
    """
    out: dict[str, str] = {}
    for key, group in paintings.groupby("batch_key", sort=True):
        out[str(key)] = frame_fingerprint(group.sort_values("objectid"), list(FINGERPRINT_COLUMNS))
    return out


def attach_batch_keys(con: duckdb.DuckDBPyConnection) -> None:
    """Add each painting's ``batch_key`` (from the manifest) as a column of ``filtered_paintings``."""
    con.execute("ALTER TABLE filtered_paintings ADD COLUMN IF NOT EXISTS batch_key VARCHAR")
    con.execute(
        "UPDATE filtered_paintings f SET batch_key = m.batch_key FROM batch_manifest m WHERE m.objectid = f.objectid"
    )
