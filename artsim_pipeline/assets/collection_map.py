"""``collection_map``: a 2-D layout (openTSNE) of the served index's vectors, for the web page's map.

Reads the generation ``faiss_index`` published (so the map always matches what search serves) and
writes ``tables/collection_map.parquet`` (objectid, x, y; the generation id, its fit id and the
normalisation map in the schema metadata; see :mod:`artsim_pipeline.core.layout`). While the index
keeps its fit, new paintings are placed into the stored map; after a refit it is laid out from
scratch (the rule: :mod:`artsim_pipeline.core.layout_refresh`). The materialization reports ``mode``
(``full``/``placed``), ``placed``, ``reason``, ``seconds``, the number of named ``regions``
(:mod:`artsim_pipeline.core.map_regions`, stored with the map) and the ``noise_share`` in none.
"""

import hashlib

from dagster import AssetExecutionContext, AssetsDefinition, DataVersion, MaterializeResult, MetadataValue, asset

from ..automation import COLLECTION
from ..code_versions import code_version
from ..config import Settings
from ..core.generations import NoGenerationError, load_generation
from ..core.layout_refresh import refresh_collection_map
from ..resources import lake_for
from .common import OWNERS, lake_path

LAYOUT_SEED = 0


def collection_map_assets(settings: Settings) -> list[AssetsDefinition]:
    """``collection_map``, downstream of ``faiss_index``."""
    lake = lake_for(settings)

    @asset(
        deps=["faiss_index"],
        code_version=code_version("collection_map", settings),
        group_name="index",
        kinds={"sklearn", "parquet"},
        owners=OWNERS,
        automation_condition=COLLECTION,
        description="2-D map of the collection (PCA then openTSNE of the served index's vectors; new paintings "
        "placed into the stored map while the index keeps its fit), drawn by `artsim serve` at /map. "
        "Written to `tables/collection_map.parquet` (objectid, x, y, region; the named regions in its metadata).",
    )
    def collection_map(context: AssetExecutionContext) -> MaterializeResult:
        try:
            generation = load_generation(lake)
        except NoGenerationError:
            context.log.warning("no index generation yet: no map")
            return MaterializeResult(metadata={"paintings": MetadataValue.int(0)}, data_version=DataVersion("none"))
        done = refresh_collection_map(lake, generation, seed=LAYOUT_SEED)
        context.log.info(f"collection map: {done.mode} ({done.reason}), {len(done.frame)} paintings "
                         f"in {len(done.regions)} regions in {done.seconds} s")
        digest = hashlib.sha256(done.frame.round(6).to_csv(index=False).encode()).hexdigest()[:16]
        return MaterializeResult(
            metadata={
                "paintings": MetadataValue.int(len(done.frame)),
                "generation": done.generation,
                "fit_id": done.fit_id,
                "mode": done.mode,
                "placed": MetadataValue.int(done.placed),
                "reason": done.reason,
                "parquet": lake_path(lake, lake.collection_map_path),
                "seconds": MetadataValue.float(done.seconds),
                "regions": MetadataValue.int(len(done.regions)),
                "noise_share": MetadataValue.float(round(done.noise_share, 4)),
                "region_labels": MetadataValue.md("\n".join(
                    f"- {r['label']} ({r['size']})" for r in done.regions[:40]) or "none"),
            },
            data_version=DataVersion(digest),
        )

    return [collection_map]
