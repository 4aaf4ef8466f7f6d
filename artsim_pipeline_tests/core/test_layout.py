"""The collection map's layout: from scratch, placing new paintings, and the refresh rule
(core/layout.py, core/layout_tsne.py, core/layout_refresh.py) on real openTSNE, FAISS and lake generations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from artsim_pipeline.bench.layout import clustered_vectors, knn_preservation, nearest_old_agreement
from artsim_pipeline.core.fusion import fit_fusion, transform
from artsim_pipeline.core.generations import load_generation, publish_generation
from artsim_pipeline.core.index import build_index
from artsim_pipeline.core.layout import (ATTRS_KEY, CannotPlace, compute_layout, load_layout, place_new,
                                         save_layout)
from artsim_pipeline.core.layout_refresh import generation_fit, refresh_collection_map
from artsim_pipeline.core.lake import DataLake

N = 1024
N_OLD = N - N // 16


@pytest.fixture(scope="module")
def data():
    x, labels = clustered_vectors(N, seed=5, dim=128)
    ids = np.arange(N, dtype=np.int64) * 3 + 10_000
    return x, ids, labels


@pytest.fixture(scope="module")
def fitted(data):
    """(from scratch on all, from scratch on the first 15/16, that one with the rest placed)."""
    x, ids, _ = data
    full = compute_layout(x, ids, seed=0)
    old = compute_layout(x[:N_OLD], ids[:N_OLD], seed=0)
    return full, old, place_new(old, x, ids, seed=0)


def _xy(frame: pd.DataFrame) -> np.ndarray:
    return frame[["x", "y"]].to_numpy()


def test_from_scratch_is_deterministic_order_free_and_normalised(data, fitted):
    x, ids, _ = data
    full = fitted[0]
    again = compute_layout(x[::-1], ids[::-1], seed=0)
    assert list(full["objectid"]) == sorted(ids) and np.array_equal(_xy(full), _xy(again))
    xy = _xy(full)
    assert xy.min() >= 0.0 and xy.max() <= 1.0 and np.isclose((xy.max(0) - xy.min(0)).max(), 1.0)
    other_seed = compute_layout(x[:300], ids[:300], seed=1)
    assert not np.allclose(_xy(other_seed), _xy(compute_layout(x[:300], ids[:300], seed=0)))
    # the stored map rebuilds the raw coordinates: scale * raw + offset = xy
    transform_ = full.attrs[ATTRS_KEY]["transform"]
    assert transform_["scale"] > 0 and len(transform_["offset"]) == 2


def test_placing_keeps_old_coordinates_and_is_deterministic(data, fitted):
    x, ids, _ = data
    _, old, placed = fitted
    assert list(placed["objectid"]) == sorted(ids)
    kept = placed.set_index("objectid").loc[old["objectid"]]
    assert np.array_equal(kept[["x", "y"]].to_numpy(), _xy(old))  # exactly, not approximately
    assert placed.attrs[ATTRS_KEY]["placed"] == N - N_OLD
    assert placed.attrs[ATTRS_KEY]["transform"] == old.attrs[ATTRS_KEY]["transform"]
    assert np.array_equal(_xy(place_new(old, x[::-1], ids[::-1], seed=0)), _xy(placed))
    xy = _xy(placed)
    assert xy.min() >= 0.0 and xy.max() <= 1.0


def test_placing_drops_removed_ids_and_replaces_changed_ones(data, fitted):
    x, ids, _ = data
    _, old, _ = fitted
    keep = np.ones(N, bool)
    keep[[3, 50, 700]] = False  # removed paintings (all old)
    changed_id = ids[10]
    x2 = x.copy()
    x2[10] = x[N - 1]  # re-embedded: now looks like the last (new) painting
    out = place_new(old, x2[keep], ids[keep], seed=0, changed=[changed_id])
    assert set(out["objectid"]) == set(ids[keep]) and not set(ids[[3, 50, 700]]) & set(out["objectid"])
    assert out.attrs[ATTRS_KEY]["placed"] == (N - N_OLD) + 1
    by_id = out.set_index("objectid")
    before = old.set_index("objectid")
    unchanged = [i for i in old["objectid"] if i in by_id.index and i != changed_id]
    assert np.array_equal(by_id.loc[unchanged].to_numpy(), before.loc[unchanged].to_numpy())
    assert not np.allclose(by_id.loc[changed_id].to_numpy(), before.loc[changed_id].to_numpy())
    # it lands beside the painting it now resembles
    assert np.linalg.norm(by_id.loc[changed_id].to_numpy() - by_id.loc[ids[N - 1]].to_numpy()) < 0.05


def test_placed_points_land_near_their_input_neighbours(data, fitted):
    x, ids, labels = data
    _, _, placed = fitted
    xy, old, new = _xy(placed), np.arange(N_OLD), np.arange(N_OLD, N)
    agreement = nearest_old_agreement(x, xy, old, new)
    assert agreement >= 0.8, agreement  # measured 0.92 (random placement: 0.0)
    nearest = old[np.argmin(((xy[new, None, :] - xy[None, old, :]) ** 2).sum(-1), axis=1)]
    assert np.mean(labels[nearest] == labels[new]) >= 0.95  # in the right cluster


def test_placement_quality_is_within_a_margin_of_from_scratch(data, fitted):
    x, _, _ = data
    full, _, placed = fitted
    sample = np.random.default_rng(0).choice(N, 500, replace=False)
    scratch = knn_preservation(x, _xy(full), sample)
    assert scratch >= 0.4, scratch  # the map keeps real neighbourhoods
    assert knn_preservation(x, _xy(placed), sample) >= scratch - 0.04
    assert knn_preservation(x, _xy(placed), np.arange(N_OLD, N)) >= scratch - 0.1  # measured: 0.73, 0.73, 0.69


def test_placing_refuses_without_a_normalisation_map_or_reference(data, fitted):
    x, ids, _ = data
    _, old, _ = fitted
    with pytest.raises(CannotPlace):
        place_new(pd.DataFrame(old[["objectid", "x", "y"]].to_dict("list")), x, ids)  # no attrs: no map
    few = old.iloc[:5]
    with pytest.raises(CannotPlace, match="only 5"):
        place_new(few, x, ids)


def test_saved_map_round_trips_and_extends_like_the_frame(tmp_path, data, fitted):
    x, ids, _ = data
    _, old, placed = fitted
    path = DataLake(tmp_path).collection_map_path
    save_layout(old, path, generation="gen-a", fit="fit-1")
    loaded, generation = load_layout(path)
    assert generation == "gen-a" and loaded.equals(old)
    assert loaded.attrs[ATTRS_KEY] == {"generation": "gen-a", "fit": "fit-1",
                                       "transform": old.attrs[ATTRS_KEY]["transform"], "regions": None}
    assert np.array_equal(_xy(place_new(loaded, x, ids, seed=0)), _xy(placed))


def _publish(lake, fusion, raw, ids, fit=None):
    bundle = build_index(transform(fusion, {"m": raw}), ids, nlist=0)
    return publish_generation(lake, {"full": (fusion, bundle)}, extra={"fit": fit} if fit else None).generation


def test_refresh_rule_places_under_the_same_fit_and_refits_otherwise(tmp_path):
    lake = DataLake(tmp_path)
    raw, _ = clustered_vectors(700, seed=9, dim=48)
    ids = np.arange(700, dtype=np.int64) + 500
    fusion = fit_fusion({"m": raw[:600]}, n_components=24)

    first = _publish(lake, fusion, raw[:600], ids[:600], fit={"mode": "full", "fit_id": "F1"})
    done = refresh_collection_map(lake, load_generation(lake))
    assert (done.mode, done.placed, done.fit_id, done.generation) == ("full", 0, "F1", first)
    stored, made_for = load_layout(lake.collection_map_path)
    assert made_for == first and stored.attrs[ATTRS_KEY]["fit"] == "F1"

    # same fit: 100 new paintings, one removed, one re-embedded
    raw2 = raw.copy()
    raw2[7] = raw[650]
    rows = np.r_[0, 2:700]  # painting 1 is gone
    _publish(lake, fusion, raw2[rows], ids[rows], fit={"mode": "incremental", "fit_id": "F1"})
    generation = load_generation(lake)
    assert generation_fit(generation) == ("incremental", "F1")
    done = refresh_collection_map(lake, generation)
    assert done.mode == "placed" and done.placed == 101, done
    out = done.frame.set_index("objectid")
    kept = [i for i in stored["objectid"] if i not in (ids[1], ids[7])]
    assert ids[1] not in out.index and len(out) == len(rows)
    assert np.array_equal(out.loc[kept].to_numpy(), stored.set_index("objectid").loc[kept].to_numpy())
    assert load_layout(lake.collection_map_path)[0].equals(done.frame)

    # the same generation again: nothing to place, nothing moves
    again = refresh_collection_map(lake, generation)
    assert again.mode == "placed" and again.placed == 0 and again.frame.equals(done.frame)

    # a refit: from scratch under the new fit id
    _publish(lake, fit_fusion({"m": raw2[rows]}, n_components=24), raw2[rows], ids[rows],
             fit={"mode": "full", "fit_id": "F2"})
    done = refresh_collection_map(lake, load_generation(lake))
    assert (done.mode, done.fit_id) == ("full", "F2")


def test_refresh_lays_out_from_scratch_without_fit_record_or_readable_map(tmp_path):
    lake = DataLake(tmp_path)
    raw, _ = clustered_vectors(300, seed=4, dim=32)
    ids = np.arange(300, dtype=np.int64) + 1
    fusion = fit_fusion({"m": raw}, n_components=16)
    plain = _publish(lake, fusion, raw[:250], ids[:250])
    generation = load_generation(lake)
    assert generation_fit(generation) == ("full", plain)  # no fit record: its own fit
    assert refresh_collection_map(lake, generation).mode == "full"
    _publish(lake, fusion, raw, ids, fit={"mode": "incremental", "fit_id": "elsewhere"})
    done = refresh_collection_map(lake, load_generation(lake))
    assert done.mode == "full" and "another fit" in done.reason
    _publish(lake, fusion, raw[:280], ids[:280], fit={"mode": "incremental", "fit_id": "elsewhere"})
    lake.collection_map_path.write_bytes(b"not a parquet file")
    done = refresh_collection_map(lake, load_generation(lake))
    assert done.mode == "full" and "unreadable" in done.reason and len(done.frame) == 280


def test_collection_map_asset_reports_mode_and_placed(tmp_path, instance):
    """The Dagster asset itself (``materialize``) over real generations: full, then placed."""
    from dagster import AssetKey, materialize

    from artsim_pipeline.assets.collection_map import collection_map_assets
    from artsim_pipeline.config import Settings

    settings = Settings(data_lake=tmp_path / "lake")
    lake = DataLake(tmp_path / "lake")
    raw, _ = clustered_vectors(320, seed=2, dim=32)
    ids = np.arange(320, dtype=np.int64) + 1
    fusion = fit_fusion({"m": raw[:300]}, n_components=16)
    assets = collection_map_assets(settings)

    def run() -> dict:
        assert materialize(assets, instance=instance).success
        event = instance.get_latest_materialization_event(AssetKey("collection_map"))
        return {k: v.value for k, v in event.asset_materialization.metadata.items()}

    first = _publish(lake, fusion, raw[:300], ids[:300], fit={"mode": "full", "fit_id": "F1"})
    meta = run()
    assert (meta["mode"], meta["placed"], meta["fit_id"], meta["generation"], meta["paintings"]) == \
        ("full", 0, "F1", first, 300)
    before = load_layout(lake.collection_map_path)[0].set_index("objectid")
    _publish(lake, fusion, raw, ids, fit={"mode": "incremental", "fit_id": "F1"})
    meta = run()
    assert (meta["mode"], meta["placed"], meta["paintings"]) == ("placed", 20, 320) and meta["seconds"] >= 0
    stored = load_layout(lake.collection_map_path)[0]
    assert meta["regions"] == len(stored.attrs[ATTRS_KEY]["regions"]) >= 1 and 0 <= meta["noise_share"] < 1
    assert meta["region_labels"].startswith("- region 1 (")  # no catalog in this lake: numbered, not named
    after = load_layout(lake.collection_map_path)[0].set_index("objectid")
    assert np.array_equal(after.loc[before.index].to_numpy(), before.to_numpy())


def test_neighbours_inverted_file_matches_exact_search_and_skips_self():
    """Above EXACT_KNN_MAX the layout's neighbours come from an inverted file: close to exact, no self rows."""
    import faiss

    from artsim_pipeline.core.layout_tsne import EXACT_KNN_MAX, Neighbours

    x, _ = clustered_vectors(EXACT_KNN_MAX + 3000, seed=1, dim=16)
    neighbours = Neighbours(x, seed=0)
    assert isinstance(neighbours.index, faiss.IndexIVFFlat)
    rows = np.arange(0, len(x), 97)
    found, distances = neighbours.query(x, 30, skip_self=True)  # the reference itself, in order
    assert found.shape == (len(x), 30) and not (found == np.arange(len(x))[:, None]).any()
    found, distances = found[rows], distances[rows]
    assert np.all(np.diff(distances, axis=1) >= -1e-6)  # nearest first
    exact = faiss.IndexFlatL2(x.shape[1])
    exact.add(x)
    _, truth = exact.search(x[rows], 31)
    recall = np.mean([len(set(a) & set(b[b != r])) / 30 for a, b, r in zip(found, truth, rows)])
    assert recall >= 0.95, recall
