"""Dagster resources: artsim settings, the NGA source and the DuckDB catalog.

Each is built from :class:`artsim_pipeline.config.Settings` (the one home of configuration), so the
UI's launchpad shows every knob and tests can pass their own values to ``materialize()``.
"""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from dagster_duckdb import DuckDBResource

from .config import Settings
from .core.http import HttpClient
from .core.nga_source import NgaSource
from .core.storage import DataLake

_DEFAULTS = Settings()


class ArtsimSettingsResource(ConfigurableResource):
    """Every ``ARTSIM_*`` setting (see README "Configuration"); ``.settings`` validates them."""

    data_lake: str = str(_DEFAULTS.data_lake)
    limit: int = _DEFAULTS.limit
    min_side: int = _DEFAULTS.min_side
    batch_size: int = _DEFAULTS.batch_size
    image_size: int = _DEFAULTS.image_size
    download_workers: int = _DEFAULTS.download_workers
    requests_per_second: float = _DEFAULTS.requests_per_second
    http_timeout_s: float = _DEFAULTS.http_timeout_s
    http_retries: int = _DEFAULTS.http_retries
    max_failure_share: float = _DEFAULTS.max_failure_share
    face_threshold: float = _DEFAULTS.face_threshold
    face_margin: float = _DEFAULTS.face_margin
    face_max_side: int = _DEFAULTS.face_max_side
    models: list[str] = list(_DEFAULTS.models)
    weights: str = _DEFAULTS.weights
    embed_batch_size: int = _DEFAULTS.embed_batch_size
    precision: str = _DEFAULTS.precision
    device: str = _DEFAULTS.device
    pca_dim: int = _DEFAULTS.pca_dim

    @classmethod
    def from_settings(cls, settings: Settings) -> "ArtsimSettingsResource":
        values = settings.as_dict()
        return cls(**{name: values[name] for name in cls.model_fields if name in values})

    @property
    def settings(self) -> Settings:
        values = {name: getattr(self, name) for name in type(self).model_fields}
        values["data_lake"] = Path(values["data_lake"])
        values["models"] = tuple(values["models"])
        return Settings(**values)

    @property
    def lake(self) -> DataLake:
        """The data lake at an absolute path (so paths in metadata are unambiguous)."""
        return DataLake(Path(self.data_lake).expanduser().resolve())


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
        "artsim": ArtsimSettingsResource.from_settings(settings),
        "nga_source": NgaSourceResource.from_settings(settings),
        "duckdb": DuckDBResource(database=str(DataLake(settings.data_lake).catalog_db)),
    }
