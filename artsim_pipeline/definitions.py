"""The artsim code location: assets, checks, resources and partitions, assembled (nothing computed here)."""

from __future__ import annotations

from dagster import Definitions, load_asset_checks_from_modules, load_assets_from_modules

from .assets import catalog as catalog_assets
from .config import Settings
from .resources import build_resources

ASSET_MODULES = [catalog_assets]

all_assets = load_assets_from_modules(ASSET_MODULES)
all_asset_checks = load_asset_checks_from_modules(ASSET_MODULES)


def build_definitions(settings: Settings | None = None) -> Definitions:
    """Definitions for ``settings`` (default: from the ``ARTSIM_*`` environment)."""
    settings = settings or Settings.from_env()
    return Definitions(
        assets=all_assets,
        asset_checks=all_asset_checks,
        resources=build_resources(settings),
    )


defs = build_definitions()
