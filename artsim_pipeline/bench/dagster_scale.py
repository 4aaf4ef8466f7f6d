"""``artsim bench dagster``: Dagster at scale — the no-change ``artsim run``, ``artsim status`` and the UI's
stale-status queries at 32, 128 and 512 image-batch partitions (``--sizes``).

The lake is built through the real code path: an NGA-like mirror (:func:`.refresh.write_mirror`; rows from
``--catalog`` or generated) of ``size x --batch-size`` paintings with tiny images, and a real ``artsim run``
(:class:`~artsim_pipeline.runner.PipelineRunner` over a SQLite ``DagsterInstance``, the CLI's default) per
size; the lake grows from one size to the next like NGA does (the first build of the next size adds only
the new batches). At each size, with nothing changed:

* ``cli_run_s``: ``artsim run`` as a user runs it (a subprocess: start-up, observing the source, the lake
  check, Dagster's stale status of every asset and batch); it must run nothing (``cli_run_materializations``);
* ``run_s`` / ``plan_s``: :meth:`PipelineRunner.run` and :meth:`PipelineRunner.plan` in this process
  (no start-up; ``plan_s`` is the stale status alone); ``plan_entries`` must be 0;
* ``cli_status_s``: ``artsim status --json`` (the lake's counts and the plan); ``cli_status_stale`` entries;
* ``automation_first_tick_s`` / ``automation_tick_s``: every automation condition evaluated as one daemon tick
  of ``artsim_automation`` does (``evaluate_automation_conditions``), with no cursor and then from its cursor;
  ``automation_first_requested`` / ``automation_requested``: asset partitions they request;
* against a real ``dagster-webserver`` over the same instance, the UI's own GraphQL (best of 2):
  ``ui_asset_graph_s`` (``AssetStaleStatusDataQuery``: ``staleStatus`` + ``staleCauses`` of every asset, the
  asset graph's badges; ``ui_asset_graph_not_fresh`` names the assets it shows stale or missing: ``eval_study``
  after a refresh, by design), ``ui_partition_s`` (``AssetPartitionStaleQuery``: one batch of the last batch asset,
  the partition page) and ``by_partition_s`` (``staleStatusByPartition`` + ``staleCausesByPartition`` of every
  partition of every partitioned asset), with ``by_partition_statuses`` / ``by_partition_not_fresh`` counts.

JSON (``--out``): the settings, ``dagster_version``, ``cpu_count``, ``load_before`` / ``load_after``
(1-minute load average), ``sizes`` (one record per size: ``partitions``, ``paintings``, ``build_s``,
``build_new_partitions``, ``build_materializations`` and the fields above) and ``growth``: per timed field,
``log(t_last / t_first) / log(n_last / n_first)`` (1.0 = linear in partitions).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..config import Settings
from ..core.batches import batch_key
from ..core.storage import atomic_write_text
from .cli import free_port
from .refresh import _timed_run, read_catalog, write_mirror

TIMED = ("build_s", "cli_run_s", "run_s", "plan_s", "cli_status_s", "automation_first_tick_s", "automation_tick_s",
         "ui_asset_graph_s", "ui_partition_s", "by_partition_s")

# The UI's queries, as its bundle sends them (asset graph badges; one partition's page)
UI_ASSET_GRAPH = """fragment AssetStaleDataFragment on AssetNode { id assetKey { path } staleStatus
  staleCauses { key { path } reason category dependency { path } } }
query AssetStaleStatusDataQuery($assetKeys: [AssetKeyInput!]!) {
  assetNodes(assetKeys: $assetKeys) { id ...AssetStaleDataFragment } }"""
UI_PARTITION = """query AssetPartitionStaleQuery($assetKey: AssetKeyInput!, $partitionKey: String!) {
  assetNodeOrError(assetKey: $assetKey) { ... on AssetNode { id staleStatus(partition: $partitionKey)
    staleCauses(partition: $partitionKey) { key { path } reason category dependency { path } } } } }"""
BY_PARTITION = """query ($assetKeys: [AssetKeyInput!]!) { assetNodes(assetKeys: $assetKeys) { assetKey { path }
  staleStatusByPartition staleCausesByPartition { reason category } } }"""
ASSETS = "{ assetNodes { assetKey { path } isPartitioned } }"
WORKSPACE = "load_from:\n  - python_module:\n      module_name: artsim_pipeline.definitions\n      location_name: artsim\n"


def synthetic_rows(n: int) -> list[dict[str, str]]:
    """``n`` catalog rows (the columns :func:`.refresh.read_catalog` requires), deterministic."""
    rows = []
    for i in range(n):
        uuid = hashlib.sha256(f"artsim-bench-{i}".encode()).hexdigest()
        uuid = f"{uuid[:8]}-{uuid[8:12]}-{uuid[12:16]}-{uuid[16:20]}-{uuid[20:32]}"
        rows.append({"nga_uuid": uuid, "title": f"Synthetic painting {i}", "attribution": f"Painter {i % 97}",
                     "date": str(1500 + i % 400), "medium": ("oil on canvas", "tempera on panel")[i % 2]})
    return rows


class Webserver:
    """``dagster-webserver`` on 127.0.0.1 over ``env``'s DAGSTER_HOME, loading the artsim code location."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        port = free_port()
        (workdir / "workspace.yaml").write_text(WORKSPACE)
        self.url = f"http://127.0.0.1:{port}/graphql"
        self.log = open(workdir / "webserver.log", "wb")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster-webserver")), "-w", "workspace.yaml", "-h", "127.0.0.1",
             "-p", str(port)], cwd=workdir, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def gql(self, query: str, **variables) -> dict:
        import requests

        body = requests.post(self.url, json={"query": query, "variables": variables}, timeout=1800).json()
        if "errors" in body:
            raise RuntimeError(f"GraphQL error: {body['errors'][0].get('message')}")
        return body["data"]

    def wait_ready(self, timeout: float = 300) -> None:
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dagster-webserver exited with {self.proc.returncode} (see {self.log.name})")
            try:
                if self.gql(ASSETS)["assetNodes"]:
                    return
            except (requests.ConnectionError, requests.Timeout, ValueError, RuntimeError):
                pass
            time.sleep(1)
        raise RuntimeError(f"dagster-webserver did not answer within {timeout:.0f}s")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _best_of(times: int, call):
    """(fastest seconds, result of the last call) of ``times`` calls."""
    best, result = math.inf, None
    for _ in range(times):
        started = time.perf_counter()
        result = call()
        best = min(best, time.perf_counter() - started)
    return best, result


def ui_queries(server: Webserver, last_batch: str) -> dict:
    """The UI's stale-status queries over every asset (and every partition of the partitioned ones)."""
    nodes = server.gql(ASSETS)["assetNodes"]
    keys = [{"path": n["assetKey"]["path"]} for n in nodes]
    partitioned = [{"path": n["assetKey"]["path"]} for n in nodes if n["isPartitioned"]]
    graph_s, graph = _best_of(2, lambda: server.gql(UI_ASSET_GRAPH, assetKeys=keys))
    by_s, by = _best_of(2, lambda: server.gql(BY_PARTITION, assetKeys=partitioned))
    statuses = [s for node in by["assetNodes"] for s in node["staleStatusByPartition"]]
    deepest = next((k for k in partitioned if k["path"][-1].startswith("embeddings_")), partitioned[-1])
    partition_s, _ = _best_of(2, lambda: server.gql(UI_PARTITION, assetKey=deepest, partitionKey=last_batch))
    return {
        "ui_asset_graph_s": round(graph_s, 3),
        "ui_asset_graph_not_fresh": sorted("/".join(n["assetKey"]["path"]) for n in graph["assetNodes"]
                                           if n["staleStatus"] != "FRESH"),
        "ui_partition_s": round(partition_s, 3),
        "by_partition_s": round(by_s, 3), "by_partition_statuses": len(statuses),
        "by_partition_not_fresh": sum(s != "FRESH" for s in statuses),
    }


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    result = subprocess.run([str(Path(sys.executable).with_name("artsim")), *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"artsim {' '.join(args)} failed ({result.returncode}): "
                           f"{(result.stderr or result.stdout).strip().splitlines()[-1:]}")
    return seconds, result


def no_change(settings: Settings, env: dict[str, str], workdir: Path) -> dict:
    """The no-change ``artsim run`` (CLI and in process), the plan and ``artsim status``."""
    from dagster import DagsterInstance

    from ..definitions import build_definitions
    from ..runner import PipelineRunner

    cli_run_s, run = _cli(["run"], env, workdir)
    summary = run.stdout.strip().splitlines()[-1]
    ran = 0 if "everything up to date" in summary else int(summary.split("artsim run: ")[1].split()[0])
    with DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        runner = PipelineRunner(build_definitions(settings), settings, instance, echo=lambda _: None)
        started = time.perf_counter()
        report = runner.run()
        run_s = time.perf_counter() - started
        started = time.perf_counter()
        plan = runner.plan()
        plan_s = time.perf_counter() - started
        ticks = automation_ticks(runner.defs, instance)
    cli_status_s, status = _cli(["status", "--json"], env, workdir)
    return {
        "cli_run_s": round(cli_run_s, 3), "cli_run_materializations": ran,
        "run_s": round(run_s, 3), "run_materializations": len(report.ran),
        "plan_s": round(plan_s, 3), "plan_entries": len(plan),
        "cli_status_s": round(cli_status_s, 3), "cli_status_stale": len(json.loads(status.stdout)["stale"]),
        **ticks,
    }


def automation_ticks(defs, instance) -> dict:
    """Two evaluations of every automation condition (what one ``artsim_automation`` tick of the daemon
    computes): the first (no cursor) and the next one from its cursor, with what each requests."""
    from dagster import evaluate_automation_conditions

    started = time.perf_counter()
    first = evaluate_automation_conditions(defs=defs, instance=instance)
    first_s = time.perf_counter() - started
    started = time.perf_counter()
    second = evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    return {"automation_first_tick_s": round(first_s, 3), "automation_first_requested": first.total_requested,
            "automation_tick_s": round(time.perf_counter() - started, 3), "automation_requested": second.total_requested}


def growth(sizes: list[dict]) -> dict[str, float | None]:
    """Per timed field: the exponent of its growth from the first to the last size (1.0 = linear)."""
    first, last = sizes[0], sizes[-1]
    ratio = last["partitions"] / first["partitions"]
    out: dict[str, float | None] = {}
    for key in TIMED:
        a, b = first.get(key), last.get(key)
        out[key] = round(math.log(b / a) / math.log(ratio), 2) if ratio > 1 and a and b else None
    return out


def run_benchmark(workdir: Path, sizes: list[int], batch_size: int, image_px: int, models: tuple[str, ...],
                  weights: str, catalog: Path | None, webserver: bool = True, echo=print) -> dict:
    from dagster import __version__ as dagster_version

    if sorted(sizes) != sizes or len(set(sizes)) != len(sizes) or sizes[0] < 1:
        raise ValueError(f"--sizes must be increasing positive partition counts, got {sizes}")
    rows = read_catalog(catalog) if catalog else synthetic_rows(sizes[-1] * batch_size)
    if len(rows) < sizes[-1] * batch_size:
        raise ValueError(f"{catalog}: {len(rows)} rows, {sizes[-1] * batch_size} needed "
                         f"({sizes[-1]} batches of {batch_size})")
    mirror, lake = workdir / "mirror", workdir / "lake"
    settings = Settings(nga_source=str(mirror), data_lake=lake, limit=0, min_side=image_px, batch_size=batch_size,
                        models=models, weights=weights, device="cpu", pca_dim=8)
    home = lake / "dagster_home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARTSIM_", "DAGSTER_HOME"))}
    env |= settings.as_env() | {"DAGSTER_HOME": str(home), "ARTSIM_DATA_LAKE": str(lake)}
    result = {"benchmark": "dagster", "dagster_version": dagster_version, "batch_size": batch_size,
              "image_px": image_px, "models": list(models), "weights": weights, "cpu_count": os.cpu_count(),
              "build": "artsim run (PipelineRunner, SQLite DagsterInstance)", "load_before": os.getloadavg()[0],
              "sizes": []}
    server = None
    try:
        built = 0
        for size in sizes:
            write_mirror(mirror, rows[: size * batch_size], image_px)
            echo(f"{size} partitions: building ({size - built} new batches of {batch_size})")
            build_s, build_runs = _timed_run(settings, home)
            record = {"partitions": size, "paintings": size * batch_size, "build_s": round(build_s, 2),
                      "build_new_partitions": size - built, "build_materializations": build_runs}
            built = size
            echo(f"{size} partitions: built in {build_s:.1f}s; timing the no-change run and status")
            record |= no_change(settings, env, workdir)
            if webserver:
                if server is None:
                    server = Webserver(env, workdir)
                    server.wait_ready()
                echo(f"{size} partitions: timing the UI's stale-status queries")
                record |= ui_queries(server, batch_key(size - 1))
            result["sizes"].append(record)
    finally:
        if server is not None:
            server.close()
    result["load_after"] = os.getloadavg()[0]
    result["growth"] = growth(result["sizes"])
    return result


COLUMNS = (("partitions", "partitions", "d"), ("build_s", "first run s", ".1f"), ("cli_run_s", "artsim run s", ".2f"),
           ("run_s", "in-process run s", ".2f"), ("plan_s", "plan s", ".2f"), ("cli_status_s", "status s", ".2f"),
           ("automation_tick_s", "automation tick s", ".2f"),
           ("ui_asset_graph_s", "UI graph s", ".3f"), ("ui_partition_s", "UI partition s", ".3f"),
           ("by_partition_s", "by-partition s", ".2f"))


def format_table(result: dict) -> str:
    lines = ["".join(f"{label:>18}" for _, label, _ in COLUMNS)]
    for record in result["sizes"]:
        lines.append("".join(f"{record[key]:>18{fmt}}" if key in record else f"{'-':>18}" for key, _, fmt in COLUMNS))
    exponents = ", ".join(f"{k} {v}" for k, v in result["growth"].items() if v is not None)
    lines.append(f"growth exponent, first to last size (1.0 = linear): {exponents or 'n/a'}")
    last = result["sizes"][-1]
    lines.append(f"at {last['partitions']} partitions the no-change run materialized {last['cli_run_materializations']} "
                 f"(in process {last['run_materializations']}); plan entries {last['plan_entries']}, status stale "
                 f"{last['cli_status_stale']}, by-partition not fresh {last.get('by_partition_not_fresh', '-')} of "
                 f"{last.get('by_partition_statuses', '-')}; load {result['load_before']:.2f} -> {result['load_after']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--fresh-lake" in argv:  # a fresh lake through `artsim run` and through the automation (bench/fresh_lake.py)
        from .fresh_lake import main as fresh_lake_main

        return fresh_lake_main(argv)
    parser = argparse.ArgumentParser(prog="artsim bench dagster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="32,128,512", help="batch partition counts (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=2, help="paintings per batch (default %(default)s)")
    parser.add_argument("--image-px", type=int, default=32, help="generated image side (default %(default)s)")
    parser.add_argument("--models", default="mobilenet_v2", help="comma list (default %(default)s)")
    parser.add_argument("--weights", default="random", help="pretrained | random (default %(default)s: same FLOPs)")
    parser.add_argument("--catalog", type=Path, help="catalog CSV for the mirror's rows (default: generated rows)")
    parser.add_argument("--no-webserver", action="store_true", help="skip the UI's GraphQL queries")
    parser.add_argument("--workdir", type=Path, help="scratch directory (default: a temporary one, removed)")
    parser.add_argument("--out", type=Path, help="JSON output (default <data_lake>/reports/bench_dagster.json)")
    parser.add_argument("--fresh-lake", action="store_true", help="instead: a fresh lake through `artsim run` and "
                        "through the automation, timed in one run (artsim bench dagster --fresh-lake --help)")
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes: expected comma-separated integers, got {args.sizes!r}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="artsim-bench-dagster-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = run_benchmark(workdir.resolve(), sizes, args.batch_size, args.image_px,
                               tuple(m for m in args.models.split(",") if m), args.weights, args.catalog,
                               webserver=not args.no_webserver, echo=lambda m: print(m, file=sys.stderr, flush=True))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(format_table(result))
    out = args.out or Settings.from_env().data_lake / "reports" / "bench_dagster.json"
    atomic_write_text(out, json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0
