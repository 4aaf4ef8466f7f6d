"""Dagster resources: artsim's run-time knobs, the NGA source and the DuckDB catalog.

Settings that change what an asset computes (models, sizes, thresholds, the data lake, ...) are fixed
when the code location loads and are part of the assets' code versions (:mod:`.code_versions`); the
launchpad cannot change them, so it cannot put the graph in a state its assets can't serve. What the
launchpad may change lives here: knobs that only change how fast or where work runs.
"""

from __future__ import annotations

import typing

from dagster import ConfigurableResource
from dagster_duckdb import DuckDBResource

from .config import Settings, names_with_role
from .core.http import HttpClient
from .core.nga_source import NgaSource
from .core.lake import lake_for

__all__ = ["ArtsimRuntimeResource", "NgaSourceResource", "build_resources", "lake_for"]  # lake_for: assets open the lake through it

_DEFAULTS = Settings()

#: The run-time settings (role ``runtime`` in :mod:`.config`): the ``artsim`` resource's fields.
RUNTIME_FIELDS = names_with_role("runtime")


class _RuntimeMethods:
    @classmethod
    def from_settings(cls, settings: Settings) -> "ArtsimRuntimeResource":
        values = settings.as_dict()
        return cls(**{name: values[name] for name in RUNTIME_FIELDS})

    def apply(self, settings: Settings) -> Settings:
        """``settings`` (fixed at load) with this run's knobs; validated, so a bad launchpad value is named."""
        return settings.with_overrides(**{name: getattr(self, name) for name in RUNTIME_FIELDS})


def _runtime_resource() -> type:
    """``ArtsimRuntimeResource``: one field per run-time setting, typed and defaulted from its declaration."""
    hints = typing.get_type_hints(Settings)
    namespace: dict[str, object] = {
        "__annotations__": {name: hints[name] for name in RUNTIME_FIELDS},
        "__module__": __name__,
        "__doc__": "Run-time knobs (README \"Configuration\", role ``runtime``): none of them changes an asset's output.",
        **{name: getattr(_DEFAULTS, name) for name in RUNTIME_FIELDS},
    }
    return type("ArtsimRuntimeResource", (_RuntimeMethods, ConfigurableResource), namespace)


ArtsimRuntimeResource = _runtime_resource()


class NgaSourceResource(ConfigurableResource):
    """NGA opendata: a base URL (``<base>/data/<file>.csv``) or a local mirror directory.

    Its HTTP timeout and retries are the run's (the ``artsim`` resource), so a launchpad change reaches it.
    """

    location: str = _DEFAULTS.nga_source
    backoff_base_s: float = 0.5

    @classmethod
    def from_settings(cls, settings: Settings) -> "NgaSourceResource":
        return cls(location=settings.nga_source)

    def source(self, runtime: "ArtsimRuntimeResource") -> NgaSource:
        client = HttpClient(timeout_s=runtime.http_timeout_s, retries=runtime.http_retries,
                            backoff_base_s=self.backoff_base_s)
        return NgaSource(self.location, client)


def build_resources(settings: Settings) -> dict[str, object]:
    """The resource dict used by ``Definitions``, ``artsim run`` and tests."""
    return {
        "artsim": ArtsimRuntimeResource.from_settings(settings),
        "nga_source": NgaSourceResource.from_settings(settings),
        "duckdb": DuckDBResource(database=str(lake_for(settings).catalog_db)),
    }
