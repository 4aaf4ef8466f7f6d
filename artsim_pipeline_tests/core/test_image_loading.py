"""Image loading for embeddings and queries: EXIF orientation is applied, thin strips are refused."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from artsim_pipeline.core.embedding import load_and_prepare, load_and_prepare_many
from artsim_pipeline.core.models import get_spec
from artsim_pipeline.core.preprocessing import MAX_ASPECT, prepare_image
from artsim_pipeline.core.search_query import ParsedQuery, QueryError, check_image

ORIENTATION = 0x0112


def _painting(width: int = 640, height: int = 480) -> Image.Image:
    """A landscape image with structure that differs along both axes (so a rotation shows)."""
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([(xx * 255 // width), (yy * 255 // height), ((xx // 40 + yy // 60) % 2) * 200], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def _jpeg_pair(tmp_path):
    upright = _painting()
    plain = tmp_path / "upright.jpg"
    upright.save(plain, quality=95)
    # what a phone writes: the sensor's pixels (rotated 90° clockwise from the scene) plus
    # Orientation=6 ("rotate 90° CW to display"), so the displayed image is upright
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    rotated = tmp_path / "phone.jpg"
    stored.save(rotated, quality=95, exif=exif.tobytes())
    return plain, rotated


@pytest.mark.parametrize("fast_decode", [True, False])
def test_exif_orientation_applied_by_load_and_prepare(tmp_path, fast_decode):
    plain, rotated = _jpeg_pair(tmp_path)
    with Image.open(rotated) as check:
        assert check.size == (480, 640) and check.getexif()[ORIENTATION] == 6
    spec = get_spec("mobilenet_v2")
    a = load_and_prepare(plain, spec, fast_decode=fast_decode).astype(np.float32)
    b = load_and_prepare(rotated, spec, fast_decode=fast_decode).astype(np.float32)
    assert a.shape == b.shape == (spec.input_size, spec.input_size, 3)
    assert np.abs(a - b).mean() < 3.0  # JPEG noise only; a sideways image differs by tens


def test_exif_orientation_with_crop_box_uses_displayed_frame(tmp_path):
    plain, rotated = _jpeg_pair(tmp_path)
    spec = get_spec("mobilenet_v2")
    box = (100.0, 50.0, 400.0, 350.0)  # pixels of the displayed (upright, 640x480) image
    a = load_and_prepare(plain, spec, box).astype(np.float32)
    b = load_and_prepare(rotated, spec, box).astype(np.float32)
    assert np.abs(a - b).mean() < 3.0


def test_exif_orientation_applied_to_query_pil(tmp_path):
    plain, rotated = _jpeg_pair(tmp_path)
    image = ParsedQuery("image", "phone.jpg", data=rotated.read_bytes()).pil()
    assert image.size == (640, 480) and image.mode == "RGB"
    a = np.asarray(image, dtype=np.float32)
    b = np.asarray(Image.open(plain).convert("RGB"), dtype=np.float32)
    assert np.abs(a - b).mean() < 3.0


def _strip_png(width: int = 1, height: int = 30000) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_thin_strip_is_prepared_from_its_central_window_with_bounded_work(tmp_path):
    """A 1x30000 strip (205 bytes) was scaled up to ~9 GB; now it costs what a 20:1 image costs."""
    data = _strip_png()
    assert len(data) < 1000
    path = tmp_path / "strip.png"
    path.write_bytes(data)
    spec = get_spec("mobilenet_v2")
    for call in (lambda: load_and_prepare(path, spec),
                 lambda: load_and_prepare(io.BytesIO(data), spec),
                 lambda: prepare_image(Image.open(io.BytesIO(data)), spec)):
        start = time.monotonic()
        out = call()
        assert out.shape == (spec.input_size, spec.input_size, 3)
        assert (out == (10, 20, 30)).all(axis=-1).mean() > 0.99
        assert time.monotonic() - start < 1.0


def test_a_scroll_is_embedded_as_its_central_window():
    """An image over MAX_ASPECT:1 gives the same input as its central MAX_ASPECT:1 window."""
    rng = np.random.default_rng(0)
    scroll = Image.fromarray(rng.integers(0, 255, (40, 40 * (MAX_ASPECT + 6), 3), dtype=np.uint8))
    w, h = scroll.size
    longest = h * MAX_ASPECT
    window = scroll.crop(((w - longest) // 2, 0, (w - longest) // 2 + longest, h))
    spec = get_spec("mobilenet_v2")
    assert np.array_equal(prepare_image(scroll, spec), prepare_image(window, spec))


def test_thin_strip_query_is_a_query_error():
    parsed = ParsedQuery("image", "<205 bytes>", data=_strip_png())
    start = time.monotonic()
    with pytest.raises(QueryError, match=rf"aspect ratio 30000(\.0)?:1 .*{MAX_ASPECT}"):
        check_image(parsed)
    assert time.monotonic() - start < 1.0


def test_ordinary_aspect_ratios_still_prepared():
    spec = get_spec("mobilenet_v2")
    for size in ((MAX_ASPECT * 20, 20), (30, 30 * MAX_ASPECT), (300, 200)):
        out = prepare_image(Image.new("RGB", size), spec)
        assert out.shape == (spec.input_size, spec.input_size, 3)


@pytest.mark.parametrize("size", [(2400, 1800), (512, 512), (300, 200)], ids=["phone", "draft-for-some", "small"])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_one_decode_for_all_models_prepares_the_same_arrays(monkeypatch, size, fmt):
    """A query's models share a decode when their draft scales agree: the arrays are load_and_prepare's own,
    with and without a crop box, through the EXIF rotation, and a large JPEG is decoded once, not per model."""
    from PIL import ImageFile

    specs = [get_spec(name) for name in ("efficientnet_lite0", "efficientnet_lite2", "mobilenet_v2")]
    stored = _painting(*size).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    buffer = io.BytesIO()
    stored.save(buffer, format=fmt, **({"exif": exif.tobytes(), "quality": 90} if fmt == "JPEG" else {}))
    data = buffer.getvalue()
    decodes = []
    load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load",  # a decode: a load() with tiles left to read
                        lambda self: (decodes.append(self.size) if self.tile else None) or load(self))
    for box in (None, (size[0] * 0.1, size[1] * 0.2, size[0] * 0.7, size[1] * 0.9)):
        decodes.clear()
        many = load_and_prepare_many(io.BytesIO(data), specs, box)
        shared = len(decodes)
        each = [load_and_prepare(io.BytesIO(data), spec, box) for spec in specs]
        assert all(np.array_equal(a, b) for a, b in zip(many, each))
        assert len(decodes) - shared == len(specs)  # one decode per model, one per distinct size shared
        if size == (2400, 1800) and fmt == "JPEG":
            assert shared == 1
        else:
            assert shared <= len(set(decodes[shared:]))
