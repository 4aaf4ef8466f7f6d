"""Embedding benchmark: the pipeline's embedding step vs the bare forward pass of the same model.

For each model and precision it measures

* ``pipeline img/s``: :func:`embed_batch_to_parquet` over image files on disk (decode, crop,
  resize in worker threads, forward, parquet write), the way the Dagster asset runs it;
* ``bare img/s``: the model's batched forward pass alone on pre-made normalised tensors, with
  channels_last on and off;
* ``bare+taps img/s``: the same forward pass with the tap features the pipeline stores beside the final vector
  (:func:`~artsim_pipeline.core.embedding.forward_blocks`: per-channel statistics of inner blocks, read by
  forward hooks), i.e. the model work the embedding step must do;
* their ratios (``ratio``: pipeline / bare, how close the pipeline gets to the model's own speed;
  ``ratio_taps``: pipeline / bare+taps, what decoding, preparing and writing cost), the peak RSS of the
  process that ran the model (each model runs in a fresh subprocess unless ``--no-isolate``)
  and the minimum fp32-vs-bf16 cosine similarity on the benchmark images.

Results go to stdout as a table and to a JSON file (``--out``, default
``<data_lake>/reports/bench_embeddings.json``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


# --------------------------------------------------------------------------- inputs


def find_images(directory: Path, n: int) -> list[Path]:
    """The first ``n`` image files (sorted by name) directly inside ``directory``."""
    files = sorted(p for p in Path(directory).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"no .jpg/.jpeg/.png images in {directory}")
    return files[:n]


def make_synthetic_images(directory: Path, n: int, size: tuple[int, int] = (1200, 900), seed: int = 0) -> list[Path]:
    """Write ``n`` smooth random-colour JPEGs (painting-sized) to ``directory``."""
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        small = rng.integers(0, 256, size=(size[1] // 50, size[0] // 50, 3), dtype=np.uint8)
        noise = rng.integers(0, 24, size=(size[1], size[0], 3), dtype=np.uint8)
        image = np.asarray(Image.fromarray(small).resize(size, Image.Resampling.BICUBIC), dtype=np.uint8)
        path = directory / f"synthetic_{i:05d}.jpg"
        Image.fromarray(np.clip(image.astype(np.int16) + noise - 12, 0, 255).astype(np.uint8)).save(path, quality=88)
        paths.append(path)
    return paths


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


# --------------------------------------------------------------------------- one model


def _time_bare(model: Any, x: Any, batch_size: int, precision: str, min_seconds: float, taps: bool = False) -> float:
    """Images/s of the bare forward pass over ``x`` in batches (repeated for at least ``min_seconds``); with
    ``taps``, the forward pass with the tap features (:func:`~artsim_pipeline.core.embedding.forward_blocks`)."""
    from artsim_pipeline.core.embedding import forward, forward_blocks

    run = forward_blocks if taps else forward
    run(model, x[: min(len(x), batch_size)], precision)  # warm-up (oneDNN kernel selection)
    done, started = 0, time.perf_counter()
    while True:
        for i in range(0, len(x), batch_size):
            run(model, x[i : i + batch_size], precision)
        done += len(x)
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return done / elapsed


def bench_model(job: dict[str, Any]) -> dict[str, Any]:
    """Benchmark one model (runs in a subprocess when isolated); returns a JSON-friendly dict."""
    import pandas as pd
    import torch

    from artsim_pipeline.core.embedding import (
        BF16_MIN_COSINE,
        check_bf16,
        load_and_prepare,
    )
    from artsim_pipeline.core.embedding_store import embed_batch_to_parquet
    from artsim_pipeline.core.models import load_model
    from artsim_pipeline.core.preprocessing import normalize_batch

    rss_before_model = _peak_rss_mb()  # torch + libraries imported, no model yet
    paths = [Path(p) for p in job["paths"]]
    batch_size, workers = job["batch_size"], job["num_workers"]
    started = time.perf_counter()
    model = load_model(job["model"], weights=job["weights"], device=job["device"])
    load_s = time.perf_counter() - started
    spec = model.spec

    bare_paths = paths[: job["bare_n"]]
    prepared = np.stack([load_and_prepare(p, spec) for p in bare_paths])
    frame = pd.DataFrame(
        {"objectid": np.arange(len(paths), dtype=np.int64), "uuid": [p.stem for p in paths],
         "path": [str(p) for p in paths]}
    )
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="artsim-bench-") as tmp:
        for precision in job["precisions"]:
            bare: dict[bool, float] = {}
            bare_taps: dict[bool, float] = {}
            for cl in job["bare_channels_last"]:
                model.use_memory_format(cl)
                x = normalize_batch(prepared, spec, model.device, channels_last=cl)
                bare[cl] = _time_bare(model, x, batch_size, precision, job["min_seconds"])
                bare_taps[cl] = _time_bare(model, x, batch_size, precision, job["min_seconds"], taps=True)
            for cl in job["bare_channels_last"]:
                row = {
                    "model": spec.name, "weights_id": model.weights_id, "dim": spec.dim,
                    "input_size": spec.input_size, "precision": precision, "channels_last": cl,
                    "images": None, "pipeline_img_s": None, "bare_img_s": bare[cl], "ratio": None,
                    "bare_taps_img_s": bare_taps[cl], "ratio_taps": None,
                }
                if cl in job["pipeline_channels_last"]:
                    # warm the pipeline path on this memory format, then time the whole set
                    embed_batch_to_parquet(model, frame.iloc[:batch_size], Path(tmp), "warmup",
                                           batch_size=batch_size, precision=precision, channels_last=cl,
                                           num_workers=workers)
                    result = embed_batch_to_parquet(model, frame, Path(tmp), f"bench_{precision}_{int(cl)}",
                                                    batch_size=batch_size, precision=precision, channels_last=cl,
                                                    num_workers=workers)
                    row.update({"images": result.rows, "pipeline_img_s": result.images_per_s,
                                "ratio": result.images_per_s / bare[cl],
                                "ratio_taps": result.images_per_s / bare_taps[cl],
                                "parquet_bytes": result.path.stat().st_size})
                rows.append(row)
    bf16_cos = None
    if "bf16" in job["precisions"] or job["bf16_check"]:
        sample = paths[: job["bf16_n"]]
        bf16_cos = check_bf16(model, [str(p) for p in sample], batch_size=min(batch_size, 16))
    peak = _peak_rss_mb()
    for row in rows:
        row.update({
            "peak_rss_mb": peak, "rss_before_model_mb": rss_before_model, "bf16_min_cosine": bf16_cos,
            "bf16_acceptable": None if bf16_cos is None else bool(bf16_cos >= BF16_MIN_COSINE),
            "load_s": load_s, "torch_threads": torch.get_num_threads(),
        })
    return {"model": spec.name, "rows": rows, "peak_rss_mb": peak, "rss_before_model_mb": rss_before_model,
            "bf16_min_cosine": bf16_cos,
            "rss_scope": "subprocess" if job["isolated"] else "process (cumulative)"}


# --------------------------------------------------------------------------- driver


def run_benchmark(
    *,
    images: Path | None = None,
    n: int = 256,
    models: Sequence[str] | None = None,
    weights: str = "pretrained",
    batch_size: int = 32,
    num_workers: int = 2,
    precisions: Sequence[str] = ("fp32", "bf16"),
    channels_last: Sequence[bool] | None = None,
    pipeline_default_only: bool = True,
    device: str = "cpu",
    bare_n: int = 64,
    bf16_n: int = 32,
    min_seconds: float = 1.5,
    isolate: bool = True,
    out: Path | None = None,
    synthetic_size: tuple[int, int] = (1200, 900),
) -> dict[str, Any]:
    """Run the benchmark and return the report; also write it as JSON to ``out`` when given.

    ``images``: a directory of image files (the first ``n`` by name are used); None -> ``n``
    synthetic painting-sized JPEGs. ``channels_last``: memory formats to measure; None -> the
    model default only.
    """
    import torch

    from artsim_pipeline.core.models import DEFAULT_OFFLINE_MODELS, get_spec

    models = list(models or DEFAULT_OFFLINE_MODELS)
    for name in models:
        get_spec(name)  # unknown names fail before any work
    with tempfile.TemporaryDirectory(prefix="artsim-bench-images-") as tmp:
        if images is not None:
            paths = find_images(Path(images), n)
            source = "directory"
        else:
            paths = make_synthetic_images(Path(tmp), n, synthetic_size)
            source = f"synthetic {synthetic_size[0]}x{synthetic_size[1]} JPEG"
        sizes = _image_sizes(paths[:64])
        results = []
        for name in models:
            default_cl = get_spec(name).channels_last
            job = {
                "model": name, "weights": weights, "device": device, "paths": [str(p) for p in paths],
                "batch_size": batch_size, "num_workers": num_workers, "precisions": list(precisions),
                "bare_channels_last": list(channels_last) if channels_last is not None else [default_cl],
                "pipeline_channels_last": [default_cl] if pipeline_default_only or channels_last is None
                else list(channels_last),
                "bare_n": min(bare_n, len(paths)), "bf16_n": min(bf16_n, len(paths)), "bf16_check": True,
                "min_seconds": min_seconds, "isolated": isolate,
            }
            if isolate:
                context = multiprocessing.get_context("spawn")
                with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
                    results.append(pool.submit(bench_model, job).result())
            else:
                results.append(bench_model(job))
    report = {
        "benchmark": "embeddings",
        "created_unix": time.time(),
        "host": {
            "platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "device": device,
        },
        "images": {"source": source, "count": len(paths), "median_size": sizes},
        "settings": {
            "weights": weights, "batch_size": batch_size, "num_workers": num_workers,
            "precisions": list(precisions), "bare_n": bare_n, "bf16_n": bf16_n, "isolate": isolate,
        },
        "rows": [row for result in results for row in result["rows"]],
        "models": {r["model"]: {"peak_rss_mb": r["peak_rss_mb"], "rss_before_model_mb": r["rss_before_model_mb"],
                                "bf16_min_cosine": r["bf16_min_cosine"],
                                "rss_scope": r["rss_scope"]} for r in results},
    }
    if out is not None:
        from artsim_pipeline.core.storage import atomic_write_text

        atomic_write_text(Path(out), json.dumps(report, indent=2, default=str) + "\n")
    return report


def _image_sizes(paths: Sequence[Path]) -> list[int] | None:
    from PIL import Image

    sizes = []
    for path in paths:
        with Image.open(path) as image:
            sizes.append(image.size)
    if not sizes:
        return None
    return [int(np.median([s[0] for s in sizes])), int(np.median([s[1] for s in sizes]))]


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(report: dict[str, Any]) -> str:
    """The report's rows as a fixed-width text table."""
    header = ("model", "prec", "ch_last", "pipeline img/s", "bare img/s", "ratio", "bare+taps img/s", "ratio taps",
              "peak RSS MB", "bf16 min cos")
    lines = [header]
    for row in report["rows"]:
        cos = row["bf16_min_cosine"]
        lines.append((
            row["model"], row["precision"], "on" if row["channels_last"] else "off",
            _fmt(row["pipeline_img_s"], ".1f"), _fmt(row["bare_img_s"], ".1f"), _fmt(row["ratio"], ".2f"),
            _fmt(row.get("bare_taps_img_s"), ".1f"), _fmt(row.get("ratio_taps"), ".2f"),
            f"{row['peak_rss_mb']:.0f}",
            "-" if cos is None else f"{cos:.5f}" + ("" if row["bf16_acceptable"] else " (rejected)"),
        ))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    text = [" | ".join(str(v).ljust(w) for v, w in zip(line, widths)) for line in lines]
    text.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="artsim bench embeddings",
        description="Images/s of the embedding step (files -> parquet) vs the bare forward pass, fp32 and bf16.",
    )
    parser.add_argument("--images", type=Path, default=None,
                        help="directory of image files to use (default: generate synthetic JPEGs)")
    parser.add_argument("--n", type=int, default=None, help="number of images (default 256; 64 with --notebook)")
    parser.add_argument("--models", default=None,
                        help="comma-separated model names (default: efficientnet_lite0,efficientnet_lite2,mobilenet_v2)")
    parser.add_argument("--notebook", action="store_true",
                        help="benchmark the notebook models (resnet101, efficientnet_b3, vit_b_16) with random weights")
    parser.add_argument("--weights", default=None, help="pretrained | random | state-dict path (default pretrained)")
    parser.add_argument("--batch-size", type=int, default=None, help="embedding batch size (default ARTSIM_EMBED_BATCH_SIZE)")
    parser.add_argument("--workers", type=int, default=2, help="image preparation threads (default 2)")
    parser.add_argument("--precision", default="fp32,bf16", help="comma-separated: fp32, bf16 (default both)")
    parser.add_argument("--channels-last", choices=("auto", "on", "off", "both"), default="both",
                        help="memory formats for the bare forward (default both; auto = model default); "
                             "the pipeline runs with the model default unless on/off is given")
    parser.add_argument("--device", default="cpu", help="auto | cpu | cuda | mps (default cpu)")
    parser.add_argument("--bare-n", type=int, default=64, help="images in the bare forward measurement (default 64)")
    parser.add_argument("--min-seconds", type=float, default=1.5,
                        help="minimum duration of each bare forward measurement (default 1.5)")
    parser.add_argument("--no-isolate", action="store_true", help="run every model in this process (RSS then cumulative)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON report path (default <data_lake>/reports/bench_embeddings.json)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``artsim bench embeddings``); returns the exit status."""
    from artsim_pipeline.config import NOTEBOOK_MODELS, Settings
    from artsim_pipeline.core.models import resolve_device
    from artsim_pipeline.core.lake import DataLake

    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    if args.notebook:
        models = list(NOTEBOOK_MODELS)
        weights = args.weights or "random"
    else:
        models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
        weights = args.weights or "pretrained"
    n = args.n if args.n is not None else (64 if args.notebook else 256)
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    if not precisions or any(p not in ("fp32", "bf16") for p in precisions):
        print(f"--precision must list fp32 and/or bf16, got {args.precision!r}", file=sys.stderr)
        return 2
    channels_last = {"auto": None, "on": [True], "off": [False], "both": [True, False]}[args.channels_last]
    out = args.out or DataLake(settings.data_lake).reports_dir / "bench_embeddings.json"
    device = str(resolve_device(args.device))
    try:
        report = run_benchmark(
            images=args.images, n=n, models=models, weights=weights,
            batch_size=args.batch_size or settings.embed_batch_size, num_workers=args.workers,
            precisions=precisions, channels_last=channels_last, pipeline_default_only=args.channels_last == "both",
            device=device, bare_n=args.bare_n, min_seconds=args.min_seconds,
            isolate=not args.no_isolate, out=out,
        )
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"bench embeddings failed: {exc}", file=sys.stderr)
        return 1
    images = report["images"]
    print(f"{images['count']} images ({images['source']}, median {images['median_size']}), "
          f"weights={weights}, batch={report['settings']['batch_size']}, workers={args.workers}, "
          f"torch threads={report['host']['torch_threads']}, 1-min load avg {report['host']['load_avg_1m']}")
    print(format_table(report))
    print(f"report written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
