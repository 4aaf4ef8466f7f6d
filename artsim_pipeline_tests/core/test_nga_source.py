import json

import pytest

from artsim_pipeline.core.http import HttpClient
from artsim_pipeline.core.nga_source import (
    NGA_FILES,
    IncompleteSourceError,
    NgaSource,
    SourceError,
    SourceUnreachableError,
)
from artsim_pipeline.core.lake import DataLake
from artsim_pipeline_tests.http_server import LocalServer
from artsim_pipeline_tests.nga_fixtures import Painting, nga_csvs, write_mirror


def fast_client(**kwargs) -> HttpClient:
    return HttpClient(timeout_s=2, retries=3, backoff_base_s=0.01, **kwargs)


def serve_snapshot(server: LocalServer, csvs: dict[str, bytes]) -> None:
    for name, body in csvs.items():
        server.routes[f"/data/{name}.csv"] = body


def test_http_source_retries_a_500_then_succeeds(tmp_path):
    csvs = nga_csvs([Painting(1), Painting(2)])
    with LocalServer() as server:
        serve_snapshot(server, csvs)
        server.faults["/data/objects.csv"] = [500]
        snapshot = NgaSource(server.url, fast_client()).fetch(DataLake(tmp_path))
        assert server.count("/data/objects.csv") == 2
    for name in NGA_FILES:
        assert snapshot.path(name).read_bytes() == csvs[name]
    manifest = json.loads((snapshot.directory / "snapshot.json").read_text())
    assert manifest["version"] == snapshot.version and set(manifest["files"]) == set(NGA_FILES)


def test_http_source_gives_up_with_a_clear_error_and_keeps_nothing_half_written(tmp_path):
    with LocalServer() as server:
        serve_snapshot(server, nga_csvs([Painting(1)]))
        server.faults["/data/published_images.csv"] = [503] * 10
        with pytest.raises(SourceUnreachableError, match=r"published_images\.csv: HTTP 503 after 4 attempts.*ARTSIM_NGA_SOURCE"):
            NgaSource(server.url, fast_client()).fetch(DataLake(tmp_path))
    leftovers = [p.name for p in (tmp_path / "raw").rglob("*") if p.is_file()]
    assert not any(name.endswith(".tmp") for name in leftovers)
    assert not any((tmp_path / "raw").glob("v*/snapshot.json"))


def test_same_content_gives_the_same_version_over_http_and_from_a_mirror(tmp_path):
    paintings = [Painting(1), Painting(2, attribution="Other")]
    mirror = write_mirror(tmp_path / "mirror", paintings, with_images=False)
    local = NgaSource(str(mirror)).fetch(DataLake(tmp_path / "a"))
    with LocalServer() as server:
        serve_snapshot(server, nga_csvs(paintings))
        remote = NgaSource(server.url, fast_client()).fetch(DataLake(tmp_path / "b"))
    assert local.version == remote.version
    changed = NgaSource(str(write_mirror(tmp_path / "m2", paintings[:1], with_images=False))).fetch(DataLake(tmp_path / "c"))
    assert changed.version != local.version


def test_probe_version_uses_conditional_requests_and_detects_changes(tmp_path):
    with LocalServer() as server:
        csvs = nga_csvs([Painting(1)])
        for name, body in csvs.items():
            server.routes[f"/data/{name}.csv"] = lambda h, body=body, name=name: _etagged(body, f'"{name}-1"')
        source = NgaSource(server.url, fast_client())
        first = source.probe_version()
        validators = {name: {"ETag": f'"{name}-1"'} for name in NGA_FILES}
        assert source.probe_version(validators) == first
        assert server.count("/data/", method="GET") == 0  # probing never downloads
        server.routes["/data/objects.csv"] = lambda h: _etagged(b"objectid\n", '"objects-2"')
        assert source.probe_version(validators) != first


def _etagged(body: bytes, etag: str):
    from artsim_pipeline_tests.http_server import Response

    return Response(200, body, {"ETag": etag})


def test_missing_local_mirror_names_the_variable(tmp_path):
    with pytest.raises(SourceError, match="ARTSIM_NGA_SOURCE"):
        NgaSource(str(tmp_path / "nowhere")).fetch(DataLake(tmp_path))


def test_missing_csv_in_mirror_names_the_file(tmp_path):
    mirror = write_mirror(tmp_path / "mirror", [Painting(1)], with_images=False)
    (mirror / "data" / "objects_terms.csv").unlink()
    with pytest.raises(SourceError, match="objects_terms.csv"):
        NgaSource(str(mirror)).fetch(DataLake(tmp_path / "lake"))


# -- fault probe regression: a CSV cut short ------------------------------------------------------------

def test_csv_cut_short_of_its_content_length_is_refused_naming_the_file(tmp_path):
    csvs = nga_csvs([Painting(i) for i in range(1, 31)])
    body = csvs["objects"]
    cut = body.rfind(b"\n", 0, len(body) // 2) + 1  # at a line boundary: still a valid, shorter CSV
    lake = DataLake(tmp_path)
    with LocalServer() as server:
        serve_snapshot(server, csvs)
        server.faults["/data/objects.csv"] = [("truncate", cut)] * 10
        with pytest.raises(IncompleteSourceError, match=r"objects\.csv .*cut short: \d+ of \d+ bytes \(Content-Length\)"):
            NgaSource(server.url, fast_client()).fetch(lake)
        assert server.count("/data/objects.csv", method="GET") == 4  # retried like any short body
    assert not any((tmp_path / "raw").glob("v*/snapshot.json"))
    assert not [p for p in (tmp_path / "raw").rglob("*") if p.is_file() and p.name.endswith(".tmp")]


def test_csv_cut_short_once_is_fetched_again_whole(tmp_path):
    csvs = nga_csvs([Painting(i) for i in range(1, 11)])
    with LocalServer() as server:
        serve_snapshot(server, csvs)
        server.faults["/data/published_images.csv"] = [("truncate", 200)]
        snapshot = NgaSource(server.url, fast_client()).fetch(DataLake(tmp_path))
        assert server.count("/data/published_images.csv", method="GET") == 2
    for name in NGA_FILES:
        assert snapshot.path(name).read_bytes() == csvs[name]
