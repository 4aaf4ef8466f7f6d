"""Shared fixtures: temporary data lakes, a Dagster instance, the shared NGA mirror."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from dagster import DagsterInstance

from .nga_fixtures import NGA_CATALOG, NGA_MIRROR

warnings.filterwarnings("ignore", message=r".*is currently in (beta|preview|alpha).*")


@pytest.fixture
def instance(tmp_path: Path):
    """A persistent (SQLite) Dagster instance under a temporary DAGSTER_HOME."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with DagsterInstance.from_config(str(home)) as inst:
        yield inst


@pytest.fixture
def nga_mirror() -> Path:
    """The shared offline NGA mirror (1,698 paintings); skips when ../shared is absent."""
    if not (NGA_MIRROR / "data" / "objects.csv").is_file():
        pytest.skip("shared NGA mirror not present")
    return NGA_MIRROR


@pytest.fixture
def nga_catalog_csv() -> Path:
    if not NGA_CATALOG.is_file():
        pytest.skip("shared NGA catalog not present")
    return NGA_CATALOG
