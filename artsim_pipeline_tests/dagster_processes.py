"""A real ``dagster-webserver`` + ``dagster-daemon`` on 127.0.0.1 for tests, and the GraphQL the UI sends.

The mutations are the ones the UI's buttons send (Automation page: ``startSensor`` / ``stopSensor``;
Backfill dialog: ``launchPartitionBackfill``).
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import requests
from dagster import DagsterInstance

from artsim_pipeline_tests.nga_fixtures import Painting, write_mirror
from artsim_pipeline_tests.support import REPO, free_port

SENSOR_SELECTOR = {"repositoryName": "__repository__", "repositoryLocationName": "artsim",
                   "sensorName": "artsim_automation"}
INSTANCE_YAML = """telemetry:
  enabled: false
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 4
"""
STALE = """query ($partitions: [String!]) { assetNodes(assetKeys: [{path: ["image_cache"]}]) {
  staleStatusByPartition(partitions: $partitions) } }"""
START_SENSOR = """mutation ($s: SensorSelector!) { startSensor(sensorSelector: $s) {
  __typename ... on Sensor { sensorState { status } } ... on PythonError { message } } }"""
STOP_SENSOR = """mutation ($id: String!) { stopSensor(id: $id) { __typename } }"""
SENSOR_STATE = """query ($s: SensorSelector!) { sensorOrError(sensorSelector: $s) {
  ... on Sensor { sensorState { id status ticks(limit: 5) { status } } } } }"""
BACKFILL = """mutation ($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""
BACKFILL_STATUS = """query ($id: String!) { partitionBackfillOrError(backfillId: $id) {
  ... on PartitionBackfill { status } ... on PythonError { message } } }"""


def seven_painting_env(tmp_path: Path, lake: Path, home: Path) -> dict[str, str]:
    """The environment of a 7-painting NGA mirror (3 batches, random-weight ``mobilenet_v2``) written under
    ``tmp_path``, for a webserver + daemon over ``home``: the lake the daemon tests bring up."""
    mirror = write_mirror(tmp_path / "mirror", [Painting(i, width=96, height=80, artist=f"Painter {i % 2}")
                                                 for i in range(1, 8)])
    return os.environ | {
        "ARTSIM_NGA_SOURCE": str(mirror), "ARTSIM_DATA_LAKE": str(lake), "ARTSIM_LIMIT": "0",
        "ARTSIM_MIN_SIDE": "64", "ARTSIM_BATCH_SIZE": "3", "ARTSIM_MODELS": "mobilenet_v2",
        "ARTSIM_WEIGHTS": "random", "ARTSIM_DEVICE": "cpu", "ARTSIM_PCA_DIM": "4",
        "DAGSTER_HOME": str(home), "OMP_NUM_THREADS": "1",
    }


class Dagster:
    """webserver + daemon on 127.0.0.1 over one DAGSTER_HOME; stopped on exit.

    The instance's SQLite storage is created here first, as ``dagster dev`` creates it in its own process before
    it starts the webserver and the daemon: two processes creating a new home's ``schedules.db`` at the same
    moment can both stamp its schema version, and every process that opens the home afterwards fails ("Version
    table 'alembic_version' has more than one head present")."""

    def __init__(self, env: dict, log_dir: Path) -> None:
        with DagsterInstance.from_config(env["DAGSTER_HOME"]):
            pass
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/graphql"
        bin_dir = Path(sys.executable).parent
        self.logs = [open(log_dir / "webserver.log", "wb"), open(log_dir / "daemon.log", "wb")]
        self.procs = [
            subprocess.Popen([str(bin_dir / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1",
                              "-p", str(self.port)], cwd=REPO, env=env, stdout=self.logs[0], stderr=subprocess.STDOUT),
            subprocess.Popen([str(bin_dir / "dagster-daemon"), "run", "-w", "workspace.yaml"], cwd=REPO, env=env,
                             stdout=self.logs[1], stderr=subprocess.STDOUT),
        ]

    def gql(self, query: str, **variables) -> dict:
        reply = requests.post(self.url, json={"query": query, "variables": variables}, timeout=60)
        body = reply.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert all(p.poll() is None for p in self.procs), "webserver or daemon exited"
            try:
                if self.gql("{ assetNodes { id } }")["assetNodes"]:
                    return
            except (requests.ConnectionError, requests.Timeout, ValueError, AssertionError):
                pass
            time.sleep(1)
        raise AssertionError("webserver did not answer")

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in self.logs:
            log.close()


def wait_for(condition, timeout: float, what: str, interval: float = 2.0, explain=None):
    """``condition()``'s first truthy value within ``timeout`` s; else an AssertionError naming ``what``, with
    ``explain()``'s text (the state a reader needs to see why: runs, log tails) when given."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}" + (f"\n{explain()}" if explain else ""))


def runs_and_logs(instance: DagsterInstance, logs: list[Path], lines: int = 40) -> str:
    """Every run of ``instance`` (status, partition, parent, assets, age) and the last ``lines`` of each log: what a
    test that waited in vain prints, so that a failure seen once (in CI) says what the daemon was doing."""
    now = time.time()
    out = ["runs (oldest first):"]
    for run in reversed(instance.get_runs()):
        record = instance.get_run_record_by_id(run.run_id)
        assets = sorted(key.to_user_string() for key in (run.asset_selection or []))
        out.append(f"  {run.run_id[:8]} {run.status.value:<9} {run.tags.get('dagster/partition', '-'):<12} "
                   f"parent={run.tags.get('dagster/parent_run_id', '-')[:8]} "
                   f"{now - record.create_timestamp.timestamp():6.0f} s ago {','.join(assets)}")
    for log in logs:
        text = log.read_text(errors="replace").splitlines() if log.exists() else ["(missing)"]
        out += [f"last {lines} lines of {log.name}:", *("  " + line for line in text[-lines:])]
    return "\n".join(out)
