"""``artsim bench refresh``: incremental refresh vs full rebuild on the NGA painting catalog.

Builds an NGA-like mirror from a catalog CSV (uuid, title, attribution, date, medium — e.g. the
4,020-painting NGA catalog) with generated images, then measures on the same machine:

* ``full_rebuild_s``: ``artsim run`` over all N paintings in an empty data lake;
* ``add_one_batch_s``: the refresh after NGA published one more batch of paintings, starting from a
  data lake built on the first N - batch_size;
* ``no_change_s``: a refresh with nothing changed.

Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import Settings
from ..core.storage import atomic_write_text


def _image(seed: int, size: int) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    channels = [(rng.uniform(0, 255) + 90 * np.sin(rng.uniform(0.03, 0.3) * (x + rng.uniform(0.5, 2) * y))) % 255
                for _ in range(3)]
    buffer = io.BytesIO()
    Image.fromarray(np.stack(channels, -1).astype(np.uint8)).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def read_catalog(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    required = {"nga_uuid", "title", "attribution", "date", "medium"}
    if not rows or not required <= set(rows[0]):
        raise ValueError(f"{path}: expected a catalog CSV with columns {sorted(required)}")
    return rows


def write_mirror(root: Path, rows: list[dict[str, str]], image_px: int) -> None:
    """An NGA-like mirror (data/*.csv + images/<uuid>.jpg) of ``rows``; images are generated once."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    tables: dict[str, list[dict[str, object]]] = {name: [] for name in
                                                  ("objects", "published_images", "constituents",
                                                   "objects_constituents", "objects_terms")}
    for objectid, row in enumerate(rows, start=1):
        uuid = row["nga_uuid"]
        year = next((int(t[:4]) for t in row["date"].replace("c.", " ").split() if t[:4].isdigit()), "")
        tables["objects"].append({"objectid": objectid, "title": row["title"], "attribution": row["attribution"],
                                  "classification": "Painting", "displaydate": row["date"], "beginyear": year,
                                  "endyear": year, "medium": row["medium"]})
        tables["published_images"].append({"uuid": uuid, "iiifurl": f"https://api.nga.gov/iiif/{uuid}",
                                           "viewtype": "primary", "width": image_px, "height": image_px,
                                           "depictstmsobjectid": objectid, "openaccess": 1, "modified": ""})
        image = root / "images" / f"{uuid}.jpg"
        if not image.exists():
            seed = int(hashlib.sha256(uuid.encode()).hexdigest()[:8], 16)
            image.write_bytes(_image(seed, image_px))
    columns = {"constituents": ["constituentid", "forwarddisplayname"],
               "objects_constituents": ["objectid", "constituentid", "roletype", "displayorder"],
               "objects_terms": ["objectid", "termtype", "term"]}
    for name, records in tables.items():
        fields = list(records[0]) if records else columns[name]
        with open(root / "data" / f"{name}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(records)


def _timed_run(settings: Settings, home: Path) -> tuple[float, int]:
    from dagster import DagsterInstance

    from ..definitions import build_definitions
    from ..runner import PipelineRunner

    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with DagsterInstance.from_config(str(home)) as instance:
        started = time.perf_counter()
        report = PipelineRunner(build_definitions(settings), settings, instance, echo=lambda _: None).run()
        return time.perf_counter() - started, len(report.ran)


def run_benchmark(catalog: Path, workdir: Path, models: tuple[str, ...], image_px: int, batch_size: int,
                  limit: int) -> dict:
    rows = read_catalog(catalog)[: limit or None]
    n = len(rows)
    mirror = workdir / "mirror"

    def settings(lake: str) -> Settings:
        return Settings(nga_source=str(mirror), data_lake=workdir / lake, limit=0, min_side=image_px,
                        batch_size=batch_size, models=models)

    write_mirror(mirror, rows[: n - batch_size], image_px)
    base_s, _ = _timed_run(settings("incremental"), workdir / "incremental" / "dagster_home")
    write_mirror(mirror, rows, image_px)  # NGA publishes one more batch of paintings
    add_s, add_runs = _timed_run(settings("incremental"), workdir / "incremental" / "dagster_home")
    same_s, same_runs = _timed_run(settings("incremental"), workdir / "incremental" / "dagster_home")
    full_s, full_runs = _timed_run(settings("full"), workdir / "full" / "dagster_home")
    comparison = compare_with_full_refit(Settings().with_overrides(data_lake=workdir / "incremental"),
                                         Settings().with_overrides(data_lake=workdir / "full"))
    return {
        "paintings": n, "batch_size": batch_size, "batches": -(-n // batch_size), "models": list(models),
        "image_px": image_px, "cpu_count": os.cpu_count(),
        "initial_build_s": round(base_s, 2),
        "full_rebuild_s": round(full_s, 2), "full_rebuild_materializations": full_runs,
        "add_one_batch_s": round(add_s, 2), "add_one_batch_materializations": add_runs,
        "no_change_s": round(same_s, 2), "no_change_materializations": same_runs,
        "add_one_batch_vs_full_ratio": round(add_s / full_s, 3),
        "no_change_vs_full_ratio": round(same_s / full_s, 4),
        **comparison,
    }


def compare_with_full_refit(incremental: Settings, full: Settings, k: int = 10) -> dict:
    """The refreshed lake's served search against a full refit of the same collection.

    Every painting is a query in each lake (its own served vector, itself left out); ``recall_at_10_vs_full``
    is the mean share of the full refit's top 10 that the refreshed index also returns. Also reports how the
    refresh was fitted (the generation's ``fit`` record) and its index's own recall@10 against exact search.
    """
    import numpy as np

    from ..core.generations import REQUIRED_VARIANT, load_generation
    from ..core.index import search
    from ..core.recall import neighbour_recall
    from ..resources import lake_for

    served = {}
    for name, settings in (("incremental", incremental), ("full", full)):
        generation = load_generation(lake_for(settings))
        bundle = generation.bundles[REQUIRED_VARIANT]
        ids = np.sort(bundle.ids)
        _, found = search(bundle, bundle.index.reconstruct_batch(ids), k + 1)
        served[name] = (generation, ids, np.array([row[row != oid][:k] for row, oid in zip(found, ids)]))
    (inc, inc_ids, inc_top), (_, full_ids, full_top) = served["incremental"], served["full"]
    if not np.array_equal(inc_ids, full_ids):
        raise RuntimeError("the refreshed and the fully rebuilt lake index different paintings")
    fit = inc.manifest.get("fit") or {}
    return {
        "refresh_fit_mode": fit.get("mode", "full"), "refresh_fit_reason": fit.get("reason"),
        "refresh_new_share": fit.get("share"), "refresh_drift": fit.get("drift"),
        "refresh_index_recall_at_10": inc.bundles[REQUIRED_VARIANT].info.get("recall_at_10"),
        "recall_at_10_vs_full": round(neighbour_recall(inc_top, full_top), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="artsim bench refresh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalog", type=Path, required=True, help="catalog CSV (nga_uuid, title, attribution, date, medium)")
    parser.add_argument("--models", default="efficientnet_lite0", help="comma list (default %(default)s)")
    parser.add_argument("--image-px", type=int, default=64, help="generated image side (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--limit", type=int, default=0, help="use the first N catalog rows (0 = all)")
    parser.add_argument("--workdir", type=Path, help="scratch directory (default: a temporary one, removed)")
    parser.add_argument("--out", type=Path, default=None, help="JSON output (default <data_lake>/reports/bench_refresh.json)")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="artsim-bench-refresh-"))
    try:
        result = run_benchmark(args.catalog, workdir, tuple(m for m in args.models.split(",") if m),
                               args.image_px, args.batch_size, args.limit)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"{'step':<34}{'seconds':>10}{'materializations':>18}")
    for label, key, count in (("full rebuild (all paintings)", "full_rebuild_s", "full_rebuild_materializations"),
                              ("refresh: one new batch", "add_one_batch_s", "add_one_batch_materializations"),
                              ("refresh: nothing changed", "no_change_s", "no_change_materializations")):
        print(f"{label:<34}{result[key]:>10.2f}{result[count]:>18}")
    print(f"one new batch / full rebuild = {result['add_one_batch_vs_full_ratio']:.3f}; "
          f"no change / full rebuild = {result['no_change_vs_full_ratio']:.4f}")
    print(f"the refresh was fitted {result['refresh_fit_mode']} ({result['refresh_fit_reason']}; new share "
          f"{result['refresh_new_share']}, drift {result['refresh_drift']}); its top 10 vs a full refit's: "
          f"recall@10 {result['recall_at_10_vs_full']:.4f} (index vs exact search {result['refresh_index_recall_at_10']})")
    out = args.out or Settings.from_env().data_lake / "reports" / "bench_refresh.json"
    atomic_write_text(out, json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0
