"""The plan ``artsim status`` shows, cached while it is provably current: the companion of :mod:`.dagster_stale`.

What ``artsim run`` would re-run (:meth:`~artsim_pipeline.runner.PipelineRunner.plan`, Dagster's stale
status) is a function of three things only, and the cache (``<DAGSTER_HOME>/.artsim-plan.json``) is used
only while all three are what they were when it was computed:

* **the Dagster instance's storage**: every record the plan reads (materializations, the NGA source's
  observations, data-version tags, image batches, asset-check executions, run statuses) lives in the
  instance's SQLite files; :func:`storage_mark` reads, without Dagster, a mark of them that changes with
  every write (see its docstring). A storage that is not the default SQLite one (Postgres, a custom
  ``storage:`` in ``dagster.yaml``) has no such mark here: the plan is then always computed;
* **the code location**: every ``ARTSIM_*`` setting (parsed and as set: more than the ones that shape
  outputs, so a setting that only changes the asset graph, like ``ARTSIM_MODELS``, is covered too), the
  assets' code versions (:data:`~artsim_pipeline.code_versions.CODE_VERSIONS`, imported without Dagster),
  a hash of the package's own source (the plan's rule, the code versions' extras) and of Dagster's version,
  and the weights file a code version names (its size and modification time);
* **the source's observation**: the plan is "as of the source's last observation" (``artsim status`` does not
  observe the NGA source); each observation is an event in the storage, so it changes the storage mark.

The mark is read *before* the plan is computed, so a write that lands while it is computed makes the next
``artsim status`` compute again rather than trust a plan of an older state.

Dagster internals: the storage's file layout and table names (Dagster 1.x ``DagsterSqliteStorage``:
``history/runs.db`` and the event log's index shard ``history/runs/index.db``) are read here, with
``sqlite3``; this module imports no Dagster (it is what lets ``artsim status`` skip Dagster's import).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any, Callable

from .code_versions import CODE_VERSIONS
from .config import Settings

CACHE_NAME = ".artsim-plan.json"
PACKAGE = Path(__file__).resolve().parent
CACHE_FORMAT = 1
#: The default SQLite storage's databases the plan reads (relative to ``DAGSTER_HOME``).
SQLITE_FILES = ("history/runs.db", "history/runs/index.db")
#: Tables no plan reads, written by the daemon on its own (heartbeats, cursors, concurrency slots): a running
#: daemon would otherwise invalidate the cache every few seconds. Any other table, known or not, is marked.
UNREAD_TABLES = frozenset({"daemon_heartbeats", "kvs", "concurrency_limits", "concurrency_slots", "pending_steps",
                           "bulk_actions", "backfill_tags", "instance_info"})
#: Large append-only tables (each event's body is kilobytes): marked by row count, highest row id and that row's
#: timestamp (or name), read through indexes without a scan of the bodies. A row deleted and another inserted
#: under the same id (SQLite may reuse the highest id) still changes that row's timestamp.
APPEND_ONLY = {"event_logs": "timestamp", "asset_event_tags": "event_timestamp", "snapshots": "snapshot_id"}
#: Tables hashed by the columns a change of their records writes, not their cached or serialized copies of
#: events (which are in ``event_logs``); every other table is hashed in full.
TABLE_COLUMNS = {
    "runs": "id, run_id, status, update_timestamp, start_time, end_time",
    "asset_keys": "id, asset_key, last_run_id, asset_details, wipe_timestamp, last_materialization_timestamp, tags",
    "asset_check_executions": "id, asset_key, check_name, partition, run_id, execution_status, "
                              "evaluation_event_timestamp, evaluation_event_storage_id, "
                              "materialization_event_storage_id",
}
#: Keys of ``dagster.yaml`` that choose a storage other than the default SQLite files under ``DAGSTER_HOME``.
STORAGE_KEYS = ("storage", "run_storage", "event_log_storage")


def instance_home(settings: Settings) -> Path:
    """The Dagster instance's folder, as ``artsim`` resolves it: ``$DAGSTER_HOME``, else the lake's."""
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"])
    from .core.lake import lake_for

    return Path(lake_for(settings).dagster_home)


def uses_default_sqlite(home: Path) -> bool:
    """True when ``home``'s instance keeps its records in the default SQLite files (no storage configured)."""
    config = home / "dagster.yaml"
    if not config.exists():
        return True  # artsim writes its own dagster.yaml, which configures no storage
    try:
        import yaml

        loaded = yaml.safe_load(config.read_text())
    except Exception:  # noqa: BLE001 - unreadable, not YAML, no YAML reader: not known to be the default storage
        return False
    return loaded is None or (isinstance(loaded, dict) and not any(key in loaded for key in STORAGE_KEYS))


def _digest(rows: Any) -> str:
    sha = hashlib.sha256()
    for row in rows:
        sha.update(repr(row).encode())
    return sha.hexdigest()


def _table_mark(con: sqlite3.Connection, table: str) -> list[Any]:
    quoted = '"' + table.replace('"', '""') + '"'
    if table in APPEND_ONLY:
        count = con.execute(f"SELECT count(*) FROM {quoted}").fetchone()[0]
        top = con.execute(f"SELECT rowid, {APPEND_ONLY[table]} FROM {quoted} ORDER BY rowid DESC LIMIT 1").fetchone()
        return [count, *(top or ())]
    columns = TABLE_COLUMNS.get(table, "*")
    return [_digest(con.execute(f"SELECT {columns} FROM {quoted} ORDER BY rowid"))]


def _database_mark(path: Path) -> dict[str, Any] | str:
    """{table: mark} of one SQLite file, read in one read transaction (a consistent snapshot)."""
    if not path.exists():
        return "absent"
    con = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=10, isolation_level=None)
    try:
        con.execute("BEGIN")
        tables = [row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        mark = {table: _table_mark(con, table) for table in tables if table not in UNREAD_TABLES}
        con.execute("COMMIT")
        return mark
    finally:
        con.close()


def storage_mark(home: Path) -> str | None:
    """A hash of every record of the instance at ``home`` that a plan can read, or None when it cannot be read
    without Dagster (a storage other than the default SQLite files, or a file SQLite cannot open).

    Per table: the whole content, except the large append-only event tables (row count, highest row id and
    its timestamp) and, for runs, assets and asset-check executions, the columns of :data:`TABLE_COLUMNS`.
    A new event, a changed run status, an image batch added or deleted, an asset wiped: each changes it.
    """
    if not uses_default_sqlite(home):
        return None
    try:
        marks = {name: _database_mark(home / name) for name in SQLITE_FILES}
    except sqlite3.Error:
        return None
    return hashlib.sha256(json.dumps(marks, sort_keys=True, default=str).encode()).hexdigest()


def _source_hash(package: Path = PACKAGE) -> str:
    """sha256 of the package's own source files (every ``.py`` under it, by relative path)."""
    sha = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        sha.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    return sha.hexdigest()


def _dagster_version() -> str:
    """Dagster's ``version.py`` as installed, read without importing Dagster."""
    import importlib.util

    spec = importlib.util.find_spec("dagster")
    if spec is None or not spec.submodule_search_locations:
        return "absent"
    version = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    return version.read_text() if version.is_file() else "unknown"


def _weights_file(weights: str) -> str:
    """What a code version reads of a weights file (its resolved path, size and modification time)."""
    if weights in ("pretrained", "random"):
        return weights
    path = Path(weights).expanduser()
    stat = path.stat() if path.is_file() else None
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}" if stat else str(path)


def code_mark(settings: Settings) -> str:
    """A hash of what the code location's asset graph and code versions are made from (module docstring)."""
    parts = {
        "settings": settings.as_dict(),
        "environment": sorted((k, v) for k, v in os.environ.items() if k.startswith(("ARTSIM_", "DAGSTER_"))),
        "code_versions": CODE_VERSIONS, "source": _source_hash(), "dagster": _dagster_version(),
        "weights": _weights_file(str(settings.weights)),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def read_cache(home: Path) -> dict[str, Any] | None:
    """The cached plan, or None when there is none (or it cannot be read: it is then computed again)."""
    try:
        cache = json.loads((home / CACHE_NAME).read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(cache, dict) and cache.get("format") == CACHE_FORMAT and isinstance(cache.get("plan"), list)
    return cache if ok else None


def write_cache(home: Path, storage: str, code: str, plan: list[dict], computed: str) -> bool:
    """Write the plan and its marks atomically; False when the folder is not writable (the plan is still shown)."""
    from .core.storage import atomic_write_text

    cache = {"format": CACHE_FORMAT, "storage": storage, "code": code, "computed": computed, "plan": plan}
    try:
        atomic_write_text(home / CACHE_NAME, json.dumps(cache) + "\n")
    except OSError:
        return False
    return True


def _why_not_cached(cache: dict[str, Any] | None, storage: str | None, code: str, fresh: bool) -> str | None:
    """Why the cache cannot answer (None: it can)."""
    if fresh:
        return "--fresh"
    if storage is None:
        return ("the Dagster instance's storage cannot be read without Dagster (not the default SQLite files, "
                "or not as this artsim knows them): computed each time")
    if cache is None:
        return "no cached plan"
    if cache.get("code") != code:
        return "the code or the ARTSIM_* settings changed"
    if cache.get("storage") != storage:
        return "the Dagster instance recorded something new"
    return None


def current_plan(settings: Settings, compute: Callable[[], list[dict]], fresh: bool = False
                 ) -> tuple[list[dict], dict[str, Any]]:
    """(the plan, where it came from): the cached plan while it is current, else ``compute()`` (then cached).

    Where it came from: ``from_cache``, ``computed`` (UTC, when the plan was computed) and ``why_computed``
    (None when it came from the cache).
    """
    home = instance_home(settings)
    storage = storage_mark(home)  # before computing: a write meanwhile invalidates what is cached now
    code = code_mark(settings)
    cache = None if fresh else read_cache(home)
    why = _why_not_cached(cache, storage, code, fresh)
    if why is None:
        return cache["plan"], {"from_cache": True, "computed": cache.get("computed"), "why_computed": None}
    plan = compute()
    computed = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if storage is not None:
        write_cache(home, storage, code, plan, computed)
    return plan, {"from_cache": False, "computed": computed, "why_computed": why}
