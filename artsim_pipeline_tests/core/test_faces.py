"""Face detection with the MTCNN weights shipped in facenet-pytorch (no network)."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import skimage.data
from PIL import Image

from artsim_pipeline.core.faces import (
    CROP_COLUMNS,
    FACES_SCHEMA,
    FaceDetector,
    crop_box_with_margin,
    detect_faces_in_files,
    union_box,
    write_faces,
)

from .support import assert_monotonic_to_total


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(threshold=0.90, margin=0.10, max_side=1024)


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(skimage.data.astronaut())  # 512x512, one face


def landscape(width: int = 640, height: int = 420, seed: int = 0) -> Image.Image:
    """Sky gradient, noisy green hills: no people."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    horizon = height * 0.55 + 30 * np.sin(x / 70.0)
    sky = np.stack([110 + 80 * y / height, 160 + 60 * y / height, np.full_like(y, 235)], axis=-1)
    hills = np.stack([40 + 0 * y, 110 + 40 * np.cos(x / 23.0), 50 + 0 * y], axis=-1) + rng.normal(0, 12, (height, width, 3))
    pixels = np.where((y > horizon)[..., None], hills, sky)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def assert_box_on_her_face(box) -> None:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    assert 160 <= cx <= 260 and 40 <= cy <= 180, box
    assert 150 <= x0 < x1 <= 290 and 30 <= y0 < y1 <= 200, box
    assert 50 <= x1 - x0 <= 140 and 60 <= y1 - y0 <= 160, box


# -- pure geometry --------------------------------------------------------------------------------

def test_union_box_encloses_faces_above_threshold():
    boxes = [[10, 20, 50, 60], [40, 5, 90, 45], [0, 0, 300, 300]]
    probs = [0.95, 0.91, 0.5]
    assert union_box(boxes, probs, 0.9) == (10.0, 5.0, 90.0, 60.0)
    assert union_box(boxes, probs, 0.92) == (10.0, 20.0, 50.0, 60.0)
    assert union_box(boxes, probs, 0.95) == (10.0, 20.0, 50.0, 60.0)  # >= threshold is kept
    assert union_box(boxes, probs, 0.99) is None
    assert union_box(boxes, probs, 0.0) == (0.0, 0.0, 300.0, 300.0)
    assert union_box(None, [None], 0.9) is None  # MTCNN's "no face"
    assert union_box(np.zeros((0, 4)), [], 0.9) is None
    with pytest.raises(ValueError):
        union_box(boxes, [0.9], 0.5)


def test_crop_box_with_margin_hand_computed():
    # box 100x50 at (100, 100); 10% margin = 10 px left/right, 5 px top/bottom
    assert crop_box_with_margin((100, 100, 200, 150), 1000, 800, 0.10) == (90, 95, 210, 155)
    # fractional edges round outwards: 20% of 15 = 3 -> (7.5-3, 12.25-2.4, 22.5+3, 24.25+2.4)
    assert crop_box_with_margin((7.5, 12.25, 22.5, 24.25), 100, 100, 0.20) == (4, 9, 26, 27)
    # clipped at every edge
    assert crop_box_with_margin((5, 3, 95, 58), 100, 60, 0.10) == (0, 0, 100, 60)
    assert crop_box_with_margin((0, 0, 40, 40), 50, 50, 0.5) == (0, 0, 50, 50)
    assert crop_box_with_margin((30, 30, 60, 60), 1000, 1000, 0.0) == (30, 30, 60, 60)
    # degenerate box still gives a non-empty crop inside the image
    x0, y0, x1, y1 = crop_box_with_margin((100, 100, 100, 100), 100, 100, 0.1)
    assert 0 <= x0 < x1 <= 100 and 0 <= y0 < y1 <= 100
    with pytest.raises(ValueError):
        crop_box_with_margin((0, 0, 1, 1), 0, 10, 0.1)


# -- MTCNN --------------------------------------------------------------------------------------

def test_astronaut_has_one_face_with_crop_around_it(detector, astronaut):
    [result] = detector.detect([astronaut])
    assert result.face_count == 1 and result.error == ""
    assert len(result.probabilities) == 1 and result.probabilities[0] >= 0.9
    assert_box_on_her_face(result.boxes[0])
    assert result.union_box == pytest.approx(tuple(result.boxes[0]))
    cx0, cy0, cx1, cy1 = result.crop_box
    ux0, uy0, ux1, uy1 = result.union_box
    assert 0 <= cx0 <= ux0 and 0 <= cy0 <= uy0 and ux1 <= cx1 <= 512 and uy1 <= cy1 <= 512
    assert result.crop_box == crop_box_with_margin(result.union_box, 512, 512, 0.10)
    assert cx1 - cx0 == pytest.approx(1.2 * (ux1 - ux0), abs=2)


def test_images_without_people_have_no_faces(detector):
    images = [landscape(), Image.fromarray(skimage.data.rocket()), Image.fromarray(skimage.data.immunohistochemistry())]
    for result in detector.detect(images):
        assert result.face_count == 0
        assert result.probabilities == [] and result.boxes == []
        assert result.union_box is None and result.crop_box is None


def test_downscaled_detection_maps_back_to_full_resolution(detector, astronaut):
    big = astronaut.resize((2048, 2048), Image.Resampling.BICUBIC)
    assert detector.target_size(2048, 2048) == (1024, 1024)
    [small_result] = detector.detect([astronaut])
    [big_result] = detector.detect([big])
    assert big_result.face_count == 1
    # same face, 4x the coordinates (different pixels fed to MTCNN, so a few px of slack at 512 scale)
    assert np.allclose(np.array(big_result.boxes[0]) / 4, small_result.boxes[0], atol=6)
    assert_box_on_her_face(np.array(big_result.boxes[0]) / 4)
    # exactly 2x the detection on the very 1024 px image the detector used
    [direct] = detector.detect([big.resize((1024, 1024), Image.Resampling.BILINEAR)])
    assert np.allclose(np.array(big_result.boxes[0]), 2 * np.array(direct.boxes[0]), atol=1e-3)
    ux0, uy0, ux1, uy1 = big_result.union_box
    cx0, cy0, cx1, cy1 = big_result.crop_box
    assert 0 <= cx0 <= ux0 and 0 <= cy0 <= uy0 and ux1 <= cx1 <= 2048 and uy1 <= cy1 <= 2048


def test_threshold_mapping_and_clipping_with_scripted_detections(detector, monkeypatch):
    """Hand-computed: a 2000x1000 image is detected at 1024x512 (scale 1.953125)."""
    from artsim_pipeline.core import faces

    seen = []

    def scripted(smalls):
        seen.extend(image.size for image in smalls)
        return [faces._Raw(np.array([[100, 50, 200, 150], [-10, 400, 60, 530], [700, 10, 800, 90]], np.float32),
                           np.array([0.99, 0.93, 0.5], np.float32))]

    monkeypatch.setattr(detector, "_run", scripted)
    [result] = detector.detect([Image.new("RGB", (2000, 1000))])
    assert seen == [(1024, 512)]
    s = 2000 / 1024
    assert result.face_count == 2  # 0.5 < threshold 0.9 dropped
    assert result.probabilities == pytest.approx([0.99, 0.93])
    assert result.boxes[0] == pytest.approx([100 * s, 50 * s, 200 * s, 150 * s])
    assert result.boxes[1] == pytest.approx([0, 400 * s, 60 * s, 1000])  # clipped to the image
    assert result.union_box == pytest.approx((0, 50 * s, 200 * s, 1000))
    # union 390.625 x 902.34375; 10% margin: x1 = 390.625 + 39.0625 -> 430, y0 = 97.65625 - 90.234375 -> 7
    assert result.crop_box == (0, 7, 430, 1000)


def test_batch_of_equal_sizes_matches_single_calls(detector, astronaut):
    flipped = astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    mixed = [astronaut, landscape(512, 512), flipped, astronaut.convert("L"), landscape(300, 200, 1), astronaut.convert("RGBA")]
    batched = detector.detect(mixed)
    singles = [detector.detect([image])[0] for image in mixed]
    assert [r.face_count for r in batched] == [1, 0, 1, 1, 0, 1]
    for b, s in zip(batched, singles):
        assert b.face_count == s.face_count
        assert np.allclose(np.array(b.boxes).reshape(-1, 4), np.array(s.boxes).reshape(-1, 4), atol=0.5)
    # the mirrored face is on the mirrored side
    x0, _, x1, _ = batched[2].boxes[0]
    ax0, _, ax1, _ = batched[0].boxes[0]
    assert (x0, x1) == pytest.approx((512 - ax1, 512 - ax0), abs=6)


def test_detect_faces_in_files_schema_and_errors(detector, astronaut, tmp_path):
    paths = []
    for name, image in [("astro.jpg", astronaut), ("land.jpg", landscape()), ("astro_big.jpg", astronaut.resize((1600, 1600)))]:
        image.save(tmp_path / name, "JPEG", quality=92)
        paths.append(tmp_path / name)
    (tmp_path / "page.jpg").write_bytes(b"<!doctype html><html></html>")
    paths += [tmp_path / "page.jpg", tmp_path / "absent.jpg"]

    df = detect_faces_in_files(paths, detector, batch_size=2)
    assert list(df.columns) == FACES_SCHEMA.names
    assert df["path"].tolist() == [str(p) for p in paths]
    assert df["face_count"].tolist() == [1, 0, 1, 0, 0]
    assert df["width"].tolist() == [512, 640, 1600, 0, 0]
    assert df["error"].tolist()[:3] == ["", "", ""]
    assert "UnidentifiedImageError" in df.loc[3, "error"] and "FileNotFoundError" in df.loc[4, "error"]
    assert str(df["crop_x0"].dtype) == "Int64" and str(df["x0"].dtype) == "float64"
    assert str(df["face_count"].dtype) == "int64"

    astro = df.iloc[0]
    assert_box_on_her_face((astro["x0"], astro["y0"], astro["x1"], astro["y1"]))
    assert len(astro["probabilities"]) == 1 and len(astro["boxes"]) == 1
    assert astro["crop_x0"] <= astro["x0"] and astro["crop_x1"] >= astro["x1"]
    big = df.iloc[2]  # 1600 px file: detected at 1024 px (JPEG draft + resize), mapped back
    assert np.allclose([big["x0"], big["y0"], big["x1"], big["y1"]],
                       np.array([astro["x0"], astro["y0"], astro["x1"], astro["y1"]]) * 1600 / 512, atol=20)
    land = df.iloc[1]
    assert math.isnan(land["x0"]) and pd.isna(land["crop_x0"]) and land["probabilities"] == []

    df.insert(0, "objectid", np.arange(len(df), dtype=np.int64))
    target = tmp_path / "faces" / "batch.parquet"
    write_faces(df, target)
    table = pq.read_table(target)
    assert table.schema.field("probabilities").type == pa.list_(pa.float64())
    assert table.schema.field("boxes").type == pa.list_(pa.list_(pa.float64()))
    assert table.schema.field("crop_x0").type == pa.int64()
    assert table.column("crop_x0").null_count == 3  # crops only for the two astronauts
    assert table.column("objectid").to_pylist() == [0, 1, 2, 3, 4]


def test_detect_faces_in_files_reports_progress(detector, astronaut, tmp_path):
    paths = []
    for i in range(7):
        image = astronaut.resize((128, 128)) if i == 2 else landscape(96, 64, seed=i)
        image.save(tmp_path / f"p{i}.jpg", "JPEG", quality=85)
        paths.append(tmp_path / f"p{i}.jpg")
    paths.append(tmp_path / "absent.jpg")  # an unreadable file still counts as done

    lines: list[str] = []
    df = detect_faces_in_files(paths, detector, batch_size=3, progress=lines.append)
    assert assert_monotonic_to_total(lines, 8) == [3, 6, 8]  # one line per batch here (8 files < 10 marks)
    assert re.fullmatch(r"faces: 3/8 images \(38%\), [\d.]+ images/s, \d with a face", lines[0]), lines[0]
    assert lines[-1].startswith("faces: 8/8 images (100%), ")
    quiet = detect_faces_in_files(paths, detector, batch_size=3)  # default: no progress, same result
    pd.testing.assert_frame_equal(df, quiet)

    empty: list[str] = []
    assert detect_faces_in_files([], detector, progress=empty.append).empty
    assert empty == ["faces: 0/0 images (100%), 0.0 images/s, 0 with a face"]


# -- fault probe regression: a batch with no usable image --------------------------------------------

def empty_batch_faces(detector) -> pd.DataFrame:
    """What ``face_crops`` builds for a batch whose images were all ``skipped_small``."""
    faces = detect_faces_in_files([], detector)
    faces.insert(0, "uuid", np.array([], dtype=object))
    faces.insert(0, "objectid", np.array([], dtype=np.int64))
    return faces


def test_empty_batch_detect_and_write_faces_keep_the_schema(detector, tmp_path):
    assert detector.detect([]) == []
    faces = empty_batch_faces(detector)
    target = tmp_path / "faces" / "batch-00000.parquet"
    write_faces(faces, target)  # crashed: "NumPyConverter doesn't implement <list<item: double>> conversion"
    table = pq.read_table(target)
    assert table.num_rows == 0
    assert table.schema.names == ["objectid", "uuid", *FACES_SCHEMA.names]
    for name in FACES_SCHEMA.names:
        assert table.schema.field(name).type == FACES_SCHEMA.field(name).type, name
    assert table.schema.field("objectid").type == pa.int64() and table.schema.field("uuid").type == pa.string()
    assert list(pd.read_parquet(target).columns) == ["objectid", "uuid", *FACES_SCHEMA.names]


def test_write_faces_of_a_schema_only_empty_frame(tmp_path):
    frame = pd.DataFrame({name: [] for name in FACES_SCHEMA.names})  # list columns inferred as float64
    write_faces(frame, tmp_path / "f.parquet")
    assert pq.read_table(tmp_path / "f.parquet").schema.field("boxes").type == pa.list_(pa.list_(pa.float64()))


def test_a_jpeg_stored_sideways_with_exif_orientation_gets_the_upright_face_box(detector, astronaut, tmp_path):
    """Orientation 6 (a phone photo): the face is found and boxed on the image as displayed."""
    upright = astronaut.crop((0, 0, 512, 400))
    upright.save(tmp_path / "up.jpg", "JPEG", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed = stored turned 90 degrees clockwise
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "side.jpg", "JPEG", quality=95, exif=exif)
    df = detect_faces_in_files([tmp_path / "up.jpg", tmp_path / "side.jpg"], detector, batch_size=1)
    assert df["face_count"].tolist() == [1, 1]
    assert df["width"].tolist() == [512, 512] and df["height"].tolist() == [400, 400]
    boxes = df[list(CROP_COLUMNS)].to_numpy(dtype=float)
    assert np.abs(boxes[0] - boxes[1]).max() <= 4, boxes
