"""The ``artsim`` command: ``run`` (the whole pipeline), ``search`` and ``bench``."""

from __future__ import annotations

import argparse
import logging
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


def root_cause(exc: BaseException) -> BaseException:
    """The user-code exception inside Dagster's wrappers (``user_exception`` / ``__cause__``)."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "user_exception", None) or exc.__cause__
        if inner is None:
            break
        exc = inner
    return exc


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", message=r".*is currently in (beta|preview|alpha).*")
    progress = logging.StreamHandler(sys.stdout)
    progress.setFormatter(logging.Formatter("  %(message)s"))
    package_log = logging.getLogger("artsim_pipeline")
    package_log.addHandler(progress)
    package_log.setLevel(logging.INFO)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        return args.func(args, settings)
    except ConfigError as exc:
        print(f"artsim: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("artsim: interrupted; re-run to resume (finished work is kept)", file=sys.stderr)
        return 130
    except Exception as exc:  # report the cause in one line; ARTSIM_DEBUG=1 shows the traceback
        if os.environ.get("ARTSIM_DEBUG"):
            raise
        cause = root_cause(exc)
        if isinstance(cause, ConfigError):
            print(f"artsim: configuration error: {cause}", file=sys.stderr)
            return 2
        print(f"artsim: error: {cause}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
