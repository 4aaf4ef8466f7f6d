"""What the data lake holds, painting by painting: ``artsim status``, ``/api/status`` and the status page.

Plain Python (no Dagster): read from the lake's own files, cheaply (Parquet columns and footers, the
generation manifest, two small DuckDB tables). What Dagster would re-run (stale or missing assets and
batches) is added by the caller that has the Dagster instance (``artsim status``; ``artsim serve`` passes
it to the page).

:func:`lake_status` returns a JSON-ready dict:

============  ==========================================================================================
key           value
============  ==========================================================================================
lake          the lake's root (as the user named it)
catalog       ``paintings`` (rows of ``tables/filtered_paintings.parquet``), ``batches``, ``written`` (UTC)
images        ``cached``, ``skipped_small``, ``failed``, ``not_tried`` (in the catalog, no status row yet),
              ``reasons`` (failure kind as in :mod:`.image_status`, or ``too_small`` -> count)
faces         ``checked`` (images run through face detection), ``with_face``, ``errors``
embeddings    model -> ``paintings`` (full-image vectors), ``face_vectors``, ``files``
index         the served generation: ``generation``, ``created``, ``models``, ``indexed``, ``face_indexed``,
              ``recall_at_10``, ``fit`` (``mode`` full | incremental, ``reason``, ``since_fit``, ``share``,
              ``drift``; None for a generation without a fit record); None when nothing is published
raw           ``snapshots`` (complete NGA snapshots under ``raw/``), ``keep`` (``ARTSIM_RAW_KEEP``, or None)
rejected      ``catalog_rows`` (``filtered_paintings_rejected``: reason -> count) and ``csv_rows``
              (``raw_rejects``: rows the CSV reader could not parse, file -> count)
problems      the worst offenders, worst first: ``objectid``, ``title``, ``artist``, ``stage``
              (``image``, ``catalog``, ``faces``, ``embedding``), ``status``, ``reason``
problem_count how many offenders there are in all (``problems`` is cut at ``worst``)
errors        artefacts that could not be read (each one line naming the file); a damaged lake says so here
stale         filled by the caller: list of ``{asset, partition, status, reason}``, or None (not checked)
stale_from    filled by ``artsim status``: ``from_cache`` (the plan was cached and still current, see
              :mod:`artsim_pipeline.dagster_stale_cache`), ``computed`` (UTC) and ``why_computed`` (None from
              the cache); absent where the caller computes the plan itself
============  ==========================================================================================
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from .catalog import RAW_REJECTS, REJECTED_TABLE
from .generations import current_generation_id, read_generation_manifest
from .image_status import USABLE
from .nga_source import raw_snapshots
from .storage import error_line, read_parquet
from .lake import DataLake

#: Order of the offenders: what lost a painting outright first, then what only degraded it.
SEVERITY = {"failed": 0, "rejected": 1, "error": 2, "not_embedded": 3, "skipped_small": 4}


def _when(path: Path) -> str | None:
    try:
        return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OSError, AttributeError):
        return None


def _batch_files(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.glob("*.parquet") if not p.name.startswith("."))
    except OSError:
        return []


def _read_all(files: list[Path], columns: list[str], errors: list[str]) -> pd.DataFrame:
    frames = []
    for path in files:
        try:
            frames.append(read_parquet(path, columns=columns))
        except Exception as exc:  # noqa: BLE001 - a damaged file is reported, the rest still counted
            errors.append(f"{path} cannot be read: {error_line(exc)}")
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def _in_catalog(rows: pd.DataFrame, catalog: pd.DataFrame) -> pd.DataFrame:
    """The rows of paintings still in the catalog (a removed batch's files stay until they are pruned);
    every row while no catalog was read."""
    return rows[rows["objectid"].isin(catalog.index)] if len(catalog) else rows


def _kind(reason: Any) -> str:
    text = str(reason or "").strip()
    return text.split(":", 1)[0].strip() if text else "unknown"


CATALOG_COLUMNS = ["objectid", "title", "artist", "batch_key"]


def _catalog_rejects(lake: DataLake, errors: list[str], want_catalog: bool = False
                     ) -> tuple[dict[str, int], dict[str, int], pd.DataFrame, pd.DataFrame | None]:
    """(catalog reasons -> count, CSV file -> rejected rows, rejected paintings, and with ``want_catalog``
    the ``filtered_paintings`` table) from ``catalog.duckdb``."""
    empty = pd.DataFrame(columns=["objectid", "reason"])
    path = lake.catalog_db
    if not Path(path).exists():
        return {}, {}, empty, None
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        errors.append(f"{path} cannot be opened: {error_line(exc)}")
        return {}, {}, empty, None
    catalog = None
    try:
        tables = {row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        if want_catalog and "filtered_paintings" in tables:
            present = {row[0] for row in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE table_name = 'filtered_paintings'").fetchall()}
            catalog = con.execute("SELECT " + ", ".join(c if c in present else f"NULL AS {c}" for c in CATALOG_COLUMNS)
                                  + " FROM filtered_paintings").fetchdf()
        rejected = (con.execute(f"SELECT objectid, reason FROM {REJECTED_TABLE}").fetchdf()
                    if REJECTED_TABLE in tables else empty)
        csv_rows = (dict(con.execute(f"SELECT file, count(*) FROM {RAW_REJECTS} GROUP BY file ORDER BY file").fetchall())
                    if RAW_REJECTS in tables else {})
    finally:
        con.close()
    reasons = {str(k): int(v) for k, v in rejected["reason"].value_counts().items()}
    return reasons, {str(k): int(v) for k, v in csv_rows.items()}, rejected, catalog


def _index(lake: DataLake, errors: list[str]) -> dict[str, Any] | None:
    try:
        generation = current_generation_id(lake)
        if generation is None:
            return None
        manifest = read_generation_manifest(lake, generation)
    except Exception as exc:  # noqa: BLE001 - garbage pointer, missing or corrupt manifest
        errors.append(f"the served index cannot be read ({lake.index_pointer_path}): {error_line(exc)}")
        return None
    variants = manifest.get("variants", {})
    return {
        "generation": generation, "created": manifest.get("created"), "models": manifest.get("models", []),
        "indexed": int(variants.get("full", {}).get("n_vectors", 0)),
        "face_indexed": int(variants.get("face", {}).get("n_vectors", 0)),
        "recall_at_10": variants.get("full", {}).get("recall_at_10"),
        "fit": {k: (manifest.get("fit") or {}).get(k) for k in ("mode", "reason", "since_fit", "share", "drift")}
        if manifest.get("fit") else None,
    }


def _raw(lake: DataLake, errors: list[str], raw_keep: int | None) -> dict[str, Any]:
    """``raw``: how many complete NGA snapshots ``raw/`` holds, and how many it keeps."""
    try:
        return {"snapshots": len(raw_snapshots(lake)), "keep": raw_keep}
    except OSError as exc:
        errors.append(f"{lake.root / 'raw'} cannot be listed: {error_line(exc)}")
        return {"snapshots": 0, "keep": raw_keep}


def _catalog(lake: DataLake, errors: list[str]
             ) -> tuple[pd.DataFrame, str | None, tuple[dict[str, int], dict[str, int], pd.DataFrame]]:
    """(the catalog by objectid, when it was written, the rejects of :func:`_catalog_rejects`): the Parquet
    copy, or the catalog's DuckDB table where that copy is missing or unreadable."""
    catalog_path = lake.filtered_paintings_parquet
    catalog: pd.DataFrame | None = None
    try:
        catalog = read_parquet(catalog_path, columns=CATALOG_COLUMNS)
        written = _when(catalog_path)
    except FileNotFoundError:
        pass
    except Exception as exc:  # noqa: BLE001
        errors.append(f"{catalog_path} cannot be read: {error_line(exc)}")
    reasons, csv_rows, rejected, db_catalog = _catalog_rejects(lake, errors, want_catalog=catalog is None)
    if catalog is None:  # no (readable) Parquet copy: the catalog's DuckDB table
        catalog = db_catalog if db_catalog is not None else pd.DataFrame(columns=CATALOG_COLUMNS)
        written = _when(lake.catalog_db) if db_catalog is not None else None
    catalog = catalog.drop_duplicates("objectid").set_index("objectid", drop=False)
    return catalog, written, (reasons, csv_rows, rejected)


def _images(lake: DataLake, catalog: pd.DataFrame, errors: list[str]
            ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(the catalog's image status rows, those whose painting was lost, the ``images`` counts)."""
    images = _read_all(_batch_files(lake.image_status_dir), ["objectid", "status", "reason"], errors)
    images = _in_catalog(images, catalog)
    counts = images["status"].value_counts()
    lost = images[images["status"].isin(["failed", "skipped_small"])]
    return images, lost, {
        "cached": int(sum(counts.get(s, 0) for s in USABLE)),
        "skipped_small": int(counts.get("skipped_small", 0)), "failed": int(counts.get("failed", 0)),
        "not_tried": int((~catalog.index.isin(images["objectid"])).sum()) if len(catalog) else 0,
        "reasons": {str(k): int(v) for k, v in lost.apply(
            lambda r: "too_small" if r["status"] == "skipped_small" else _kind(r["reason"]), axis=1
        ).value_counts().items()} if len(lost) else {},
    }


def _faces(lake: DataLake, catalog: pd.DataFrame, errors: list[str]) -> tuple[pd.DataFrame, dict[str, int]]:
    """(the catalog's face rows with an error, the ``faces`` counts)."""
    faces = _in_catalog(_read_all(_batch_files(lake.faces_dir), ["objectid", "face_count", "error"], errors), catalog)
    face_errors = faces[faces["error"].fillna("").astype(str) != ""]
    return face_errors, {"checked": int(len(faces)), "with_face": int((faces["face_count"].fillna(0) > 0).sum()),
                         "errors": int(len(face_errors))}


def _embeddings(lake: DataLake, catalog: pd.DataFrame, errors: list[str]
                ) -> tuple[dict[str, set[int]], dict[str, dict[str, int]]]:
    """(model -> the catalog's paintings it embedded (full image), the ``embeddings`` counts per model)."""
    embedded_by_model: dict[str, set[int]] = {}
    counts: dict[str, dict[str, int]] = {}
    try:
        model_dirs = sorted(p for p in lake.embeddings_dir.iterdir() if p.is_dir()) if lake.embeddings_dir.exists() else []
    except OSError:
        model_dirs = []
    for directory in model_dirs:
        files = _batch_files(directory)
        rows = _in_catalog(_read_all(files, ["objectid", "variant"], errors), catalog)  # not a removed batch's
        full = set(rows.loc[rows["variant"] == "full", "objectid"].astype("int64"))
        embedded_by_model[directory.name] = full
        counts[directory.name] = {"paintings": len(full), "files": len(files),
                                  "face_vectors": int((rows["variant"] == "face").sum())}
    return embedded_by_model, counts


def _problems(lost: pd.DataFrame, rejected: pd.DataFrame, face_errors: pd.DataFrame, cached: set[int],
              embedded_by_model: dict[str, set[int]], served_models: set[str]) -> list[dict[str, Any]]:
    """Every offender, worst first: lost images, rejected catalog rows, face errors, and the cached paintings
    a served model has not embedded."""
    problems = [
        {"objectid": int(r.objectid), "stage": "image", "status": str(r.status), "reason": str(r.reason or "")}
        for r in lost.itertuples()
    ] + [
        {"objectid": int(r.objectid), "stage": "catalog", "status": "rejected", "reason": str(r.reason)}
        for r in rejected.itertuples() if pd.notna(r.objectid)
    ] + [
        {"objectid": int(r.objectid), "stage": "faces", "status": "error", "reason": str(r.error)}
        for r in face_errors.itertuples()
    ]
    for model, embedded in sorted(embedded_by_model.items()):
        if model not in served_models:
            continue
        for objectid in sorted(cached - embedded):
            problems.append({"objectid": objectid, "stage": "embedding", "status": "not_embedded",
                             "reason": f"cached but not embedded by {model} (its batch has not run since)"})
    problems.sort(key=lambda p: (SEVERITY.get(p["status"], 9), p["objectid"]))
    return problems


def _name_problems(problems: list[dict[str, Any]], catalog: pd.DataFrame) -> None:
    """Add each problem's ``title`` and ``artist`` from the catalog (``""`` where it has none)."""
    for problem in problems:
        row = catalog.loc[problem["objectid"]] if problem["objectid"] in catalog.index else None
        problem["title"] = "" if row is None or pd.isna(row["title"]) else str(row["title"])
        problem["artist"] = "" if row is None or pd.isna(row["artist"]) else str(row["artist"])


def lake_status(lake: DataLake, worst: int = 20, raw_keep: int | None = None) -> dict[str, Any]:
    """The lake's state (module docstring); ``worst`` offenders are listed (all are counted); ``raw_keep``
    is ``ARTSIM_RAW_KEEP`` (how many NGA snapshots ``raw/`` keeps), when the caller knows it."""
    errors: list[str] = []
    status: dict[str, Any] = {"lake": str(lake.root), "errors": errors, "stale": None}
    status["raw"] = _raw(lake, errors, raw_keep)
    catalog, written, (reasons, csv_rows, rejected) = _catalog(lake, errors)
    status["catalog"] = {"paintings": int(len(catalog)), "batches": int(catalog["batch_key"].nunique()),
                         "written": written if len(catalog) else None}
    images, lost, status["images"] = _images(lake, catalog, errors)
    face_errors, status["faces"] = _faces(lake, catalog, errors)
    status["index"] = _index(lake, errors)
    embedded_by_model, status["embeddings"] = _embeddings(lake, catalog, errors)
    status["rejected"] = {"catalog_rows": reasons, "csv_rows": csv_rows}

    cached = set(images.loc[images["status"].isin(USABLE), "objectid"].astype("int64"))
    served_models = set((status["index"] or {}).get("models") or embedded_by_model)  # not a model of long ago
    problems = _problems(lost, rejected, face_errors, cached, embedded_by_model, served_models)
    _name_problems(problems[:worst], catalog)
    status["problem_count"] = len(problems)
    status["problems"] = problems[:worst]
    return status


def _counts(mapping: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(mapping.items(), key=lambda kv: (-kv[1], kv[0]))) or "none"


def format_status(status: dict[str, Any]) -> str:
    """The status as a few readable lines (``artsim status``)."""
    c, i, f = status["catalog"], status["images"], status["faces"]
    lines = [f"data lake {status['lake']}",
             f"catalog     {c['paintings']} paintings in {c['batches']} batches"
             + (f" (written {c['written']})" if c["written"] else " (not built yet: run `artsim run`)"),
             f"images      {i['cached']} cached, {i['skipped_small']} skipped (too small), {i['failed']} failed"
             + (f", {i['not_tried']} not tried yet" if i["not_tried"] else "")
             + (f"; reasons: {_counts(i['reasons'])}" if i["reasons"] else ""),
             f"faces       {f['checked']} images checked, {f['with_face']} with a face"
             + (f", {f['errors']} unreadable" if f["errors"] else "")]
    for model, e in sorted(status["embeddings"].items()):
        lines.append(f"embedded    {model}: {e['paintings']} paintings ({e['face_vectors']} face crops)")
    if not status["embeddings"]:
        lines.append("embedded    nothing yet")
    x = status["index"]
    if x:
        recall = f", recall@10 {x['recall_at_10']:.3f}" if isinstance(x.get("recall_at_10"), (int, float)) else ""
        backbones = list(dict.fromkeys(m.split("@", 1)[0] for m in x["models"]))  # "<model>@<tap>": a tap
        taps = len(x["models"]) - len(backbones)
        lines.append(f"indexed     {x['indexed']} paintings ({x['face_indexed']} by face), generation "
                     f"{x['generation']} created {x['created']}, models {', '.join(backbones)}"
                     + (f" (+{taps} mid-level taps)" if taps else "") + recall)
        if x.get("fit"):
            f = x["fit"]
            how = ("fitted on this collection" if f["mode"] == "full"
                   else f"fit kept, {f['since_fit']} paintings added since it ({f['share']:.1%})")
            lines.append(f"index fit   {how} (reason: {f['reason']})")
    else:
        lines.append("indexed     no index published yet")
    raw = status.get("raw") or {}
    if raw:
        lines.append(f"raw         {raw['snapshots']} NGA snapshot(s) in raw/"
                     + (f", the newest {raw['keep']} kept (ARTSIM_RAW_KEEP), older ones pruned after each catalog load"
                        if raw.get("keep") else ""))
    r = status["rejected"]
    lines.append(f"rejected    catalog rows: {_counts(r['catalog_rows'])}; unreadable CSV rows: {_counts(r['csv_rows'])}")
    stale = status.get("stale")
    if stale is None:
        lines.append("stale       not checked")
    elif not stale:
        lines.append("stale       nothing: every asset and batch is up to date")
    else:
        lines.append(f"stale       {len(stale)} to run:")
        for item in stale[:20]:
            where = f"[{item['partition']}]" if item.get("partition") else ""
            why = item["status"].lower() if item["reason"] == item["status"].lower() else \
                f"{item['status'].lower()}: {item['reason']}"
            lines.append(f"  {item['asset']}{where} ({why})")
        if len(stale) > 20:
            lines.append(f"  … and {len(stale) - 20} more (--json lists all)")
    if status["problems"]:
        lines.append(f"problems    {status['problem_count']} paintings; the worst {len(status['problems'])}:")
        for p in status["problems"]:
            title = f"{p.get('title') or '?'}" + (f" — {p['artist']}" if p.get("artist") else "")
            lines.append(f"  {p['objectid']:>8}  {p['stage']}/{p['status']}: {p['reason'][:100]}  ({title[:70]})")
    else:
        lines.append("problems    none")
    for error in status["errors"]:
        lines.append(f"DAMAGED     {error}")
    return "\n".join(lines)
