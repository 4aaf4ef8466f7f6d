"""The ``artsim`` command: ``run`` (the whole pipeline), ``search`` and ``bench``."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from .config import ConfigError, Settings


def _prepare_instance(settings: Settings):
    """The Dagster instance: ``$DAGSTER_HOME`` if set, else ``<data_lake>/dagster_home`` (SQLite)."""
    from dagster import DagsterInstance

    if not os.environ.get("DAGSTER_HOME"):
        home = (settings.data_lake / "dagster_home").resolve()
        home.mkdir(parents=True, exist_ok=True)
        config = home / "dagster.yaml"
        if not config.exists():
            config.write_text("telemetry:\n  enabled: false\n")
        os.environ["DAGSTER_HOME"] = str(home)
    return DagsterInstance.get()


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from .definitions import build_definitions
    from .runner import PipelineRunner

    instance = _prepare_instance(settings)
    print(f"artsim run: source {settings.nga_source}, data lake {settings.data_lake.resolve()}", flush=True)
    runner = PipelineRunner(build_definitions(settings), settings, instance, echo=lambda m: print(m, flush=True))
    report = runner.run()
    if report.ran:
        print(f"artsim run: {len(report.ran)} materializations in {report.seconds:.1f}s")
    else:
        print(f"artsim run: everything up to date ({report.seconds:.1f}s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="artsim", description="Find paintings similar to a painting or photo.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="materialize every stale asset and image batch (idempotent)")
    run.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", message=r".*is currently in (beta|preview|alpha).*")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        return args.func(args, settings)
    except ConfigError as exc:
        print(f"artsim: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
