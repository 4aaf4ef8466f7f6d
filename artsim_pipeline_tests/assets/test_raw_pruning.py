"""Issue 32 #8 (fault matrix): ``raw/<version>/`` keeps the last ``ARTSIM_RAW_KEEP`` NGA snapshots.

The catalog assets through Dagster's ``materialize()`` over a local NGA-like mirror that changes five
times; ``artsim status`` (its ``lake_status``) says how many are kept.
"""

import os

from dagster import materialize

from artsim_pipeline.config import Settings
from artsim_pipeline.core.lake import DataLake
from artsim_pipeline.core.status import format_status, lake_status
from artsim_pipeline.definitions import build_assets
from artsim_pipeline.resources import build_resources
from artsim_pipeline_tests.nga_fixtures import Painting, write_mirror

CATALOG = ["raw_objects", "filtered_paintings"]


def _versions(lake: DataLake) -> set[str]:
    return {d.name for d in (lake.root / "raw").iterdir() if d.is_dir() and d.name.startswith("v")}


def test_raw_keeps_the_last_snapshots_and_status_says_so(tmp_path, instance):
    settings = Settings(nga_source=str(tmp_path / "mirror"), data_lake=tmp_path / "lake", limit=0, min_side=64,
                        batch_size=4, raw_keep=2, max_shrink=1.0)
    lake = DataLake(settings.data_lake)
    seen = []
    for release in range(5):  # NGA publishes five times: one more painting, a new title each time
        paintings = [Painting(i, title=f"Painting {i} r{release}", width=128, height=96) for i in range(1, 4 + release)]
        write_mirror(tmp_path / "mirror", paintings, with_images=False)
        result = materialize(build_assets(settings), selection=CATALOG, resources=build_resources(settings),
                             instance=instance)
        assert result.success
        seen.append(result.asset_materializations_for_node("raw_objects")[0].metadata["source_version"].value)
        assert _versions(lake) == set(seen[-2:]), release  # the newest two, the loaded one among them
    assert len(set(seen)) == 5

    # the source goes back to an old release (its snapshot was pruned): downloaded again, two kept
    (lake.root / "raw" / "stray").mkdir()  # not a snapshot: left alone
    paintings = [Painting(i, title=f"Painting {i} r0", width=128, height=96) for i in range(1, 4)]
    write_mirror(tmp_path / "mirror", paintings, with_images=False)
    assert materialize(build_assets(settings), selection=CATALOG, resources=build_resources(settings),
                       instance=instance).success
    assert _versions(lake) == {seen[0], seen[4]} and (lake.root / "raw" / "stray").is_dir()
    assert all((lake.raw_dir(v) / "objects.csv").is_file() for v in (seen[0], seen[4]))

    status = lake_status(lake, raw_keep=settings.raw_keep)
    assert status["raw"] == {"snapshots": 2, "keep": 2}
    assert "2 NGA snapshot(s) in raw/, the newest 2 kept (ARTSIM_RAW_KEEP)" in format_status(status)
    assert not [p for p in (lake.root / "raw").rglob("*") if p.name.endswith(".tmp")], os.listdir(lake.root / "raw")
