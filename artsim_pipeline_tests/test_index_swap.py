"""The searchable state (fusion + FAISS index of every variant) changes as ONE unit, through Dagster.

Regression for the fault probe: ``pca_model`` used to overwrite ``index/fusion_*.npz`` before
``faiss_index`` wrote the matching index, so a failed or killed ``faiss_index`` left search projecting
queries with the new fusion onto the old index (unrelated paintings, exit 0); and an empty catalog made
``pca_model`` delete the fusion files, taking search down. A tiny lake of random "embeddings" is enough:
the assets only read ``tables/filtered_paintings.parquet`` and ``embeddings/<model>/<batch>.parquet``.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, materialize
from PIL import Image

from artsim_pipeline.assets.index import index_assets
from artsim_pipeline.config import Settings
from artsim_pipeline.resources import build_resources
from artsim_pipeline.core.embedding_store import embeddings_schema
from artsim_pipeline.core.search import SearchEngine
from artsim_pipeline.core.lake import DataLake

MODELS = {"alpha": 12, "beta": 6}
BATCH = "batch-00000"
CATALOG = ["objectid", "uuid", "title", "artist", "artist_key", "style", "beginyear", "endyear", "displaydate",
           "medium", "batch_key"]


def embeddings(objectids: list[int], seed: int) -> dict[str, np.ndarray]:
    """Every model's raw vectors for the paintings (rows aligned with ``objectids``)."""
    rng = np.random.default_rng(seed)
    return {m: (rng.standard_normal((len(objectids), d)) * (i + 1) + i).astype(np.float32)
            for i, (m, d) in enumerate(MODELS.items())}


def write_collection(lake: DataLake, objectids: list[int], blocks: dict[str, np.ndarray] | None) -> None:
    """The catalog table and one batch of embeddings (``full`` rows; a ``face`` row for even objectids)."""
    frame = pd.DataFrame({
        "objectid": pd.Series(objectids, dtype="int64"),
        "uuid": [f"uuid-{o}" for o in objectids],
        "title": [f"Painting {o}" for o in objectids],
        "artist": "Painter", "artist_key": "painter", "style": "Baroque",
        "beginyear": pd.Series([1600] * len(objectids), dtype="int64"),
        "endyear": pd.Series([1600] * len(objectids), dtype="int64"),
        "displaydate": "1600", "medium": "oil on canvas", "batch_key": BATCH,
    }, columns=CATALOG)
    lake.filtered_paintings_parquet.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(lake.filtered_paintings_parquet, index=False)
    if objectids:  # search's catalog; an emptied catalog table is not what these tests are about
        with duckdb.connect(str(lake.catalog_db)) as con:
            con.register("frame", frame.drop(columns="batch_key"))
            con.execute("CREATE OR REPLACE TABLE filtered_paintings AS SELECT * FROM frame")
    for model, dim in MODELS.items():
        rows = []
        for i, oid in enumerate(objectids):
            rows.append((oid, "full", blocks[model][i]))
            if oid % 2 == 0:
                rows.append((oid, "face", blocks[model][i][::-1].copy()))
        table = pa.Table.from_arrays(
            [pa.array([r[0] for r in rows], pa.int64()), pa.array([f"uuid-{r[0]}" for r in rows], pa.string()),
             pa.array([r[1] for r in rows], pa.string()),
             pa.FixedSizeListArray.from_arrays(
                 pa.array(np.concatenate([r[2] for r in rows]) if rows else np.zeros(0, np.float32), pa.float32()),
                 dim)],
            schema=embeddings_schema(dim),
        )
        path = lake.embeddings_path(model, BATCH)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)


def pointer(lake: DataLake) -> str | None:
    """The served generation's id (``index/CURRENT``), None when absent."""
    path = lake.index_dir / "CURRENT"
    return path.read_text() if path.is_file() else None


def run_index(settings: Settings, selection: list[str] | None = None):
    assets = index_assets(settings, [])
    keys = [AssetKey(name) for name in selection] if selection else None
    return materialize(assets, selection=keys, raise_on_error=False, resources=build_resources(settings))


def query(lake: DataLake, raw: dict[str, np.ndarray], row: int, tmp_path: Path, k: int = 3):
    """An image query whose backbones return ``raw[row]``: embedded with the served fusion, searched
    in the served index, exactly like ``artsim search <image>`` (a fresh engine each time)."""
    engine = SearchEngine(lake.root, device="cpu", preload_models=False)
    picture = tmp_path / "query.png"
    Image.new("RGB", (8, 8)).save(picture)
    engine.prepare = lambda source, crop_box=None: []  # no torch models: the vectors are given
    engine.forward = lambda arrays: {m: v[row: row + 1] for m, v in raw.items()}
    try:
        full = engine.variants["full"]
        assert full.fusion.output_dim == full.bundle.index.d  # fusion and index of one generation
        return engine.search(picture, k=k), engine
    finally:
        engine.close()


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_lake=tmp_path / "lake", models=tuple(MODELS), pca_dim=4, device="cpu")


def test_failed_index_build_keeps_serving_the_previous_fusion_and_index(settings, tmp_path, monkeypatch):
    lake = DataLake(settings.data_lake.resolve())
    ids_a = list(range(1, 13))
    raw_a = embeddings(ids_a, seed=1)
    write_collection(lake, ids_a, raw_a)
    assert run_index(settings).success
    served_a = pointer(lake)
    response, engine = query(lake, raw_a, 4, tmp_path)
    assert response[0].objectid == 5 and response[0].cosine == pytest.approx(1.0, abs=1e-5)

    # new embeddings for every painting (+2 new): pca_model fits a new fusion, then the index build fails
    ids_b = list(range(1, 15))
    raw_b = embeddings(ids_b, seed=2)
    write_collection(lake, ids_b, raw_b)
    import artsim_pipeline.core.index as index_mod

    def broken_build(*args, **kwargs):
        raise RuntimeError("simulated faiss failure")

    monkeypatch.setattr(index_mod, "build_index", broken_build)
    failed = run_index(settings)
    assert not failed.success
    assert failed.asset_materializations_for_node("pca_model")  # the new fusion was fitted...
    assert [e.step_key for e in failed.get_step_failure_events()] == ["faiss_index"]  # ...its index was not
    monkeypatch.undo()

    # search still answers with A entirely: A's fusion projects A's painting onto A's index, itself first
    response, engine = query(lake, raw_a, 4, tmp_path)
    assert engine.variants["full"].bundle.ids.tolist() == ids_a
    assert response[0].objectid == 5 and response[0].cosine == pytest.approx(1.0, abs=1e-5)
    for row in (0, 7, 11):
        assert query(lake, raw_a, row, tmp_path)[0][0].objectid == ids_a[row]
    assert pointer(lake) == served_a

    # killed after pca_model (only it ran): still A
    assert run_index(settings, ["pca_model"]).success
    assert query(lake, raw_a, 4, tmp_path)[0][0].objectid == 5
    assert pointer(lake) == served_a

    # a successful run swaps fusion + index together: B's paintings find themselves
    result = run_index(settings)
    assert result.success
    response, engine = query(lake, raw_b, 12, tmp_path)
    assert engine.variants["full"].bundle.ids.tolist() == ids_b
    assert set(engine.variants["face"].bundle.ids.tolist()) == {i for i in ids_b if i % 2 == 0}
    assert response[0].objectid == 13 and response[0].cosine == pytest.approx(1.0, abs=1e-5)
    assert pointer(lake) != served_a
    assert not list(lake.index_dir.glob("fusion_*.npz"))  # nothing served from outside a generation


def test_empty_catalog_keeps_the_last_good_generation_searchable(settings, tmp_path):
    lake = DataLake(settings.data_lake.resolve())
    ids = list(range(1, 11))
    raw = embeddings(ids, seed=3)
    write_collection(lake, ids, raw)
    first = run_index(settings)
    assert first.success
    served = pointer(lake)
    version = first.asset_materializations_for_node("faiss_index")[0].tags["dagster/data_version"]

    write_collection(lake, [], None)  # a header-only objects.csv upstream: no paintings at all
    empty = run_index(settings)
    assert empty.success

    response, engine = query(lake, raw, 6, tmp_path)  # search still serves the last good generation
    assert response[0].objectid == 7 and response[0].cosine == pytest.approx(1.0, abs=1e-5)
    assert engine.variants["full"].bundle.ids.tolist() == ids
    assert pointer(lake) == served
    meta = empty.asset_materializations_for_node("faiss_index")[0].metadata
    assert meta["full_size"].value == 0 and meta["swapped"].value is False
    # the served index did not change, so neither does faiss_index's data version
    assert empty.asset_materializations_for_node("faiss_index")[0].tags["dagster/data_version"] == version


def test_data_versions_are_content_hashes(settings):
    lake = DataLake(settings.data_lake.resolve())
    ids = list(range(1, 9))
    write_collection(lake, ids, embeddings(ids, seed=4))
    first, second = run_index(settings), run_index(settings)

    def versions(result):
        return [result.asset_materializations_for_node(n)[0].tags["dagster/data_version"]
                for n in ("pca_model", "faiss_index")]

    assert versions(first) == versions(second)  # same inputs, same versions (no clock, no uuid)
    assert len(list(lake.generations_dir.iterdir())) == 1  # and no new generation for the same content
