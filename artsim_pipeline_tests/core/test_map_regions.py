"""Named regions of the collection map (core/map_regions.py, and their refresh in core/layout_refresh.py):
HDBSCAN on the layout, names from the catalog, stability across an incremental placement."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from artsim_pipeline.bench.layout import clustered_vectors
from artsim_pipeline.core.fusion import fit_fusion, transform
from artsim_pipeline.core.generations import load_generation, publish_generation
from artsim_pipeline.core.index import build_index
from artsim_pipeline.core.lake import DataLake
from artsim_pipeline.core.layout import ATTRS_KEY, load_layout
from artsim_pipeline.core.layout_refresh import refresh_collection_map
from artsim_pipeline.core.map_regions import (NOISE, carry_regions, describe_regions, fit_regions, noise_share,
                                              period, region_label)
from artsim_pipeline.core.search_loaders import CATALOG_COLUMNS

CENTRES = np.array([[0.2, 0.2], [0.8, 0.25], [0.5, 0.8]])
PAINTERS = [("Claude Monet", "Impressionism", "oil on canvas", 1872),
            ("Rembrandt van Rijn", "Baroque", "Oil on panel", 1631),
            ("Mary Cassatt", "Impressionism", "pastel on paper", 1880)]


def blobs(n_per: int, seed: int = 0, first_id: int = 1) -> pd.DataFrame:
    """Three well separated round clusters of ``n_per`` points each, plus 5 % uniform scatter."""
    rng = np.random.default_rng(seed)
    xy = np.concatenate([c + rng.normal(0, 0.03, (n_per, 2)) for c in CENTRES])
    truth = np.repeat(np.arange(3), n_per)
    scatter = rng.random((len(xy) // 20, 2))
    xy, truth = np.concatenate([xy, scatter]), np.concatenate([truth, np.full(len(scatter), -1)])
    frame = pd.DataFrame({"objectid": np.arange(len(xy), dtype=np.int64) + first_id, "x": xy[:, 0], "y": xy[:, 1]})
    frame.attrs["truth"] = truth
    return frame


def catalog_for(frame: pd.DataFrame) -> pd.DataFrame:
    """A catalog whose blob k was painted by PAINTERS[k], a decade apart each; the scatter by nobody known."""
    rows = []
    for oid, truth in zip(frame["objectid"], frame.attrs["truth"]):
        artist, style, medium, year = PAINTERS[truth] if truth >= 0 else ("Anonymous", None, "tempera", 1500)
        rows.append({"objectid": int(oid), "uuid": f"u{oid}", "title": f"Painting {oid}", "artist": artist,
                     "artist_key": artist.lower(), "style": style, "beginyear": year + int(oid) % 30,
                     "endyear": year, "displaydate": str(year), "medium": medium})
    return pd.DataFrame(rows, columns=list(CATALOG_COLUMNS)).set_index("objectid", drop=False)


def test_regions_are_the_map_islands_largest_first_and_deterministic():
    frame = blobs(200)
    regions = fit_regions(frame)
    truth = frame.attrs["truth"]
    assert sorted(set(regions) - {NOISE}) == [0, 1, 2]
    for k in range(3):  # each blob is one region, almost all of it
        found, counts = np.unique(regions[truth == k], return_counts=True)
        assert found[np.argmax(counts)] >= 0 and counts.max() >= 0.9 * 200
    assert 0.0 < noise_share(regions) < 0.15
    assert np.array_equal(fit_regions(frame.sample(frac=1.0, random_state=3).sort_values("objectid")), regions)
    assert (fit_regions(blobs(3)) == NOISE).all()  # too few paintings for any region


def test_large_maps_cluster_a_sample_and_the_rest_vote():
    frame = blobs(800, seed=2)
    full = fit_regions(frame)
    sampled = fit_regions(frame, fit_sample=600)
    truth = frame.attrs["truth"]
    for k in range(3):  # the same three islands either way
        assert np.unique(sampled[truth == k], return_counts=True)[1].max() >= 0.9 * 800
    agree = pd.crosstab(full, sampled).to_numpy()
    assert agree.max(axis=1).sum() >= 0.9 * len(frame)


def test_names_come_from_the_members_catalog_rows():
    frame = blobs(120)
    frame["region"] = fit_regions(frame)
    regions = describe_regions(frame, catalog_for(frame))
    labels = {r["label"] for r in regions}
    assert labels == {"Claude Monet, 1870s–1890s, oil", "Rembrandt van Rijn, 1630s–1650s, oil",
                      "Mary Cassatt, 1880s–1900s, pastel"}, labels
    for r in regions:
        members = frame[frame["region"] == r["id"]]
        assert r["size"] == len(members) and len(r["representatives"]) == 4
        assert set(r["representatives"]) <= set(members["objectid"])
        reps = members.set_index("objectid").loc[r["representatives"], ["x", "y"]].to_numpy()
        assert np.linalg.norm(reps - np.array(r["centre"]), axis=1).max() < 0.02  # nearest the medoid
    # no catalog: numbered, not named
    assert [r["label"] for r in describe_regions(frame, None)] == ["region 1", "region 2", "region 3"]


def test_label_rules_for_mixed_members():
    two = pd.DataFrame({"artist": ["A"] * 5 + ["B"] * 4 + ["C", "D", "E"], "style": ["Rococo"] * 12,
                        "beginyear": [1750] * 12, "medium": ["oil on canvas"] * 12})
    assert region_label(two) == "A & B, 1750s, oil"
    many = two.assign(artist=list("ABCDEFGHIJKL"))
    assert region_label(many) == "Rococo, various artists, 1750s, oil"
    assert region_label(many.assign(style=None, beginyear=None, medium=None)) == "various artists"
    assert period(pd.Series([1500, 1510, 1600, 1890, 1900] * 4)) == "1500s–1900s"
    assert period(pd.Series([None, "n.d."])) is None


def test_new_paintings_join_the_region_of_their_nearest_kept_neighbours():
    frame = blobs(150, seed=4)
    frame["region"] = fit_regions(frame)
    rng = np.random.default_rng(9)
    new = pd.DataFrame({"objectid": np.arange(10_000, 10_030, dtype=np.int64),
                        "x": np.r_[CENTRES[1, 0] + rng.normal(0, 0.01, 29), 0.98],
                        "y": np.r_[CENTRES[1, 1] + rng.normal(0, 0.01, 29), 0.98]})
    grown = pd.concat([frame[["objectid", "x", "y"]].iloc[10:], new], ignore_index=True)  # 10 removed
    carried = carry_regions(frame, grown)
    old = grown["objectid"].isin(frame["objectid"]).to_numpy()
    before = frame.set_index("objectid")["region"]
    assert np.array_equal(carried[old], before.loc[grown["objectid"][old]].to_numpy())
    blob1 = int(pd.Series(before[frame.attrs["truth"] == 1]).mode()[0])
    assert (carried[~old][:29] == blob1).all()
    # the far corner: its nearest kept paintings (scatter) decide, whatever they are
    near = np.argsort(np.hypot(frame["x"].iloc[10:] - 0.98, frame["y"].iloc[10:] - 0.98).to_numpy())[:5]
    assert carried[~old][29] in set(frame["region"].iloc[10:].to_numpy()[near])
    # among noise: noise; a tie goes to the nearer region
    tiny = pd.DataFrame({"objectid": np.arange(8), "x": [.1, .11, .12, .9, .91, .92, .93, .5],
                         "y": [.1, .1, .1, .9, .9, .9, .9, .5], "region": [0, 0, 0, -1, -1, -1, -1, 1]})
    probe = pd.concat([tiny[["objectid", "x", "y"]], pd.DataFrame({"objectid": [100, 101], "x": [.915, .105],
                                                                    "y": [.9, .1]})], ignore_index=True)
    assert list(carry_regions(tiny, probe, k=3)[-2:]) == [NOISE, 0]
    with pytest.raises(ValueError, match="no regions"):
        carry_regions(frame[["objectid", "x", "y"]], grown)


def _publish(lake, fusion, raw, ids, fit):
    bundle = build_index(transform(fusion, {"m": raw}), ids, nlist=0)
    return publish_generation(lake, {"full": (fusion, bundle)}, extra={"fit": fit}).generation


def test_regions_survive_an_incremental_refresh_and_are_redone_on_a_refit(tmp_path):
    lake = DataLake(tmp_path)
    raw, labels = clustered_vectors(900, seed=11, dim=48)
    ids = np.arange(900, dtype=np.int64) + 100
    names = [("Claude Monet", "oil on canvas", 1870), ("Rembrandt van Rijn", "oil on panel", 1630)]
    catalog = pd.DataFrame([{"objectid": int(o), "uuid": f"u{o}", "title": f"T{o}", "artist": names[lab % 2][0],
                             "artist_key": "", "style": None, "beginyear": names[lab % 2][2], "endyear": None,
                             "displaydate": None, "medium": names[lab % 2][1]} for o, lab in zip(ids, labels)],
                           columns=list(CATALOG_COLUMNS))
    with duckdb.connect(str(lake.catalog_db)) as con:
        con.register("frame", catalog)
        con.execute("CREATE TABLE filtered_paintings AS SELECT * FROM frame")
    fusion = fit_fusion({"m": raw[:800]}, n_components=24)

    _publish(lake, fusion, raw[:800], ids[:800], fit={"mode": "full", "fit_id": "F1"})
    first = refresh_collection_map(lake, load_generation(lake))
    stored, _ = load_layout(lake.collection_map_path)
    assert first.mode == "full" and len(first.regions) >= 3 and 0 <= first.noise_share < 0.5
    assert stored.attrs[ATTRS_KEY]["regions"] == first.regions and "region" in stored.columns
    named = [r["label"] for r in first.regions]
    assert all(("Monet" in label or "Rembrandt" in label) and label.endswith(", oil") for label in named), named
    pure = [label in ("Claude Monet, 1870s, oil", "Rembrandt van Rijn, 1630s, oil") for label in named]
    assert np.mean(pure) >= 0.6, named  # most islands hold one painter's paintings

    # the same fit: 100 new paintings, 5 removed: the others keep their region, ids and names stay
    rows = np.r_[5:900]
    _publish(lake, fusion, raw[rows], ids[rows], fit={"mode": "incremental", "fit_id": "F1"})
    placed = refresh_collection_map(lake, load_generation(lake))
    assert placed.mode == "placed" and placed.placed == 100
    before = stored.set_index("objectid")["region"]
    after = placed.frame.set_index("objectid")["region"]
    kept = before.index.intersection(after.index)
    assert len(kept) == 795 and after.loc[kept].equals(before.loc[kept])
    assert [r["id"] for r in placed.regions] == [r["id"] for r in first.regions]
    assert [r["label"] for r in placed.regions] == [r["label"] for r in first.regions]
    new = after.drop(kept)
    assert (new >= 0).mean() >= 0.8  # new paintings of known clusters join a region
    # the new ones join the region most of their cluster-mates are in
    by_cluster = pd.Series(after.loc[kept].to_numpy(), index=labels[(kept - 100).to_numpy()]).groupby(level=0).agg(
        lambda s: s.mode()[0])
    joined = [after[o] == by_cluster[labels[o - 100]] for o in new.index if after[o] >= 0]
    assert np.mean(joined) >= 0.8

    # a refit: laid out and clustered from scratch, stored again
    _publish(lake, fit_fusion({"m": raw[rows]}, n_components=24), raw[rows], ids[rows],
             fit={"mode": "full", "fit_id": "F2"})
    refit = refresh_collection_map(lake, load_generation(lake))
    assert refit.mode == "full" and load_layout(lake.collection_map_path)[0].attrs[ATTRS_KEY]["regions"] == refit.regions
