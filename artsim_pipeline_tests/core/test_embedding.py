"""Batched embedding: retrieval with real offline weights, parquet layout, bf16 acceptance."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageOps

from artsim_pipeline.core.embedding import (
    BF16_MIN_COSINE,
    ImageReadError,
    bf16_acceptable,
    check_bf16,
    cosine_rows,
    embed_images,
    forward_prepared,
    load_and_prepare,
)
from artsim_pipeline.core.embedding_store import embed_batch_to_parquet, read_embedding_blocks, read_embeddings
from artsim_pipeline.core.models import DEFAULT_OFFLINE_MODELS, LoadedModel, load_model
from artsim_pipeline.core.lake import DataLake

from .support import assert_monotonic_to_total

# skimage.data images bundled with the package (no download); ``cat`` is ``chelsea`` again, so left out.
GALLERY = [
    "astronaut", "brick", "camera", "cell", "checkerboard", "chelsea", "clock", "coffee", "coins",
    "colorwheel", "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo",
    "moon", "page", "retina", "rocket", "text",
]

_MODELS: dict[str, LoadedModel] = {}


def _model(name: str) -> LoadedModel:
    if name not in _MODELS:
        _MODELS[name] = load_model(name)
    return _MODELS[name]


def _skimage(name: str) -> Image.Image:
    from skimage import data

    arr = np.asarray(getattr(data, name)())
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.shape[-1] == 4:  # composite RGBA on white
        alpha = arr[..., 3:4].astype(np.float32) / 255.0
        arr = (arr[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return Image.fromarray(arr.astype(np.uint8))


@pytest.fixture(scope="module")
def gallery() -> dict[str, Image.Image]:
    return {name: _skimage(name) for name in GALLERY}


def _normalise(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("name", DEFAULT_OFFLINE_MODELS)
def test_offline_model_finds_recropped_flipped_copy(name: str, gallery, tmp_path) -> None:
    """Each gallery image's flipped, re-cropped, re-encoded copy has the original as nearest neighbour."""
    model = _model(name)
    keys, index = embed_images(model, [(n, img, None) for n, img in gallery.items()], batch_size=8)
    assert keys == GALLERY and index.shape == (len(GALLERY), 1280)
    queries = []
    for n, img in gallery.items():
        path = tmp_path / f"{n}.jpg"
        ImageOps.mirror(img).save(path, quality=80)
        w, h = img.size
        queries.append((n, path, (0.04 * w, 0.10 * h, 0.92 * w, 0.97 * h)))  # file + crop box path
    qkeys, qvec = embed_images(model, queries, batch_size=8, num_workers=2)
    sims = _normalise(qvec) @ _normalise(index).T
    nearest = [GALLERY[i] for i in sims.argmax(axis=1)]
    wrong = {q: nn for q, nn in zip(qkeys, nearest) if q != nn}
    assert not wrong, f"{name}: nearest neighbours wrong for {wrong}"


def test_results_keep_input_order_across_workers_and_batches(gallery) -> None:
    model = _model("efficientnet_lite0")
    items = [(i, img, None) for i, img in enumerate(list(gallery.values())[:7])]
    keys0, serial = embed_images(model, items, batch_size=7, num_workers=0)
    keys2, threaded = embed_images(model, items, batch_size=3, num_workers=2)
    assert keys0 == keys2 == list(range(7))
    np.testing.assert_allclose(threaded, serial, rtol=1e-4, atol=1e-4)
    _, contiguous = embed_images(model, items, batch_size=3, channels_last=False)
    np.testing.assert_allclose(contiguous, serial, rtol=1e-3, atol=1e-3)


def test_fast_jpeg_decode_stays_close_to_full_decode(gallery, tmp_path) -> None:
    model = _model("efficientnet_lite0")
    big = gallery["retina"]  # 1411 px: decoded at 1/4 scale with fast_decode
    path = tmp_path / "retina.jpg"
    big.save(path, quality=92)
    items = [("full", path, None), ("crop", path, (200.0, 300.0, 1300.0, 1350.0))]
    _, fast = embed_images(model, items, fast_decode=True)
    _, exact = embed_images(model, items, fast_decode=False)
    assert cosine_rows(fast, exact).min() > 0.98


def test_unreadable_image_names_the_item(tmp_path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ImageReadError, match="item-7"):
        embed_images(_model("efficientnet_lite0"), [("item-7", bad, None)])


def _batch_frame(gallery, tmp_path) -> pd.DataFrame:
    rows = []
    for i, name in enumerate(["astronaut", "coffee", "chelsea", "rocket"]):
        path = tmp_path / f"img{i}.jpg"
        gallery[name].save(path, quality=90)
        rows.append({"objectid": 1000 + i, "uuid": f"uuid-{i}", "path": str(path)})
    frame = pd.DataFrame(rows)
    frame["crop_x0"] = [150.0, np.nan, 100.0, None]
    frame["crop_y0"] = [30.0, np.nan, 20.0, None]
    frame["crop_x1"] = [330.0, np.nan, 300.0, None]
    frame["crop_y1"] = [230.0, np.nan, 220.0, None]
    return frame


def test_parquet_layout_schema_and_face_rows(gallery, tmp_path) -> None:
    model = _model("efficientnet_lite0")
    lake = DataLake(tmp_path / "lake")
    frame = _batch_frame(gallery, tmp_path)
    result = embed_batch_to_parquet(model, frame, lake, "b0007", batch_size=4)

    expected = tmp_path / "lake" / "embeddings" / "efficientnet_lite0" / "b0007.parquet"
    assert result.path == expected == lake.embeddings_path("efficientnet_lite0", "b0007")
    assert [p.name for p in expected.parent.iterdir()] == ["b0007.parquet"]  # no temp files left
    assert (result.images, result.full_rows, result.face_rows) == (4, 4, 2)

    table = pq.read_table(expected)
    taps = [f"tap:blocks.{i}.{stat}" for i in (3, 4, 5, 6) for stat in ("mean", "std")]
    assert table.column_names == ["objectid", "uuid", "variant", "vector", *taps]
    widths = {f"tap:blocks.{i}.{stat}": w for i, w in zip((3, 4, 5, 6), (80, 112, 192, 320)) for stat in ("mean", "std")}
    assert {name: table.schema.field(name).type.list_size for name in taps} == widths
    assert table.schema.field("objectid").type == pa.int64()
    assert table.schema.field("uuid").type == pa.string()
    assert table.schema.field("variant").type == pa.string()
    vtype = table.schema.field("vector").type
    assert pa.types.is_fixed_size_list(vtype) and vtype.list_size == 1280 and vtype.value_type == pa.float32()
    meta = table.schema.metadata
    assert meta[b"artsim.model"] == b"efficientnet_lite0"
    assert meta[b"artsim.weights_id"] == model.weights_id.encode()
    assert meta[b"artsim.taps"] == b"blocks.3,blocks.4,blocks.5,blocks.6"

    rows = table.select(["objectid", "uuid", "variant"]).to_pylist()
    assert [(r["objectid"], r["variant"]) for r in rows] == [
        (1000, "full"), (1000, "face"), (1001, "full"), (1002, "full"), (1002, "face"), (1003, "full"),
    ]
    assert [r["uuid"] for r in rows][:2] == ["uuid-0", "uuid-0"]

    meta_df, vectors = read_embeddings([expected])
    assert list(meta_df.columns) == ["objectid", "uuid", "variant"]
    assert meta_df["objectid"].dtype == np.int64
    assert vectors.dtype == np.float32 and vectors.shape == (6, 1280)
    # Face rows are the embedding of the crop, full rows of the whole image.
    _, direct = embed_images(
        model, [("full", frame.path[0], None), ("face", frame.path[0], (150.0, 30.0, 330.0, 230.0))]
    )
    np.testing.assert_allclose(vectors[:2], direct, rtol=1e-4, atol=1e-4)
    assert cosine_rows(vectors[0:1], vectors[1:2])[0] < 0.99

    # The tap blocks read back equal the ones computed directly, row for row.
    _, blocks = read_embedding_blocks([expected])
    assert sorted(blocks) == sorted(["final", *(name[len("tap:"):] for name in taps)])
    np.testing.assert_array_equal(blocks["final"], vectors)
    _, direct_blocks = embed_images(model, [("full", frame.path[0], None)], taps=True)
    for name, values in direct_blocks.items():
        np.testing.assert_allclose(blocks[name][:1], values, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="no embeddings block 'blocks.9.mean'"):
        read_embedding_blocks([expected], ["final", "blocks.9.mean"])


def test_tap_features_are_pooled_statistics_of_the_tapped_block(gallery) -> None:
    """Each tap is the per-channel mean / std over space of that block's output, from the same pass."""
    model = _model("efficientnet_lite0")
    spec = model.spec
    batch = np.stack([load_and_prepare(gallery[name], spec) for name in sorted(gallery)[:2]])
    blocks = forward_prepared(model, batch, taps=True, channels_last=False)
    seen = {}
    handle = dict(model.module.named_modules())["blocks.4"].register_forward_hook(
        lambda _m, _i, out: seen.setdefault("out", out.detach().clone()))
    try:
        final = forward_prepared(model, batch, channels_last=False)
    finally:
        handle.remove()
    out = seen["out"].float()
    np.testing.assert_allclose(blocks["blocks.4.mean"], out.mean((2, 3)).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(blocks["blocks.4.std"], out.std((2, 3), correction=0).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(blocks["final"], final)
    assert blocks["blocks.6.mean"].shape == (2, 320)
    assert not np.allclose(blocks["blocks.3.mean"][0], blocks["blocks.3.mean"][1])  # two images, two answers


def test_parquet_without_crop_columns_and_empty_batch(gallery, tmp_path) -> None:
    model = _model("efficientnet_lite0")
    frame = _batch_frame(gallery, tmp_path)[["objectid", "uuid", "path"]]
    result = embed_batch_to_parquet(model, frame, tmp_path / "lake", "b1", num_workers=0)
    assert (result.full_rows, result.face_rows) == (4, 0)
    empty = embed_batch_to_parquet(model, frame.iloc[:0], tmp_path / "lake", "b2")
    meta, vectors = read_embeddings([result.path, empty.path])
    assert len(meta) == 4 and vectors.shape == (4, 1280)
    assert pq.read_table(empty.path).num_rows == 0
    assert pq.read_table(empty.path).schema == pq.read_table(result.path).schema  # taps included when empty
    _, blocks = read_embedding_blocks([result.path, empty.path])
    assert blocks["blocks.6.std"].shape == (4, 320)
    assert read_embeddings([])[1].shape == (0, 0)


def test_embedding_progress_lines_count_every_vector(gallery, tmp_path) -> None:
    model = _model("efficientnet_lite0")
    frame = _batch_frame(gallery, tmp_path)  # 4 images, 2 with a face crop: 6 vectors
    lines: list[str] = []
    result = embed_batch_to_parquet(model, frame, tmp_path / "lake", "b3", batch_size=2, num_workers=0,
                                    progress=lines.append)
    assert result.rows == 6
    assert assert_monotonic_to_total(lines, 6) == [2, 4, 6]
    assert re.fullmatch(r"efficientnet_lite0: 2/6 images \(33%\), [\d.]+ images/s", lines[0]), lines[0]
    assert lines[-1].startswith("efficientnet_lite0: 6/6 images (100%), ")

    # a generator of items works too (it is listed to know the total)
    items = ((i, img, None) for i, img in enumerate(list(gallery.values())[:3]))
    streamed: list[str] = []
    keys, vectors = embed_images(model, items, batch_size=2, num_workers=0, progress=streamed.append)
    assert keys == [0, 1, 2] and vectors.shape == (3, 1280)
    assert assert_monotonic_to_total(streamed, 3) == [2, 3]

    empty: list[str] = []
    embed_batch_to_parquet(model, frame.iloc[:0], tmp_path / "lake", "b4", progress=empty.append)
    assert empty == ["efficientnet_lite0: 0/0 images (100%), 0.0 images/s"]


def test_read_embeddings_accepts_variable_list_vectors(tmp_path) -> None:
    path = tmp_path / "legacy.parquet"
    vectors = np.arange(6, dtype=np.float32).reshape(2, 3)
    pq.write_table(
        pa.table(
            {
                "objectid": pa.array([1, 2], pa.int64()),
                "uuid": ["a", "b"],
                "variant": ["full", "full"],
                "vector": pa.array(vectors.tolist(), pa.list_(pa.float32())),
            }
        ),
        path,
    )
    meta, got = read_embeddings(path)
    np.testing.assert_array_equal(got, vectors)
    assert meta["uuid"].tolist() == ["a", "b"]


def test_bf16_close_to_fp32_for_an_offline_model(gallery, record_property) -> None:
    images = [gallery[n] for n in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina")]
    cosines = {}
    for name in DEFAULT_OFFLINE_MODELS:
        cosines[name] = check_bf16(_model(name), images)
        record_property(f"bf16_min_cosine_{name}", cosines[name])
    print("bf16 min cosine vs fp32:", {k: round(v, 5) for k, v in cosines.items()})
    assert all(0.9 < c <= 1.0 + 1e-6 for c in cosines.values()), cosines
    assert max(cosines.values()) >= BF16_MIN_COSINE, cosines
    best = max(cosines, key=cosines.get)
    assert bf16_acceptable(_model(best), images)
    assert bf16_acceptable(_model(best), images, threshold=1.0001) is False


def test_bad_precision_is_rejected(gallery) -> None:
    with pytest.raises(ValueError, match="precision"):
        embed_images(_model("efficientnet_lite0"), [(0, gallery["coffee"], None)], precision="fp16")


def test_benchmark_smoke(gallery, tmp_path) -> None:
    """The benchmark runs end to end on a few files and writes its JSON report."""
    import json

    from artsim_pipeline.bench.embeddings import format_table, main

    images = tmp_path / "images"
    images.mkdir()
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        gallery[name].save(images / f"{name}.jpg")
    out = tmp_path / "report.json"
    argv = ["--images", str(images), "--n", "4", "--models", "efficientnet_lite0", "--batch-size", "2",
            "--bare-n", "2", "--min-seconds", "0.05", "--no-isolate", "--out", str(out)]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert {(r["precision"], r["channels_last"]) for r in report["rows"]} == {
        ("fp32", True), ("fp32", False), ("bf16", True), ("bf16", False)
    }
    timed = [r for r in report["rows"] if r["pipeline_img_s"] is not None]
    assert len(timed) == 2 and all(r["images"] == 4 and r["ratio"] > 0 and r["ratio_taps"] > 0 for r in timed)
    assert all(r["bare_taps_img_s"] > 0 for r in report["rows"])
    assert report["models"]["efficientnet_lite0"]["bf16_min_cosine"] > 0.9
    assert "efficientnet_lite0" in format_table(report)
    assert main(["--models", "no_such_model", "--n", "1", "--out", str(out)]) == 1


def test_empty_batch_flows_through_faces_into_an_empty_embeddings_file(tmp_path) -> None:
    """Every image ``skipped_small``: face_crops writes an empty faces file, embeddings an empty Parquet."""
    from artsim_pipeline.assets.embeddings import batch_images
    from artsim_pipeline.core.faces import empty_faces_frame, write_faces
    from artsim_pipeline.core.image_status import STATUS_DTYPES, write_status

    lake = DataLake(tmp_path / "lake")
    status = pd.DataFrame([{
        "objectid": 1, "uuid": "u1", "status": "skipped_small", "reason": "shorter side 80 px < min_side 300",
        "bytes": 1234, "seconds": 0.1, "width": 80, "height": 60, "path": "",
    }]).astype(STATUS_DTYPES)
    write_status(status, lake.image_status_path("batch-00000"))
    usable = status[status["status"].isin(("ok", "cached"))]
    faces = empty_faces_frame()
    faces.insert(0, "uuid", usable["uuid"].to_numpy())
    faces.insert(0, "objectid", usable["objectid"].to_numpy())
    write_faces(faces, lake.faces_path("batch-00000"))  # crashed before the fix

    images = batch_images(lake, "batch-00000")
    assert len(images) == 0
    model = _model("efficientnet_lite0")
    result = embed_batch_to_parquet(model, images, lake, "batch-00000")
    assert (result.images, result.rows) == (0, 0)
    table = pq.read_table(result.path)
    assert table.num_rows == 0
    assert table.schema.field("vector").type == pa.list_(pa.field("item", pa.float32(), nullable=False), 1280)
    assert table.schema.metadata[b"artsim.model"] == b"efficientnet_lite0"
    meta, vectors = read_embeddings([result.path])
    assert meta.empty and vectors.shape == (0, 1280)
