"""The lake readers (core.lake_reads): one catalog reader, and the collection read once per run."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from artsim_pipeline.core import lake_reads
from artsim_pipeline.core.embedding_store import embeddings_schema
from artsim_pipeline.core.storage import write_table
from artsim_pipeline.core.lake import DataLake


def _write(lake: DataLake, ids: list[int], seed: int) -> np.ndarray:
    frame = pd.DataFrame({"objectid": pd.Series(ids[::-1], dtype="int64"), "uuid": [f"u{i}" for i in ids[::-1]],
                          "batch_key": "batch-00000"})
    lake.filtered_paintings_parquet.parent.mkdir(parents=True, exist_ok=True)
    write_table(pa.Table.from_pandas(frame, preserve_index=False), lake.filtered_paintings_parquet)
    vectors = np.random.default_rng(seed).normal(size=(len(ids), 4)).astype(np.float32)
    table = pa.Table.from_arrays(
        [pa.array(ids, pa.int64()), pa.array([f"u{i}" for i in ids], pa.string()), pa.array(["full"] * len(ids)),
         pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), 4)],
        schema=embeddings_schema(4))
    path = lake.embeddings_path("m", "batch-00000")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_table(table, path)
    return vectors


def test_catalog_paintings_sorted_with_objectid(tmp_path):
    lake = DataLake(tmp_path)
    _write(lake, [3, 1, 2], seed=0)
    frame = lake_reads.catalog_paintings(lake, columns=["uuid"])
    assert frame.columns.tolist() == ["objectid", "uuid"] and frame["objectid"].tolist() == [1, 2, 3]
    assert lake_reads.current_catalog(lake) == (["batch-00000"], [1, 2, 3])


def test_the_collection_is_read_once_until_a_file_changes(tmp_path, monkeypatch):
    lake = DataLake(tmp_path)
    first = _write(lake, [1, 2, 3], seed=0)
    reads = []
    real = lake_reads.load_collection
    monkeypatch.setattr(lake_reads, "load_collection", lambda *a, **k: reads.append(1) or real(*a, **k))
    a = lake_reads.current_collection(lake, ["m"], tap_set="mean")
    b = lake_reads.current_collection(lake, ["m"])
    assert len(reads) == 1  # the tap-set view and the all-blocks view come from one read
    np.testing.assert_array_equal(a["full"].blocks["m"], first[np.argsort([1, 2, 3])])
    assert a["full"].blocks["m"] is b["full"].blocks["m"]
    with pytest.raises(ValueError):
        b["full"].blocks["m"][0, 0] = 1.0  # shared: read-only
    second = _write(lake, [1, 2, 3], seed=1)  # a refresh rewrote the batch
    c = lake_reads.current_collection(lake, ["m"])
    assert len(reads) == 2
    np.testing.assert_array_equal(c["full"].blocks["m"], second)
