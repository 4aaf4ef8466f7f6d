"""``artsim bench cli``: cold-start wall time and peak memory of each ``artsim`` command.

Each command runs ``--runs`` times as a fresh Python process (the real ``artsim_pipeline.cli.main``,
with the environment's ``ARTSIM_*`` settings), one after the other; a row gives the median and the
spread (min-max) of its wall time, its median peak resident memory (``VmHWM`` of that process at
exit), its exit status, and the heavy packages it imported (:data:`HEAVY`, read from
``sys.modules`` at the process's exit). The load average before and after the runs is part of the
report: on a shared machine the times are only comparable at a similar load.

Commands: ``artsim --help``, ``artsim search --help``, ``artsim status`` (after one untimed run, so that
its cached plan is current: what a person who looks twice waits for), ``artsim status --fresh`` (the plan
computed with Dagster), ``artsim search <objectid>`` (the first indexed painting, or ``--objectid``) and
``artsim search <photo>`` (``--image``, default a 512×512 photo written to a temporary file). Targets (a quiet machine): the objectid search and
``status`` ≤ :data:`FAST_TARGET_S` and ≤ :data:`FAST_TARGET_MB`; the photo search ≤
:data:`PHOTO_TARGET_S`. JSON report: ``--out`` (default ``<data_lake>/reports/bench_cli.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from artsim_pipeline.core.storage import atomic_write_text

#: Packages whose import costs seconds or hundreds of MB: the ones a command should pull in only when needed.
HEAVY = ("torch", "torchvision", "timm", "facenet_pytorch", "dagster", "dagster_webserver", "sklearn", "openTSNE",
         "matplotlib", "skimage", "fastapi", "uvicorn")
FAST_TARGET_S, FAST_TARGET_MB, PHOTO_TARGET_S, SERVE_TARGET_S = 1.5, 400.0, 4.0, 2.0

#: The child: the real CLI's ``main`` in a fresh interpreter; at exit it writes the names of the top-level
#: packages it imported and its peak resident memory (``VmHWM``: this program's own, where ``ru_maxrss`` of a
#: child also counts the parent's pages before the exec) to the file named by its first argument.
CHILD = ("import atexit, json, sys\n"
         "out = sys.argv.pop(1)\n"
         "def report():\n"
         "    hwm = [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:')]\n"
         "    open(out, 'w').write(json.dumps({'modules': sorted({m.partition('.')[0] for m in sys.modules}),\n"
         "                                     'peak_kb': int(hwm[0]) if hwm else None}))\n"
         "atexit.register(report)\n"
         "from artsim_pipeline.cli import main\n"
         "sys.exit(main(sys.argv[1:]))\n")


def run_cold(argv: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """One cold run of ``artsim <argv>``: wall seconds, peak RSS (MB), exit status, imported top-level packages."""
    with tempfile.TemporaryDirectory(prefix="artsim-bench-cli-") as tmp:
        modules_file = Path(tmp) / "modules.json"
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(modules_file), *argv], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        stderr = proc.stderr.read() if proc.stderr else b""
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        facts = json.loads(modules_file.read_text()) if modules_file.exists() else {}
    peak_kb = facts.get("peak_kb") or usage.ru_maxrss  # ru_maxrss where /proc is not there (an upper bound)
    return {"seconds": seconds, "peak_rss_mb": peak_kb / 1024.0, "exit": proc.returncode,
            "modules": facts.get("modules", []), "stderr": stderr.decode(errors="replace").strip()}


def serve_start(port: int, timeout_s: float = 300.0) -> dict[str, Any]:
    """One cold ``artsim serve``: seconds until ``/healthz`` answers 200, until it says ``image_search: ready``,
    and the first objectid search's answer time (the server is then stopped)."""
    import urllib.request

    url = f"http://127.0.0.1:{port}"

    def get(path: str) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(url + path, timeout=10) as reply:
                return json.loads(reply.read()) if reply.status == 200 else None
        except OSError:
            return None

    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "artsim_pipeline.cli", "serve", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    row: dict[str, Any] = {"healthz_s": None, "objectid_s": None, "ready_s": None}
    try:
        while time.perf_counter() - started < timeout_s and proc.poll() is None and row["ready_s"] is None:
            health = get("/healthz")
            now = time.perf_counter() - started
            if health is not None and row["healthz_s"] is None:
                row["healthz_s"] = now
                found = get("/api/paintings?limit=1")
                objectid = found["paintings"][0]["objectid"] if found and found["paintings"] else None
                if objectid is not None and get(f"/api/search?objectid={objectid}&k=10") is not None:
                    row["objectid_s"] = time.perf_counter() - started
            if health is not None and health.get("image_search", "ready") == "ready":  # older servers: up = ready
                row["ready_s"] = now
            time.sleep(0.02)
    finally:
        proc.terminate()
        proc.wait(30)
    return row


def measure_serve(runs: int, port: int) -> dict[str, Any]:
    """``runs`` cold starts of ``artsim serve``: median seconds to /healthz, a first objectid search, image search
    ready."""
    results = [serve_start(port) for _ in range(runs)]
    row: dict[str, Any] = {"command": "artsim serve", "runs": runs}
    for key in ("healthz_s", "objectid_s", "ready_s"):
        values = [r[key] for r in results if r[key] is not None]
        row[key] = round(statistics.median(values), 3) if len(values) == runs else None
        row[key.replace("_s", "_max_s")] = round(max(values), 3) if values else None
    row["target"] = f"/healthz <= {SERVE_TARGET_S:g} s"
    row["meets_target"] = "pass" if row["healthz_s"] is not None and row["healthz_s"] <= SERVE_TARGET_S else "fail"
    return row


def measure(name: str, argv: list[str], runs: int, target_s: float | None = None,
            target_mb: float | None = None) -> dict[str, Any]:
    """``runs`` cold runs of one command: median/min/max seconds, median peak RSS, heavy imports, verdict."""
    results = [run_cold(argv) for _ in range(runs)]
    seconds = [r["seconds"] for r in results]
    rss = statistics.median(r["peak_rss_mb"] for r in results)
    row: dict[str, Any] = {
        "command": name, "argv": argv, "runs": runs, "median_s": round(statistics.median(seconds), 3),
        "min_s": round(min(seconds), 3), "max_s": round(max(seconds), 3), "peak_rss_mb": round(rss, 1),
        "exit": sorted({r["exit"] for r in results}),
        "heavy_imports": [m for m in HEAVY if m in results[-1]["modules"]],
    }
    if results[-1]["exit"] not in (0, 1):  # status exits 1 for an unreadable artefact; anything else is a failure
        row["stderr"] = results[-1]["stderr"][-500:]
    if target_s is not None:
        row["target"] = f"<= {target_s:g} s" + (f", <= {target_mb:g} MB" if target_mb else "")
        ok = row["median_s"] <= target_s and (target_mb is None or rss <= target_mb)
        row["meets_target"] = "pass" if ok else "fail"
    return row


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'command':<28} {'median s':>9} {'min-max s':>13} {'peak MB':>8} {'exit':>5} {'target':>20} "
             f"{'':>5}  heavy imports"]
    for r in rows:
        spread = f"{r['min_s']:.2f}-{r['max_s']:.2f}"
        lines.append(f"{r['command']:<28} {r['median_s']:>9.2f} {spread:>13} {r['peak_rss_mb']:>8.0f} "
                     f"{','.join(map(str, r['exit'])):>5} {r.get('target', ''):>20} {r.get('meets_target', ''):>5}  "
                     f"{','.join(r['heavy_imports']) or '-'}")
    return "\n".join(lines)


def format_serve(row: dict[str, Any]) -> str:
    def cell(key: str) -> str:
        return "-" if row[key] is None else f"{row[key]:.2f} (max {row[key.replace('_s', '_max_s')]:.2f})"

    return (f"artsim serve, median of {row['runs']} cold starts: /healthz answers {cell('healthz_s')} s, "
            f"first objectid search {cell('objectid_s')} s, image search ready {cell('ready_s')} s; "
            f"target {row['target']}: {row['meets_target']}")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def first_objectid(lake: Any) -> int | None:
    """The first objectid of the served index (None without an index)."""
    from artsim_pipeline.core.search_loaders import load_variants
    from artsim_pipeline.core.search_query import IndexNotBuiltError

    try:
        _, variants = load_variants(lake)
    except IndexNotBuiltError:
        return None
    return int(min(variants["full"].ids))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="artsim bench cli", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="cold runs of each command (default %(default)s)")
    parser.add_argument("--objectid", type=int, help="the painting of the objectid search (default the first indexed)")
    parser.add_argument("--image", type=Path, help="the photo of the image search (default a 512x512 photo)")
    parser.add_argument("--only", help="comma-separated commands to run (help, search-help, status, status-fresh, objectid, "
                        "photo, serve)")
    parser.add_argument("--port", type=int, default=0, help="port of the serve rows (default a free one)")
    parser.add_argument("--out", type=Path, help="JSON report (default <data_lake>/reports/bench_cli.json)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from artsim_pipeline.bench.search_e2e import default_user_image
    from artsim_pipeline.config import Settings
    from artsim_pipeline.core.lake import lake_for

    args = build_parser().parse_args(argv)
    if args.runs < 1:
        print("artsim bench cli: --runs must be >= 1", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    lake = lake_for(settings)
    only = set(args.only.split(",")) if args.only else None
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="artsim-bench-cli-") as tmp:
        objectid = args.objectid if args.objectid is not None else first_objectid(lake)
        image = args.image or default_user_image(Path(tmp))
        commands: list[tuple[str, str, list[str], float | None, float | None]] = [
            ("help", "artsim --help", ["--help"], None, None),
            ("search-help", "artsim search --help", ["search", "--help"], None, None),
            ("status", "artsim status", ["status"], FAST_TARGET_S, FAST_TARGET_MB),
            ("status-fresh", "artsim status --fresh", ["status", "--fresh"], None, None),
            ("objectid", f"artsim search {objectid}", ["search", str(objectid)], FAST_TARGET_S, FAST_TARGET_MB),
            ("photo", "artsim search <photo>", ["search", str(image)], PHOTO_TARGET_S, None),
        ]
        for key, name, command, target_s, target_mb in commands:
            if (only and key not in only) or (key == "objectid" and objectid is None):
                continue
            if key == "status":
                run_cold(command)  # untimed: the plan is computed and cached if it was not current
            rows.append(measure(name, command, args.runs, target_s, target_mb))
            print(format_table(rows[-1:]).splitlines()[-1], flush=True)
        serve_row = None
        if not only or "serve" in only:
            serve_row = measure_serve(args.runs, args.port or free_port())
            print(format_serve(serve_row), flush=True)
    load_after = os.getloadavg()
    print(f"\nload average {load_before[0]:.2f} before, {load_after[0]:.2f} after; {os.cpu_count()} CPUs; "
          f"median of {args.runs} cold runs each\n")
    print(format_table(rows))
    if serve_row is not None:
        print("\n" + format_serve(serve_row))
    report = {"benchmark": "cli", "data_lake": str(lake.root), "runs": args.runs,
              "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]},
              "cpus": os.cpu_count(), "machine": {"platform": platform.platform(), "python": platform.python_version()},
              "rows": rows, "serve": serve_row}
    out = args.out or lake.reports_dir / "bench_cli.json"
    atomic_write_text(Path(out), json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    failed = any(r.get("meets_target") == "fail" for r in [*rows, *([serve_row] if serve_row else [])])
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
