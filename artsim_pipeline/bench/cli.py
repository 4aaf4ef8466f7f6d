"""``artsim bench cli``: cold-start wall time and peak memory of each ``artsim`` command.

Each command runs ``--runs`` times as a fresh Python process (the real ``artsim_pipeline.cli.main``,
with the environment's ``ARTSIM_*`` settings), one after the other; a row gives the median and the
spread (min-max) of its wall time, its median peak resident memory (``ru_maxrss`` of that process,
from ``os.wait4``), its exit status, and the heavy packages it imported (:data:`HEAVY`, read from
``sys.modules`` at the process's exit). The load average before and after the runs is part of the
report: on a shared machine the times are only comparable at a similar load.

Commands: ``artsim --help``, ``artsim search --help``, ``artsim status``, ``artsim search <objectid>``
(the first indexed painting, or ``--objectid``) and ``artsim search <photo>`` (``--image``, default a
512×512 photo written to a temporary file). Targets (a quiet machine): the objectid search and
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
FAST_TARGET_S, FAST_TARGET_MB, PHOTO_TARGET_S = 1.5, 400.0, 4.0

#: The child: the real CLI's ``main`` in a fresh interpreter; at exit it writes the names of the top-level
#: packages it imported to the file named by its first argument.
CHILD = ("import atexit, json, sys\n"
         "out = sys.argv.pop(1)\n"
         "atexit.register(lambda: open(out, 'w').write(json.dumps(sorted({m.partition('.')[0] for m in sys.modules}))))\n"
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
        modules = json.loads(modules_file.read_text()) if modules_file.exists() else []
    return {"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024.0, "exit": proc.returncode,
            "modules": modules, "stderr": stderr.decode(errors="replace").strip()}


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


def first_objectid(lake: Any) -> int | None:
    """The first objectid of the served index (None without an index)."""
    from artsim_pipeline.core.search_resources import load_variants
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
    parser.add_argument("--only", help="comma-separated commands to run (help, search-help, status, objectid, photo)")
    parser.add_argument("--out", type=Path, help="JSON report (default <data_lake>/reports/bench_cli.json)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from artsim_pipeline.bench.search_e2e import default_user_image
    from artsim_pipeline.config import Settings
    from artsim_pipeline.core.lake import lake_at

    args = build_parser().parse_args(argv)
    if args.runs < 1:
        print("artsim bench cli: --runs must be >= 1", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    lake = lake_at(settings.data_lake, settings.work_dir)
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
            ("objectid", f"artsim search {objectid}", ["search", str(objectid)], FAST_TARGET_S, FAST_TARGET_MB),
            ("photo", "artsim search <photo>", ["search", str(image)], PHOTO_TARGET_S, None),
        ]
        for key, name, command, target_s, target_mb in commands:
            if (only and key not in only) or (key == "objectid" and objectid is None):
                continue
            rows.append(measure(name, command, args.runs, target_s, target_mb))
            print(format_table(rows[-1:]).splitlines()[-1], flush=True)
    load_after = os.getloadavg()
    print(f"\nload average {load_before[0]:.2f} before, {load_after[0]:.2f} after; {os.cpu_count()} CPUs; "
          f"median of {args.runs} cold runs each\n")
    print(format_table(rows))
    report = {"benchmark": "cli", "data_lake": str(lake.root), "runs": args.runs,
              "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]},
              "cpus": os.cpu_count(), "machine": {"platform": platform.platform(), "python": platform.python_version()},
              "rows": rows}
    out = args.out or lake.reports_dir / "bench_cli.json"
    atomic_write_text(Path(out), json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 1 if any(r.get("meets_target") == "fail" for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
