"""One artist label (issue 21 #1): the catalog stores ``artist_key`` once, with the rule the evaluation
uses (:func:`~artsim_pipeline.core.scoring.normalize_artist`), and the learned head, the evaluation and
the search filter read that same column; the held-out split is one function."""

from __future__ import annotations

from dagster import materialize

from artsim_pipeline.config import Settings
from artsim_pipeline.core.evaluation.protocol import ItemMeta
from artsim_pipeline.core.head import heldout_artists
from artsim_pipeline.core.scoring import normalize_artist
from artsim_pipeline.core.storage import read_parquet
from artsim_pipeline.core.lake import DataLake
from artsim_pipeline.definitions import build_assets
from artsim_pipeline.resources import build_resources
from artsim_pipeline_tests.nga_fixtures import Painting, write_mirror

NAMES = ["Jan Steen", "Attributed to Jan Steen", "Workshop of Jan Steen", "Circle of Rembrandt van Rijn",
         "Rembrandt van Rijn", "Diego Velázquez", "Diego Velazquez and Workshop"]


def test_attributed_to_x_and_x_are_one_artist_for_training_evaluation_and_search(tmp_path, instance):
    # attribution only (no constituent record): the catalog's artist is the attribution text itself
    mirror = write_mirror(tmp_path / "mirror", [Painting(i + 1, attribution=name) for i, name in enumerate(NAMES)],
                          with_images=False)
    settings = Settings(nga_source=str(mirror), data_lake=tmp_path / "lake", limit=0, batch_size=4)
    materialize(build_assets(settings), selection=["raw_objects", "filtered_paintings"],
                resources=build_resources(settings), instance=instance)
    catalog = read_parquet(DataLake(tmp_path / "lake").filtered_paintings_parquet)
    keys = dict(zip(catalog["objectid"], catalog["artist_key"]))
    assert keys == {1: "jan steen", 2: "jan steen", 3: "jan steen", 4: "rembrandt van rijn", 5: "rembrandt van rijn",
                    6: "diego velazquez", 7: "diego velazquez"}
    # what the learned head trains on (the stored key) is what the evaluation measures with
    meta = ItemMeta.from_catalog(catalog["objectid"].to_numpy(), catalog)
    assert meta.artist_keys == [keys[o] for o in catalog["objectid"]]
    assert all(normalize_artist(k) == k for k in keys.values())  # the stored label is a fixed point of the rule
    # one split rule: 3 splittable artists, a third held out -> 1 artist, the same for everyone
    assert len(heldout_artists(list(keys.values()), seed=0)) == 1
