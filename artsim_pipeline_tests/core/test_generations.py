"""Index generations: fusion + FAISS indexes published and loaded as one unit (core/generations.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from artsim_pipeline.core import generations as gen_mod
from artsim_pipeline.core.fusion import fit_fusion, fusion_fingerprint, transform
from artsim_pipeline.core.generations import (
    NoGenerationError,
    current_generation_id,
    load_generation,
    load_staged_fusions,
    publish_generation,
    stage_fusions,
)
from artsim_pipeline.core.index import build_index, search
from artsim_pipeline.core.lake import DataLake
from artsim_pipeline_tests.core.support import clustered as _clustered
from artsim_pipeline_tests.core.support import objectids as _objectids



def _raw(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"alpha": rng.standard_normal((n, 16)).astype(np.float32) * 3 + 1,
            "beta": rng.standard_normal((n, 8)).astype(np.float32)}


def _generation_parts(seed: int, n: int = 30, n_components: int = 6):
    """(parts for publish_generation, raw vectors, objectids): a full and a face variant."""
    raw, ids = _raw(n, seed), _objectids(n) + 100_000 * seed
    parts = {}
    for variant, rows in (("full", slice(None)), ("face", slice(0, n // 2))):
        blocks = {m: v[rows] for m, v in raw.items()}
        fusion = fit_fusion(blocks, n_components=n_components)
        parts[variant] = (fusion, build_index(transform(fusion, blocks), ids[rows]))
    return parts, raw, ids


def _self_first(generation, raw, ids, rows=(0, 3, 7)) -> None:
    """Each painting's raw vectors, fused with the generation's fusion, find themselves in its index."""
    fusion, bundle = generation.fusions["full"], generation.bundles["full"]
    for row in rows:
        query = transform(fusion, {m: v[row: row + 1] for m, v in raw.items()})
        scores, found = search(bundle, query, 3)
        assert found[0, 0] == ids[row] and scores[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_publish_and_load_one_generation(tmp_path) -> None:
    lake = DataLake(tmp_path)
    with pytest.raises(NoGenerationError):
        load_generation(lake)
    assert issubclass(NoGenerationError, FileNotFoundError)
    parts, raw, ids = _generation_parts(1)
    result = publish_generation(lake, parts)
    assert result.swapped and result.previous is None
    assert current_generation_id(lake) == result.generation
    assert (tmp_path / "index" / "CURRENT").read_text() == result.generation + "\n"
    directory = tmp_path / "index" / "generations" / result.generation
    assert sorted(p.name for p in directory.iterdir()) == ["face", "full", "fusion_face.npz", "fusion_full.npz",
                                                            "generation.json"]
    manifest = json.loads((directory / "generation.json").read_text())
    assert manifest["models"] == ["alpha", "beta"] and manifest["content_hash"] == result.content_hash
    assert manifest["variants"]["full"]["n_vectors"] == 30 and manifest["variants"]["face"]["n_vectors"] == 15
    assert manifest["variants"]["full"]["dim"] == 6 and manifest["variants"]["full"]["input_dim"] == 24
    assert manifest["created"].endswith("Z")
    generation = load_generation(lake)
    assert generation.id == result.generation and generation.variants == ("face", "full")
    _self_first(generation, raw, ids)
    assert not list((tmp_path / "index").rglob("*.tmp")) and not list((tmp_path / "index").rglob(".tmp-*"))


def test_staged_fusion_without_a_swap_is_not_served(tmp_path) -> None:
    """(a) pca_model staged a new fusion, faiss_index never published: readers still get A, whole."""
    lake = DataLake(tmp_path)
    parts_a, raw_a, ids_a = _generation_parts(1)
    a = publish_generation(lake, parts_a)
    parts_b, _, _ = _generation_parts(2)
    stage = stage_fusions(lake, {v: f for v, (f, _) in parts_b.items()}, {"full": 30, "face": 15})
    staged = load_staged_fusions(lake)
    assert staged.stage == stage and fusion_fingerprint(staged.fusions["full"]) == fusion_fingerprint(parts_b["full"][0])
    assert stage_fusions(lake, {v: f for v, (f, _) in parts_b.items()}) == stage  # content-addressed
    generation = load_generation(lake)
    assert generation.id == a.generation
    assert fusion_fingerprint(generation.fusions["full"]) == fusion_fingerprint(parts_a["full"][0])
    _self_first(generation, raw_a, ids_a)


@pytest.mark.parametrize("crash", ["while writing the second variant", "after the directory, before the swap"])
def test_failed_publish_keeps_the_served_generation(tmp_path, monkeypatch, crash) -> None:
    """(a) a failure anywhere before the pointer swap leaves A served and no partial generation behind."""
    lake = DataLake(tmp_path)
    parts_a, raw_a, ids_a = _generation_parts(1)
    a = publish_generation(lake, parts_a)
    parts_b, _, _ = _generation_parts(2)
    if crash.startswith("while"):
        real_save = gen_mod.save_index
        calls = {"n": 0}

        def flaky(bundle, directory):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError("disk full")
            return real_save(bundle, directory)

        monkeypatch.setattr(gen_mod, "save_index", flaky)
    else:
        real_pointer = gen_mod._write_pointer

        def killed(path, value):
            if path == lake.index_pointer_path:
                raise OSError("killed")
            real_pointer(path, value)

        monkeypatch.setattr(gen_mod, "_write_pointer", killed)
    with pytest.raises(OSError):
        publish_generation(lake, parts_b)
    monkeypatch.undo()
    assert current_generation_id(lake) == a.generation
    assert [p.name for p in lake.generations_dir.iterdir()] == [a.generation]
    _self_first(load_generation(lake), raw_a, ids_a)


def test_after_a_swap_readers_see_the_new_generation_entirely(tmp_path) -> None:
    """(b) fusion, index and id map all come from B; A stays one round, older ones are deleted."""
    lake = DataLake(tmp_path)
    parts_a, _, _ = _generation_parts(1)
    a = publish_generation(lake, parts_a)
    parts_b, raw_b, ids_b = _generation_parts(2, n=40, n_components=5)
    b = publish_generation(lake, parts_b)
    assert b.swapped and b.previous == a.generation and b.generation != a.generation
    generation = load_generation(lake)
    assert generation.id == b.generation
    for variant, (fusion, bundle) in parts_b.items():
        assert fusion_fingerprint(generation.fusions[variant]) == fusion_fingerprint(fusion)
        np.testing.assert_array_equal(generation.bundles[variant].ids, bundle.ids)
        assert generation.fusions[variant].output_dim == generation.bundles[variant].index.d == 5
    _self_first(generation, raw_b, ids_b)
    assert sorted(p.name for p in lake.generations_dir.iterdir()) == sorted([a.generation, b.generation])

    parts_c, _, _ = _generation_parts(3)
    c = publish_generation(lake, parts_c)
    assert c.removed == (a.generation,)
    assert sorted(p.name for p in lake.generations_dir.iterdir()) == sorted([b.generation, c.generation])
    assert load_generation(lake, b.generation).id == b.generation  # the previous one is still loadable

    same = publish_generation(lake, parts_c)  # same content: nothing written, nothing swapped
    assert not same.swapped and same.generation == c.generation and same.content_hash == c.content_hash
    assert sorted(p.name for p in lake.generations_dir.iterdir()) == sorted([b.generation, c.generation])


def test_a_reader_that_resolved_a_keeps_reading_a_while_b_is_swapped_in(tmp_path, monkeypatch) -> None:
    """(c) the pointer is resolved once: a swap during the load does not mix A's and B's files."""
    lake = DataLake(tmp_path)
    parts_a, raw_a, ids_a = _generation_parts(1)
    a = publish_generation(lake, parts_a)
    parts_b, _, _ = _generation_parts(2, n=40, n_components=5)
    real_load = gen_mod.load_index
    swaps: list[str] = []

    def load_with_swap(directory):
        if not swaps:  # B is published after A's first variant was located, before it is read
            swaps.append(publish_generation(lake, parts_b).generation)
        return real_load(directory)

    monkeypatch.setattr(gen_mod, "load_index", load_with_swap)
    generation = load_generation(lake)
    monkeypatch.undo()
    assert current_generation_id(lake) == swaps[0] != a.generation
    assert generation.id == a.generation
    for variant, (fusion, bundle) in parts_a.items():
        assert fusion_fingerprint(generation.fusions[variant]) == fusion_fingerprint(fusion)
        np.testing.assert_array_equal(generation.bundles[variant].ids, bundle.ids)
    _self_first(generation, raw_a, ids_a)


def test_a_reader_whose_generation_was_cleaned_up_mid_load_resolves_again(tmp_path, monkeypatch) -> None:
    lake = DataLake(tmp_path)
    publish_generation(lake, _generation_parts(1)[0])
    parts_b, _, _ = _generation_parts(2)
    parts_c, raw_c, ids_c = _generation_parts(3)
    real_load = gen_mod.load_index
    published: list[str] = []

    def load_with_two_swaps(directory):
        if not published:  # B then C: A (being read) is deleted as "older than the previous"
            published.extend([publish_generation(lake, parts_b).generation, publish_generation(lake, parts_c).generation])
        return real_load(directory)

    monkeypatch.setattr(gen_mod, "load_index", load_with_two_swaps)
    generation = load_generation(lake)
    assert generation.id == published[1]
    _self_first(generation, raw_c, ids_c)


def test_publish_validates_and_removes_the_legacy_index_files(tmp_path) -> None:
    lake = DataLake(tmp_path)
    parts, _, _ = _generation_parts(1)
    with pytest.raises(ValueError, match="full"):
        publish_generation(lake, {"face": parts["face"]})
    with pytest.raises(ValueError, match="dims"):
        publish_generation(lake, {"full": (parts["face"][0], build_index(_clustered(10, dim=4), _objectids(10)))})
    assert current_generation_id(lake) is None and not lake.generations_dir.exists()
    (tmp_path / "index" / "full").mkdir(parents=True)
    (tmp_path / "index" / "full" / "manifest.json").write_text("{}")
    (tmp_path / "index" / "fusion_full.npz").write_bytes(b"old")
    publish_generation(lake, parts)
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == [".lock", "CURRENT", "generations"]


def test_load_detects_a_damaged_generation(tmp_path) -> None:
    lake = DataLake(tmp_path)
    result = publish_generation(lake, _generation_parts(1)[0])
    fusion_file = lake.generation_fusion_path(result.generation, "face")
    fusion_file.write_bytes(fusion_file.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="checksum"):
        load_generation(lake)
