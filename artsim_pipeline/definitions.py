"""The artsim code location: assets, checks, resources, partitions and automation, assembled (nothing computed here)."""

from dagster import Definitions, load_asset_checks_from_modules, load_assets_from_modules

from .assets import catalog as catalog_assets
from .assets import images as image_assets
from .assets.embeddings import embeddings_assets
from .assets.evaluation import evaluation_assets
from .assets.index import index_assets
from .automation import build_refresh_schedule, catalog_refresh_job, image_batch_sensor, nga_update_sensor
from .config import Settings
from .resources import build_resources

STATIC_ASSET_MODULES = [catalog_assets, image_assets]


def build_assets(settings: Settings) -> list:
    """Every asset for ``settings`` (one embeddings asset per selected model)."""
    embeddings = embeddings_assets(settings)
    index = index_assets(settings, embeddings)
    return [*load_assets_from_modules(STATIC_ASSET_MODULES), *embeddings, *index, *evaluation_assets(settings, index)]


def build_asset_checks(settings: Settings) -> list:
    return list(load_asset_checks_from_modules(STATIC_ASSET_MODULES))


def build_definitions(settings: Settings | None = None) -> Definitions:
    """Definitions for ``settings`` (default: from the ``ARTSIM_*`` environment)."""
    settings = settings or Settings.from_env()
    return Definitions(
        assets=build_assets(settings),
        asset_checks=build_asset_checks(settings),
        resources=build_resources(settings),
        jobs=[catalog_refresh_job],
        schedules=[build_refresh_schedule(settings)],
        sensors=[nga_update_sensor, image_batch_sensor],
    )


defs = build_definitions()
