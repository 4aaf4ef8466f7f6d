"""``artsim bench search``: index latency on synthetic vectors + warm end-to-end query latency.

Two parts, one table each, one JSON report (``--out``, default
``<data_lake>/reports/bench_search.json``):

* **index** — :func:`artsim_pipeline.bench.search_index.index_latency_table`: Flat vs IVF-Flat,
  p50/p99 per-query latency and recall@10 at N = 10k and 100k synthetic 512-d vectors;
* **end to end** — a :class:`~artsim_pipeline.core.search.SearchEngine` loaded once on the data lake
  (``--data-lake``, default ``ARTSIM_DATA_LAKE``), warmed up, then ``--queries`` timed searches
  (k=10) of a *user image* that is not in the collection (``--image``, default a 512×512 photo
  written to a temporary file). Each timed search is followed by the models' bare forward passes
  on the same, already prepared image; the target is ``e2e p50 <= 1.2 × forward p50 + 20 ms``.
  Informational rows: the same image with ``--face-crop`` (adds MTCNN) and an objectid query
  (stored vector: no model runs). Skipped, with the reason, when the lake has no index;
* **web API** (rows of the same table; skipped with ``--no-http`` or without an index) — the ``artsim serve`` app
  (:func:`artsim_pipeline.web.app.create_app`, serving the engine loaded above; the background
  collection map is not started) runs in-process under uvicorn on a free 127.0.0.1 port, is warmed
  up, then timed over real HTTP with one keep-alive client connection: ``--queries`` ×
  ``GET /api/search?objectid=<the first indexed objectid>&k=10`` (target p50 < 50 ms) and
  ``--queries`` × ``POST /api/search`` with the same user image as a multipart ``image`` field and
  ``k=10`` (target p50 < 1.3 × the forward p50 measured above). The server is shut down after.

Every row with a target has ``target_ms`` and ``meets_target`` (``pass``/``fail`` in the table).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from artsim_pipeline.bench.search_index import DEFAULT_SIZES, format_table, index_latency_table
from artsim_pipeline.core.storage import atomic_write_text

TARGET_FACTOR = 1.2
TARGET_OFFSET_MS = 20.0
WARMUP = 3
HTTP_OBJECTID_TARGET_MS = 50.0
HTTP_UPLOAD_FACTOR = 1.3
HTTP_TIMEOUT_S = 120.0


def _percentiles(values: list[float]) -> tuple[float, float]:
    return round(float(np.percentile(values, 50)), 2), round(float(np.percentile(values, 99)), 2)


def default_user_image(directory: Path) -> Path:
    """A 512×512 JPEG photo of a person (scikit-image's astronaut) — not a painting of the collection."""
    from PIL import Image

    try:
        from skimage import data

        pixels = data.astronaut()
    except Exception:  # noqa: BLE001 - any photo-like image will do
        rng = np.random.default_rng(0)
        pixels = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    path = directory / "user_photo.jpg"
    Image.fromarray(pixels).save(path, quality=90)
    return path


def _timed(fn: Callable[[], Any], n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def end_to_end(engine: Any, image: Path, n_queries: int, k: int = 10) -> list[dict[str, Any]]:
    """Rows of warm latencies (ms) for ``engine`` (see the module doc)."""
    from artsim_pipeline.core.generations import REQUIRED_VARIANT

    arrays = engine.prepare(image)
    for _ in range(WARMUP):
        engine.search(image, k=k)
        engine.forward(arrays)
    e2e, fwd = [], []
    for _ in range(n_queries):  # interleaved, so both see the same machine load
        e2e += _timed(lambda: engine.search(image, k=k), 1)
        fwd += _timed(lambda: engine.forward(arrays), 1)
    prep = _timed(lambda: engine.prepare(image), n_queries)
    p50, p99 = _percentiles(e2e)
    f50, f99 = _percentiles(fwd)
    target = round(TARGET_FACTOR * f50 + TARGET_OFFSET_MS, 2)
    rows = [{
        "query": "user image", "n": n_queries, "p50_ms": p50, "p99_ms": p99, "forward_p50_ms": f50,
        "forward_p99_ms": f99, "prepare_p50_ms": _percentiles(prep)[0], "target_ms": target,
        "meets_target": bool(p50 <= target),
    }]

    engine.search(image, k=k, face_crop=True)  # loads MTCNN
    response = engine.search(image, k=k, face_crop=True)
    face = _timed(lambda: engine.search(image, k=k, face_crop=True), max(2, n_queries // 4))
    rows.append({"query": f"user image --face-crop ({response.variant} index)", "n": len(face),
                 **dict(zip(("p50_ms", "p99_ms"), _percentiles(face)))})

    objectid = int(engine.variants[REQUIRED_VARIANT].bundle.ids[0])
    engine.search(objectid, k=k)
    by_id = _timed(lambda: engine.search(objectid, k=k), n_queries)
    rows.append({"query": f"objectid {objectid}", "n": n_queries,
                 **dict(zip(("p50_ms", "p99_ms"), _percentiles(by_id)))})
    return rows


class _LiveServer:
    """uvicorn serving ``app`` on 127.0.0.1 at a free port, in a daemon thread of this process."""

    def __init__(self, app: Any) -> None:
        import socket

        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name="artsim-bench-uvicorn")
        self.stopped_cleanly: bool | None = None

    def __enter__(self) -> "_LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                self.__exit__()
                raise RuntimeError("the web app (uvicorn) did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.stopped_cleanly = not self.thread.is_alive()
        self.sock.close()


def web_api(engine: Any, lake: Any, image: Path, n_queries: int, forward_p50_ms: float,
            k: int = 10) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows of warm HTTP latencies (ms) of the web app serving ``engine`` (see the module doc), and
    facts about the run (port, clean shutdown)."""
    import requests

    from artsim_pipeline.core.generations import REQUIRED_VARIANT
    from artsim_pipeline.web.app import create_app

    app = create_app(lake, lambda: engine, precompute_map=False)  # no map computation during timings
    objectid = int(engine.variants[REQUIRED_VARIANT].bundle.ids[0])
    data = image.read_bytes()
    mime = {".png": "image/png", ".webp": "image/webp"}.get(image.suffix.lower(), "image/jpeg")

    with _LiveServer(app) as live, requests.Session() as client:
        def get_by_id() -> None:
            _check(client.get(f"{live.url}/api/search", params={"objectid": objectid, "k": k},
                              timeout=HTTP_TIMEOUT_S), k)

        def post_upload() -> None:
            _check(client.post(f"{live.url}/api/search", files={"image": (image.name, data, mime)},
                               data={"k": str(k)}, timeout=HTTP_TIMEOUT_S), k)

        for _ in range(WARMUP):
            get_by_id()
            post_upload()
        by_id = _timed(get_by_id, n_queries)
        upload = _timed(post_upload, n_queries)
    if not live.stopped_cleanly:
        print("warning: the web app did not shut down within 15 s", file=sys.stderr)

    rows = []
    for query, times, target in (
        (f"http GET /api/search?objectid={objectid}&k={k}", by_id, HTTP_OBJECTID_TARGET_MS),
        (f"http POST /api/search (image upload, k={k})", upload, round(HTTP_UPLOAD_FACTOR * forward_p50_ms, 2)),
    ):
        p50, p99 = _percentiles(times)
        rows.append({"query": query, "n": len(times), "p50_ms": p50, "p99_ms": p99,
                     **({"forward_p50_ms": forward_p50_ms} if "POST" in query else {}),
                     "target_ms": target, "meets_target": bool(p50 < target)})
    info = {"server": "uvicorn in-process on 127.0.0.1", "port": live.port,
            "client": "requests.Session (one keep-alive connection)", "warmup": WARMUP,
            "targets": {"objectid": f"p50 < {HTTP_OBJECTID_TARGET_MS:g} ms",
                        "upload": f"p50 < {HTTP_UPLOAD_FACTOR} x forward p50"},
            "shutdown_clean": bool(live.stopped_cleanly)}
    return rows, info


def _check(response: Any, k: int) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"{response.request.method} {response.url} -> HTTP {response.status_code}: "
                           f"{response.text[:300]}")
    if len(response.json().get("results", ())) > k:
        raise RuntimeError(f"{response.request.method} {response.url}: more than k={k} results")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "pass" if value else "fail"
    return str(value)


def format_e2e(rows: list[dict[str, Any]]) -> str:
    cols = ("query", "n", "p50_ms", "p99_ms", "forward_p50_ms", "target_ms", "meets_target")
    cells = [[_cell(row.get(c)) for c in cols] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cols, widths)))]
    lines += ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))) for r in cells]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="artsim bench search", description=__doc__.splitlines()[0])
    parser.add_argument("--data-lake", type=Path, default=None, help="data lake to query (default: ARTSIM_DATA_LAKE)")
    parser.add_argument("--image", type=Path, default=None, help="the user image (default: a 512x512 photo)")
    parser.add_argument("--queries", type=int, default=20, help="timed end-to-end queries (default %(default)s)")
    parser.add_argument("--sizes", default=",".join(str(s) for s in DEFAULT_SIZES),
                        help="index part: comma-separated synthetic collection sizes (default %(default)s)")
    parser.add_argument("--index-queries", type=int, default=200, help="index part: timed queries per index")
    parser.add_argument("--skip-index", action="store_true", help="only the end-to-end part")
    parser.add_argument("--no-http", action="store_true",
                        help="skip the web API part (the app served over HTTP on 127.0.0.1)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON report (default <data_lake>/reports/bench_search.json)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from artsim_pipeline.config import Settings
    from artsim_pipeline.core.model_thread import ModelThread
    from artsim_pipeline.core.search import SearchEngine
    from artsim_pipeline.core.search_query import IndexNotBuiltError
    from artsim_pipeline.core.lake import DataLake

    args = build_parser().parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        print(f"artsim bench search: --sizes must be integers, got {args.sizes!r}", file=sys.stderr)
        return 2
    if args.queries < 1 or args.index_queries < 1 or (not args.skip_index and (not sizes or min(sizes) < 2)):
        print("artsim bench search: --queries, --index-queries and --sizes must be positive", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    if args.data_lake is not None:
        settings = settings.with_overrides(data_lake=args.data_lake)
    lake = DataLake(settings.data_lake)
    status = 0
    report: dict[str, Any] = {
        "benchmark": "search", "data_lake": str(lake.root), "models": list(settings.models),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
    }

    if not args.skip_index:
        print(f"index latency, synthetic {args.sizes} x 512-d, {args.index_queries} queries, top 10:", flush=True)
        index_rows = index_latency_table(sizes, 512, args.index_queries)
        print(format_table(index_rows), flush=True)
        report["index"] = index_rows

    print(f"\nend-to-end latency on {lake.root} (warm engine, k=10):", flush=True)
    try:
        # as `artsim serve` runs it: every model call on one thread (core/model_thread.py), the in-process and
        # forward-pass rows included, so all three rows see the same torch thread
        engine = SearchEngine.from_settings(settings, model_runner=ModelThread())
    except IndexNotBuiltError as exc:
        print(f"skipped: {exc}")
        report["end_to_end"] = {"skipped": str(exc)}
    else:
        http_info: dict[str, Any]
        with tempfile.TemporaryDirectory(prefix="artsim-bench-") as tmp:
            image = args.image or default_user_image(Path(tmp))
            rows = end_to_end(engine, image, args.queries)
            if args.no_http:
                http_info = {"skipped": "--no-http"}
            else:
                try:
                    http_rows, http_info = web_api(engine, lake, image, args.queries, rows[0]["forward_p50_ms"])
                except Exception as exc:  # noqa: BLE001 - report it; the other rows still stand
                    status = 1
                    http_info = {"error": f"{type(exc).__name__}: {exc}"}
                else:
                    rows += http_rows
        import torch

        report["end_to_end"] = {
            "image": str(args.image) if args.image else "512x512 photo (astronaut)", "device": str(engine.device),
            "torch_threads": torch.get_num_threads(), "precision": engine.precision,
            "models": list(engine.model_names), "engine_load_s": round(engine.load_seconds, 2),
            "target": f"p50 <= {TARGET_FACTOR} x forward p50 + {TARGET_OFFSET_MS:g} ms", "rows": rows,
            "http": http_info,
        }
        print(f"models {','.join(engine.model_names)} on {engine.device}, engine loaded in {engine.load_seconds:.1f}s")
        print(format_e2e(rows))
        if "error" in http_info:
            print(f"web API part failed: {http_info['error']}", file=sys.stderr)
    out = args.out or lake.reports_dir / "bench_search.json"
    atomic_write_text(Path(out), json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
