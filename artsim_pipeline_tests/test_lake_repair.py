"""Fault matrix (issue 19 #2, #3): a damaged lake is found by ``artsim run`` and repaired by it, not
reported as "everything up to date". One small lake (a local mirror, random-weight backbone), damaged
one artefact at a time; after each, one run repairs it, search works again and a second run has nothing
to do."""

from __future__ import annotations

import pytest

from artsim_pipeline.config import Settings
from artsim_pipeline.core.search import SearchEngine
from artsim_pipeline.core.storage import DamagedFileError, read_table
from artsim_pipeline.core.lake import DataLake
from artsim_pipeline.definitions import build_definitions
from artsim_pipeline.runner import PipelineRunner
from artsim_pipeline_tests.nga_fixtures import Painting, write_mirror


def _zero_middle(path, n=200):
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + n] = bytes(n)
    path.write_bytes(bytes(data))


DAMAGES = {
    "garbage CURRENT": (lambda lake: lake.index_pointer_path.write_text("../../etc/passwd\n"), "pca_model"),
    "corrupt generation.json": (lambda lake: lake.generation_manifest_path(
        lake.index_pointer_path.read_text().strip()).write_text("{ not json"), "pca_model"),
    "corrupt catalog.duckdb": (lambda lake: lake.catalog_db.write_bytes(b"\0" * 4096 + b"garbage"), "raw_objects"),
    "truncated filtered_paintings.parquet": (lambda lake: lake.filtered_paintings_parquet.write_bytes(
        lake.filtered_paintings_parquet.read_bytes()[:300]), "filtered_paintings"),
    "deleted embeddings file": (lambda lake: lake.embeddings_path("mobilenet_v2", "batch-00001").unlink(),
                                "embeddings_mobilenet_v2"),
    "deleted cached image": (lambda lake: next(lake.images_dir.glob("*.jpg")).unlink(), "image_cache"),
    # bytes changed inside a page (the footer intact) show only when the collection reads the file: the
    # refresh that follows another batch's change finds it by its page checksum and rebuilds it
    "zeroed bytes inside an embeddings page": (lambda lake: (
        _zero_middle(lake.embeddings_path("mobilenet_v2", "batch-00000")),
        lake.embeddings_path("mobilenet_v2", "batch-00001").unlink()), "embeddings_mobilenet_v2"),
}


@pytest.mark.slow
def test_artsim_run_finds_and_repairs_each_damaged_artefact(tmp_path, instance):
    mirror = write_mirror(tmp_path / "mirror", [Painting(i, width=96, height=80, artist=f"Painter {i % 2}")
                                                 for i in range(1, 8)])
    settings = Settings(nga_source=str(mirror), data_lake=tmp_path / "lake", limit=0, min_side=64, batch_size=4,
                        models=("mobilenet_v2",), weights="random", device="cpu", pca_dim=4)
    lake = DataLake(tmp_path / "lake")
    lines: list[str] = []
    runner = PipelineRunner(build_definitions(settings), settings, instance, echo=lines.append)
    assert runner.run().ran
    assert not runner.run().ran  # built: nothing to do

    for name, (damage, asset) in DAMAGES.items():
        lines.clear()
        damage(lake)
        if name == "corrupt catalog.duckdb":  # search serves from the Parquet copy meanwhile, and says so
            engine = SearchEngine(lake, weights="random", device="cpu")
            assert engine.search(2, k=3, include_self=True)[0].objectid == 2
            assert any("catalog.duckdb cannot be opened" in note for note in engine.notes), engine.notes
        report = runner.run()
        assert asset in report.assets_run(), (name, report.ran, lines)
        if name.startswith("zeroed"):
            assert report.partitions_run(asset) == ["batch-00000", "batch-00001"], (report.ran, lines)
        assert any(line.startswith("lake check:") for line in lines), (name, lines)
        engine = SearchEngine(lake, weights="random", device="cpu")
        assert engine.search(1, k=3, include_self=True)[0].objectid == 1, name
        assert not runner.run().ran, (name, "a second run still found work")
    assert list(tmp_path.joinpath("lake").glob("catalog.duckdb.damaged-*")), "the damaged catalog was not kept"


def test_zeroed_bytes_in_an_embeddings_file_are_caught_not_fused(tmp_path):
    """200 zeroed bytes inside a page of an embeddings file: reading it fails by name (page checksums)."""
    import numpy as np
    import pandas as pd

    from artsim_pipeline.core.embedding_store import embed_batch_to_parquet
    from artsim_pipeline.core.models import load_model
    from artsim_pipeline_tests.nga_fixtures import jpeg_bytes

    images = tmp_path / "images"
    images.mkdir()
    frame = pd.DataFrame({"objectid": np.arange(1, 41), "uuid": [f"u{i}" for i in range(1, 41)]})
    for uuid in frame["uuid"]:
        (images / f"{uuid}.jpg").write_bytes(jpeg_bytes(int(uuid[1:]), (64, 64)))
    frame["path"] = [str(images / f"{u}.jpg") for u in frame["uuid"]]
    model = load_model("mobilenet_v2", weights="random")
    result = embed_batch_to_parquet(model, frame, tmp_path, "batch-00000")
    path = result.path
    assert read_table(path).num_rows == 40
    _zero_middle(path)
    with pytest.raises(DamagedFileError, match=path.name):
        read_table(path)
