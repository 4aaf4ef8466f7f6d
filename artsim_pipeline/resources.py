"""Dagster resources: artsim's run-time knobs, the NGA source and the DuckDB catalog.

Settings that change what an asset computes (models, sizes, thresholds, the data lake, ...) are fixed
when the code location loads and are part of the assets' code versions (:mod:`.assets.versions`); the
launchpad cannot change them, so it cannot put the graph in a state its assets can't serve. What the
launchpad may change lives here: knobs that only change how fast or where work runs.
"""

from __future__ import annotations

from dagster import ConfigurableResource
from dagster_duckdb import DuckDBResource

from .config import Settings
from .core.http import HttpClient
from .core.nga_source import NgaSource
from .core.storage import DataLake, lake_at

_DEFAULTS = Settings()

RUNTIME_FIELDS = (
    "download_workers", "requests_per_second", "http_timeout_s", "http_retries", "max_failure_share",
    "embed_batch_size", "device", "max_shrink", "refit_share", "refit_drift",
)


class ArtsimRuntimeResource(ConfigurableResource):
    """Run-time knobs (README "Configuration"): none of them changes an asset's output."""

    download_workers: int = _DEFAULTS.download_workers
    requests_per_second: float = _DEFAULTS.requests_per_second
    http_timeout_s: float = _DEFAULTS.http_timeout_s
    http_retries: int = _DEFAULTS.http_retries
    max_failure_share: float = _DEFAULTS.max_failure_share
    embed_batch_size: int = _DEFAULTS.embed_batch_size
    device: str = _DEFAULTS.device
    max_shrink: float = _DEFAULTS.max_shrink
    refit_share: float = _DEFAULTS.refit_share
    refit_drift: float = _DEFAULTS.refit_drift

    @classmethod
    def from_settings(cls, settings: Settings) -> "ArtsimRuntimeResource":
        values = settings.as_dict()
        return cls(**{name: values[name] for name in RUNTIME_FIELDS})

    def apply(self, settings: Settings) -> Settings:
        """``settings`` (fixed at load) with this run's knobs; validated, so a bad launchpad value is named."""
        return settings.with_overrides(**{name: getattr(self, name) for name in RUNTIME_FIELDS})


class NgaSourceResource(ConfigurableResource):
    """NGA opendata: a base URL (``<base>/data/<file>.csv``) or a local mirror directory."""

    location: str = _DEFAULTS.nga_source
    timeout_s: float = _DEFAULTS.http_timeout_s
    retries: int = _DEFAULTS.http_retries
    backoff_base_s: float = 0.5

    @classmethod
    def from_settings(cls, settings: Settings) -> "NgaSourceResource":
        return cls(location=settings.nga_source, timeout_s=settings.http_timeout_s, retries=settings.http_retries)

    def source(self) -> NgaSource:
        client = HttpClient(timeout_s=self.timeout_s, retries=self.retries, backoff_base_s=self.backoff_base_s)
        return NgaSource(self.location, client)


def build_resources(settings: Settings) -> dict[str, object]:
    """The resource dict used by ``Definitions``, ``artsim run`` and tests."""
    return {
        "artsim": ArtsimRuntimeResource.from_settings(settings),
        "nga_source": NgaSourceResource.from_settings(settings),
        "duckdb": DuckDBResource(database=str(lake_for(settings).catalog_db)),
    }


def lake_for(settings: Settings) -> DataLake:
    """The data lake (a directory or an object-store URL) with absolute local paths (unambiguous in metadata)."""
    return lake_at(settings.data_lake, settings.work_dir, absolute=True)
