"""Small helpers shared by the tests (test modules never import each other): the repository root, a
free local port, ``artsim`` run as a user runs it, and an asset's materialization records."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from dagster import AssetKey, AssetRecordsFilter

REPO = Path(__file__).resolve().parents[1]
ARTSIM = str(Path(sys.executable).with_name("artsim"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def artsim(args, tmp_path, **env):
    """``artsim <args>`` in a subprocess from ``tmp_path`` with only the given ARTSIM_* / DAGSTER_HOME variables
    (lake: ``tmp_path/lake`` unless ``ARTSIM_DATA_LAKE`` is given)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("ARTSIM_", "DAGSTER_HOME"))}
    full_env |= {"ARTSIM_DATA_LAKE": str(tmp_path / "lake")} | env
    return subprocess.run([ARTSIM, *args], cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=600)


def materializations(instance, name: str) -> list:
    """The materialization records of asset ``name`` (newest first, at most 1000)."""
    return list(instance.fetch_materializations(AssetRecordsFilter(asset_key=AssetKey(name)), limit=1000).records)
