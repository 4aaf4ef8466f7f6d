"""The former name of :mod:`~artsim_pipeline.core.search_loaders` (what the search engine loads once), kept
only for the benchmark modules that still import it; new code imports ``search_loaders``."""

from __future__ import annotations

from .search_loaders import CATALOG_COLUMNS, load_catalog, load_variants

__all__ = ["CATALOG_COLUMNS", "load_catalog", "load_variants"]
