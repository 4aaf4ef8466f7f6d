"""The DuckDB metadata store: raw NGA tables, ``filtered_paintings`` and the batch manifest.

Raw CSVs are loaded with DuckDB's CSV reader as text (NGA's files carry free text with quotes and
newlines; types are applied in SQL with ``TRY_CAST``). Rows the reader cannot parse are skipped into
``raw_rejects`` (file VARCHAR, line BIGINT, reason VARCHAR). ``filtered_paintings`` is one SQL query.
On an object-store lake DuckDB reads the snapshot CSVs and the per-batch Parquet files through fsspec
(:func:`~artsim_pipeline.core.storage.register_filesystem`); the views over ``s3://`` files then need the
same registration in any connection that queries them.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import duckdb
import pandas as pd

from .nga_source import NGA_FILES, REQUIRED_COLUMNS, Snapshot
from .scoring import normalize_artist
from .storage import atomic_path, is_remote, lake_path, register_filesystem

RAW_TABLE = {name: f"raw_{name}" for name in NGA_FILES}
_log = logging.getLogger(__name__)


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: object = None) -> object:
    """First value of a query's first row (fetches the whole result, which DuckDB 2 requires)."""
    rows = con.execute(sql, params).fetchall() if params is not None else con.execute(sql).fetchall()
    return rows[0][0] if rows else None


def create_catalog_db(path: Path) -> bool:
    """Create an empty ``catalog.duckdb`` at ``path`` whole, unless one is there; True when it created one.

    DuckDB creates a new database file first and writes its header afterwards: a process killed in between
    leaves a file nothing can open. The new database is made beside ``path`` under a temp name
    (``storage.atomic_path``) and renamed into place, so ``path`` is either absent or a database.
    """
    path = Path(path)
    if path.exists():
        return False
    with atomic_path(path) as tmp:
        tmp.unlink()  # DuckDB makes the file itself (an empty one is not a database)
        duckdb.connect(str(tmp)).close()
    return True


class CatalogError(ValueError):
    """An NGA file does not have what artsim needs; the message names the file and columns."""


RAW_REJECTS = "raw_rejects"  # (file VARCHAR, line BIGINT, reason VARCHAR): CSV rows DuckDB could not read
REJECTED_ROWS_KEY = "rejected_csv_rows"  # key of the rejected-row count in load_raw_tables' counts
_CSV_LINE = re.compile(r"CSV Error on Line: (\d+)")


def _csv_error(name: str, exc: duckdb.Error) -> CatalogError:
    """One line naming the file and line instead of DuckDB's 25-line dump of reader options."""
    text = str(exc)
    line = _CSV_LINE.search(text)
    reason = next((ln.strip() for ln in text.splitlines()[1:] if ln.strip() and not ln.startswith("Original Line")),
                  text.splitlines()[0] if text else type(exc).__name__)
    where = f"{name}.csv line {line.group(1)}" if line else f"{name}.csv"
    return CatalogError(f"{where} cannot be read: {reason[:200]}")


def _last_scan(con: duckdb.DuckDBPyConnection) -> int:
    if not scalar(con, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'reject_scans' AND temporary"):
        return -1  # no CSV read with store_rejects on this connection yet
    return int(scalar(con, "SELECT coalesce(max(scan_id), -1) FROM reject_scans"))


def load_raw_tables(con: duckdb.DuckDBPyConnection, snapshot: Snapshot) -> dict[str, int]:
    """Load the snapshot's five CSVs into ``raw_*`` tables in one transaction; returns row counts.

    A missing required column raises :class:`CatalogError`; extra columns are kept. Rows DuckDB cannot
    parse (bad encoding, wrong field count, unterminated quote) are skipped and recorded in
    ``raw_rejects`` (file, line, reason); their number is ``counts[REJECTED_ROWS_KEY]``. A file that
    cannot be read at all (a line over 10 MB) raises a one-line :class:`CatalogError` naming it.
    """
    counts: dict[str, int] = {}
    register_filesystem(con, snapshot.directory)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"CREATE OR REPLACE TABLE {RAW_REJECTS} (file VARCHAR, line BIGINT, reason VARCHAR)")
        for name in NGA_FILES:
            path = snapshot.path(name)
            table = RAW_TABLE[name]
            scans_before = _last_scan(con)
            try:
                con.execute(
                    f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM read_csv(?, header = true, all_varchar = true,"
                    " delim = ',', quote = '\"', escape = '\"', max_line_size = 10000000, store_rejects = true)",
                    [str(path)],
                )
            except duckdb.Error as exc:
                if "CSV Error" not in str(exc) and "line size" not in str(exc):
                    raise
                raise _csv_error(name, exc) from None
            con.execute(  # this load's scans of this file (reject_errors accumulates per connection)
                f"""INSERT INTO {RAW_REJECTS}
                    SELECT DISTINCT ?, e.line, e.error_type || ': ' || e.error_message
                    FROM reject_errors e JOIN reject_scans s USING (scan_id, file_id)
                    WHERE e.scan_id > ? AND s.file_path = ? ORDER BY 2""",
                [f"{name}.csv", scans_before, str(path)],
            )
            columns = {row[0].lower() for row in con.execute(f"DESCRIBE {table}").fetchall()}
            missing = [c for c in REQUIRED_COLUMNS[name] if c not in columns]
            if missing:
                raise CatalogError(f"{name}.csv (source version {snapshot.version}) lacks required column(s): {', '.join(missing)}")
            counts[name] = int(scalar(con, f"SELECT count(*) FROM {table}"))
        counts[REJECTED_ROWS_KEY] = int(scalar(con, f"SELECT count(*) FROM {RAW_REJECTS}"))
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    if counts[REJECTED_ROWS_KEY]:
        first = con.execute(f"SELECT file, line, reason FROM {RAW_REJECTS} ORDER BY file, line LIMIT 1").fetchone()
        _log.warning(f"catalog: skipped {counts[REJECTED_ROWS_KEY]} unreadable CSV row(s) (in {RAW_REJECTS}); "
                     f"first: {first[0]} line {first[1]}: {first[2][:160]}")
    return counts


def _has_column(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    return any(row[0].lower() == column for row in con.execute(f"DESCRIBE {table}").fetchall())


def _optional(con: duckdb.DuckDBPyConnection, table: str, column: str, expression: str) -> str:
    """``expression`` when ``table`` has the optional ``column``, else ``NULL``."""
    return expression if _has_column(con, table, column) else "NULL"


#: Why a painting that passed the filters is kept out of ``filtered_paintings`` (table ``filtered_paintings_rejected``).
REJECT_REASONS = ("negative_objectid", "duplicate_objectid", "invalid_objectid")
REJECTED_TABLE = "filtered_paintings_rejected"


ARTIST_KEY_FUNCTION = "artsim_artist_key"


def register_artist_key(con: duckdb.DuckDBPyConnection) -> None:
    """Make :func:`~artsim_pipeline.core.scoring.normalize_artist` callable in SQL as ``artsim_artist_key``:
    the catalog's ``artist_key`` is THE artist label (folded, "Attributed to", "Workshop of" … stripped),
    stored once and read by the evaluation, the learned head and the search filters alike."""
    exists = scalar(con, "SELECT count(*) FROM duckdb_functions() WHERE function_name = ?", [ARTIST_KEY_FUNCTION])
    if not exists:
        con.create_function(ARTIST_KEY_FUNCTION, lambda name: normalize_artist(name) or None,
                            [duckdb.sqltype("VARCHAR")], duckdb.sqltype("VARCHAR"), null_handling="special")


def _candidates_sql(con: duckdb.DuckDBPyConnection, stage_filters: bool = True) -> str:
    """Every painting that passes the filters, with ``reject_reason`` (NULL = kept); parameter ``$min_side``.

    ``stage_filters=False`` leaves out the attribution and size filters (the open-access primary image
    stays required), for counting what each of them removes.

    Rows sharing an objectid (duplicate rows in objects.csv) are ranked deterministically: lowest object
    uuid (when objects.csv has one), then the row's text fields; only the first is kept, the others get
    ``duplicate_objectid``. A negative objectid gets ``negative_objectid`` (the index needs ids >= 0).
    """
    register_artist_key(con)
    openaccess = (
        "AND coalesce(trim(openaccess), '1') IN ('1', 'true', 'True')"
        if _has_column(con, "raw_published_images", "openaccess")
        else ""
    )
    modified = _optional(con, "raw_published_images", "modified", "modified")
    sequence = _optional(con, "raw_published_images", "sequence", "TRY_CAST(sequence AS INTEGER)")
    preferred_name = _optional(con, "raw_constituents", "preferreddisplayname", "nullif(trim(c.preferreddisplayname), '')")
    object_uuid = _optional(con, "raw_objects", "uuid", "o.uuid")
    stages = ("AND nullif(trim(o.attribution), '') IS NOT NULL AND i.width >= $min_side AND i.height >= $min_side"
              if stage_filters else "")
    return f"""
    WITH images AS (
        SELECT TRY_CAST(depictstmsobjectid AS BIGINT) AS objectid, uuid, trim(iiifurl) AS iiifurl,
               TRY_CAST(width AS INTEGER) AS width, TRY_CAST(height AS INTEGER) AS height,
               {modified} AS image_modified,
               row_number() OVER (PARTITION BY TRY_CAST(depictstmsobjectid AS BIGINT)
                                  ORDER BY {sequence} NULLS LAST, uuid, trim(iiifurl)) AS image_rank
        FROM raw_published_images
        WHERE lower(trim(viewtype)) = 'primary' AND nullif(trim(iiifurl), '') IS NOT NULL {openaccess}
    ),
    artists AS (
        SELECT TRY_CAST(oc.objectid AS BIGINT) AS objectid,
               coalesce(nullif(trim(c.forwarddisplayname), ''), {preferred_name}) AS artist,
               row_number() OVER (PARTITION BY TRY_CAST(oc.objectid AS BIGINT)
                                  ORDER BY TRY_CAST(oc.displayorder AS INTEGER) NULLS LAST, oc.constituentid,
                                           c.forwarddisplayname) AS artist_rank
        FROM raw_objects_constituents oc
        JOIN raw_constituents c ON c.constituentid = oc.constituentid
        WHERE lower(trim(oc.roletype)) = 'artist'
    ),
    terms AS (
        SELECT TRY_CAST(objectid AS BIGINT) AS objectid,
               string_agg(DISTINCT trim(term), '; ' ORDER BY trim(term))
                   FILTER (WHERE lower(trim(termtype)) = 'style') AS style,
               bool_or(lower(term) LIKE '%portrait%') AS portrait_term
        FROM raw_objects_terms
        GROUP BY 1
    ),
    paintings AS (
        SELECT TRY_CAST(o.objectid AS BIGINT) AS objectid, i.uuid, i.iiifurl, i.width, i.height, i.image_modified,
               nullif(trim(o.title), '') AS title,
               trim(o.attribution) AS attribution,
               coalesce(a.artist, trim(o.attribution)) AS artist,
               t.style,
               TRY_CAST(o.beginyear AS INTEGER) AS beginyear,
               TRY_CAST(o.endyear AS INTEGER) AS endyear,
               nullif(trim(o.displaydate), '') AS displaydate,
               nullif(trim(o.medium), '') AS medium,
               (regexp_matches(lower(coalesce(o.title, '')), '\\bportrait') OR coalesce(t.portrait_term, false)) AS is_portrait,
               i.width > 1000 AS has_high_res,
               row_number() OVER (PARTITION BY TRY_CAST(o.objectid AS BIGINT)
                                  ORDER BY {object_uuid} NULLS LAST, o.title, o.attribution, o.displaydate,
                                           o.beginyear, o.endyear, o.medium, o.classification) AS duplicate_rank
        FROM raw_objects o
        JOIN images i ON i.objectid = TRY_CAST(o.objectid AS BIGINT) AND i.image_rank = 1
        LEFT JOIN artists a ON a.objectid = TRY_CAST(o.objectid AS BIGINT) AND a.artist_rank = 1
        LEFT JOIN terms t ON t.objectid = TRY_CAST(o.objectid AS BIGINT)
        WHERE lower(trim(o.classification)) = 'painting' {stages}
    )
    SELECT * EXCLUDE (duplicate_rank),
           {ARTIST_KEY_FUNCTION}(artist) AS artist_key,
           CASE WHEN objectid < 0 THEN 'negative_objectid'
                WHEN duplicate_rank > 1 THEN 'duplicate_objectid' END AS reject_reason
    FROM paintings
    """


def kept_paintings_sql(candidates: str) -> str:
    """The rows of table ``candidates`` (:func:`_candidates_sql`) that make ``filtered_paintings``: not
    rejected, high-resolution first, then by objectid; parameter ``$limit`` (0 = all)."""
    return f"""SELECT * EXCLUDE (reject_reason) FROM {candidates} WHERE reject_reason IS NULL
               ORDER BY has_high_res DESC, objectid
               LIMIT CASE WHEN $limit > 0 THEN $limit ELSE NULL END"""


class ShrinkError(CatalogError):
    """A refresh would drop more paintings than ``ARTSIM_MAX_SHRINK`` allows (e.g. a truncated NGA file).

    ``previous``, ``new`` and ``share`` are the numbers the refusal was decided on (the catalog's check shows them).
    """

    def __init__(self, message: str, previous: int = 0, new: int = 0, share: float = 0.0) -> None:
        super().__init__(message)
        self.previous, self.new, self.share = previous, new, share


def check_shrink(previous: int | None, new: int, max_shrink: float, limit: int = 0) -> None:
    """Refuse a refresh that drops more than ``max_shrink`` of the paintings (``1.0`` disables the check).

    ``previous`` is the row count of the current ``filtered_paintings`` (``None`` on a fresh lake: no check).
    With ``limit`` > 0 the previous count is capped at it first, so lowering ``ARTSIM_LIMIT`` is no shrink.
    """
    if previous is None or previous <= 0 or max_shrink >= 1.0:
        return
    baseline = min(previous, limit) if limit > 0 else previous
    if baseline <= 0 or new >= baseline:
        return
    share = (baseline - new) / baseline
    if share > max_shrink:
        raise ShrinkError(
            f"filtered_paintings would shrink from {baseline} to {new} paintings ({share:.0%} fewer, more than "
            f"ARTSIM_MAX_SHRINK={max_shrink:g}); the previous table is kept. A truncated or partial NGA download "
            "does this. If the drop is expected, rerun with ARTSIM_MAX_SHRINK=1.0 (or a share above "
            f"{share:.2f}) to accept it.",
            previous=baseline, new=new, share=share,
        )


def _table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    sql = """SELECT count(*) FROM information_schema.tables
             WHERE table_name = ? AND table_schema = 'main' AND table_catalog = current_database()"""
    return bool(scalar(con, sql, [table]))


def build_filtered_paintings(
    con: duckdb.DuckDBPyConnection, min_side: int, limit: int, max_shrink: float = 1.0
) -> int:
    """(Re)create the ``filtered_paintings`` table from the raw tables; returns its row count.

    The new table is built beside the current one and swapped in only after :func:`check_shrink`
    passed (a refused refresh leaves ``filtered_paintings`` as it was). Rows kept out (negative or
    duplicate objectid, a painting whose objectid is no int64 such as ``abc``, :data:`REJECT_REASONS`) go
    to ``filtered_paintings_rejected`` (objectid, uuid, reason); :func:`rejected_summary` counts them.
    A filter that keeps nothing raises :class:`CatalogError` with the count left after each stage.
    """
    con.execute(f"CREATE OR REPLACE TEMP TABLE painting_candidates AS {_candidates_sql(con)}", {"min_side": min_side})
    try:
        con.execute(
            f"CREATE OR REPLACE TABLE filtered_paintings_new AS {kept_paintings_sql('painting_candidates')}",
            {"limit": limit},
        )
        rows = int(scalar(con, "SELECT count(*) FROM filtered_paintings_new"))
        if rows == 0:
            raise CatalogError(_kept_none_message(con, min_side))
        previous = None
        if _table_exists(con, "filtered_paintings"):
            previous = int(scalar(con, "SELECT count(*) FROM filtered_paintings"))
        check_shrink(previous, rows, max_shrink, limit)
        con.execute("BEGIN TRANSACTION")
        try:
            object_uuid = _optional(con, "raw_objects", "uuid", "uuid")
            con.execute(
                f"""CREATE OR REPLACE TABLE {REJECTED_TABLE} AS
                    SELECT * FROM (
                        SELECT objectid, uuid, reject_reason AS reason FROM painting_candidates
                        WHERE reject_reason IS NOT NULL
                        UNION ALL  -- 'abc' or beyond int64: no BIGINT id, so no image can join it
                        SELECT NULL::BIGINT, {object_uuid}, 'invalid_objectid' FROM raw_objects
                        WHERE lower(trim(classification)) = 'painting' AND TRY_CAST(objectid AS BIGINT) IS NULL
                    ) ORDER BY objectid NULLS LAST, uuid"""
            )
            con.execute("DROP TABLE IF EXISTS filtered_paintings")
            con.execute("ALTER TABLE filtered_paintings_new RENAME TO filtered_paintings")
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    finally:
        con.execute("DROP TABLE IF EXISTS filtered_paintings_new")
        con.execute("DROP TABLE IF EXISTS painting_candidates")
    return rows


def _kept_none_message(con: duckdb.DuckDBPyConnection, min_side: int) -> str:
    """Why the filter kept nothing: the count left after each of its stages."""
    relaxed = _candidates_sql(con, stage_filters=False)
    read = int(scalar(con, "SELECT count(*) FROM raw_objects"))
    paintings = int(scalar(con, "SELECT count(*) FROM raw_objects WHERE lower(trim(classification)) = 'painting'"))
    with_image, attributed, big = con.execute(
        f"""SELECT count(*), count(*) FILTER (WHERE nullif(attribution, '') IS NOT NULL),
                   count(*) FILTER (WHERE nullif(attribution, '') IS NOT NULL AND width >= $min_side
                                    AND height >= $min_side)
            FROM ({relaxed})""", {"min_side": min_side}).fetchone()
    return (f"filtered_paintings kept 0 paintings: {read} object rows read, {paintings} paintings, "
            f"{with_image} with an open-access primary image, {attributed} with an attribution, "
            f"{big} with both sides >= ARTSIM_MIN_SIDE={min_side} (before objectid checks)")


def rejected_summary(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """``rejected`` (all) and ``rejected_<reason>`` counts of the last :func:`build_filtered_paintings`."""
    counts = dict.fromkeys(REJECT_REASONS, 0)
    if _table_exists(con, REJECTED_TABLE):
        rows = con.execute(f"SELECT reason, count(*) FROM {REJECTED_TABLE} GROUP BY 1").fetchall()
        counts.update({reason: int(n) for reason, n in rows})
    return {"rejected": sum(counts.values()), **{f"rejected_{reason}": n for reason, n in counts.items()}}


def sql_path(path: Path) -> str:
    """``path`` as a quoted SQL string literal (DuckDB's COPY and views take no parameters)."""
    return "'" + str(path).replace("'", "''") + "'"


def export_parquet(con: duckdb.DuckDBPyConnection, table: str, target: Path) -> None:
    """Write a table to Parquet atomically (ordered by objectid)."""
    with atomic_path(target) as tmp:
        con.execute(f"COPY (SELECT * FROM {table} ORDER BY objectid) TO {sql_path(tmp)} (FORMAT parquet)")


def frame_fingerprint(frame: pd.DataFrame, columns: list[str] | None = None) -> str:
    """Short content hash of a DataFrame's rows (in their order), used as a Dagster data version."""
    selected = frame if columns is None else frame[columns]
    row_hashes = pd.util.hash_pandas_object(selected.astype("string"), index=False)
    return hashlib.sha256(row_hashes.to_numpy().tobytes()).hexdigest()[:16]


def table_fingerprint(con: duckdb.DuckDBPyConnection, table: str) -> str:
    """Content hash of a table, rows ordered by objectid (so independent of storage order)."""
    return frame_fingerprint(con.execute(f"SELECT * FROM {table} ORDER BY objectid").fetch_df())


def filtered_paintings_summary(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Counts shown in the UI: rows, distinct artists, styles known, portraits, high-res images."""
    row = con.execute(
        """SELECT count(*), count(DISTINCT artist_key), count(style), count(*) FILTER (WHERE is_portrait),
                  count(*) FILTER (WHERE has_high_res), min(least(width, height))
           FROM filtered_paintings"""
    ).fetchall()[0]
    keys = ("paintings", "distinct_artists", "with_style", "portraits", "high_res", "min_side_px")
    return {key: int(value or 0) for key, value in zip(keys, row)}


def register_parquet_view(con: duckdb.DuckDBPyConnection, view: str, directory: Path) -> bool:
    """(Re)create ``view`` over every ``*.parquet`` file in ``directory``; False when there is none yet.

    The view reads ``<directory>/*.parquet`` (so files added later show up), unless the directory's path
    holds glob characters (``*?[]{}``, which DuckDB would expand): then it names today's files one by one.
    """
    directory = lake_path(directory)
    if is_remote(directory):
        register_filesystem(con, directory)
    else:
        directory = directory.resolve()
    files = sorted(directory.glob("*.parquet"), key=lambda path: path.name)
    if not files:
        return False
    if any(ch in str(directory) for ch in "*?[]{}"):
        source = "[" + ", ".join(sql_path(path) for path in files) + "]"
    else:
        source = sql_path(directory / "*.parquet")
    con.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM read_parquet({source}, union_by_name = true)")
    return True
