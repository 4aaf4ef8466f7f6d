"""``artsim bench scale``: how the collection steps grow with the collection, on synthetic inputs.

Inputs, generated once per size ``n`` into ``--workdir`` (``n<N>/``; reused while their manifest
matches, so generation is never timed) and read back memory-mapped:

* the fusion blocks of ``--models`` (default: the three offline backbones) under the ``mean`` tap
  set, at their real widths (measured by one forward pass of each network with random weights):
  ``blocks/<block>.npy`` float32 ``[n, width]``, named like :func:`~artsim_pipeline.core.fusion.block_key`;
* ``objectids.npy`` (int64, ascending) and ``catalog.parquet`` (the ``eval_report`` catalog columns).

The data are clustered: one synthetic artist per ~50 paintings, each painting its artist's latent
centre plus its style's (artists have one or two of 24 styles) plus noise; every block is a random
linear map of that shared latent plus its own noise, so the blocks are correlated. Medium and date
follow the artist (85% the artist's medium, years within 40 of the artist's), so artist, style and
the hybrid metadata score are meaningful.

Steps, each in its own process (seconds of the call alone; peak RSS of that process, ``VmHWM`` of
``/proc/self/status`` read when the step is done, with the RSS after its imports beside it):

* ``pca_model``: :func:`~artsim_pipeline.core.fusion.fit_fusion` (512 components) + ``transform``;
* ``faiss_index``: :func:`~artsim_pipeline.core.index_recipe.build_index_bundle`, the asset's recipe, on the
  fused vectors: :func:`~artsim_pipeline.core.index.build_index` (IVF training, adding, nprobe tuning; the
  tuning is also timed alone, in ``details``), the re-ranking's augmented vectors
  (:func:`~artsim_pipeline.core.rerank.augment_bundle`) and the explanations' per-block projections
  (:func:`~artsim_pipeline.core.explain.explain_bundle`), each also timed alone in ``details``;
* ``collection_map``: :func:`~artsim_pipeline.core.layout.compute_layout` (seed 0);
* ``eval_report``: :func:`~artsim_pipeline.core.evaluation.evaluate_collection` with
  ``study=False``, the index check and the default re-ranking, as the asset runs it.

JSON (``--out``, default ``<data_lake>/reports/bench_scale.json``)::

    {"benchmark": "scale", "machine": {cpus, cpus_usable, load_before, load_after, memory_gb, threads, ...},
     "input": {models, taps, blocks: {name: width}, width, pca_dim, paintings_per_artist, styles, seed},
     "sizes": [n, ...],
     "steps": {name: {"n": [...], "seconds": [...], "peak_rss_mb": [...], "import_rss_mb": [...],
                      "details": [{...}, ...], "exponent": x, "exponent_sizes": [n, ...]}}}

``exponent`` is the least-squares slope of log(seconds) against log(n) over ``exponent_sizes``:
the three largest sizes measured (small sizes are dominated by fixed costs). A step that failed or
ran past ``--timeout-s`` has ``null`` seconds and an ``error`` in its details.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..core.storage import atomic_write_text

STEPS = ("pca_model", "faiss_index", "collection_map", "eval_report")
#: Files a step writes that later steps read (generated untimed when a step runs without its producer).
PRODUCES = {"pca_model": ("fused.npy", "fusion.npz"), "faiss_index": ("index/manifest.json",)}
NEEDS = {"faiss_index": ("pca_model",), "collection_map": ("pca_model",), "eval_report": ("pca_model", "faiss_index")}
DEFAULT_SIZES = (2_048, 8_192, 32_768, 131_072)
PCA_DIM = 512
TAPS = "mean"
PER_ARTIST = 50
N_STYLES = 24
LATENT = 32
NOISE = 1.6  # of a painting around its artist's latent centre (the centres are standard normal)
FORMAT = 1
MEDIA = ("oil on canvas", "oil on panel", "tempera on panel", "oil on copper", "watercolor on paper",
         "acrylic on canvas", "fresco")
CATALOG_COLUMNS = ("objectid", "uuid", "title", "artist", "artist_key", "style", "beginyear", "endyear",
                   "displaydate", "medium")


# ---------------------------------------------------------------- inputs

def block_widths(models: Sequence[str], taps: str = TAPS) -> dict[str, int]:
    """Fusion block name -> width for ``models`` under ``taps``: one forward pass per network (random weights)."""
    import torch

    from ..core.fusion import block_key, in_tap_set
    from ..core.models import load_model

    widths: dict[str, int] = {}
    for name in models:
        model = load_model(name, "random")
        size = model.spec.input_size
        with torch.no_grad(), model.capture_taps() as taps_out:
            final = model.module(torch.zeros(1, 3, size, size))
        found = {"final": int(final.shape[-1]), **{tap: int(v.shape[-1]) for tap, v in taps_out.items()}}
        widths.update({block_key(name, b): w for b, w in found.items() if in_tap_set(block_key(name, b), taps)})
    return dict(sorted(widths.items()))


def _manifest(n: int, widths: dict[str, int], seed: int) -> dict[str, Any]:
    return {"format": FORMAT, "n": int(n), "seed": int(seed), "blocks": widths, "per_artist": PER_ARTIST,
            "styles": N_STYLES, "latent": LATENT, "noise": NOISE}


def generate(root: Path, n: int, widths: dict[str, int], seed: int = 0) -> None:
    """Write the synthetic inputs of ``n`` paintings under ``root`` (see the module doc); skipped when done."""
    import pandas as pd

    manifest = _manifest(n, widths, seed)
    path = root / "manifest.json"
    if path.exists() and json.loads(path.read_text()) == manifest:
        return
    path.unlink(missing_ok=True)
    for derived in ("fused.npy", "fusion.npz", "index/manifest.json"):  # outputs of older inputs
        (root / derived).unlink(missing_ok=True)
    (root / "blocks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, n])
    n_artists = max(2, n // PER_ARTIST)
    artist = rng.integers(0, n_artists, n)
    styles = rng.integers(0, N_STYLES, (n_artists, 2))
    two_styles = rng.random(n_artists) < 0.2
    centres = rng.standard_normal((n_artists, LATENT))
    style_centres = rng.standard_normal((N_STYLES, LATENT))
    latent = (centres[artist] + 0.7 * style_centres[styles[artist, 0]]
              + 0.35 * two_styles[artist, None] * style_centres[styles[artist, 1]]
              + NOISE * rng.standard_normal((n, LATENT))).astype(np.float32)
    for name, width in widths.items():
        weight = (rng.standard_normal((LATENT, width)) / np.sqrt(LATENT)).astype(np.float32)
        offset = rng.uniform(0.0, 1.0, width).astype(np.float32)
        out = np.lib.format.open_memmap(root / "blocks" / f"{name}.npy", mode="w+", dtype=np.float32, shape=(n, width))
        for start in range(0, n, 8_192):
            rows = slice(start, min(start + 8_192, n))
            noise = rng.standard_normal((rows.stop - start, width), dtype=np.float32)
            out[rows] = latent[rows] @ weight + offset + noise
        out.flush()
        del out
    objectids = np.arange(1, n + 1, dtype=np.int64)
    np.save(root / "objectids.npy", objectids)
    media = rng.integers(0, len(MEDIA), n_artists)
    medium = np.where(rng.random(n) < 0.85, media[artist], rng.integers(0, len(MEDIA), n))
    years = rng.integers(1300, 1900, n_artists)[artist] + rng.integers(0, 40, n)
    unknown = rng.random(n) < 0.02
    names = [None if u else f"Synthetic Painter {a:05d}" for a, u in zip(artist, unknown)]
    style_text = [f"Style {s[0]:02d}" + (f"; Style {s[1]:02d}" if two and s[1] != s[0] else "")
                  for s, two in zip(styles[artist], two_styles[artist])]
    pd.DataFrame({
        "objectid": objectids, "uuid": [f"synthetic-{o:08d}" for o in objectids],
        "title": [f"Painting {o}" for o in objectids], "artist": names,
        "artist_key": [None if a is None else a.lower() for a in names], "style": style_text,
        "beginyear": years, "endyear": years + 1, "displaydate": [f"c. {y}" for y in years],
        "medium": [MEDIA[m] for m in medium],
    }, columns=list(CATALOG_COLUMNS)).to_parquet(root / "catalog.parquet", index=False)
    atomic_write_text(path, json.dumps(manifest, indent=2))


def _blocks(root: Path) -> dict[str, np.ndarray]:
    widths = json.loads((root / "manifest.json").read_text())["blocks"]
    return {name: np.load(root / "blocks" / f"{name}.npy", mmap_mode="r") for name in widths}


# ---------------------------------------------------------------- one step (runs in its own process)

def _rss_mb(field: str = "VmRSS") -> float:
    """This process's ``VmRSS`` (now) or ``VmHWM`` (peak) in MB."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_step(step: str, root: Path, models: Sequence[str]) -> dict[str, Any]:
    """Run ``step`` on the inputs under ``root``; return {seconds, import_rss_mb, peak_rss_mb, details}."""
    if step == "pca_model":
        from ..core.fusion import fit_fusion, save_fusion, transform

        blocks = _blocks(root)
        rss = _rss_mb()
        started = time.perf_counter()
        fusion = fit_fusion(blocks, n_components=PCA_DIM)
        vectors = transform(fusion, blocks)
        seconds = time.perf_counter() - started
        np.save(root / "fused.npy", vectors)
        save_fusion(fusion, root / "fusion.npz")
        details = {"width": fusion.n_features, "dim": fusion.output_dim,
                   "explained_variance": round(float(np.sum(fusion.explained_variance_ratio)), 4)}
    elif step == "faiss_index":
        from ..config import Settings
        from ..core.index import save_index
        from ..core.index_recipe import build_index_bundle
        from ..core.recall import tune_nprobe
        from ..core.fusion import load_fusion

        vectors, ids = np.load(root / "fused.npy"), np.load(root / "objectids.npy")
        blocks, names = _blocks(root), load_fusion(root / "fusion.npz").model_names
        rss = _rss_mb()
        started = time.perf_counter()
        bundle, _ = build_index_bundle(vectors, ids, names, blocks, Settings().rerank_options)
        seconds = time.perf_counter() - started
        info = bundle.info
        details = {key: info.get(key) for key in ("index_type", "nlist", "nprobe", "recall_at_10")}
        details["augmentation_s"] = info["augmentation"]["seconds"]
        details["explanation_s"] = info["explanation"]["seconds"]
        if bundle.is_ivf:
            tuning = time.perf_counter()
            tune_nprobe(bundle.index, vectors, ids)
            details["nprobe_tuning_s"] = round(time.perf_counter() - tuning, 3)
        save_index(bundle, root / "index")
    elif step == "collection_map":
        from ..core.layout import compute_layout

        vectors, ids = np.load(root / "fused.npy"), np.load(root / "objectids.npy")
        rss = _rss_mb()
        started = time.perf_counter()
        frame = compute_layout(vectors, ids, seed=0)
        seconds = time.perf_counter() - started
        details = {"points": int(len(frame))}
    elif step == "eval_report":
        import pandas as pd

        from ..config import Settings
        from ..core.evaluation import VariantInput, evaluate_collection
        from ..core.fusion import load_fusion
        from ..core.index import load_index
        from ..core.index_recipe import index_searcher

        ids = np.load(root / "objectids.npy")
        catalog = pd.read_parquet(root / "catalog.parquet")
        full = VariantInput(ids, catalog["uuid"].to_numpy(), _blocks(root), load_fusion(root / "fusion.npz"))
        searcher = index_searcher(load_index(root / "index"))
        rss = _rss_mb()
        started, cpu = time.perf_counter(), time.process_time()  # CPU seconds: what the load does not inflate
        result = evaluate_collection(full, catalog, lambda uuid: root / "images" / f"{uuid}.jpg", models=models,
                                     pca_dim=PCA_DIM, index_check=searcher, taps=TAPS, study=False,
                                     rerank=Settings().rerank_options)
        seconds = time.perf_counter() - started
        head = result.report["headline"]
        details = {"cpu_seconds": round(time.process_time() - cpu, 2),
                   "precision_at_5": round(head["precision_at_k"], 4), "map": round(head["map"], 4),
                   "precision_at_5_ci95": round(head["precision_at_k_ci95"], 4),
                   "n_queries": head["n_queries"], "n_eligible_queries": head["n_eligible_queries"],
                   "index_recall_at_10": result.report["index_check"]["recall_vs_exact_at_10"],
                   "timings_s": result.report["timings_s"]}
    else:
        raise ValueError(f"unknown step {step!r}; steps: {', '.join(STEPS)}")
    return {"seconds": seconds, "import_rss_mb": round(rss, 1), "peak_rss_mb": round(_rss_mb("VmHWM"), 1),
            "details": details}


# ---------------------------------------------------------------- driver

def _spawn(step: str, root: Path, models: Sequence[str], timeout_s: float) -> dict[str, Any]:
    """``step`` in a child process: its result, or null numbers and an ``error``.

    (The child's own ``VmHWM``, not ``wait4``'s ``ru_maxrss``: Linux carries the parent's RSS at the
    fork into the child's ``ru_maxrss`` across ``exec``.)
    """
    result_path = root / f"result-{step}.json"
    result_path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "artsim_pipeline.bench.scale", "--worker", step, "--workdir", str(root),
           "--models", ",".join(models)]
    with open(root / f"log-{step}.txt", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return {"seconds": None, "import_rss_mb": None, "peak_rss_mb": None,
                    "details": {"error": f"ran past {timeout_s:.0f}s"}}
    if proc.returncode == 0 and result_path.exists():
        return json.loads(result_path.read_text())
    tail = (root / f"log-{step}.txt").read_text(errors="replace").strip().splitlines()[-1:] or [""]
    return {"seconds": None, "import_rss_mb": None, "peak_rss_mb": None,
            "details": {"error": f"exit {proc.returncode}: {tail[0][:200]}"}}


def exponent(sizes: Sequence[int], seconds: Sequence[float | None], last: int = 3) -> tuple[float | None, list[int]]:
    """Least-squares slope of log(seconds) vs log(n) over the ``last`` largest sizes with a time."""
    pairs = sorted((int(n), float(s)) for n, s in zip(sizes, seconds) if s is not None and s > 0)[-last:]
    if len(pairs) < 2:
        return None, [n for n, _ in pairs]
    slope = np.polyfit(np.log([n for n, _ in pairs]), np.log([s for _, s in pairs]), 1)[0]
    return round(float(slope), 3), [n for n, _ in pairs]


def _machine() -> dict[str, Any]:
    import faiss

    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return {"cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
            "load_before": [round(v, 2) for v in os.getloadavg()], "memory_gb": round(pages / 2**30, 1),
            "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
            "python": sys.version.split()[0], "numpy": np.__version__, "faiss": faiss.__version__}


def bench(sizes: Sequence[int], steps: Sequence[str], workdir: Path, models: Sequence[str], seed: int = 0,
          timeout_s: float = 3600.0, echo=print) -> dict[str, Any]:
    """Generate the inputs per size, run each step in its own process; return the JSON report."""
    machine = _machine()
    widths_path = workdir / f"widths-{'+'.join(models)}-{TAPS}.json"
    if widths_path.exists():
        widths = json.loads(widths_path.read_text())
    else:
        widths = block_widths(models)
        atomic_write_text(widths_path, json.dumps(widths, indent=2))
    out: dict[str, Any] = {
        "benchmark": "scale", "machine": machine,
        "input": {"models": list(models), "taps": TAPS, "blocks": widths, "width": int(sum(widths.values())),
                  "pca_dim": PCA_DIM, "paintings_per_artist": PER_ARTIST, "styles": N_STYLES, "seed": int(seed)},
        "sizes": [int(n) for n in sizes],
        "steps": {s: {"n": [], "seconds": [], "peak_rss_mb": [], "import_rss_mb": [], "details": []} for s in steps},
    }
    for n in sizes:
        root = workdir / f"n{n}"
        started = time.perf_counter()
        generate(root, int(n), widths, seed)
        echo(f"n={n}: inputs ready ({time.perf_counter() - started:.1f}s, {out['input']['width']} floats per painting)")
        for step in steps:
            for need in NEEDS.get(step, ()):
                if need not in steps and not all((root / f).exists() for f in PRODUCES[need]):
                    _spawn(need, root, models, timeout_s)  # its outputs only, untimed
            load = round(os.getloadavg()[0], 2)
            res = _spawn(step, root, models, timeout_s)
            res["details"] = {**res["details"], "load_1min_at_start": load}
            row = out["steps"][step]
            for key in ("seconds", "peak_rss_mb", "import_rss_mb", "details"):
                row[key].append(round(res[key], 3) if key == "seconds" and res[key] is not None else res[key])
            row["n"].append(int(n))
            shown = "failed" if res["seconds"] is None else f"{res['seconds']:.2f}s"
            echo(f"n={n}: {step} {shown}, peak RSS {res['peak_rss_mb']} MB ({res['details']})")
    for row in out["steps"].values():
        row["exponent"], row["exponent_sizes"] = exponent(row["n"], row["seconds"])
    machine["load_after"] = [round(v, 2) for v in os.getloadavg()]
    return out


def table(report: dict[str, Any]) -> str:
    """The report as a text table: one line per step and size, then the exponent per step."""
    lines = [f"{'step':<16}{'n':>9}{'seconds':>10}{'peak RSS MB':>13}{'after imports':>15}"]
    for step, row in report["steps"].items():
        for n, s, rss, base in zip(row["n"], row["seconds"], row["peak_rss_mb"], row["import_rss_mb"]):
            shown = "failed" if s is None else f"{s:.2f}"
            lines.append(f"{step:<16}{n:>9,}{shown:>10}{(rss or 0):>13,.0f}{(base or 0):>15,.0f}")
        lines.append(f"{step:<16}{'exponent':>9} {row['exponent']} (sizes {row['exponent_sizes']})")
    m = report["machine"]
    lines.append(f"machine: {m['cpus_usable']} of {m['cpus']} cpus, {m['memory_gb']} GB, load {m['load_before']} "
                 f"-> {m.get('load_after')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="artsim bench scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(str(n) for n in DEFAULT_SIZES),
                        help="collection sizes, comma-separated (default %(default)s)")
    parser.add_argument("--steps", default=",".join(STEPS), help="steps to measure (default %(default)s)")
    parser.add_argument("--models", help="backbones whose blocks are synthesised, comma-separated "
                        "(default: the offline ones, core.models.DEFAULT_OFFLINE_MODELS)")
    parser.add_argument("--out", type=Path, help="JSON report (default <data_lake>/reports/bench_scale.json)")
    parser.add_argument("--workdir", type=Path, help="where the inputs are generated and kept "
                        "(default: artsim-bench-scale in the temp directory)")
    parser.add_argument("--timeout-s", type=float, default=3600.0, help="per step (default %(default)s)")
    parser.add_argument("--worker", choices=STEPS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.models is None and not args.worker:
        from ..core.models import DEFAULT_OFFLINE_MODELS  # torch: not in the measured workers

        args.models = ",".join(DEFAULT_OFFLINE_MODELS)
    models = tuple(m for m in (args.models or "").split(",") if m)
    workdir = args.workdir or Path(tempfile.gettempdir()) / "artsim-bench-scale"
    if args.worker:
        result = run_step(args.worker, workdir, models)
        atomic_write_text(workdir / f"result-{args.worker}.json", json.dumps(result))
        return 0
    asked = [s for s in args.steps.split(",") if s]
    unknown = [s for s in asked if s not in STEPS]
    if unknown:
        parser.error(f"unknown step(s) {', '.join(unknown)}; steps: {', '.join(STEPS)}")
    steps = tuple(s for s in STEPS if s in asked)  # producers first
    try:
        sizes = tuple(int(n) for n in args.sizes.split(",") if n)
    except ValueError:
        parser.error(f"--sizes: expected comma-separated integers, got {args.sizes!r}")
    if not sizes or min(sizes) < 16:
        parser.error("--sizes: every size must be at least 16")
    workdir.mkdir(parents=True, exist_ok=True)
    report = bench(sizes, steps, workdir, models, timeout_s=args.timeout_s)
    print(table(report))
    if args.out is None:
        from ..config import Settings

        args.out = Settings.from_env().data_lake / "reports" / "bench_scale.json"
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
