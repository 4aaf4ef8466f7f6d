"""``artsim bench catalog``: what following the catalog costs the server (issue 32 #3).

For each size, a lake holding only a catalog of N synthetic paintings (``catalog.duckdb`` and its Parquet
copy, written as the catalog step writes them) and a :class:`~artsim_pipeline.web.catalog_watch.CatalogWatch`:

* ``check_us``: one per-request check (the catalog files' stamp compared with the served one), mean µs;
* ``follow_s``: one reload after a title changed (load the catalog, hash it, build the engine's rows and
  filter table), split into ``load_s``, ``hash_s``, ``rows_s`` (:func:`~artsim_pipeline.web.catalog_watch.with_catalog`).

Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import duckdb
import numpy as np
import pandas as pd

from artsim_pipeline.core.catalog import export_parquet
from artsim_pipeline.core.lake import DataLake
from artsim_pipeline.core.search_loaders import CATALOG_COLUMNS, load_catalog
from artsim_pipeline.core.storage import atomic_write_text
from artsim_pipeline.web.catalog_watch import CatalogWatch, catalog_version, with_catalog

DEFAULT_SIZES = (1_698, 16_384, 131_072)
CHECKS = 20_000


def synthetic_catalog(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    years = rng.integers(1300, 1950, n)
    return pd.DataFrame({
        "objectid": np.arange(1, n + 1, dtype=np.int64), "uuid": [f"u-{i:08d}" for i in range(n)],
        "title": [f"Painting {i} of a river at dusk" for i in range(n)],
        "artist": [f"Painter {i % 2000}" for i in range(n)], "artist_key": [f"painter {i % 2000}" for i in range(n)],
        "style": rng.choice(["Baroque", "Impressionism", "Romanticism", ""], n), "beginyear": years,
        "endyear": years + 2, "displaydate": [f"c. {y}" for y in years], "medium": "oil on canvas",
    }, columns=list(CATALOG_COLUMNS))


def write_catalog(lake: DataLake, frame: pd.DataFrame) -> None:
    """The catalog step's writes: the DuckDB table replaced, then its Parquet copy (atomic)."""
    lake.filtered_paintings_parquet.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(lake.catalog_db)) as con:
        con.register("frame", frame)
        con.execute("CREATE OR REPLACE TABLE filtered_paintings AS SELECT * FROM frame")
        con.unregister("frame")
        export_parquet(con, "filtered_paintings", lake.filtered_paintings_parquet)


def measure(n: int, root: Path) -> dict[str, Any]:
    lake = DataLake(root / f"lake-{n}")
    lake.root.mkdir(parents=True)
    frame = synthetic_catalog(n)
    write_catalog(lake, frame)
    watch = CatalogWatch(lake)
    served = load_catalog(lake, [])
    watch.adopt(watch.stamp())
    started = time.perf_counter()
    for _ in range(CHECKS):
        watch.changed()
    check_us = (time.perf_counter() - started) / CHECKS * 1e6
    served_version = catalog_version(served)

    frame.loc[n // 2, "title"] = "A new title"
    write_catalog(lake, frame)
    assert watch.changed()
    t0 = time.perf_counter()
    catalog = load_catalog(lake, [])
    t1 = time.perf_counter()
    version = catalog_version(catalog)
    t2 = time.perf_counter()
    engine = with_catalog(SimpleNamespace(catalog=served), catalog)
    t3 = time.perf_counter()
    assert version != served_version and engine.catalog.loc[frame.loc[n // 2, "objectid"], "title"] == "A new title"
    return {"paintings": n, "check_us": round(check_us, 2), "load_s": round(t1 - t0, 4), "hash_s": round(t2 - t1, 4),
            "rows_s": round(t3 - t2, 4), "follow_s": round(t3 - t0, 4)}


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| paintings | check per request (µs) | follow: load (s) | hash (s) | rows + filter table (s) | total (s) |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['paintings']:,} | {r['check_us']:.1f} | {r['load_s']:.3f} | {r['hash_s']:.3f} | "
                     f"{r['rows_s']:.3f} | {r['follow_s']:.3f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="artsim bench catalog", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="paintings, comma-separated")
    parser.add_argument("--out", type=Path, default=Path("bench_catalog_follow.json"), help="JSON output")
    args = parser.parse_args(list(argv) if argv is not None else None)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if not sizes or min(sizes) < 2:
        parser.error("--sizes: give sizes of 2 paintings or more, e.g. 1698,16384")
    with tempfile.TemporaryDirectory(prefix="artsim-bench-catalog-") as tmp:
        rows = [measure(n, Path(tmp)) for n in sizes]
    print(format_table(rows))
    atomic_write_text(args.out, json.dumps({"benchmark": "catalog_follow", "results": rows}, indent=2))
    print(f"wrote {args.out}")
    return 0
