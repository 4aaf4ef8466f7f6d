"""``artsim bench dagster --fresh-lake``: a fresh lake brought up by ``artsim run`` and by the automation, in one run.

Both legs start from nothing (an empty lake folder and an empty ``DAGSTER_HOME``) over the same NGA source
and the same ``ARTSIM_*`` settings as the calling environment (``--source`` overrides ``ARTSIM_NGA_SOURCE``):

* ``cli``: ``artsim run`` as a user starts it (a subprocess), timed to its exit;
* ``automation``: ``dagster dev -w workspace.yaml`` (webserver, daemon and code server: the README's command),
  then the Automation page's ``startSensor`` mutation for ``artsim_automation``; timed from that mutation to
  the moment every asset the CLI leg materialized (every partition of the batch assets) is materialized and no
  run is queued or in progress. A failed run ends the leg with an error.

For each leg, from Dagster's run records: the runs (job, partition, queued → started → ended), the time in
runs summed, the busy time (at least one run in progress), the idle time (none in progress: sensor ticks,
the queue, process start-up), the most runs at once, and the time to a searchable index (``faiss_index``
materialized) and to ``eval_report``. The result: ``automation_vs_cli`` = automation wall / CLI wall.

JSON (``--out``, default ``<data_lake>/reports/bench_fresh_lake.json``): ``source``, ``settings`` (the
``ARTSIM_*`` environment), ``cpu_count``, ``load_before`` / ``load_after``, ``legs`` (``cli`` and
``automation``: ``wall_s``, ``to_index_s``, ``to_eval_report_s``, ``runs``, ``run_s``, ``busy_s``, ``idle_s``,
``max_concurrent_runs``, ``timeline``) and ``automation_vs_cli``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from ..config import Settings
from ..core.storage import atomic_write_text
from ..instance import ensure_instance_config
from .cli import free_port

REPO = Path(__file__).resolve().parents[2]
START_SENSOR = """mutation ($s: SensorSelector!) { startSensor(sensorSelector: $s) {
  __typename ... on Sensor { sensorState { status } } ... on PythonError { message } } }"""
SENSOR = {"repositoryName": "__repository__", "repositoryLocationName": "artsim", "sensorName": "artsim_automation"}


def _leg_env(workdir: Path, leg: str, source: Path | None) -> tuple[dict[str, str], Path]:
    """The environment of one leg: the caller's, with its own empty lake and ``DAGSTER_HOME``."""
    root = workdir / leg
    if root.exists():
        shutil.rmtree(root)
    home = root / "dagster_home"
    home.mkdir(parents=True)
    ensure_instance_config(home)  # what `artsim` writes into a new DAGSTER_HOME (dagster dev does not)
    env = dict(os.environ, ARTSIM_DATA_LAKE=str(root / "lake"), DAGSTER_HOME=str(home))
    if source is not None:
        env["ARTSIM_NGA_SOURCE"] = str(source)
    return env, home


def timeline(instance, started: float) -> dict:
    """The runs of ``instance`` against the wall clock from ``started`` (a ``time.time()``)."""
    records = instance.get_run_records()
    runs = []
    for record in records:
        run = record.dagster_run
        start, end = record.start_time, record.end_time
        runs.append({
            "job": run.job_name, "status": run.status.value, "partition": run.tags.get("dagster/partition"),
            "backfill": run.tags.get("dagster/backfill"),
            "assets": sorted(k.to_user_string() for k in (run.asset_selection or ())),
            "queued_s": round(record.create_timestamp.timestamp() - started, 2),
            "started_s": round(start - started, 2) if start else None,
            "ended_s": round(end - started, 2) if end else None,
        })
    runs.sort(key=lambda r: (r["started_s"] if r["started_s"] is not None else float("inf")))
    spans = [(r["started_s"], r["ended_s"]) for r in runs if r["started_s"] is not None and r["ended_s"] is not None]
    return {"runs": len(runs), "run_s": round(sum(e - s for s, e in spans), 1), "busy_s": round(_union(spans), 1),
            "max_concurrent_runs": _max_overlap(spans), "timeline": runs}


def _union(spans: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for start, stop in sorted(spans):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def _max_overlap(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    best = now = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def _materialized(instance) -> dict[str, set[str | None]]:
    """Every asset with a materialization in ``instance``: its materialized partitions (``None``: an
    unpartitioned asset)."""
    done: dict[str, set[str | None]] = {}
    for key in instance.get_asset_keys():
        partitions = set(instance.get_materialized_partitions(key))
        if partitions or instance.get_latest_materialization_event(key) is not None:
            done[key.to_user_string()] = partitions or {None}
    return done


def _first_materialization_s(instance, asset: str, started: float) -> float | None:
    from dagster import AssetKey

    record = instance.get_latest_materialization_event(AssetKey(asset))
    return round(record.timestamp - started, 1) if record is not None else None


def cli_leg(workdir: Path, source: Path | None, timeout_s: float, echo) -> dict:
    """``artsim run`` on a fresh lake, as a subprocess."""
    env, home = _leg_env(workdir, "cli", source)
    echo("cli: artsim run on a fresh lake")
    started = time.time()
    with open(workdir / "cli" / "artsim_run.log", "wb") as log:
        done = subprocess.run([sys.executable, "-m", "artsim_pipeline.cli", "run"], cwd=REPO, env=env, stdout=log,
                              stderr=subprocess.STDOUT, timeout=timeout_s)
    wall = time.time() - started
    if done.returncode != 0:
        raise RuntimeError(f"artsim run failed (exit {done.returncode}); see {workdir / 'cli' / 'artsim_run.log'}")
    echo(f"cli: {wall:.1f} s")
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(home)) as instance:
        materialized = _materialized(instance)
    return {"wall_s": round(wall, 1), "materialized": materialized, "home": home, "started": started}


def automation_leg(workdir: Path, source: Path | None, expected: dict[str, set[str | None]], timeout_s: float,
                   echo) -> dict:
    """``dagster dev`` on a fresh lake, ``artsim_automation`` turned on, until ``expected`` is materialized."""
    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

    env, home = _leg_env(workdir, "automation", source)
    port = free_port()
    url = f"http://127.0.0.1:{port}/graphql"
    log = open(workdir / "automation" / "dagster_dev.log", "wb")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("dagster")), "dev", "-w", "workspace.yaml", "-h",
                             "127.0.0.1", "-p", str(port)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        _wait_for_webserver(url, proc, 300)
        echo("automation: dagster dev is up; turning artsim_automation on")
        started = time.time()
        reply = requests.post(url, json={"query": START_SENSOR, "variables": {"s": SENSOR}}, timeout=60).json()
        if reply.get("data", {}).get("startSensor", {}).get("__typename") != "Sensor":
            raise RuntimeError(f"startSensor failed: {reply}")
        unfinished = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
                      DagsterRunStatus.STARTED]
        deadline = time.monotonic() + timeout_s
        with DagsterInstance.from_config(str(home)) as instance:
            while True:
                failed = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.FAILURE]))
                if failed:
                    raise RuntimeError(f"the automation's run {failed[0].run_id} ({failed[0].job_name}) failed; "
                                       f"see {workdir / 'automation' / 'dagster_dev.log'}")
                done = _materialized(instance)
                if all(parts <= done.get(key, set()) for key, parts in expected.items()) and not instance.get_runs(
                        RunsFilter(statuses=unfinished)):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the automation did not bring the lake up within {timeout_s:.0f} s")
                time.sleep(1.0)
        wall = time.time() - started
        echo(f"automation: {wall:.1f} s")
        return {"wall_s": round(wall, 1), "home": home, "started": started}
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        log.close()


def _wait_for_webserver(url: str, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dagster dev exited ({proc.returncode}) before its webserver answered")
        try:
            body = requests.post(url, json={"query": "{ assetNodes { id } }"}, timeout=10).json()
            if body.get("data", {}).get("assetNodes"):
                return
        except (requests.ConnectionError, requests.Timeout, ValueError):
            pass
        time.sleep(1.0)
    raise RuntimeError(f"dagster dev's webserver did not answer within {timeout_s:.0f} s")


def _finish_leg(leg: dict) -> dict:
    """A leg's record: its run timeline, idle time and times to the index and the report, from its instance."""
    from dagster import DagsterInstance

    home, started = leg.pop("home"), leg.pop("started")
    leg.pop("materialized", None)
    with DagsterInstance.from_config(str(home)) as instance:
        leg.update(timeline(instance, started))
        leg["to_index_s"] = _first_materialization_s(instance, "faiss_index", started)
        leg["to_eval_report_s"] = _first_materialization_s(instance, "eval_report", started)
    leg["idle_s"] = round(leg["wall_s"] - leg["busy_s"], 1)
    return leg


def run_benchmark(workdir: Path, source: Path | None, timeout_s: float, echo) -> dict:
    load_before = os.getloadavg()[0]
    cli = cli_leg(workdir, source, timeout_s, echo)
    expected = cli["materialized"]
    automation = automation_leg(workdir, source, expected, timeout_s, echo)
    legs = {"cli": _finish_leg(cli), "automation": _finish_leg(automation)}
    return {
        "source": str(source or Settings.from_env().nga_source), "cpu_count": os.cpu_count(),
        "settings": {k: v for k, v in sorted(os.environ.items()) if k.startswith("ARTSIM_") and k != "ARTSIM_DATA_LAKE"},
        "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2), "legs": legs,
        "automation_vs_cli": round(legs["automation"]["wall_s"] / legs["cli"]["wall_s"], 3),
    }


def format_table(result: dict) -> str:
    rows = [("wall s", "wall_s"), ("to a searchable index s", "to_index_s"), ("to eval_report s", "to_eval_report_s"),
            ("runs", "runs"), ("time in runs s", "run_s"), ("busy s (a run in progress)", "busy_s"),
            ("idle s (no run in progress)", "idle_s"), ("most runs at once", "max_concurrent_runs")]
    legs = result["legs"]
    lines = ["| fresh lake | `artsim run` | `artsim_automation` |", "|---|---|---|"]
    lines += [f"| {label} | {legs['cli'][key]} | {legs['automation'][key]} |" for label, key in rows]
    lines.append(f"\nautomation / CLI: {result['automation_vs_cli']:.3f}  (cpus {result['cpu_count']}, load "
                 f"{result['load_before']} → {result['load_after']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="artsim bench dagster --fresh-lake", description=__doc__.split("\n\n")[0])
    parser.add_argument("--fresh-lake", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help="NGA source folder (default: ARTSIM_NGA_SOURCE)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per leg (default %(default)s)")
    parser.add_argument("--workdir", type=Path, help="scratch directory (default: a temporary one, removed)")
    parser.add_argument("--out", type=Path, help="JSON output (default <data_lake>/reports/bench_fresh_lake.json)")
    args = parser.parse_args(argv)
    if args.source is not None and not args.source.is_dir():
        parser.error(f"--source: {args.source} is not a folder")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="artsim-bench-fresh-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = run_benchmark(workdir.resolve(), args.source, args.timeout,
                               echo=lambda m: print(m, file=sys.stderr, flush=True))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(format_table(result))
    out = args.out or Settings.from_env().data_lake / "reports" / "bench_fresh_lake.json"
    atomic_write_text(out, json.dumps(result, indent=2, default=str))
    print(f"wrote {out}")
    return 0
