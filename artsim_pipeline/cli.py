"""The ``artsim`` command: ``run`` (the whole pipeline), ``status``, ``search``, ``serve`` and ``bench``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
import warnings
from pathlib import Path

from .config import ConfigError, Settings
from .core.lake import lake_for
from .dagster_stale_cache import current_plan


def _prepare_instance(settings: Settings):
    """The Dagster instance: ``$DAGSTER_HOME`` if set, else ``<data_lake>/dagster_home`` (SQLite; with an
    object-store lake ``<ARTSIM_WORK_DIR>/dagster_home``)."""
    # Dagster here: --help, status (with a current cached plan) and search never load it
    from dagster import DagsterInstance

    from .instance import ensure_instance_config

    if not os.environ.get("DAGSTER_HOME"):
        os.environ["DAGSTER_HOME"] = str(lake_for(settings).dagster_home)
    home = Path(os.environ["DAGSTER_HOME"])
    try:  # a read-only or full home fails later as a raw SQLAlchemy "unable to open database file"
        ensure_instance_config(home)  # a new DAGSTER_HOME gets artsim's dagster.yaml (never overwritten)
        probe = home / f".artsim-write-probe-{os.getpid()}"
        with open(probe, "wb") as fh:
            fh.write(b"\0" * 65536)
            fh.flush()
            os.fsync(fh.fileno())
        probe.unlink()
        return DagsterInstance.get()
    except Exception as exc:  # noqa: BLE001 - any failure here is about that folder
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        raise ConfigError(f"DAGSTER_HOME={home} is not usable (needs a writable folder with free space): "
                          f"{reason}") from None


def _check_device(settings: Settings) -> None:
    """An explicit ``ARTSIM_DEVICE`` that this machine lacks is a configuration error up front."""
    if settings.device in ("cuda", "mps"):
        # torch (core.models) here: only an explicit GPU device is checked
        from .core.models import resolve_device

        try:
            resolve_device(settings.device)
        except ValueError as exc:
            raise ConfigError(f"{exc} (set ARTSIM_DEVICE=auto or cpu)") from None


def _check_models(settings: Settings) -> None:
    """An unknown model in ``ARTSIM_MODELS`` is a configuration error up front (before the catalog runs)."""
    from .core.models import REGISTRY  # torch: `artsim run` embeds with it anyway

    unknown = [name for name in settings.models if name not in REGISTRY]
    if unknown:
        raise ConfigError(f"ARTSIM_MODELS names unknown model(s) {', '.join(unknown)}; "
                          f"valid models: {', '.join(sorted(REGISTRY))}")


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    # Dagster (the definitions, the runner) here: --help, status and search never load it
    from .definitions import build_definitions
    from .runner import PipelineRunner

    _check_models(settings)
    _check_device(settings)  # before the catalog and images are written, not after
    instance = _prepare_instance(settings)
    lake = lake_for(settings)
    where = f"{lake.root} (work dir {lake.work_dir})" if lake.is_remote else str(lake.root)
    print(f"artsim run: source {settings.nga_source}, data lake {where}", flush=True)
    runner = PipelineRunner(build_definitions(settings), settings, instance, echo=lambda m: print(m, flush=True))
    report = runner.run()
    # what is left to run, computed now and cached for the next `artsim status` (it then needs no Dagster)
    current_plan(settings, runner.plan, fresh=True)
    if report.ran:
        print(f"artsim run: {len(report.ran)} materializations in {report.seconds:.1f}s")
    else:
        print(f"artsim run: everything up to date ({report.seconds:.1f}s)")
    return 0


def dagster_plan(settings: Settings) -> list[dict]:
    """What ``artsim run`` would materialize now (Dagster's stale status; nothing is run)."""
    # Dagster here: status reaches this only when its cached plan is not current
    from .definitions import build_definitions
    from .runner import PipelineRunner

    instance = _prepare_instance(settings)
    return PipelineRunner(build_definitions(settings), settings, instance, echo=lambda m: None).plan()


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    # pandas and DuckDB (core.status) here: --help and search load neither
    from .core.status import format_status, lake_status

    status = lake_status(lake_for(settings), worst=args.worst, raw_keep=settings.raw_keep)
    # Dagster (its import, the instance, the definitions) only when the cached plan is not current
    status["stale"], status["stale_from"] = current_plan(settings, lambda: dagster_plan(settings), fresh=args.fresh)
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 1 if status["errors"] else 0


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    # the search's modules (pandas, DuckDB, the index; matplotlib for --grid) here: --help loads none
    from .core.search import SearchEngine, models_set_in_env
    from .core.search_filters import SearchFilters
    from .core.search_query import QueryError
    from .core.search_results import format_results

    try:
        if args.k < 1:
            raise QueryError(f"-k must be >= 1, got {args.k}")
        filters = SearchFilters.create(artist=args.artist, style=args.style, medium=args.medium, years=args.years)
        # the index's models are used; only an explicit ARTSIM_MODELS naming others is an error
        engine = SearchEngine.from_settings(settings, models_explicit=models_set_in_env(),
                                            preload_models=False)  # an objectid query needs none
        for note in engine.notes:
            print(f"artsim search: {note}", file=sys.stderr)
        response = engine.search(args.query, k=args.k, face_crop=args.face_crop, filters=filters,
                                 include_self=args.include_self)
    except QueryError as exc:
        print(f"artsim search: {exc}", file=sys.stderr)
        return 2
    if args.grid is not None:
        from .core.grid import save_grid

        if response.objectid is not None:
            query_image, caption = engine.image_path(response.objectid), response.query
        else:
            query_image, caption = args.query, Path(args.query).name
        save_grid(query_image, response, args.grid, query_caption=caption, face_box=response.face_box)
    print(response.to_json() if args.json else format_results(response))
    if args.grid is not None:
        print(f"wrote {args.grid}", file=sys.stderr if args.json else sys.stdout)
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    # the server's modules (FastAPI, uvicorn) here: the other commands load none
    from .core.search import models_set_in_env
    from .web.app import serve

    cache: dict[str, object] = {}
    lock = threading.Lock()

    def stale() -> list[dict]:
        """The status page's "what would re-run": Dagster's plan, at most every 30 s."""
        # Dagster here: only when the status page first asks for the plan
        from .definitions import build_definitions
        from .runner import PipelineRunner

        with lock:
            if "runner" not in cache:
                cache["runner"] = PipelineRunner(build_definitions(settings), settings, _prepare_instance(settings),
                                                 echo=lambda m: None)
            if time.monotonic() - float(cache.get("at", -1e9)) > 30:
                cache["plan"], cache["at"] = cache["runner"].plan(), time.monotonic()
            return list(cache["plan"])

    return serve(settings, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb,
                 max_pixels=args.max_pixels, models_explicit=models_set_in_env(), stale=stale)


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    # the chosen benchmark only: each brings its own dependencies (torch, Dagster, a server)
    if args.benchmark == "embeddings":
        from .bench.embeddings import main as bench_main
    elif args.benchmark == "refresh":
        from .bench.refresh import main as bench_main
    elif args.benchmark == "notebook":
        from .bench.notebook_loop import main as bench_main
    elif args.benchmark == "dagster":
        from .bench.dagster_scale import main as bench_main
    elif args.benchmark == "layout":
        from .bench.layout import main as bench_main
    elif args.benchmark == "scale":
        from .bench.scale import main as bench_main
    elif args.benchmark == "identify":
        from .bench.identify import main as bench_main
    elif args.benchmark == "cli":
        from .bench.cli import main as bench_main
    elif args.benchmark == "catalog":
        from .bench.catalog_follow import main as bench_main
    elif args.benchmark == "drift":
        from .bench.refresh_drift import main as bench_main
    elif args.benchmark == "map_page":
        from .bench.map_page import main as bench_main
    elif args.benchmark == "descriptor":
        from .bench.descriptor import main as bench_main
    else:
        from .bench.search_e2e import main as bench_main
    return int(bench_main(args.extra) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="artsim", description="Find paintings similar to a painting or photo.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="materialize every stale asset and image batch (idempotent)")
    run.set_defaults(func=cmd_run)

    status = sub.add_parser("status", help="what the lake holds: paintings cached, embedded, indexed, failed; what is stale",
                            description="Paintings in the catalog, cached, with a face, embedded per model and "
                            "indexed (generation, when); images that failed or were skipped and catalog rows "
                            "rejected, with reasons and the worst offenders; what `artsim run` would re-run "
                            "(Dagster's stale status, computed once and reused until Dagster records anything new or the code or "
                            "the ARTSIM_* settings change; --json says whether it came from that cache). "
                            "Exit status 1 when an artefact of the lake cannot be read.")
    status.add_argument("--json", action="store_true", help="print it as JSON (for scripts)")
    status.add_argument("--worst", type=int, default=20, help="offenders to list (default %(default)s; all are counted)")
    status.add_argument("--fresh", action="store_true",
                        help="compute what `artsim run` would re-run with Dagster even when the plan cached by "
                        "the last status is current (it is recomputed anyway whenever Dagster recorded anything, "
                        "or the code or settings changed)")
    status.set_defaults(func=cmd_status)

    search = sub.add_parser("search", help="find the paintings most similar to an image or a painting",
                            description="Rank the collection by 0.7 x visual + 0.3 x metadata similarity for a "
                            "painting of the collection (leaving the painting itself out), by visual similarity for "
                            "an image, and say whether the image shows a painting of the collection. "
                            "Reads the ARTSIM_* settings like `run`; "
                            "queries use the models the index was built with (ARTSIM_MODELS, if set, must name them).")
    search.add_argument("query", metavar="IMAGE_OR_OBJECTID",
                        help="an image file, or the objectid of a painting in the collection")
    search.add_argument("-k", type=int, default=10, help="number of results (default %(default)s)")
    search.add_argument("--face-crop", action="store_true",
                        help="search with the face found in the image (MTCNN) against the face index")
    search.add_argument("--artist", help="only this artist (case/accent-insensitive substring of the name)")
    search.add_argument("--style", help="only paintings whose style contains this text")
    search.add_argument("--medium", help="only paintings whose medium contains this text")
    search.add_argument("--years", metavar="FROM-TO",
                        help="only paintings dated within this range, e.g. 1600-1700, 1650, 1600- or -1700")
    search.add_argument("--include-self", action="store_true",
                        help="an objectid query keeps the painting itself among its results")
    search.add_argument("--json", action="store_true", help="print the results as JSON")
    search.add_argument("--grid", type=Path, metavar="PNG", help="also write a PNG grid of the query and results")
    search.set_defaults(func=cmd_search)

    serve = sub.add_parser("serve", help="the search page, the collection map and a JSON API in a browser",
                           description="Serve the search page (upload or objectid, filters, more like this), the "
                           "map of the collection and a JSON API (/api/search, /api/paintings/{id}, /api/map, "
                           "/healthz; OpenAPI at /openapi.json). Loads the index once and picks up a newly "
                           "built index without a restart.")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default %(default)s: this machine only; 0.0.0.0 exposes it)")
    serve.add_argument("--port", type=int, default=8000, help="port (default %(default)s)")
    serve.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload in MiB (default %(default)s)")
    serve.add_argument("--max-pixels", type=int, default=40_000_000,
                       help="largest uploaded image in pixels (default %(default)s; bigger ones are refused)")
    serve.set_defaults(func=cmd_serve)

    bench = sub.add_parser("bench", help="benchmarks (their options follow the benchmark name)")
    which = bench.add_subparsers(dest="benchmark", required=True)
    for name, text in (("embeddings", "embedding step vs bare forward pass"),
                       ("search", "index latency (synthetic 10k/100k) and end-to-end query latency"),
                       ("refresh", "incremental refresh (one new batch, no change) vs full rebuild"),
                       ("notebook", "the old notebook's one-image loop vs artsim's batched faces + embeddings"),
                       ("dagster", "no-change run, status and the UI's stale-status queries at 32-512 partitions"),
                       ("layout", "collection map layouts (openTSNE, UMAP, sklearn t-SNE): time, kNN kept, placement"),
                       ("scale", "pca_model, faiss_index, collection_map, eval_report at 2k-131k synthetic paintings"),
                       ("identify", "identifying simulated photos: accuracy, false identifications, latency"),
                       ("cli", "cold start of each command: wall time, peak memory, the heavy packages it imports"),
                       ("catalog", "what following the catalog costs the server: per-request check, reload"),
                       ("drift", "an incremental refresh's neighbours against a full refit's, by size and changed share"),
                       ("map_page", "the map page in headless Chromium at 1,698-131,072 paintings: transfer, paint, zoom"),
                       ("descriptor", "descriptor study: pooling, scales/flips, normalisation, style blocks, held-out artists")):
        # add_help=False: `artsim bench search --help` reaches the benchmark's own parser
        which.add_parser(name, help=text, add_help=False).set_defaults(func=cmd_bench, passthrough=True)
    return parser


def root_cause(exc: BaseException) -> BaseException:
    """The user-code exception inside Dagster's wrappers (``user_exception`` / ``__cause__``).

    Only Dagster's own exceptions are unwrapped: artsim's errors keep their message (and hints).
    """
    seen: set[int] = set()
    while id(exc) not in seen and type(exc).__module__.split(".")[0] == "dagster":
        seen.add(id(exc))
        inner = getattr(exc, "user_exception", None) or exc.__cause__
        if inner is None:
            break
        exc = inner
    return exc


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", message=r".*is currently in (beta|preview|alpha).*")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `run` shows artsim's progress records on stdout; other commands keep stdout for their output
    progress = logging.StreamHandler(sys.stdout if args.command == "run" else sys.stderr)
    progress.setFormatter(logging.Formatter("  %(message)s"))
    package_log = logging.getLogger("artsim_pipeline")
    package_log.addHandler(progress)
    package_log.setLevel(logging.INFO if args.command == "run" else logging.WARNING)
    if extra and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
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
