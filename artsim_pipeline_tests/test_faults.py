"""Regressions for the fault probe, through the Dagster assets (catalog refreshes, an empty batch).

Each test is named after the defect it guards; core-level tests for the same defects live beside
their modules (core/test_catalog.py, core/test_faces.py, core/test_nga_source.py, ...).
"""

from __future__ import annotations

import os
import time

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest
from dagster import AssetCheckKey, AssetKey, materialize
from PIL import Image

from artsim_pipeline.config import Settings
from artsim_pipeline.core.storage import InvalidIdError, safe_id
from artsim_pipeline.definitions import build_assets
from artsim_pipeline.resources import NgaSourceResource, build_resources
from artsim_pipeline_tests.http_server import LocalServer
from artsim_pipeline_tests.nga_fixtures import Painting, nga_csvs, write_mirror

CATALOG = ["raw_objects", "filtered_paintings"]


def materialize_catalog(settings: Settings, instance, raise_on_error: bool = True):
    resources = build_resources(settings)
    resources["nga_source"] = NgaSourceResource(location=settings.nga_source, backoff_base_s=0.01)  # a new one: Dagster rebuilds a model_copy from its old config
    return materialize(build_assets(settings), selection=CATALOG, resources=resources, instance=instance,
                       raise_on_error=raise_on_error)


def metadata(instance, name: str) -> dict:
    event = instance.get_latest_materialization_event(AssetKey(name))
    return {key: value.value for key, value in event.asset_materialization.metadata.items()}


def catalog_ids(lake) -> list[int]:
    with duckdb.connect(str(lake / "catalog.duckdb"), read_only=True) as con:
        return [r[0] for r in con.execute("SELECT objectid FROM filtered_paintings ORDER BY 1").fetchall()]


def latest_check(instance, asset: str, name: str):
    """The latest evaluation of check ``name`` on ``asset`` (passed, metadata)."""
    key = AssetCheckKey(AssetKey(asset), name)
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
    return record.event.dagster_event.event_specific_data


def failure_text(result) -> str:
    return "\n".join(
        str(event.event_specific_data.error) for event in result.all_events if event.event_type_value == "STEP_FAILURE"
    )


def test_truncated_csv_refresh_is_refused_by_the_shrink_guard(tmp_path, instance):
    """Defect 4b: objects.csv cut at a line boundary (a shorter but valid CSV) took 30 paintings to 14."""
    paintings = [Painting(i) for i in range(1, 31)]
    lake = tmp_path / "lake"
    with LocalServer() as server:
        for name, body in nga_csvs(paintings).items():
            server.routes[f"/data/{name}.csv"] = body
        settings = Settings(nga_source=server.url, data_lake=lake, limit=0, batch_size=8)
        materialize_catalog(settings, instance)
        assert metadata(instance, "filtered_paintings")["paintings"] == 30
        parquet_before = (lake / "tables" / "filtered_paintings.parquet").read_bytes()

        full = nga_csvs(paintings)["objects"]
        lines = full.split(b"\n")
        header_and_rows = [lines[0]] + [line for line in lines[1:] if line.split(b",", 1)[0].isdigit()]
        assert len(header_and_rows) == 31
        # every object row carries a quoted multi-line column: cut after the 14th record's closing line
        cut = full.index(b"\n" + b"15,obj-15")
        server.routes["/data/objects.csv"] = full[: cut + 1]  # served with a matching Content-Length
        result = materialize_catalog(settings, instance, raise_on_error=False)
        assert not result.success
        assert "no_sudden_shrink" in failure_text(result)  # the blocking check failed the step
        check = latest_check(instance, "filtered_paintings", "no_sudden_shrink")
        assert not check.passed
        numbers = {key: value.value for key, value in check.metadata.items()}
        assert numbers["previous_paintings"] == 30 and numbers["offered_paintings"] == 14
        assert numbers["dropped_share"] == pytest.approx(16 / 30, abs=1e-4) and numbers["max_shrink"] == 0.2
        assert "ARTSIM_MAX_SHRINK=1" in numbers["what_to_do"]
        assert catalog_ids(lake) == list(range(1, 31))  # the previous table survived
        assert (lake / "tables" / "filtered_paintings.parquet").read_bytes() == parquet_before

        confirmed = settings.with_overrides(max_shrink=1.0)
        materialize_catalog(confirmed, instance)
        assert catalog_ids(lake) == list(range(1, 15))
        assert latest_check(instance, "filtered_paintings", "no_sudden_shrink").passed


def test_duplicate_objectid_rows_on_a_fresh_lake_are_dropped_and_reported(tmp_path, instance):
    """Defect 6: duplicate objectid rows failed the fresh-lake refresh on the manifest's primary key."""
    mirror = write_mirror(tmp_path / "mirror", [Painting(i) for i in range(1, 6)], with_images=False)
    objects = mirror / "data" / "objects.csv"
    frame = pd.read_csv(objects, dtype=str, keep_default_na=False)
    twin = frame[frame["objectid"] == "3"].assign(uuid="zzz-later", title="Second copy")
    pd.concat([twin, frame], ignore_index=True).to_csv(objects, index=False)  # the duplicate comes first
    lake = tmp_path / "lake"
    materialize_catalog(Settings(nga_source=str(mirror), data_lake=lake, limit=0, batch_size=2), instance)
    meta = metadata(instance, "filtered_paintings")
    assert meta["paintings"] == 5 and meta["rejected_duplicate_objectid"] == 1 and meta["rejected"] == 1
    with duckdb.connect(str(lake / "catalog.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*), count(DISTINCT objectid) FROM batch_manifest").fetchall() == [(5, 5)]
        assert con.execute("SELECT title FROM filtered_paintings WHERE objectid = 3").fetchall() == [("Untitled",)]
    parquet = pd.read_parquet(lake / "tables" / "filtered_paintings.parquet")
    assert parquet["objectid"].is_unique and len(parquet) == 5


def test_negative_objectid_is_rejected_in_the_catalog_and_reported(tmp_path, instance):
    """Defect 3: one negative objectid blocked the index on every run."""
    mirror = write_mirror(tmp_path / "mirror", [Painting(1), Painting(-2), Painting(3)], with_images=False)
    lake = tmp_path / "lake"
    materialize_catalog(Settings(nga_source=str(mirror), data_lake=lake, limit=0), instance)
    meta = metadata(instance, "filtered_paintings")
    assert meta["paintings"] == 2 and meta["rejected_negative_objectid"] == 1
    assert pd.read_parquet(lake / "tables" / "filtered_paintings.parquet")["objectid"].tolist() == [1, 3]


def test_lake_path_with_a_single_quote_runs_the_catalog(tmp_path, instance):
    """Defect 8: data-lake paths meeting SQL (COPY, views) must be quoted, and globs not expanded."""
    mirror = write_mirror(tmp_path / "mirror", [Painting(1), Painting(2)], with_images=False)
    lake = tmp_path / "O'Brien's [lake]"
    (lake / "faces").mkdir(parents=True)
    pd.DataFrame({"objectid": [1], "face_count": [1]}).to_parquet(lake / "faces" / "batch-00000.parquet")
    materialize_catalog(Settings(nga_source=str(mirror), data_lake=lake, limit=0), instance)
    assert catalog_ids(lake) == [1, 2]
    with duckdb.connect(str(lake / "catalog.duckdb"), read_only=True) as con:
        assert con.execute("SELECT objectid FROM face_crops").fetchall() == [(1,)]


def test_stale_tmp_files_in_reports_are_swept_by_the_refresh(tmp_path, instance):
    """Defect 10: leftover ``*.tmp`` files in ``reports/`` (a killed report write) were never removed."""
    mirror = write_mirror(tmp_path / "mirror", [Painting(1)], with_images=False)
    lake = tmp_path / "lake"
    reports = lake / "reports"
    reports.mkdir(parents=True)
    orphan = reports / ".eval_report.json.k2j3h4.tmp"
    orphan.write_text("{")
    old = time.time() - 2 * 3600
    os.utime(orphan, (old, old))
    live = reports / ".eval_report.md.a1b2c3.tmp"
    live.write_text("writing")
    materialize_catalog(Settings(nga_source=str(mirror), data_lake=lake, limit=0), instance)
    assert not orphan.exists() and live.exists()
    assert metadata(instance, "filtered_paintings")["stale_temp_files_removed"] == 1


def test_uuid_with_a_trailing_newline_is_not_a_safe_id():
    """Defect 10: ``$`` in the safe-id regex matched before a trailing newline."""
    assert safe_id("abc-123.x") == "abc-123.x"
    for bad in ("abc\n", "abc\n\n", "\nabc", "ab\nc"):
        with pytest.raises(InvalidIdError):
            safe_id(bad, "image uuid")


def test_batch_whose_images_are_all_too_small_flows_through_faces_and_embeddings(tmp_path, instance):
    """Defect 2: every image ``skipped_small`` crashed ``face_crops`` writing the empty list columns."""
    paintings = [Painting(i, width=400, height=300) for i in (1, 2)]
    mirror = write_mirror(tmp_path / "mirror", paintings)
    for p in paintings:  # the files are smaller than the catalog says
        Image.new("RGB", (64, 48), (10 * p.objectid, 80, 120)).save(mirror / "images" / f"{p.uuid}.jpg", "JPEG")
    lake = tmp_path / "lake"
    settings = Settings(nga_source=str(mirror), data_lake=lake, limit=0, min_side=300, models=("efficientnet_lite0",),
                        device="cpu")
    materialize_catalog(settings, instance)
    selection = ["image_cache", "face_crops", "embeddings_efficientnet_lite0"]
    result = materialize(build_assets(settings), selection=selection, partition_key="batch-00000",
                         resources=build_resources(settings), instance=instance)
    assert result.success
    status = pd.read_parquet(lake / "image_status" / "batch-00000.parquet")
    assert status["status"].tolist() == ["skipped_small", "skipped_small"]
    faces = pq.read_table(lake / "faces" / "batch-00000.parquet")
    assert faces.num_rows == 0 and str(faces.schema.field("probabilities").type) == "list<element: double>"
    embeddings = pq.read_table(lake / "embeddings" / "efficientnet_lite0" / "batch-00000.parquet")
    taps = [f"tap:blocks.{i}.{stat}" for i in (3, 4, 5, 6) for stat in ("mean", "std")]
    assert embeddings.num_rows == 0 and embeddings.schema.names == ["objectid", "uuid", "variant", "vector", *taps]
