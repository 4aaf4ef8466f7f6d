"""Issue 32 #7 (fault matrix): re-embedding a batch encodes only its new or changed images.

A real backbone (``mobilenet_v2``, random weights: deterministic and offline) embeds a batch into the
lake; then one painting is removed, one image replaced, a face box moved. Every step counts the images
that really went through the model (a spy around ``embed_images``) and compares the file with one
written from scratch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from artsim_pipeline.core import embedding_store
from artsim_pipeline.core.embedding_store import embed_batch_to_parquet, read_embedding_blocks
from artsim_pipeline.core.lake import DataLake
from artsim_pipeline.core.models import load_model
from artsim_pipeline_tests.web_lake import source_images

VERSION = "emb-v1"


@pytest.fixture(scope="module")
def model():
    return load_model("mobilenet_v2", weights="random", device="cpu")


@pytest.fixture
def encoded(monkeypatch) -> list[int]:
    """How many items each call of ``embed_images`` encoded (the real function runs)."""
    calls: list[int] = []
    real = embedding_store.embed_images

    def spy(model, items, **kwargs):
        items = list(items)
        calls.append(len(items))
        return real(model, items, **kwargs)

    monkeypatch.setattr(embedding_store, "embed_images", spy)
    return calls


def _frame(tmp_path, n: int = 8) -> pd.DataFrame:
    rows = []
    for i, data in enumerate(source_images(n)):
        path = tmp_path / "images" / f"img{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        rows.append({"objectid": 100 + i, "uuid": f"u{i}", "path": str(path)})
    frame = pd.DataFrame(rows)
    boxes = np.full((n, 4), np.nan)
    for row, box in ((1, [10.0, 10.0, 60.0, 70.0]), (4, [5.0, 8.0, 50.0, 64.0])):  # paintings with a face crop
        if row < n:
            boxes[row] = box
    frame[["crop_x0", "crop_y0", "crop_x1", "crop_y1"]] = boxes
    return frame


def _blocks(path):
    meta, blocks = read_embedding_blocks(path)
    return list(zip(meta["objectid"], meta["variant"])), blocks


def _same_as_fresh(model, frame, lake, tmp_path) -> None:
    """The reused file holds the rows, order and vectors of a file embedded from scratch."""
    fresh = embed_batch_to_parquet(model, frame, DataLake(tmp_path / "fresh"), "b", batch_size=4)
    rows, blocks = _blocks(lake.embeddings_path(model.name, "b"))
    fresh_rows, fresh_blocks = _blocks(fresh.path)
    assert rows == fresh_rows and blocks.keys() == fresh_blocks.keys()
    for name in blocks:
        np.testing.assert_allclose(blocks[name], fresh_blocks[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_only_new_or_changed_images_are_encoded_and_the_rest_reused(model, encoded, tmp_path):
    lake = DataLake(tmp_path / "lake")
    frame = _frame(tmp_path)
    first = embed_batch_to_parquet(model, frame, lake, "b", batch_size=4, reuse_version=VERSION)
    assert encoded == [10] and (first.encoded, first.reused) == (10, 0)  # 8 images + 2 face crops

    # one painting removed (the one with the first face): nothing is encoded
    encoded.clear()
    smaller = frame[frame["objectid"] != 101].reset_index(drop=True)
    removed = embed_batch_to_parquet(model, smaller, lake, "b", batch_size=4, reuse_version=VERSION)
    assert encoded == [0] and (removed.encoded, removed.reused, removed.rows) == (0, 8, 8)
    _same_as_fresh(model, smaller, lake, tmp_path)

    # one image replaced (the one with the other face): that image and its face crop alone
    encoded.clear()
    (tmp_path / "images" / "img4.jpg").write_bytes(source_images(10)[9])
    changed = embed_batch_to_parquet(model, smaller, lake, "b", batch_size=4, reuse_version=VERSION)
    assert encoded == [2] and (changed.encoded, changed.reused) == (2, 6)
    _same_as_fresh(model, smaller, lake, tmp_path)

    # a face box moved: its face crop alone; a new painting: its image alone
    encoded.clear()
    moved = smaller.copy()
    moved.loc[moved["objectid"] == 104, "crop_x0"] = 12.0
    extra = _frame(tmp_path / "extra", 12).iloc[[11]].assign(objectid=999, uuid="u999")
    grown = pd.concat([moved, extra], ignore_index=True)
    result = embed_batch_to_parquet(model, grown, lake, "b", batch_size=4, reuse_version=VERSION)
    assert encoded == [2] and (result.encoded, result.reused) == (2, 7)
    _same_as_fresh(model, grown, lake, tmp_path)


def test_vectors_are_never_reused_across_code_versions_precisions_or_without_a_version(model, encoded, tmp_path):
    lake = DataLake(tmp_path / "lake")
    frame = _frame(tmp_path, 4)
    embed_batch_to_parquet(model, frame, lake, "b", batch_size=4, reuse_version=VERSION)
    assert embed_batch_to_parquet(model, frame, lake, "b", batch_size=4, reuse_version="emb-v2").encoded == 5
    assert embed_batch_to_parquet(model, frame, lake, "b", batch_size=4, reuse_version="emb-v2").encoded == 0
    assert embed_batch_to_parquet(model, frame, lake, "b", batch_size=4, reuse_version="emb-v2",
                                  precision="bf16").encoded == 5
    assert embed_batch_to_parquet(model, frame, lake, "b", batch_size=4).encoded == 5  # no version: no reuse
    # a damaged previous file is not reused (read with its page checksums): encoded again, whole
    embed_batch_to_parquet(model, frame, lake, "b", batch_size=4, reuse_version=VERSION)
    lake.embeddings_path(model.name, "b").write_bytes(b"not parquet")
    again = embed_batch_to_parquet(model, frame, lake, "b", batch_size=4, reuse_version=VERSION)
    assert again.encoded == 5 and _blocks(again.path)[0][0] == (100, "full")
