"""Query API on a real, small data lake built by the pipeline (pretrained efficientnet_lite0)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from artsim_pipeline.config import Settings
from artsim_pipeline.core.grid import save_grid
from artsim_pipeline.core.scoring import ScoringWeights, metadata_score
from artsim_pipeline.core.search import SearchEngine, models_set_in_env
from artsim_pipeline.core.search_filters import SearchFilters, parse_years
from artsim_pipeline.core.search_query import IndexNotBuiltError, QueryError
from artsim_pipeline.core.search_results import format_results
from artsim_pipeline_tests.search_lake import FACE_IDS, PAINTINGS, astronaut, shared_search_lake


@pytest.fixture(scope="module")
def lake_settings() -> Settings:
    return shared_search_lake()


@pytest.fixture(scope="module")
def engine(lake_settings) -> SearchEngine:
    return SearchEngine.from_settings(lake_settings)


def image_of(engine: SearchEngine, objectid: int) -> Path:
    path = engine.image_path(objectid)
    assert path is not None and path.is_file()
    return path


# ----------------------------------------------------------------------------- itself first


def test_objectid_query_with_include_self_returns_itself_first(engine):
    for oid in (101, 104, 110, 113, 116):
        response = engine.search(oid, k=5, include_self=True)
        assert response.kind == "objectid" and response.variant == "full"
        assert len(response) == 5
        assert response[0].objectid == oid
        assert response[0].cosine == pytest.approx(1.0, abs=1e-5)
        assert not response[0].near_duplicate  # the painting itself is not a duplicate of itself
    assert engine.search(str(107), k=3, include_self=True)[0].objectid == 107  # numeric string = objectid


def test_objectid_query_leaves_the_painting_itself_out_by_default(engine):
    for oid in (p.objectid for p in PAINTINGS):
        response = engine.search(oid, k=15)
        assert oid not in ids(response) and len(response) == 15  # every other painting, never itself
        assert response.identified is None and response.identification is None
        assert response.match_basis == "0.7 × visual + 0.3 × catalog"
        kept = engine.search(oid, k=15, include_self=True)
        assert [r.objectid for r in kept if r.objectid != oid][:14] == [r.objectid for r in response][:14]


def test_image_file_query_returns_itself_first_with_visual_order(engine):
    for oid in (103, 105, 109, 114):
        response = engine.search(image_of(engine, oid), k=8)
        assert response.kind == "image"
        assert response[0].objectid == oid
        assert response[0].cosine > 0.9999
        visual = [r.visual for r in response]
        assert visual == sorted(visual, reverse=True)  # no query metadata: the order is visual
        # the match IS the visual score (no 0.7 cap): the painting's own image reads as a near-100 % match
        assert all(r.metadata == 0.0 and r.final == pytest.approx(r.visual) for r in response)
        assert response[0].final > 0.9
        assert response.match_basis == "visual similarity only (an image has no catalog data)"


def test_bytes_and_pil_queries_match_the_file_query(engine):
    path = image_of(engine, 108)
    by_file = engine.search(path, k=5)
    by_bytes = engine.search(path.read_bytes(), k=5)
    with Image.open(path) as image:
        by_pil = engine.search(image.convert("RGB"), k=5)
    assert [r.objectid for r in by_bytes] == [r.objectid for r in by_file]
    assert [r.visual for r in by_bytes] == pytest.approx([r.visual for r in by_file], abs=1e-6)
    assert by_pil[0].objectid == 108


def test_reembedding_a_cached_image_gives_its_stored_vector(engine):
    for oid in (p.objectid for p in PAINTINGS):
        stored = engine.stored_vector(oid)
        fresh = engine.embed(image_of(engine, oid))
        assert stored is not None
        assert float(stored @ fresh) > 0.9999, oid


def test_results_carry_catalog_fields(engine):
    top = engine.search(110, k=1, include_self=True)[0]
    assert (top.title, top.artist, top.date, top.style, top.medium) == (
        "Ginevra de' Benci", "Leonardo da Vinci", "1474", "Renaissance", "oil on panel")
    assert Path(top.image_path).is_file()
    frame = engine.search(110, k=3, include_self=True).to_frame()
    assert list(frame["rank"]) == [1, 2, 3] and frame.loc[0, "objectid"] == 110


# ----------------------------------------------------------------------------- what agreed


def test_each_result_explains_what_agreed_recomputed_from_the_lake_s_embeddings(engine, lake_settings):
    """The per-depth and per-backbone agreements equal cosines of the lake's own embedding blocks projected
    again (a loop over blocks, efficientnet_lite0's registry taps: blocks.3/.4 early, .5/.6 middle), and the
    metadata part names exactly the bonuses the metadata score summed."""
    from artsim_pipeline.core.lake import lake_at
    from artsim_pipeline.core.lake_reads import current_collection

    lake = lake_at(lake_settings.data_lake, lake_settings.work_dir)
    collection = current_collection(lake, lake_settings.models, lake_settings.taps)["full"]
    explainer = engine.variants["full"].bundle.explain
    assert explainer is not None and explainer.blocks == engine.variants["full"].fusion.model_names
    row_of = {int(o): i for i, o in enumerate(collection.objectids)}
    depth_blocks = {"early": ("blocks.3.mean", "blocks.4.mean"), "middle": ("blocks.5.mean", "blocks.6.mean"),
                    "final": None}

    def projected(oid):
        blocks = {name: values[row_of[oid]][None] for name, values in collection.blocks.items()}
        return explainer.project(blocks)[0]

    response = engine.search(104, k=6)
    assert 104 not in ids(response)
    query = projected(104)
    for result in response:
        why = result.explanation
        assert why is not None and set(why) == {"backbones", "depths", "levels", "metadata", "summary"}
        other = projected(result.objectid)
        cosines, start = {}, 0
        for name, width in zip(explainer.blocks, explainer.dims):
            cosines[name] = float(np.dot(query[start:start + width], other[start:start + width]))
            start += width
        for depth, taps in depth_blocks.items():
            names = ["efficientnet_lite0"] if taps is None else [f"efficientnet_lite0@{t}" for t in taps]
            assert why["depths"][depth] == pytest.approx(np.mean([cosines[n] for n in names]), abs=2e-3)
        assert why["backbones"]["efficientnet_lite0"] == pytest.approx(np.mean(list(cosines.values())), abs=2e-3)
        assert sum(why["metadata"].values()) == pytest.approx(result.metadata)
        assert why["summary"].startswith(f"{why['levels']['early']} in palette and brushwork")
    response = engine.search(104, k=16, include_self=True)
    itself = response[0]
    assert itself.objectid == 104 and set(itself.explanation["levels"].values()) == {"very close"}
    assert "same artist" in itself.explanation["summary"]
    # an image query (no metadata) is explained by its own blocks, through the same projection
    by_image = engine.search(image_of(engine, 104), k=3)
    assert by_image[0].objectid == 104 and by_image[0].explanation["metadata"] == {}
    assert by_image[0].explanation["depths"]["final"] > 0.99


# ----------------------------------------------------------------------------- hybrid score


def test_metadata_reranks_objectid_queries(engine):
    query = engine._rows[101]
    response = engine.search(101, k=10, include_self=True)
    for r in response:
        assert r.metadata == pytest.approx(metadata_score(query, engine._rows[r.objectid]))
        assert r.final == pytest.approx(0.7 * r.visual + 0.3 * r.metadata)
    finals = [r.final for r in response]
    assert finals == sorted(finals, reverse=True)
    # metadata changed the order: some painting outranks one that is visually closer to the query
    assert any(a.visual < b.visual for i, a in enumerate(response) for b in response[i + 1:])
    # all three Rembrandts (same artist, style, medium words, date window) are in the top 3
    assert {r.objectid for r in response[:3]} == {101, 102, 103}

    visual_only = engine.search(101, k=10, weights=ScoringWeights(visual=1.0, metadata=0.0), include_self=True)
    visual = [r.visual for r in visual_only]
    assert visual == sorted(visual, reverse=True)
    assert [r.objectid for r in visual_only] != [r.objectid for r in response]


# ----------------------------------------------------------------------------- filters


def ids(response) -> set[int]:
    return {r.objectid for r in response}


def test_artist_filter(engine):
    assert ids(engine.search(101, k=10, filters=SearchFilters(artist="rembrandt"))) == {102, 103}  # not itself
    assert ids(engine.search(101, k=10, filters=SearchFilters(artist="rembrandt"), include_self=True)) == {101, 102, 103}
    vermeer = engine.search(101, k=10, filters=SearchFilters(artist="VERMEER"))
    assert ids(vermeer) == {104, 105}  # the query itself is filtered out
    assert ids(engine.search(image_of(engine, 113), k=10, filters=SearchFilters(artist="edgar degas"))) == {116}
    assert ids(engine.search(101, k=10, filters=SearchFilters(artist="Attributed to Claude Monet"))) == {107, 108, 109}


def test_year_style_and_medium_filters(engine):
    assert ids(engine.search(107, k=10, filters=SearchFilters.create(years="1870-1900"))) == {108, 109, 113, 116}
    assert ids(engine.search(107, k=10, filters=SearchFilters.create(years="1950"))) == {114}
    assert ids(engine.search(107, k=10, filters=SearchFilters.create(years="-1510"))) == {110, 111}
    assert ids(engine.search(107, k=10, filters=SearchFilters(style="impressionism"))) == {108, 109, 116}
    assert ids(engine.search(107, k=10, filters=SearchFilters(medium="panel"))) == {103, 104, 110, 111}
    both = SearchFilters.create(artist="rembrandt", years="1640-1700")
    assert ids(engine.search(image_of(engine, 107), k=10, filters=both)) == {101, 103}


def test_filters_matching_nothing_give_no_results(engine):
    response = engine.search(101, k=5, filters=SearchFilters.create(artist="rembrandt", years="1800-1900"))
    assert len(response) == 0 and any("no painting matches" in n for n in response.notes)
    assert "no results" in format_results(response)


def test_parse_years():
    assert parse_years("1600-1700") == (1600, 1700)
    assert parse_years(" 1650 ") == (1650, 1650)
    assert parse_years("1600-") == (1600, None)
    assert parse_years("-1700") == (None, 1700)
    for bad in ("1700-1600", "abc", "", "16000-17000"):
        with pytest.raises(QueryError):
            parse_years(bad)


# ----------------------------------------------------------------------------- faces


def test_face_crop_finds_the_face_and_uses_the_face_index(engine, tmp_path):
    photo = tmp_path / "astronaut.png"
    astronaut().save(photo)
    response = engine.search(photo, k=5, face_crop=True)
    assert response.face_count >= 1 and response.face_box is not None
    assert response.variant == "face"
    assert ids(response) == set(FACE_IDS)  # the face index holds only the paintings with faces
    assert response.match_basis.startswith("visual similarity only")
    whole = engine.search(photo, k=5)
    assert whole.variant == "full" and whole.face_count is None
    for oid in FACE_IDS:  # a painting's own file: same crop box, same face vector -> itself first
        own = engine.search(image_of(engine, oid), k=2, face_crop=True)
        assert own.variant == "face" and own[0].objectid == oid and own[0].cosine > 0.9999


def test_face_crop_without_a_face_falls_back_to_the_whole_image(engine):
    response = engine.search(image_of(engine, 106), k=3, face_crop=True)
    assert response.face_count == 0 and response.variant == "full"
    assert any("no face found" in note for note in response.notes)
    assert response[0].objectid == 106


def test_face_crop_for_objectid_queries(engine):
    with_face = engine.search(102, k=2, face_crop=True, include_self=True)
    assert with_face.variant == "face" and with_face[0].objectid == 102
    assert engine.search(102, k=2, face_crop=True)[0].objectid == 101  # the other face, not itself
    without = engine.search(103, k=2, face_crop=True, include_self=True)
    assert without.variant == "full" and without[0].objectid == 103
    assert any("no face vector" in note for note in without.notes)


# ----------------------------------------------------------------------------- errors


def test_bad_queries_raise_query_errors_naming_the_input(engine, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    truncated = tmp_path / "broken.jpg"
    truncated.write_bytes(image_of(engine, 101).read_bytes()[:40])
    cases = {
        str(tmp_path / "missing.jpg"): "no such file",
        str(text): "not a readable image",
        999999: "999999",
        "424242": "not in the collection",
        str(tmp_path): "directory",
    }
    for query, expected in cases.items():
        with pytest.raises(QueryError, match=expected) as info:
            engine.search(query)
        assert str(query) in str(info.value)
    with pytest.raises(QueryError, match="broken.jpg"):
        engine.search(truncated)
    with pytest.raises(QueryError, match="bytes") as info:
        engine.search(b"definitely not a jpeg")
    assert "not an image file we can read" in str(info.value) and "Error" not in str(info.value)  # words, no class
    with pytest.raises(QueryError, match="k must be"):
        engine.search(101, k=0)


def test_a_lake_without_an_index_is_a_clear_error(tmp_path, lake_settings):
    with pytest.raises(IndexNotBuiltError, match="artsim run"):
        SearchEngine.from_settings(lake_settings.with_overrides(data_lake=tmp_path / "empty"))


def test_default_models_differing_from_the_index_use_the_index_models(lake_settings, engine):
    # regression: `artsim search` after a run failed unless ARTSIM_MODELS named the index's models
    defaults = Settings().models
    assert set(defaults) != set(lake_settings.models)
    other = SearchEngine.from_settings(lake_settings.with_overrides(models=defaults), preload_models=False)
    try:
        assert other.model_names == ("efficientnet_lite0",)
        assert len(other.notes) == 1
        assert "efficientnet_lite0" in other.notes[0] and ",".join(defaults) in other.notes[0]
        path = image_of(other, 109)
        response = other.search(path, k=3)
        assert [m.name for m in other.models] == ["efficientnet_lite0"]
        assert response[0].objectid == 109 and response[0].cosine > 0.9999
        assert other.search(104, k=2, include_self=True)[0].objectid == 104
    finally:
        other.close()
    assert engine.notes == []  # the settings name the index's models: nothing to say


def test_explicit_models_must_match_the_index(lake_settings):
    wrong = lake_settings.with_overrides(models=("mobilenet_v2",))
    with pytest.raises(QueryError, match="ARTSIM_MODELS") as info:
        SearchEngine.from_settings(wrong, models_explicit=True, preload_models=False)
    assert "efficientnet_lite0" in str(info.value) and "mobilenet_v2" in str(info.value)
    with pytest.raises(QueryError, match="mobilenet_v2"):
        SearchEngine(lake_settings.data_lake, ["mobilenet_v2"], preload_models=False)
    same = SearchEngine.from_settings(lake_settings, models_explicit=True, preload_models=False)
    assert same.model_names == ("efficientnet_lite0",) and same.notes == []
    same.close()


def test_models_set_in_env():
    assert models_set_in_env({"ARTSIM_MODELS": "resnet101"})
    assert not models_set_in_env({"ARTSIM_MODELS": "  "})
    assert not models_set_in_env({})


# ----------------------------------------------------------------------------- grid


def test_grid_png(engine, tmp_path):
    response = engine.search(101, k=4)
    target = save_grid(image_of(engine, 101), response, tmp_path / "out" / "grid.png",
                       query_caption="objectid 101", face_box=(10, 10, 60, 60))
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(target) as image:
        assert image.size[0] > 500 and image.size[1] > 200
    # a missing result image is a placeholder, bytes / PIL queries work
    missing = response[1].__class__(**{**response[1].as_dict(), "image_path": str(tmp_path / "gone.jpg")})
    save_grid(image_of(engine, 101).read_bytes(), [response[0], missing], tmp_path / "g2.png")
    save_grid(Image.new("RGB", (50, 40)), [], tmp_path / "g3.png")
    assert (tmp_path / "g2.png").stat().st_size > 0 and (tmp_path / "g3.png").stat().st_size > 0
    assert not list((tmp_path / "out").glob(".*.tmp"))


# ----------------------------------------------------------------------------- index generations (fast, no pipeline)


def _tiny_lake(root: Path, objectids: list[int]):
    """A catalog of ``objectids`` and nothing else (no index yet)."""
    import duckdb
    import pandas as pd

    from artsim_pipeline.core.lake import DataLake

    lake = DataLake(root)
    root.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({"objectid": objectids, "uuid": [f"u{o}" for o in objectids],
                          "title": [f"T{o}" for o in objectids], "artist": "A", "artist_key": "a", "style": "S",
                          "beginyear": 1600, "endyear": 1600, "displaydate": "1600", "medium": "oil"})
    with duckdb.connect(str(lake.catalog_db)) as con:
        con.register("frame", frame)
        con.execute("CREATE TABLE filtered_paintings AS SELECT * FROM frame")
    return lake


def _publish(lake, objectids: list[int], seed: int, n_components: int):
    import numpy as np

    from artsim_pipeline.core.fusion import fit_fusion, transform
    from artsim_pipeline.core.generations import publish_generation
    from artsim_pipeline.core.index import build_index

    rng = np.random.default_rng(seed)
    raw = {"m1": rng.standard_normal((len(objectids), 10)), "m2": rng.standard_normal((len(objectids), 5))}
    fusion = fit_fusion(raw, n_components=n_components)
    bundle = build_index(transform(fusion, raw), np.array(objectids))
    return publish_generation(lake, {"full": (fusion, bundle)}).generation, raw


def test_engine_serves_one_generation_and_keeps_it_across_a_swap(tmp_path):
    ids = list(range(1, 21))
    lake = _tiny_lake(tmp_path / "lake", ids)
    with pytest.raises(IndexNotBuiltError, match="artsim run"):
        SearchEngine(lake.root, device="cpu", preload_models=False)
    # the pre-generation layout alone is not served (its fusion and index were never swapped together)
    (lake.index_dir / "full").mkdir(parents=True)
    (lake.index_dir / "fusion_full.npz").write_bytes(b"")
    with pytest.raises(IndexNotBuiltError, match="no search index.*artsim run"):
        SearchEngine(lake.root, device="cpu", preload_models=False)

    gen_a, _ = _publish(lake, ids, seed=1, n_components=6)
    engine_a = SearchEngine(lake.root, device="cpu", preload_models=False)
    assert engine_a.generation == gen_a and engine_a.model_names == ("m1", "m2")
    assert "face" not in engine_a.variants
    gen_b, _ = _publish(lake, ids[:15], seed=2, n_components=4)
    engine_b = SearchEngine(lake.root, device="cpu", preload_models=False)
    try:
        assert engine_b.generation == gen_b != gen_a
        full = engine_b.variants["full"]
        assert full.fusion.output_dim == full.bundle.index.d == 4 and sorted(full.ids) == ids[:15]
        # the engine that resolved A keeps answering from A, whole
        assert engine_a.variants["full"].bundle.index.d == engine_a.variants["full"].fusion.output_dim == 6
        for oid in (3, 18):
            top = engine_a.search(oid, k=3, include_self=True)[0]
            assert top.objectid == oid and top.cosine == pytest.approx(1.0, abs=1e-5)
        assert engine_b.search(3, k=2, include_self=True)[0].objectid == 3
        assert engine_b.calibration is None  # published without a calibration: no verdict, a note says so
        response = engine_b.search(3, k=2)
        assert 3 not in {r.objectid for r in response} and response.identification is None
    finally:
        engine_a.close()
        engine_b.close()


# ----------------------------------------------------------------------------- identification


def test_the_lake_s_generation_carries_a_verified_identification_calibration(engine):
    calibration = engine.calibration
    assert calibration is not None and engine.calibration_note is None
    assert calibration.stats["photos"] == 2 * len(PAINTINGS)  # every painting of this small lake, two photos each
    assert calibration.stats["false_rate"] <= 0.01 and 0 < calibration.stats["recall"] <= 1


def test_a_photo_of_a_member_is_identified_and_a_painting_left_out_is_not(engine):
    for oid in (104, 109, 113):
        exact = engine.search(image_of(engine, oid), k=3)
        assert exact.identification["verdict"] == "identified"
        assert exact.identified["objectid"] == oid and exact.identified["title"] == engine._rows[oid]["title"]
        assert exact.identified["attribution"] == engine._rows[oid]["artist"]
        assert 0.5 < exact.identified["confidence"] <= 1.0
        assert exact.identification["confidence"] == exact.identified["confidence"]
        assert set(exact.identification) >= {"verdict", "score", "threshold", "confidence", "method"}
        assert f"This is {engine._rows[oid]['title']} — " in format_results(exact)
        vector = engine.embed(image_of(engine, oid))
        assert engine.identify_views([vector])["identified"]["objectid"] == oid
        # the same photo with its painting left out of the index: a painting that is not in the collection
        left_out = engine.identify_views([vector], exclude=oid)
        assert left_out["identified"] is None and left_out["identification"]["verdict"] == "not_in_collection"
        assert left_out["identification"]["score"] < left_out["identification"]["threshold"]
        assert left_out["identification"]["closest_objectid"] != oid


def test_a_photo_of_something_else_is_not_in_the_collection(engine):
    from skimage import data

    response = engine.search(Image.fromarray(data.coffee()), k=3)
    assert response.identified is None and response.identification["verdict"] == "not_in_collection"
    assert format_results(response).splitlines()[1].startswith("Not in the collection (closest: ")
