"""One search engine as the server serves it (:class:`Served`): its generation, whether image search is
ready, and what is computed once per served engine (the catalog's text for lookups, the filters' facets,
the catalog's content hash)."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any

from ..core.catalog_text import CatalogText, facets
from ..core.search import SearchEngine
from .catalog_watch import catalog_version


@dataclass
class Served:
    """One engine, as served: searches on it run concurrently (see :class:`~artsim_pipeline.web.gate.QueryGate` for uploads)."""

    engine: SearchEngine
    loaded_at: float = field(default_factory=time.time)
    #: image search: ``ready`` (models loaded), ``loading`` (in the background; uploads wait) or ``failed``
    image_search: str = "ready"
    image_search_error: str | None = None

    @property
    def generation(self) -> str | None:
        return self.engine.generation

    @functools.cached_property
    def catalog_text(self) -> CatalogText:
        """The catalog's text folded for lookups by title or artist (:mod:`~artsim_pipeline.core.catalog_text`):
        computed once per served generation, not on every lookup."""
        return CatalogText(self.engine.catalog)

    @functools.cached_property
    def facets(self) -> dict[str, Any]:
        """What the search filters can offer on this catalog, with counts
        (:func:`~artsim_pipeline.core.catalog_text.facets`)."""
        return facets(self.engine.catalog)

    @functools.cached_property
    def catalog_version(self) -> str:
        """Content hash of the catalog this engine answers from (:mod:`~artsim_pipeline.web.catalog_watch`)."""
        return catalog_version(self.engine.catalog)

