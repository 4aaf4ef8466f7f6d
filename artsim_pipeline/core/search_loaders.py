"""What the search engine loads once, before any query: the index generation, the catalog, the backbones.

Plain Python (no Dagster). Each loader raises :class:`~artsim_pipeline.core.search_query.IndexNotBuiltError`
(or :class:`~artsim_pipeline.core.search_query.QueryError`) with a message saying what to run.

* **generation** — :func:`load_variants`: the fusion model and FAISS index of every variant (``full``,
  ``face``) from ONE published generation (``index/CURRENT`` resolved once), as :class:`IndexVariant`
  (``fusion``, ``bundle``, ``ids``: the objectids the index holds);
* **catalog** — :func:`load_catalog`: ``filtered_paintings`` (columns :data:`CATALOG_COLUMNS`), one row
  per objectid, indexed by it, from ``catalog.duckdb``, else from its Parquet copy
  ``tables/filtered_paintings.parquet`` (no DuckDB file on this machine, locked by a running pipeline,
  damaged or without the table; a note says so, except for the absent file and the lock);
  :func:`catalog_rows` gives the plain per-painting dicts a query reads (empty cells as ``None``) and
  :func:`catalog_database` the in-memory DuckDB table ``filtered_paintings`` the filters run on;
* **backbones** — :func:`load_checked_models`: the registry models with the settings' weights, checked
  against the weights ids the collection's embeddings files record (``artsim.weights_id``; a different
  id is a :class:`~artsim_pipeline.core.search_query.QueryError`), and the precision they record
  (``artsim.precision``: the pipeline may fall back from bf16 to fp32).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import duckdb
import pandas as pd

from .fusion import FusionModel
from .generations import NoGenerationError, load_generation
from .index import IndexBundle
from .search_query import IndexNotBuiltError, QueryError
from .search_results import cell_text
from .storage import read_parquet, read_parquet_schema
from .lake import DataLake

if TYPE_CHECKING:
    from .models import LoadedModel

#: Catalog columns the engine keeps (``filtered_paintings``).
CATALOG_COLUMNS = ("objectid", "uuid", "title", "artist", "artist_key", "style", "beginyear", "endyear",
                   "displaydate", "medium")


@dataclass
class IndexVariant:
    """One variant of the served generation: its fusion transform, its index and the objectids it holds."""

    fusion: FusionModel
    bundle: IndexBundle
    ids: frozenset[int] = field(repr=False, default=frozenset())


# --------------------------------------------------------------------------- generation


def load_variants(lake: DataLake) -> tuple[str, dict[str, IndexVariant]]:
    """(generation id, every variant's fusion and index) from ONE generation (``index/CURRENT`` resolved once)."""
    try:
        generation = load_generation(lake)
    except NoGenerationError as exc:
        raise IndexNotBuiltError(
            f"no search index in data lake {lake.root} ({lake.index_pointer_path.name} missing "
            f"under {lake.index_dir}); run `artsim run` first"
        ) from exc
    except (OSError, ValueError, KeyError) as exc:
        raise IndexNotBuiltError(
            f"the search index in {lake.index_dir} cannot be read ({type(exc).__name__}: {exc}); "
            "re-run `artsim run`"
        ) from exc
    return generation.id, {
        variant: IndexVariant(generation.fusions[variant], bundle, frozenset(int(i) for i in bundle.ids))
        for variant, bundle in generation.bundles.items()
        if variant in ("full", "face")
    }


# --------------------------------------------------------------------------- catalog


def load_catalog(lake: DataLake, notes: list[str]) -> pd.DataFrame:
    """The catalog, one row per objectid, indexed by it; appends to ``notes`` when it falls back to Parquet."""
    frame = _catalog_frame(lake, notes)
    frame["objectid"] = frame["objectid"].astype("int64")
    return frame.drop_duplicates("objectid").set_index("objectid", drop=False).rename_axis(None)


def _parquet_catalog(parquet: Path, why: str | None, notes: list[str]) -> pd.DataFrame:
    """The catalog's Parquet copy (``tables/filtered_paintings.parquet``), when its DuckDB file cannot serve."""
    if why:
        notes.append(f"{why}: using {parquet.name} (run `artsim run` to repair the catalog)")
    return read_parquet(parquet, columns=list(CATALOG_COLUMNS))


def _catalog_frame(lake: DataLake, notes: list[str]) -> pd.DataFrame:
    """``filtered_paintings`` from ``catalog.duckdb``, else its Parquet copy (locked, absent or damaged)."""
    path = lake.catalog_db
    parquet = lake.filtered_paintings_parquet
    if not path.is_file():
        if not parquet.is_file():
            raise IndexNotBuiltError(f"no catalog at {path}; run `artsim run` first")
        return _parquet_catalog(parquet, None, notes)  # e.g. an object-store lake served from another machine
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            frame = con.execute(f"SELECT {', '.join(CATALOG_COLUMNS)} FROM filtered_paintings").df()
    except duckdb.CatalogException as exc:
        if not parquet.is_file():
            raise IndexNotBuiltError(f"{path} has no filtered_paintings table; run `artsim run` first") from exc
        frame = _parquet_catalog(parquet, f"{path.name} has no filtered_paintings table", notes)
    except duckdb.Error as exc:  # locked by a running pipeline, not on this machine, or damaged
        if not parquet.is_file():
            raise IndexNotBuiltError(f"{path} cannot be opened ({str(exc).splitlines()[0][:120]}) and there is "
                                     f"no {parquet.name}; run `artsim run` to repair the catalog") from None
        frame = _parquet_catalog(parquet, None if "lock" in str(exc).lower() else f"{path.name} cannot be opened",
                                 notes)
    return frame


def catalog_rows(catalog: pd.DataFrame) -> dict[int, dict[str, Any]]:
    """Plain per-painting dicts by objectid, empty cells as ``None`` (per-row pandas access costs more
    than the rest of a query)."""
    return {
        int(row["objectid"]): {k: (None if cell_text(v) == "" else v) for k, v in row.items()}
        for row in catalog.to_dict("records")
    }


def catalog_database(catalog: pd.DataFrame) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB holding ``catalog`` as the table ``filtered_paintings``.

    A table, not a registered frame: every query runs on its own cursor (thread-safe), which sees the
    database's tables but not another connection's registered views."""
    db = duckdb.connect()
    db.register("catalog_frame", catalog.reset_index())
    db.execute("CREATE TABLE filtered_paintings AS SELECT * FROM catalog_frame")
    db.unregister("catalog_frame")
    return db


# --------------------------------------------------------------------------- backbones


def collection_embedding_facts(lake: DataLake, model: str) -> tuple[set[str], set[str]]:
    """(weights ids, precisions) recorded in the model's embeddings files."""
    weights, precisions = set(), set()
    directory = lake.embeddings_model_dir(model)
    for path in sorted(directory.glob("*.parquet")) if directory.is_dir() else []:
        try:
            meta = read_parquet_schema(path).metadata or {}
        except Exception:  # noqa: BLE001 - a damaged file is the pipeline's problem, not the query's
            continue
        if b"artsim.weights_id" in meta:
            weights.add(meta[b"artsim.weights_id"].decode())
        if b"artsim.precision" in meta:
            precisions.add(meta[b"artsim.precision"].decode())
    return weights, precisions


def load_checked_models(lake: DataLake, names: Sequence[str], weights: str, device: Any,
                        default_precision: str) -> tuple[list[LoadedModel], str]:
    """(the backbones ``names``, in order; the precision the collection was embedded with).

    Raises :class:`QueryError` when a model's weights are not the ones its embeddings record; the
    precision is ``default_precision`` unless the embeddings files record exactly one."""
    from .models import load_model  # torch and the backbones: imported when a query first needs a model

    models: list[LoadedModel] = []
    precisions: set[str] = set()
    for name in names:
        model = load_model(name, weights=weights, device=device)
        recorded_weights, recorded_precisions = collection_embedding_facts(lake, name)
        if recorded_weights and model.weights_id not in recorded_weights:
            raise QueryError(
                f"model {name}: the collection was embedded with weights {sorted(recorded_weights)} but the "
                f"settings load {model.weights_id!r} (ARTSIM_WEIGHTS); use the same weights or re-run the pipeline"
            )
        precisions |= recorded_precisions
        models.append(model)
    # the precision the collection was embedded with (the pipeline may fall back from bf16 to fp32)
    return models, (precisions.pop() if len(precisions) == 1 else default_precision)


__all__ = [
    "CATALOG_COLUMNS", "IndexVariant", "catalog_database", "catalog_rows",
    "collection_embedding_facts", "load_catalog", "load_checked_models", "load_variants",
]
