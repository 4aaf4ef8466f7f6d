"""``artsim status``'s cached plan (:mod:`artsim_pipeline.dagster_stale_cache`) is the plan computed afresh.

A real SQLite instance and the real code location: one input at a time changes (an image batch added, a
materialization, a new observation of the NGA source, an output-shaping setting, a code version, a batch
deleted and another added) and each time the plan ``artsim status`` shows equals the uncached plan, which
each change is chosen to alter (so a stale cache fails the test). Then the storage mark on its own (run
status, a wiped asset), a weights file a code version reads, a storage the mark cannot read, a write while
the plan is computed, ``--fresh`` and the command's ``--json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3

import pytest
from dagster import AssetKey, AssetMaterialization, AssetObservation
from dagster._core.definitions.data_version import (
    CODE_VERSION_TAG,
    DATA_VERSION_TAG,
    INPUT_DATA_VERSION_TAG_PREFIX,
    INPUT_EVENT_POINTER_TAG_PREFIX,
)

from artsim_pipeline import cli
from artsim_pipeline import dagster_stale_cache as cache
from artsim_pipeline import code_versions as versions
from artsim_pipeline.config import Settings
from artsim_pipeline.definitions import build_definitions
from artsim_pipeline.partitions import IMAGE_BATCHES
from artsim_pipeline_tests.support import artsim


@pytest.fixture
def settings(tmp_path, instance, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", instance.root_directory)
    for name in [k for k in os.environ if k.startswith("ARTSIM_")]:
        monkeypatch.delenv(name)
    return Settings(nga_source=str(tmp_path / "mirror"), data_lake=tmp_path / "lake", limit=0, min_side=64,
                    batch_size=3, models=("mobilenet_v2",), weights="random", device="cpu", pca_dim=4)


def status_plan(settings: Settings) -> tuple[list[dict], dict]:
    """What ``artsim status`` shows: the cached plan while current, else the computed one."""
    return cache.current_plan(settings, lambda: cli.dagster_plan(settings))


def latest(instance, name: str):
    """The latest materialization or observation record of asset ``name`` (None: neither)."""
    records = [*instance.fetch_materializations(AssetKey(name), limit=1).records,
               *instance.fetch_observations(AssetKey(name), limit=1).records]
    return max(records, key=lambda r: r.storage_id, default=None)


def materialize(instance, settings: Settings, name: str, version: str = "1") -> None:
    """A materialization of ``name`` as a run records it: its code version and the inputs' data versions."""
    graph = build_definitions(settings).resolve_asset_graph()
    node = graph.get(AssetKey(name))
    tags = {DATA_VERSION_TAG: version, CODE_VERSION_TAG: node.code_version}
    for parent in node.parent_keys:
        record = latest(instance, parent.to_user_string())
        data_version = record.event_log_entry.tags.get(DATA_VERSION_TAG) if record else None
        tags[f"{INPUT_DATA_VERSION_TAG_PREFIX}/{parent.to_user_string()}"] = data_version or "unknown"
        tags[f"{INPUT_EVENT_POINTER_TAG_PREFIX}/{parent.to_user_string()}"] = \
            str(record.storage_id) if record else "NULL"
    instance.report_runless_asset_event(AssetMaterialization(asset_key=name, tags=tags))


def observe(instance, version: str) -> None:
    """An observation of the NGA source with data version ``version``."""
    instance.report_runless_asset_event(AssetObservation(asset_key="nga_opendata", tags={DATA_VERSION_TAG: version}))


def check_current(settings: Settings, before: list[dict]) -> list[dict]:
    """Status's plan after a change: recomputed, equal to the uncached plan, and changed by the change."""
    shown, source = status_plan(settings)
    fresh = cli.dagster_plan(settings)
    assert not source["from_cache"] and source["why_computed"], source
    assert shown == fresh
    assert fresh != before  # the change altered the plan: a stale cache could not pass
    again, source = status_plan(settings)  # nothing changed since: now from the cache
    assert source["from_cache"] and again == fresh, source
    return fresh


def test_the_cached_plan_is_the_fresh_plan_after_each_change(settings, instance, monkeypatch):
    plan, source = status_plan(settings)
    assert not source["from_cache"] and source["why_computed"] == "no cached plan"
    assert plan == cli.dagster_plan(settings)
    plan, source = status_plan(settings)
    assert source["from_cache"] and source["why_computed"] is None and plan == cli.dagster_plan(settings)

    # the instance's storage: each kind of record the plan reads
    observe(instance, "v1")
    materialize(instance, settings, "raw_objects")
    plan = check_current(settings, plan)
    assert not any(p["asset"] == "raw_objects" for p in plan)  # fresh now
    materialize(instance, settings, "filtered_paintings")
    plan = check_current(settings, plan)
    observe(instance, "v2")  # the NGA source published new files: raw_objects is stale
    plan = check_current(settings, plan)
    assert any(p["asset"] == "raw_objects" and p["status"] == "STALE" for p in plan), plan
    instance.add_dynamic_partitions(IMAGE_BATCHES, ["batch-00001"])  # a new image batch: missing
    plan = check_current(settings, plan)
    assert any(p["partition"] == "batch-00001" for p in plan)
    materialize(instance, settings, "raw_objects", "2")
    materialize(instance, settings, "filtered_paintings", "2")
    plan = check_current(settings, plan)

    # the code location: a setting that shapes an output, then a code version
    shaped = dataclasses.replace(settings, min_side=65)  # shapes filtered_paintings
    plan = check_current(shaped, plan)
    assert any(p["asset"] == "filtered_paintings" and "code version" in p["reason"] for p in plan), plan
    plan = check_current(settings, plan)  # and back
    original = versions.CODE_VERSIONS["raw_objects"]
    monkeypatch.setitem(versions.CODE_VERSIONS, "raw_objects", "99")
    plan = check_current(settings, plan)
    assert any(p["asset"] == "raw_objects" and "code version" in p["reason"] for p in plan), plan
    monkeypatch.setitem(versions.CODE_VERSIONS, "raw_objects", original)
    plan = check_current(settings, plan)

    # a batch deleted and another added: the same number of rows, and possibly the same row id
    instance.delete_dynamic_partition(IMAGE_BATCHES, "batch-00001")
    instance.add_dynamic_partitions(IMAGE_BATCHES, ["batch-00002"])
    plan = check_current(settings, plan)
    assert {p["partition"] for p in plan} - {None} == {"batch-00002"}


def test_the_storage_mark_moves_with_every_record_a_plan_reads(settings, instance):
    home = cache.instance_home(settings)
    observe(instance, "v1")
    materialize(instance, settings, "raw_objects")
    marks = [cache.storage_mark(home)]
    assert marks[0] is not None and cache.storage_mark(home) == marks[0]  # reading moves nothing
    instance.add_dynamic_partitions(IMAGE_BATCHES, ["batch-00001"])
    marks.append(cache.storage_mark(home))
    with sqlite3.connect(home / "history" / "runs" / "index.db") as con:  # a wiped asset's events are deleted
        con.execute("DELETE FROM event_logs WHERE id = (SELECT max(id) FROM event_logs)")
    marks.append(cache.storage_mark(home))
    observe(instance, "v2")  # a new event, possibly under the deleted one's id
    marks.append(cache.storage_mark(home))
    with sqlite3.connect(home / "history" / "runs.db") as con:  # a run's status (asset checks of failed runs)
        con.execute("INSERT INTO runs (run_id, status) VALUES ('r1', 'STARTED')")
    marks.append(cache.storage_mark(home))
    with sqlite3.connect(home / "history" / "runs.db") as con:
        con.execute("UPDATE runs SET status = 'FAILURE' WHERE run_id = 'r1'")
    marks.append(cache.storage_mark(home))
    with sqlite3.connect(home / "history" / "runs.db") as con:  # the daemon's heartbeat is no record of a plan
        con.execute("INSERT INTO daemon_heartbeats (daemon_type, timestamp) VALUES ('SENSOR', 0)")
    assert cache.storage_mark(home) == marks[-1]
    assert len(set(marks)) == len(marks), marks


def test_a_storage_other_than_sqlite_is_computed_each_time(settings, instance, tmp_path):
    home = cache.instance_home(settings)
    (home / "dagster.yaml").write_text("storage:\n  postgres:\n    postgres_url: postgresql://nowhere/db\n")
    calls = []
    for _ in range(2):
        plan, source = cache.current_plan(settings, lambda: calls.append(1) or [{"asset": "x"}])
        assert plan == [{"asset": "x"}] and not source["from_cache"]
        assert "not the default SQLite" in source["why_computed"]
    assert len(calls) == 2 and not (home / cache.CACHE_NAME).exists()


def test_a_storage_layout_it_does_not_know_is_computed_each_time(settings, instance, monkeypatch):
    observe(instance, "v1")
    home = cache.instance_home(settings)
    assert cache.storage_mark(home) is not None
    monkeypatch.setitem(cache.TABLE_COLUMNS, "runs", "id, a_column_of_another_dagster")
    assert cache.storage_mark(home) is None


def test_a_write_while_the_plan_is_computed_is_not_hidden_by_the_cache(settings, instance):
    def compute_then_a_write_lands():
        plan = cli.dagster_plan(settings)
        instance.add_dynamic_partitions(IMAGE_BATCHES, ["batch-00009"])  # after the plan read the storage
        return plan

    first, _ = cache.current_plan(settings, compute_then_a_write_lands)
    shown, source = status_plan(settings)
    assert not source["from_cache"] and shown == cli.dagster_plan(settings) and shown != first


def test_the_source_hash_sees_a_changed_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.py").write_text("X = 1\n")
    (tmp_path / "sub" / "b.py").write_text("CODE = {'raw_objects': '1'}\n")
    before = cache._source_hash(tmp_path)
    (tmp_path / "sub" / "b.py").write_text("CODE = {'raw_objects': '2'}\n")
    assert cache._source_hash(tmp_path) != before


@pytest.mark.slow  # artsim processes
def test_the_command_says_where_its_plan_came_from(tmp_path):
    env = {"DAGSTER_HOME": str(tmp_path / "dh"), "ARTSIM_MODELS": "mobilenet_v2", "ARTSIM_WEIGHTS": "random"}
    # the first status creates the instance's files (a change of its storage): the second computes again
    runs = [artsim(["status", "--json"], tmp_path, **env) for _ in range(3)]
    runs.append(artsim(["status", "--json", "--fresh"], tmp_path, **env))
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    _, first, cached, fresh = (json.loads(r.stdout) for r in runs)
    assert first["stale_from"]["from_cache"] is False and cached["stale_from"]["from_cache"] is True
    assert cached["stale_from"]["computed"] == first["stale_from"]["computed"]
    assert fresh["stale_from"] == {"from_cache": False, "computed": fresh["stale_from"]["computed"],
                                   "why_computed": "--fresh"}
    assert first["stale"] == cached["stale"] == fresh["stale"] and first["stale"]  # an empty lake: all missing


def test_a_changed_weights_file_changes_the_code_mark(settings, tmp_path):
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"weights")
    with_file = dataclasses.replace(settings, weights=str(weights))

    def embeddings_version() -> str:
        graph = build_definitions(with_file).resolve_asset_graph()
        return graph.get(AssetKey("embeddings_mobilenet_v2")).code_version

    before = cache.code_mark(with_file), embeddings_version()
    os.utime(weights, ns=(10**18, 10**18))  # the file replaced: a new modification time
    after = cache.code_mark(with_file), embeddings_version()
    assert before[1] != after[1]  # the file is an input of a code version (the plan would change) ...
    assert before[0] != after[0]  # ... and of the cache's mark
