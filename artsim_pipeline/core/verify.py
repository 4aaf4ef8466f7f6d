"""Is what the lake holds what was written? A cheap check before ``artsim run`` decides nothing is to do.

Plain Python (no Dagster). Dagster's records say what was materialized; they cannot see a file that was
deleted, truncated or overwritten since. :func:`verify_lake` checks, per asset (and batch), what it
stored, cheaply: that each file exists, Parquet footers parse, the catalog's DuckDB file opens and holds
its table, every image a batch cached is there, and the served index generation matches the sha256
values recorded when it was written (:func:`~artsim_pipeline.core.generations.verify_generation`).
Parquet files written by artsim carry page CRCs (``write_page_checksum``), verified whenever they are
read (:func:`~artsim_pipeline.core.storage.read_table`): a flipped byte inside a page fails its reader
by name, and the file then counts as damaged here too (it is moved aside by :func:`set_aside`).

A damaged artefact counts as missing: the runner re-materializes its asset (and what follows). What
was damaged is moved aside (``<name>.damaged-<UTC time>``), never deleted, so nothing stored is lost.

:class:`Damage` rows: ``asset`` (the asset that writes the file), ``partition`` (its batch, or None),
``path``, ``reason``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import duckdb
import pyarrow.parquet as pq

from .generations import served_generation_problems
from .image_status import USABLE
from .storage import error_line, read_parquet
from .lake import DataLake

DAMAGED_SUFFIX = ".damaged-"


@dataclass(frozen=True)
class Damage:
    asset: str
    partition: str | None
    path: str
    reason: str

    def describe(self) -> str:
        where = f"[{self.partition}]" if self.partition else ""
        return f"{self.asset}{where}: {self.path} {self.reason}"


def parquet_problem(path: Path) -> str | None:
    """Why the Parquet file at ``path`` cannot be trusted (missing, footer unreadable), else None."""
    try:
        if not path.exists():
            return "is missing"
        with path.open("rb") as handle:
            pq.read_metadata(handle)
    except Exception as exc:  # noqa: BLE001 - any reason is the file's
        return f"cannot be read ({error_line(exc)})"
    return None


def catalog_db_problem(path: Path) -> str | None:
    """Why ``catalog.duckdb`` is damaged (cannot be opened, no ``filtered_paintings``); None when fine,
    missing (the caller decides) or only locked by a running pipeline."""
    if not path.exists():
        return None
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            con.execute("SELECT count(*) FROM filtered_paintings").fetchall()
    except duckdb.Error as exc:
        if "lock" in str(exc).lower():
            return None  # in use, not damaged
        return f"cannot be opened ({error_line(exc)})"
    return None


def verify_lake(lake: DataLake, batches: Iterable[str], models: Iterable[str], *,
                catalog_expected: bool = True) -> list[Damage]:
    """Every damaged or missing artefact of the batches ``batches`` and of the catalog and index."""
    damages: list[Damage] = []
    db = lake.catalog_db
    if catalog_expected and not db.exists() and not lake.is_remote:
        damages.append(Damage("raw_objects", None, str(db), "is missing"))
    elif (problem := catalog_db_problem(db)) is not None:
        damages.append(Damage("raw_objects", None, str(db), problem))
    if catalog_expected and (problem := parquet_problem(lake.filtered_paintings_parquet)):
        damages.append(Damage("filtered_paintings", None, str(lake.filtered_paintings_parquet), problem))

    try:
        cached_names = {p.name for p in lake.images_dir.iterdir()} if lake.images_dir.exists() else set()
    except OSError:
        cached_names = set()
    models = list(models)
    for batch in batches:
        status_path = lake.image_status_path(batch)
        problem = parquet_problem(status_path)
        if problem is None:
            try:
                status = read_parquet(status_path, columns=["uuid", "status"])
                stored = status.loc[status["status"].isin(USABLE), "uuid"].astype(str)
                lost = [uuid for uuid in stored if f"{uuid}.jpg" not in cached_names]
                if lost:
                    problem = f"lists {len(lost)} cached image(s) that are gone (e.g. {lost[0]}.jpg)"
                    status_path = lake.images_dir
            except Exception as exc:  # noqa: BLE001
                problem = f"cannot be read ({error_line(exc)})"
        if problem:
            damages.append(Damage("image_cache", batch, str(status_path), problem))
        if problem := parquet_problem(lake.faces_path(batch)):
            damages.append(Damage("face_crops", batch, str(lake.faces_path(batch)), problem))
        for model in models:
            path = lake.embeddings_path(model, batch)
            if problem := parquet_problem(path):
                damages.append(Damage(f"embeddings_{model}", batch, str(path), problem))

    problems = served_generation_problems(lake)
    if problems:
        damages.append(Damage("faiss_index", None, str(lake.index_pointer_path), "; ".join(problems[:3])))
    return damages


def set_aside(path: Path) -> Path | None:
    """Move a damaged file out of the way (``<name>.damaged-<UTC time>``, beside it); None when absent."""
    path = Path(path)
    if not path.is_file():
        return None
    target = path.with_name(f"{path.name}{DAMAGED_SUFFIX}{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    path.rename(target)
    return target
