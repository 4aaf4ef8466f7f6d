"""``collection_map``: a 2-D layout (t-SNE) of the served index's vectors, for the web page's map.

Reads the generation ``faiss_index`` published (so the map always matches what search serves) and
writes ``tables/collection_map.parquet`` (objectid, x, y; the generation id in the schema metadata).
"""

import hashlib
import time

from dagster import AssetExecutionContext, AssetsDefinition, DataVersion, MaterializeResult, MetadataValue, asset

from ..automation import COLLECTION
from ..config import Settings
from ..resources import lake_for
from .versions import code_version

LAYOUT_SEED = 0


def collection_map_assets(settings: Settings) -> list[AssetsDefinition]:
    """``collection_map``, downstream of ``faiss_index``."""
    lake = lake_for(settings)

    @asset(
        deps=["faiss_index"],
        code_version=code_version("collection_map", settings),
        group_name="index",
        automation_condition=COLLECTION,
        description="2-D map of the collection (PCA then t-SNE of the served index's vectors), drawn by "
        "`artsim serve` at /map. Written to `tables/collection_map.parquet` (objectid, x, y).",
    )
    def collection_map(context: AssetExecutionContext) -> MaterializeResult:
        from ..core.generations import NoGenerationError, load_generation
        from ..core.layout import bundle_layout, save_layout

        started = time.perf_counter()
        try:
            generation = load_generation(lake)
        except NoGenerationError:
            context.log.warning("no index generation yet: no map")
            return MaterializeResult(metadata={"paintings": MetadataValue.int(0)}, data_version=DataVersion("none"))
        frame = bundle_layout(generation.bundles["full"], seed=LAYOUT_SEED)
        save_layout(frame, lake.collection_map_path, generation=generation.id)
        digest = hashlib.sha256(frame.round(6).to_csv(index=False).encode()).hexdigest()[:16]
        return MaterializeResult(
            metadata={
                "paintings": MetadataValue.int(len(frame)),
                "generation": generation.id,
                "parquet": MetadataValue.path(str(lake.collection_map_path)),
                "seconds": MetadataValue.float(round(time.perf_counter() - started, 2)),
            },
            data_version=DataVersion(digest),
        )

    return [collection_map]
