"""Image cache against a real IIIF-like HTTP server on 127.0.0.1 (faults scripted per path)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from artsim_pipeline.core import image_cache
from artsim_pipeline.core.http import HttpClient
from artsim_pipeline.core.image_cache import ImageCacheOptions, ImageJob, cache_images
from artsim_pipeline.core.image_status import (
    STATUS_DTYPES,
    BatchFailedError,
    check_failure_share,
    failure_share,
    summarize_status,
    write_status,
)
from artsim_pipeline.core.temp_sweep import sweep_lake_temp_files
from artsim_pipeline.core.lake import DataLake
from artsim_pipeline_tests.http_server import IiifImages, LocalServer

REPO = Path(__file__).resolve().parents[2]
SIZE = 400


def picture(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width, 1), y * 255 // max(height, 1), (x + y) % 256], axis=-1)
    noise = rng.integers(0, 40, size=(height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture
def server():
    with LocalServer() as srv:
        yield srv


@pytest.fixture
def iiif(server):
    return IiifImages(server)


@pytest.fixture
def lake(tmp_path):
    return DataLake(tmp_path / "lake")


def options(**changes) -> ImageCacheOptions:
    base = dict(image_size=SIZE, min_side=100, workers=4, requests_per_second=0.0, timeout_s=1.0, retries=3,
                max_pixels=2_000_000)
    base.update(changes)
    return ImageCacheOptions(**base)


def client(timeout_s: float = 1.0, retries: int = 3, rps: float = 0.0, sleeps: list | None = None) -> HttpClient:
    def sleep(seconds: float) -> None:
        if sleeps is not None:
            sleeps.append(seconds)
        time.sleep(seconds)

    return HttpClient(timeout_s=timeout_s, retries=retries, backoff_base_s=0.01, backoff_cap_s=2.0,
                      requests_per_second=rps, sleep=sleep)


def by_uuid(df: pd.DataFrame) -> dict[str, dict]:
    return {row["uuid"]: row for row in df.to_dict("records")}


def test_every_fault_ends_as_specified(server, iiif, lake, tmp_path):
    good = picture(900, 600, 1)
    full = jpeg(picture(500, 400, 2))
    corrupt = bytearray(full)
    for i in range(1000, len(corrupt), 50):
        corrupt[i] = 0xFF if i % 3 else 0x00
    bomb = jpeg(Image.new("RGB", (3000, 3000), (120, 80, 40)), quality=50)  # 9 Mpx, tiny file
    assert len(bomb) < 200_000

    jobs = [
        ImageJob(1, "good", iiif.add("good", good)),
        ImageJob(2, "err500", iiif.add("err500", picture(600, 600, 3))),
        ImageJob(3, "ratelimited", iiif.add("ratelimited", picture(600, 600, 4))),
        ImageJob(4, "slow", iiif.add("slow", picture(600, 600, 5))),
        ImageJob(5, "cutoff", iiif.add("cutoff", picture(600, 600, 6))),
        ImageJob(6, "truncated", iiif.add("truncated", full[: len(full) // 2])),
        ImageJob(7, "html", iiif.add("html", b"<!doctype html><html><body>Sorry</body></html>",
                                      content_type="text/html; charset=utf-8")),
        ImageJob(8, "corrupt", iiif.add("corrupt", bytes(corrupt))),
        ImageJob(9, "small", iiif.add("small", picture(80, 60, 7))),
        ImageJob(10, "bomb", iiif.add("bomb", bomb)),
        ImageJob(11, "missing", iiif.base_url("missing")),
        ImageJob(12, "down", iiif.add("down", picture(600, 600, 8))),
        ImageJob(13, "nourl", None),
        ImageJob(14, "../etc", iiif.base_url("../etc")),
    ]
    path = {job.uuid: IiifImages.path(job.uuid, SIZE) for job in jobs}
    server.faults[path["err500"]] = [500, 500]
    server.faults[path["ratelimited"]] = [("retry_after", 429, 1)]
    server.faults[path["slow"]] = [("sleep", 2.5)]  # client timeout is 1 s
    server.faults[path["cutoff"]] = [("truncate", 1000)]  # body shorter than Content-Length, once
    server.faults[path["down"]] = [503] * 4  # retries=3 -> 4 attempts, all 503

    sleeps: list[float] = []
    progress: list[tuple[int, int]] = []
    df = cache_images(jobs, lake, options(), client(sleeps=sleeps), progress=lambda d, t: progress.append((d, t)))
    rows = by_uuid(df)

    assert list(df.columns) == ["objectid", "uuid", "status", "reason", "bytes", "seconds", "width", "height", "path"]
    assert df["objectid"].tolist() == list(range(1, 15))
    assert str(df["objectid"].dtype) == "int64" and str(df["bytes"].dtype) == "int64"
    assert str(df["seconds"].dtype) == "float64"
    assert progress[-1] == (14, 14) and len(progress) == 14

    for uuid in ("good", "err500", "ratelimited", "slow", "cutoff"):
        row = rows[uuid]
        assert row["status"] == "ok", row
        assert row["reason"] == ""
        stored = Path(row["path"])
        assert stored == lake.images_dir / f"{uuid}.jpg"
        assert row["bytes"] == stored.stat().st_size > 0
        with Image.open(stored) as image:
            image.load()
            assert image.size == (row["width"], row["height"])
    assert (rows["good"]["width"], rows["good"]["height"]) == (400, 267)  # IIIF !400,400 fits 900x600

    assert server.count(path["good"]) == 1
    assert server.count(path["err500"]) == 3
    assert server.count(path["slow"]) == 2
    assert server.count(path["cutoff"]) == 2
    # Retry-After: 1 was honoured: the client slept 1 s and the server saw the retry >= 1 s later.
    assert 1.0 in sleeps
    times = [t for p, t in server.request_times if p == path["ratelimited"]]
    assert len(times) == 2 and times[1] - times[0] >= 0.95
    assert rows["ratelimited"]["seconds"] >= 0.95

    expected_failures = {
        "truncated": "truncated:",
        "html": "not_jpeg:",
        "corrupt": "corrupt:",
        "bomb": "decompression_bomb:",
        "missing": "http:",
        "down": "http:",
        "nourl": "no_iiifurl:",
        "../etc": "bad_uuid:",
    }
    for uuid, prefix in expected_failures.items():
        row = rows[uuid]
        assert row["status"] == "failed", row
        assert row["reason"].startswith(prefix), row
        assert row["path"] == ""
    assert "text/html" in rows["html"]["reason"]
    assert "9000000 pixels" in rows["bomb"]["reason"]
    assert "404" in rows["missing"]["reason"] and server.count(path["missing"]) == 1  # 4xx: no retry
    assert "503" in rows["down"]["reason"] and "after 4 attempts" in rows["down"]["reason"]
    assert server.count(path["down"]) == 4
    assert rows["small"]["status"] == "skipped_small"
    assert (rows["small"]["width"], rows["small"]["height"]) == (80, 60)
    assert "60 px < min_side 100" in rows["small"]["reason"]
    assert server.count("/iiif/../") == 0 and server.count("/etc") == 0

    stored = sorted(p.name for p in lake.images_dir.iterdir())
    assert stored == sorted(f"{u}.jpg" for u in ("good", "err500", "ratelimited", "slow", "cutoff"))
    assert [p for p in tmp_path.rglob("*") if p.is_file() and lake.images_dir not in p.parents] == []

    summary = summarize_status(df)
    assert (summary["ok"], summary["cached"], summary["skipped_small"], summary["failed"]) == (5, 0, 1, 8)
    assert summary["failure_share"] == pytest.approx(8 / 14)
    assert summary["images_per_s"] > 0
    assert summary["failure_kinds"]["http"] == 2

    # Second call: stored images are not fetched again; failed ones are retried (and fail again).
    before = {uuid: server.count(p) for uuid, p in path.items()}
    again = by_uuid(cache_images(jobs, lake, options(), client()))
    for uuid in ("good", "err500", "ratelimited", "slow", "cutoff"):
        assert again[uuid]["status"] == "cached"
        assert server.count(path[uuid]) == before[uuid]
    assert server.count(path["html"]) == before["html"] + 1
    assert again["small"]["status"] == "skipped_small"


def test_second_call_makes_zero_requests(server, iiif, lake):
    jobs = [ImageJob(i, f"img{i}", iiif.add(f"img{i}", picture(500, 450, i))) for i in range(6)]
    jobs.append(ImageJob(99, "img0", jobs[0].iiifurl))  # a second painting sharing an image
    first = cache_images(jobs, lake, options(), client())
    assert first["status"].tolist() == ["ok"] * 7
    assert first["objectid"].tolist() == [0, 1, 2, 3, 4, 5, 99]
    assert server.count("/iiif/") == 6  # the shared uuid was fetched once
    mtimes = {p: p.stat().st_mtime_ns for p in lake.images_dir.iterdir()}

    second = cache_images(jobs, lake, options(), client())
    assert server.count("/iiif/") == 6
    assert second["status"].tolist() == ["cached"] * 7
    assert second["bytes"].tolist() == first["bytes"].tolist()
    assert (second["width"] == first["width"]).all() and (second["height"] == first["height"]).all()
    assert {p: p.stat().st_mtime_ns for p in lake.images_dir.iterdir()} == mtimes


def test_invalid_cached_file_is_fetched_again(server, iiif, lake):
    jobs = [ImageJob(1, "a", iiif.add("a", picture(500, 500, 1))), ImageJob(2, "b", iiif.add("b", picture(500, 500, 2)))]
    lake.images_dir.mkdir(parents=True)
    (lake.images_dir / "a.jpg").write_bytes(b"<html>not an image</html>")
    whole = jpeg(picture(500, 500, 3))
    (lake.images_dir / "b.jpg").write_bytes(whole[: len(whole) - 500])  # valid header, no end marker
    df = cache_images(jobs, lake, options(), client())
    assert df["status"].tolist() == ["ok", "ok"]
    assert server.count("/iiif/") == 2
    for name in ("a.jpg", "b.jpg"):
        with Image.open(lake.images_dir / name) as image:
            image.load()


def test_rate_limit_spaces_requests(server, iiif, lake):
    jobs = [ImageJob(i, f"r{i}", iiif.add(f"r{i}", picture(300, 300, i))) for i in range(6)]
    df = cache_images(jobs, lake, options(workers=6), client(rps=5.0))
    assert (df["status"] == "ok").all()
    starts = sorted(t for _, t in server.request_times)
    assert len(starts) == 6
    assert starts[-1] - starts[0] >= 5 * 0.2 - 0.05  # 6 starts at 5/s span >= 1 s


def test_interrupted_batch_leaves_no_partial_files_and_resumes(server, iiif, lake):
    jobs = [ImageJob(i, f"p{i}", iiif.add(f"p{i}", picture(400, 400, i))) for i in range(20)]

    class Stop(Exception):
        pass

    def stop_after_five(done: int, total: int) -> None:
        if done == 5:
            raise Stop

    with pytest.raises(Stop):
        cache_images(jobs, lake, options(workers=2), client(), progress=stop_after_five)
    stored = {p.name for p in lake.images_dir.iterdir()}
    assert temp_files(lake.root) == []
    assert 5 <= len(stored) < 20  # queued images were cancelled
    fetched_first = server.count("/iiif/")
    assert fetched_first == len(stored)

    df = cache_images(jobs, lake, options(workers=2), client())
    assert set(df.loc[df["status"] == "cached", "uuid"] + ".jpg") == stored
    assert (df["status"] == "ok").sum() == 20 - len(stored)
    for job in jobs:  # every image fetched exactly once over both runs
        assert server.count(IiifImages.path(job.uuid, SIZE)) == 1
    assert temp_files(lake.root) == []


_CHILD = """
import json, sys
from pathlib import Path
from artsim_pipeline.core.http import HttpClient
from artsim_pipeline.core.image_cache import ImageCacheOptions, ImageJob, cache_images
from artsim_pipeline.core.lake import DataLake
spec = json.loads(sys.argv[1])
jobs = [ImageJob(j["objectid"], j["uuid"], j["iiifurl"]) for j in spec["jobs"]]
cache_images(jobs, DataLake(Path(spec["lake"])), ImageCacheOptions(image_size=spec["size"], min_side=100, workers=1),
             HttpClient(timeout_s=60, retries=0))
"""


@pytest.mark.slow
def test_killed_run_leaves_only_whole_images_and_next_run_fetches_the_rest(server, iiif, lake):
    jobs = [ImageJob(i, f"k{i}", iiif.add(f"k{i}", picture(500, 500, i))) for i in range(6)]
    stalled = IiifImages.path("k3", SIZE)
    server.faults[stalled] = [("stall", 2000, 20.0)]  # k3 hangs mid-body until the process is killed
    spec = {"lake": str(lake.root), "size": SIZE, "jobs": [{"objectid": j.objectid, "uuid": j.uuid, "iiifurl": j.iiifurl} for j in jobs]}
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(spec)], cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (server.count(stalled) and temp_files(lake.root)):
            assert child.poll() is None, "child exited before the stall"
            time.sleep(0.05)
        assert server.count(stalled) == 1
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    orphans = temp_files(lake.root)
    assert len(orphans) == 1 and orphans[0].parent == lake.images_dir  # the killed download's temp file
    assert sorted(p.name for p in lake.images_dir.glob("*.jpg")) == ["k0.jpg", "k1.jpg", "k2.jpg"]

    # A young orphan may belong to a live run sharing the lake: kept by default, swept once stale.
    df = cache_images(jobs, lake, options(stale_temp_s=0.0), client())
    assert temp_files(lake.root) == []
    assert df["status"].tolist() == ["cached"] * 3 + ["ok"] * 3
    for job in jobs:
        assert server.count(IiifImages.path(job.uuid, SIZE)) == (2 if job.uuid == "k3" else 1)


def test_path_traversal_uuids_fail_and_write_nothing_outside_images(server, iiif, tmp_path):
    lake = DataLake(tmp_path / "lake")
    mirror = tmp_path / "mirror" / "images"
    mirror.mkdir(parents=True)
    (tmp_path / "mirror" / "etc.jpg").write_bytes(jpeg(picture(400, 400)))
    bad = ["../etc", "..", "a/b", "/abs", "", ".hidden", "x" * 200]
    jobs = [ImageJob(i, uuid, f"{server.url}/iiif/{uuid}") for i, uuid in enumerate(bad)]
    for opts in (options(), options(mirror_images_dir=mirror)):
        df = cache_images(jobs, lake, opts, client())
        assert df["status"].tolist() == ["failed"] * len(bad)
        assert all(reason.startswith("bad_uuid:") for reason in df["reason"])
    assert server.count("/") == 0
    assert list(lake.images_dir.iterdir()) == []
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == ["mirror/etc.jpg"]


def test_mirror_mode_links_or_copies_with_the_same_validation(tmp_path, monkeypatch):
    lake = DataLake(tmp_path / "lake")
    mirror = tmp_path / "mirror" / "images"
    mirror.mkdir(parents=True)
    for name in ("m1", "m2", "m3"):
        (mirror / f"{name}.jpg").write_bytes(jpeg(picture(320, 240, len(name))))
    (mirror / "tiny.jpg").write_bytes(jpeg(picture(64, 64)))
    whole = jpeg(picture(320, 320, 9))
    (mirror / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    jobs = [ImageJob(i, uuid, None) for i, uuid in enumerate(["m1", "m2", "m3", "tiny", "cut", "absent"])]
    opts = options(mirror_images_dir=mirror)

    df = cache_images(jobs, lake, opts)
    rows = by_uuid(df)
    assert [rows[u]["status"] for u in ("m1", "m2", "m3")] == ["ok"] * 3
    assert (rows["m1"]["width"], rows["m1"]["height"]) == (320, 240)
    assert os.path.samefile(rows["m1"]["path"], mirror / "m1.jpg")  # hard link on the same filesystem
    assert rows["tiny"]["status"] == "skipped_small"
    assert rows["cut"]["status"] == "failed" and rows["cut"]["reason"].startswith("truncated:")
    assert rows["absent"]["status"] == "failed" and rows["absent"]["reason"].startswith("not_in_mirror:")
    assert sorted(p.name for p in lake.images_dir.iterdir()) == ["m1.jpg", "m2.jpg", "m3.jpg"]
    assert sorted(p.name for p in mirror.iterdir()) == ["cut.jpg", "m1.jpg", "m2.jpg", "m3.jpg", "tiny.jpg"]

    assert cache_images(jobs[:3], lake, opts)["status"].tolist() == ["cached"] * 3

    # Linking refused (other filesystem, protected links): falls back to a copy.
    def no_link(src, dst):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(image_cache.os, "link", no_link)
    other = DataLake(tmp_path / "other")
    copied = cache_images(jobs[:1], other, opts)
    assert copied["status"].tolist() == ["ok"]
    target = other.image_path("m1")
    assert not os.path.samefile(target, mirror / "m1.jpg")
    assert target.read_bytes() == (mirror / "m1.jpg").read_bytes()


def test_status_helpers(tmp_path):
    df = pd.DataFrame({
        "objectid": [1, 2, 3, 4], "uuid": ["a", "b", "c", "d"], "status": ["ok", "cached", "failed", "skipped_small"],
        "reason": ["", "", "http: HTTP 404", "shorter side"], "bytes": [100, 50, 0, 7], "seconds": [0.1, 0.0, 0.2, 0.1],
        "width": [400, 400, 0, 50], "height": [300, 300, 0, 40], "path": ["x", "y", "", ""],
    })
    df.attrs["wall_seconds"] = 2.0
    assert failure_share(df) == 0.25
    summary = summarize_status(df)
    assert summary == {
        "total": 4, "ok": 1, "cached": 1, "skipped_small": 1, "failed": 1, "bytes": 157, "bytes_downloaded": 100,
        "wall_seconds": 2.0, "images_per_s": 2.0, "failure_share": 0.25, "failure_kinds": {"http": 1},
    }
    assert check_failure_share(df, 0.25) == 0.25
    with pytest.raises(BatchFailedError, match=r"1 of 4 images failed \(25.0% > max 20.0%\)"):
        check_failure_share(df, 0.2)
    assert failure_share(df.iloc[:0]) == 0.0

    target = tmp_path / "status" / "batch.parquet"
    write_status(df, target)
    assert list(target.parent.iterdir()) == [target]
    pd.testing.assert_frame_equal(pd.read_parquet(target), df)


def test_empty_batch(lake):
    df = cache_images([], lake, options(), client())
    assert len(df) == 0
    assert list(df.columns) == list(STATUS_DTYPES)
    assert summarize_status(df)["total"] == 0


# -- fault probe regressions --------------------------------------------------------------------------

def test_image_host_not_on_the_allowlist_fails_without_a_request(server, iiif, lake):
    allowed = iiif.add("allowed", picture(500, 500, 1))
    local_name = allowed.replace("127.0.0.1", "localhost")  # same server, another host name
    jobs = [
        ImageJob(1, "allowed", allowed),
        ImageJob(2, "other", local_name.replace("/allowed", "/other")),
        ImageJob(3, "evil", "https://evil.example.com/iiif/evil"),
        ImageJob(4, "userinfo", "http://127.0.0.1:80@evil.example.com/iiif/userinfo"),
        ImageJob(5, "plainhttp", "http://api.nga.gov/iiif/plainhttp"),
    ]
    iiif.add("other", picture(500, 500, 2))
    df = cache_images(jobs, lake, options(image_hosts=("127.0.0.1", "api.nga.gov")), client())
    rows = by_uuid(df)
    assert rows["allowed"]["status"] == "ok"
    for uuid, host in (("other", "localhost"), ("evil", "evil.example.com"), ("userinfo", "user:password@"),
                       ("plainhttp", "plain http")):
        assert rows[uuid]["status"] == "failed", rows[uuid]
        assert rows[uuid]["reason"].startswith("host_not_allowed:") and host in rows[uuid]["reason"], rows[uuid]
    assert server.count("/iiif/other") == 0
    assert summarize_status(df)["failure_kinds"] == {"host_not_allowed": 4}


def test_default_image_hosts_are_nga_plus_loopback():
    assert ImageCacheOptions().image_hosts == ("api.nga.gov", "127.0.0.1", "localhost")
    assert image_cache.image_url_problem("https://api.nga.gov/iiif/x/full/!1200,1200/0/default.jpg",
                                         ImageCacheOptions().image_hosts) is None
    assert "evil.com" in image_cache.image_url_problem("https://evil.com/x", ImageCacheOptions().image_hosts)
    from artsim_pipeline.config import Settings

    opts = ImageCacheOptions.from_settings(Settings(image_hosts=("images.example.org",)))
    assert opts.image_hosts == ("images.example.org",)


def test_redirect_off_the_allowlist_is_not_followed(server, iiif, lake):
    from artsim_pipeline_tests.http_server import Response

    iiif.add("target", picture(500, 500, 3))
    iiif.add("elsewhere", picture(500, 500, 4))
    inside = IiifImages.path("target", SIZE)
    outside = IiifImages.path("elsewhere", SIZE).replace("/iiif/", "/offsite/")
    server.routes["/iiif/hop/full/!400,400/0/default.jpg"] = lambda h: Response(302, b"", {"Location": inside})
    server.routes["/iiif/away/full/!400,400/0/default.jpg"] = lambda h: Response(
        301, b"", {"Location": server.url.replace("127.0.0.1", "localhost") + outside})
    server.routes[outside] = jpeg(picture(500, 500, 5))
    jobs = [ImageJob(1, "hop", iiif.base_url("hop")), ImageJob(2, "away", iiif.base_url("away"))]
    rows = by_uuid(cache_images(jobs, lake, options(image_hosts=("127.0.0.1",)), client()))
    assert rows["hop"]["status"] == "ok"  # a redirect within the allowed hosts is followed
    assert server.count(inside) == 1
    assert rows["away"]["status"] == "failed"
    assert rows["away"]["reason"].startswith("host_not_allowed:") and "localhost" in rows["away"]["reason"]
    assert server.count(outside) == 0  # the off-list target was never requested
    assert not lake.image_path("away").exists()


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's own, at Image.open
def test_jpeg_of_9500x9500_pixels_is_refused(server, iiif, lake, tmp_path):
    huge = jpeg(Image.new("L", (9500, 9500), 128), quality=20)  # 90.25 Mpx in a small file
    assert len(huge) < 2_000_000
    iiif.add("huge", huge)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "huge.jpg").write_bytes(huge)
    jobs = [ImageJob(1, "huge", iiif.base_url("huge"))]
    for opts in (ImageCacheOptions(image_size=1200, min_side=100, workers=1),  # defaults otherwise
                 ImageCacheOptions(min_side=100, workers=1, mirror_images_dir=mirror)):
        row = cache_images(jobs, lake, opts, client()).iloc[0]
        assert row["status"] == "failed" and row["reason"].startswith("decompression_bomb:"), row["reason"]
        assert "90250000 pixels" in row["reason"]
    assert not lake.image_path("huge").exists()


def test_iiif_image_larger_than_the_requested_box_is_refused(server, iiif, lake):
    iiif.add("big", jpeg(picture(600, 500, 1)))  # served as is: the server ignored !400,400
    row = cache_images([ImageJob(1, "big", iiif.base_url("big"))], lake, options(), client()).iloc[0]
    assert row["status"] == "failed" and row["reason"].startswith("oversize:"), row["reason"]
    assert "600x500" in row["reason"] and not lake.image_path("big").exists()


def test_uuid_with_a_trailing_newline_is_a_bad_uuid(server, iiif, lake):
    iiif.add("abc", picture(400, 400))
    row = cache_images([ImageJob(1, "abc\n", iiif.base_url("abc"))], lake, options(), client()).iloc[0]
    assert row["status"] == "failed" and row["reason"].startswith("bad_uuid:")
    assert server.count("/") == 0 and not any(lake.images_dir.iterdir())


def test_stale_temp_files_are_swept_from_every_lake_folder(lake):
    old = time.time() - 7200
    stale, fresh = [], []
    for folder in ("reports", "tables", "faces", "embeddings/m", "index/generations/g1", "images"):
        directory = lake.root / folder
        directory.mkdir(parents=True, exist_ok=True)
        stale_file = directory / ".report.json.abc123.tmp"
        stale_file.write_text("partial")
        os.utime(stale_file, (old, old))
        fresh_file = directory / ".live.json.def456.tmp"
        fresh_file.write_text("being written")
        stale.append(stale_file)
        fresh.append(fresh_file)
    keep = lake.root / "reports" / "eval_report.json"
    keep.write_text("{}")
    os.utime(keep, (old, old))
    assert sweep_lake_temp_files(lake, older_than_s=3600) == len(stale)
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in fresh) and keep.exists()


def test_a_full_disk_stops_the_batch_once_naming_the_file(tmp_path, monkeypatch, caplog):
    """Fault matrix (issue 19 #13): 40 images onto a full disk gave 40 tracebacks and no file name."""
    import errno
    import logging

    from artsim_pipeline.core.storage import LakeWriteError

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for i in range(40):
        (mirror / f"u{i}.jpg").write_bytes(jpeg(picture(160, 120, seed=i)))

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(image_cache.os, "link", full)
    monkeypatch.setattr(image_cache.shutil, "copyfile", full)
    lake = DataLake(tmp_path / "lake")
    jobs = [ImageJob(objectid=i, uuid=f"u{i}", iiifurl="") for i in range(40)]
    with caplog.at_level(logging.INFO, logger="artsim_pipeline"):
        with pytest.raises(LakeWriteError) as failure:
            cache_images(jobs, lake, options(mirror_images_dir=mirror))
    message = str(failure.value)
    assert "the disk is full" in message and str(lake.images_dir) in message and ".jpg" in message, message
    assert not [r for r in caplog.records if r.exc_info], "tracebacks were logged"
    assert not temp_files(tmp_path / "lake")
