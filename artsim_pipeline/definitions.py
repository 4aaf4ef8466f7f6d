"""The artsim code location: assets, checks, resources, jobs and automation, assembled (nothing computed here).

Settings that shape the graph or what assets compute (models, sizes, thresholds, the data lake) are read
once, from the ``ARTSIM_*`` environment, when the code location loads. Runs use the in-process executor
by default: every step of a run is sequential anyway (a batch's steps depend on each other, and torch
already uses every core), so a subprocess per step would only add start-up time; parallelism comes from
running several runs at once (several batches, a backfill, the queued run coordinator).
``ARTSIM_EXECUTOR`` selects multiprocess, Celery or Kubernetes instead (:mod:`.deploy.executors`).
"""

from dagster import AssetSelection, Definitions, define_asset_job

from .automation import artsim_automation, artsim_run_health
from .config import Settings
from .deploy.executors import executor_for
from .resources import build_resources

CATALOG_ASSETS = ("raw_objects", "filtered_paintings")
VIEW_ASSETS = ("batch_views",)  # in the catalog group (it writes catalog.duckdb), run with the collection
BATCH_ASSETS_GROUPS = ("images", "embeddings")
COLLECTION_GROUPS = ("index", "evaluation")

catalog_job = define_asset_job(
    "artsim_catalog", selection=AssetSelection.assets(*CATALOG_ASSETS),
    description="Reload the NGA CSVs into DuckDB, rebuild filtered_paintings and record every batch's version.",
)
observe_job = define_asset_job(
    "artsim_observe_nga", selection=AssetSelection.assets("nga_opendata"),
    description="Check NGA opendata for a new version (conditional requests).",
)
batch_job = define_asset_job(
    "artsim_batch", selection=AssetSelection.groups(*BATCH_ASSETS_GROUPS),
    description="One image batch: image cache, face crops, embeddings.",
)
collection_job = define_asset_job(
    "artsim_collection", selection=AssetSelection.groups(*COLLECTION_GROUPS) | AssetSelection.assets(*VIEW_ASSETS),
    description="Fusion (PCA), FAISS index, collection map and evaluation report over every batch; the catalog's "
    "views over the batch files.",
)
JOBS = [observe_job, catalog_job, batch_job, collection_job]


def build_assets(settings: Settings) -> list:
    """Every asset and check for ``settings`` (one embeddings asset per selected model)."""
    from .assets.catalog import catalog_assets
    from .assets.collection_map import collection_map_assets
    from .assets.embeddings import embeddings_assets
    from .assets.evaluation import evaluation_assets
    from .assets.images import image_assets
    from .assets.index import index_assets

    embeddings = embeddings_assets(settings)
    index = index_assets(settings, embeddings)
    return [*catalog_assets(settings), *image_assets(settings), *embeddings, *index,
            *evaluation_assets(settings), *collection_map_assets(settings)]


def build_definitions(settings: Settings | None = None) -> Definitions:
    """Definitions for ``settings`` (default: from the ``ARTSIM_*`` environment)."""
    settings = settings or Settings.from_env()
    return Definitions(
        assets=build_assets(settings),
        resources=build_resources(settings),
        jobs=JOBS,
        sensors=[artsim_automation, artsim_run_health],
        executor=executor_for(settings.executor),
    )


defs = build_definitions()
