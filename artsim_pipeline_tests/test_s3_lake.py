"""The object-store data lake (``ARTSIM_DATA_LAKE=s3://bucket/prefix``) against a real S3 server on 127.0.0.1.

The server is moto's (``python -m moto.server``, a subprocess, from the ``s3`` extra); the endpoint and
credentials reach s3fs through the standard ``AWS_*`` variables, exactly as a user would set them.
Storage primitives first (atomic writes, reads, directory uploads, DuckDB through fsspec), then the
whole pipeline on a small NGA-like source with the lake in the bucket, a no-change re-run, and
``artsim search`` (the real CLI, with an empty work directory) answering from the bucket.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("moto", reason="the s3 extra (moto[server], s3fs) is not installed")
pytest.importorskip("s3fs", reason="the s3 extra (moto[server], s3fs) is not installed")

from artsim_pipeline.config import ConfigError, Settings  # noqa: E402
from artsim_pipeline.core import storage  # noqa: E402
from artsim_pipeline.core.lake import DataLake, lake_at, lake_for  # noqa: E402
from artsim_pipeline_tests.support import ARTSIM, free_port  # noqa: E402

BUCKET = "artsim-test"


def _clear_s3fs_cache() -> None:
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # instances remember the endpoint they were made with


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 with one bucket; yields the AWS_* variables pointing at it."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                  stdout=out, stderr=subprocess.STDOUT)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.2)
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            _clear_s3fs_cache()
            storage.remote_path(f"s3://{BUCKET}").fs.mkdir(BUCKET)
            yield env
            _clear_s3fs_cache()
    finally:
        server.terminate()
        server.wait(timeout=10)


def remote(url_path: str):
    return storage.lake_path(f"s3://{BUCKET}/{url_path}")


def keys(prefix: str) -> set[str]:
    """Object keys under ``s3://BUCKET/<prefix>/``, relative to it."""
    root = remote(prefix)
    return {path[len(root.path) + 1:] for path in root.fs.find(root.path)}


# --------------------------------------------------------------------------- primitives


def test_settings_accept_s3_urls_and_name_bad_ones():
    settings = Settings.from_env({"ARTSIM_DATA_LAKE": "s3://bucket-1/some/prefix", "ARTSIM_WORK_DIR": "w"})
    assert settings.data_lake == "s3://bucket-1/some/prefix" and settings.work_dir == Path("w")
    assert Settings.from_env({"ARTSIM_DATA_LAKE": "lake"}).data_lake == Path("lake")
    for bad in ("gs://bucket/x", "s3://Bad_Bucket/x", "s3://user@bucket/x", "s3://bucket/a/../b"):
        with pytest.raises(ConfigError, match="ARTSIM_DATA_LAKE"):
            Settings.from_env({"ARTSIM_DATA_LAKE": bad})


def test_local_lake_is_unchanged(tmp_path):
    lake = lake_at(tmp_path / "lake", tmp_path / "ignored")
    assert not lake.is_remote and isinstance(lake.root, Path)
    assert lake.catalog_db == tmp_path / "lake" / "catalog.duckdb"
    assert lake.dagster_home == tmp_path / "lake" / "dagster_home"
    assert lake.index_lock_path == tmp_path / "lake" / "index" / ".lock"


def test_lake_for_is_absolute_and_the_same_from_every_caller(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings(data_lake=Path("lake"), work_dir=Path("work"))
    lake = lake_for(settings)
    assert lake.root == tmp_path / "lake" and lake.root.is_absolute()  # a subprocess elsewhere finds the same files
    assert lake.dagster_home == tmp_path / "lake" / "dagster_home"
    remote = lake_for(settings.with_overrides(data_lake=f"s3://{BUCKET}/abs"))
    assert remote.work_dir == tmp_path / "work" and remote.work_dir.is_absolute()


def test_object_store_timeouts_come_from_the_settings_the_lake_was_opened_with():
    _clear_s3fs_cache()
    slow = Settings(data_lake=f"s3://{BUCKET}/t", http_timeout_s=7.0, http_retries=2)
    lake = lake_for(slow)
    Settings(http_timeout_s=0.5, http_retries=0)  # building other settings changes nothing of that lake's
    fs = lake.filtered_paintings_parquet.fs  # a joined path keeps its lake's client
    assert fs.config_kwargs["read_timeout"] == 7.0 and fs.config_kwargs["connect_timeout"] == 7.0
    assert fs.retries == 3  # 2 retries: 3 attempts
    other = lake_for(Settings(data_lake=f"s3://{BUCKET}/t", http_timeout_s=40.0, http_retries=0)).root.fs
    assert other.config_kwargs["read_timeout"] == 40.0 and other.config_kwargs["connect_timeout"] == 10.0
    assert other.retries == 1
    assert fs.config_kwargs["read_timeout"] == 7.0 and fs.retries == 3  # the first lake's client is unchanged
    default = storage.lake_path(f"s3://{BUCKET}/t/x").fs  # no settings: the settings' defaults
    assert default.config_kwargs["read_timeout"] == Settings().http_timeout_s
    assert default.retries == Settings().http_retries + 1


@pytest.mark.slow  # the moto S3 server is a process
def test_remote_lake_layout_and_work_dir(s3_env, tmp_path):
    lake = lake_at(f"s3://{BUCKET}/layout", tmp_path / "work")
    assert lake.is_remote
    assert str(lake.filtered_paintings_parquet) == f"s3://{BUCKET}/layout/tables/filtered_paintings.parquet"
    assert str(lake.generation_dir("g1")) == f"s3://{BUCKET}/layout/index/generations/g1"
    assert lake.catalog_db == tmp_path / "work" / "catalog.duckdb"  # local: DuckDB and Dagster need files
    assert lake.dagster_home == tmp_path / "work" / "dagster_home"
    assert lake.index_lock_path == tmp_path / "work" / "index.lock"


@pytest.mark.slow  # the moto S3 server is a process
def test_atomic_write_reads_back_and_a_failed_write_leaves_nothing(s3_env):
    target = remote("prims/a/blob.bin")
    storage.atomic_write_bytes(target, b"first")
    assert target.read_bytes() == b"first"
    with storage.atomic_path(target) as tmp:
        assert isinstance(tmp, Path) and not storage.is_remote(tmp)  # writers get a local file
        tmp.write_bytes(b"second")
    assert target.read_bytes() == b"second"
    with pytest.raises(RuntimeError, match="boom"):
        with storage.atomic_path(target) as tmp:
            tmp.write_bytes(b"half-written")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"second" and not tmp.exists()
    with pytest.raises(RuntimeError, match="boom"):
        with storage.atomic_path(remote("prims/a/never.bin")) as tmp:
            tmp.write_bytes(b"x")
            raise RuntimeError("boom")
    assert keys("prims/a") == {"blob.bin"}


@pytest.mark.slow  # the moto S3 server is a process
def test_parquet_reads_schema_and_readable(s3_env):
    frame = pd.DataFrame({"objectid": [3, 1, 2], "batch_key": ["b0", "b1", "b0"]})
    target = remote("prims/tables/t.parquet")
    with storage.atomic_path(target) as tmp:
        frame.to_parquet(tmp, index=False)
    pd.testing.assert_frame_equal(storage.read_parquet(target), frame)
    pd.testing.assert_frame_equal(storage.read_parquet(str(target), filters=[("batch_key", "=", "b1")]),
                                  frame.iloc[[1]].reset_index(drop=True))
    assert storage.read_table(target).num_rows == 3
    assert storage.read_parquet_schema(target).names == ["objectid", "batch_key"]
    source = storage.readable(str(target))
    assert isinstance(source, io.BytesIO) and source.getvalue() == target.read_bytes()
    local = Path("x.bin")
    assert storage.readable(local) is local  # local paths pass through untouched


@pytest.mark.slow  # the moto S3 server is a process
def test_place_dir_remove_tree_and_duckdb(s3_env, tmp_path):
    import duckdb

    staged = tmp_path / "staged"
    (staged / "sub").mkdir(parents=True)
    pd.DataFrame({"v": [1]}).to_parquet(staged / "sub" / "a.parquet")
    pd.DataFrame({"v": [2]}).to_parquet(staged / "sub" / "b.parquet")
    (staged / "manifest.json").write_text("{}")
    target = remote("prims/placed")
    storage.place_dir(staged, target, last=("manifest.json",))
    assert keys("prims/placed") == {"sub/a.parquet", "sub/b.parquet", "manifest.json"} and not staged.exists()
    con = duckdb.connect()
    storage.register_filesystem(con, target)
    storage.register_filesystem(con, target)  # idempotent
    assert con.execute(f"SELECT sum(v) FROM read_parquet('{target}/sub/*.parquet')").fetchall() == [(3,)]
    storage.remove_tree(target)
    storage.remove_tree(target)  # absent is fine
    assert not target.exists() and keys("prims/placed") == set()


@pytest.mark.slow  # the moto S3 server is a process
def test_generation_publish_and_load_on_s3(s3_env, tmp_path):
    from artsim_pipeline.core.fusion import fit_fusion, transform
    from artsim_pipeline.core.generations import current_generation_id, load_generation, publish_generation
    from artsim_pipeline.core.index import build_index

    rng = np.random.default_rng(0)
    blocks = {"m": rng.standard_normal((40, 8)).astype(np.float32)}
    fusion = fit_fusion(blocks, n_components=4)
    vectors = transform(fusion, blocks)
    bundle = build_index(vectors, np.arange(100, 140))
    lake = lake_at(f"s3://{BUCKET}/gen", tmp_path / "work")
    first = publish_generation(lake, {"full": (fusion, bundle)})
    assert current_generation_id(lake) == first.generation
    assert {"generation.json", "fusion_full.npz", "full/manifest.json"} <= keys(f"gen/index/generations/{first.generation}")
    loaded = load_generation(lake)
    assert loaded.id == first.generation and list(loaded.bundles["full"].ids) == list(range(100, 140))
    assert not publish_generation(lake, {"full": (fusion, bundle)}).swapped  # same content: nothing written
    assert not list(tmp_path.glob("work/.tmp-*"))

    # clean-up: an old generation goes; a young one that is neither current nor previous stays (no
    # shared lock across machines: it may be another publish in progress)
    storage.atomic_write_text(lake.generation_manifest_path("20000101T000000Z-old"), "{}")
    second = publish_generation(lake, {"full": (fusion, build_index(vectors[:30], np.arange(100, 130)))})
    third = publish_generation(lake, {"full": (fusion, build_index(vectors[:20], np.arange(100, 120)))})
    assert third.previous == second.generation and "20000101T000000Z-old" in second.removed + third.removed
    assert {p.name for p in lake.generations_dir.iterdir()} == {first.generation, second.generation, third.generation}
    assert len(load_generation(lake).bundles["full"].ids) == 20


# --------------------------------------------------------------------------- the pipeline


def _search(objectid: int, env: dict[str, str], cwd: Path, work: Path, settings: Settings):
    run_env = {k: v for k, v in os.environ.items() if not k.startswith(("ARTSIM_", "DAGSTER_HOME"))}
    run_env |= env | {"ARTSIM_DATA_LAKE": str(settings.data_lake), "ARTSIM_WORK_DIR": str(work),
                      "ARTSIM_DEVICE": "cpu", "ARTSIM_MODELS": ",".join(settings.models)}
    return subprocess.run([ARTSIM, "search", str(objectid), "-k", "3", "--json", "--include-self"], cwd=cwd, env=run_env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # the moto S3 server is a process
def test_pipeline_and_search_with_the_lake_in_s3(s3_env, tmp_path, instance):
    from artsim_pipeline.definitions import build_definitions
    from artsim_pipeline.runner import PipelineRunner
    from artsim_pipeline_tests.http_server import IiifImages, LocalServer
    from artsim_pipeline_tests.nga_fixtures import painting_image, publish
    from artsim_pipeline_tests.nga_fixtures import Painting

    paintings = [Painting(i, artist=f"Painter {i % 3}", width=128, height=96) for i in range(1, 9)]
    with LocalServer() as server:
        publish(server, IiifImages(server), paintings, {p.objectid: painting_image(p.objectid) for p in paintings})
        settings = Settings(
            nga_source=server.url, data_lake=f"s3://{BUCKET}/lake", work_dir=tmp_path / "work", limit=0,
            min_side=64, batch_size=4, image_size=128, models=("efficientnet_lite0",), http_retries=2,
        )
        runner = PipelineRunner(build_definitions(settings), settings, instance, echo=lambda _: None)
        first = runner.run()
        assert first.partitions_run("image_cache") == ["batch-00000", "batch-00001"]
        assert {"filtered_paintings", "pca_model", "faiss_index", "eval_report", "collection_map"} <= set(first.assets_run())

        stored = keys("lake")
        lake = DataLake(settings.data_lake, settings.work_dir)
        generation = lake.index_pointer_path.read_text().strip()
        expected = {
            "tables/filtered_paintings.parquet", "tables/collection_map.parquet", "index/CURRENT", "index/STAGED",
            "image_status/batch-00000.parquet", "faces/batch-00001.parquet",
            "embeddings/efficientnet_lite0/batch-00000.parquet", "embeddings/efficientnet_lite0/batch-00001.parquet",
            f"index/generations/{generation}/generation.json", f"index/generations/{generation}/fusion_full.npz",
            f"index/generations/{generation}/full/manifest.json", "reports/eval_report.json", "reports/eval_report.md",
            "raw/latest.json", *(f"images/{p.uuid}.jpg" for p in paintings),
        }
        assert expected <= stored, sorted(expected - stored)
        assert not [key for key in stored if key.endswith(".tmp") or "/.tmp-" in key or "catalog.duckdb" in key]
        assert (tmp_path / "work" / "catalog.duckdb").is_file()  # the local work files
        report = json.loads(storage.lake_path(f"s3://{BUCKET}/lake/reports/eval_report.json").read_text())
        assert report["headline"]

        second = runner.run()
        assert second.ran == [], second.ran  # nothing changed: nothing materialized
        assert lake.index_pointer_path.read_text().strip() == generation

    empty_work = tmp_path / "elsewhere"  # another machine: nothing local, everything from the bucket
    result = _search(5, s3_env, tmp_path, empty_work, settings)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["results"][0]["objectid"] == 5
    assert payload["results"][0]["image_path"] == f"s3://{BUCKET}/lake/images/{paintings[4].uuid}.jpg"


def test_a_hung_object_store_fails_after_the_timeouts_instead_of_stalling(monkeypatch):
    """Fault matrix (issue 19 #7): an endpoint that accepts connections and never answers."""
    import threading

    from artsim_pipeline.core import storage

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])  # ... and never answer
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{listener.getsockname()[1]}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    try:
        store = storage.ObjectStoreOptions(timeout_s=1.0, retries=1)
        path = storage.remote_path(f"s3://hung-{uuid.uuid4().hex[:8]}/lake/tables/filtered_paintings.parquet", store)
        started = time.monotonic()
        with pytest.raises(Exception) as failure:
            path.read_bytes()
        seconds = time.monotonic() - started
        assert seconds < 10, f"a hung object store stalled the read for {seconds:.0f}s"
        assert "timeout" in (type(failure.value).__name__ + str(failure.value)).lower(), repr(failure.value)
    finally:
        stop.set()
        listener.close()
        for conn in held:
            conn.close()
