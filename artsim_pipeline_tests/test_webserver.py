"""Start dagster-webserver on 127.0.0.1 and read the asset graph back over GraphQL."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from artsim_pipeline_tests.support import REPO, free_port

pytestmark = pytest.mark.slow

QUERY = "{ assetNodes { assetKey { path } dependencyKeys { path } isPartitioned } }"


def test_webserver_serves_the_asset_graph(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    port = free_port()
    env = os.environ | {"DAGSTER_HOME": str(home), "ARTSIM_DATA_LAKE": str(tmp_path / "lake")}
    webserver = Path(sys.executable).with_name("dagster-webserver")
    proc = subprocess.Popen(
        [str(webserver), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        nodes = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                reply = requests.post(f"http://127.0.0.1:{port}/graphql", json={"query": QUERY}, timeout=10)
                data = reply.json().get("data") or {}
                if data.get("assetNodes"):
                    nodes = data["assetNodes"]
                    break
            except (requests.ConnectionError, requests.Timeout, ValueError):
                pass
            time.sleep(1)
        assert nodes is not None, f"webserver did not answer: {proc.stderr.read().decode()[-2000:] if proc.poll() is not None else 'timeout'}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    graph = {"/".join(n["assetKey"]["path"]): {"/".join(d["path"]) for d in n["dependencyKeys"]} for n in nodes}
    assert graph["raw_objects"] == {"nga_opendata"}
    assert graph["filtered_paintings"] == {"raw_objects"}
    partitioned = {"/".join(n["assetKey"]["path"]) for n in nodes if n["isPartitioned"]}
    assert "filtered_paintings" not in partitioned
    for name, parents in graph.items():
        assert parents <= set(graph), f"{name} depends on an unknown asset"
