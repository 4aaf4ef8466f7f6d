"""``artsim bench drift``: how far an incremental refresh's neighbours drift from a full refit's (issue 32 #6).

Reads a built lake's collection (``ARTSIM_DATA_LAKE``, its served models and ``ARTSIM_TAPS`` /
``ARTSIM_PCA_DIM``). For each collection size (the first N paintings of a seeded order) and each share of
changed paintings, a seeded ``share`` of the paintings plays the new or re-embedded ones: the *incremental*
vectors come from a fusion fitted without them (what the kept fit gives them), the *refit* vectors from a
fusion fitted on all. Exact (flat) neighbours on both, so only the fit differs. Per cell, over ``--seeds``:

* ``overlap5``: mean share of each painting's top 5 that the incremental and the refit agree on (two refits
  agree on 1.00: the fit is deterministic);
* ``new_in_top5_inc`` / ``new_in_top5_refit``: how often a changed painting shows up in an unchanged
  painting's top 5 (the incremental refresh's bias towards the vectors it projected).

Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from artsim_pipeline.core.fusion import fit_fusion, tap_blocks, transform
from artsim_pipeline.core.storage import atomic_write_text

TOP = 5
DEFAULT_SHARES = (0.02, 0.05, 0.1, 0.25, 0.4)


def _top(vectors: np.ndarray, k: int = TOP) -> np.ndarray:
    x = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def drift_cell(blocks: dict[str, np.ndarray], share: float, seed: int, dim: int) -> dict[str, float]:
    """One (collection, share, seed) cell: the incremental and refit neighbours compared."""
    n = len(next(iter(blocks.values())))
    changed = np.sort(np.random.default_rng(seed).permutation(n)[:max(1, int(round(share * n)))])
    kept = np.setdiff1d(np.arange(n), changed)
    kept_fit = fit_fusion({k: v[kept] for k, v in blocks.items()}, n_components=dim)
    incremental = _top(transform(kept_fit, blocks))
    refit = _top(transform(fit_fusion(blocks, n_components=dim), blocks))
    overlap = np.mean([len(set(a) & set(b)) / TOP for a, b in zip(incremental, refit)])
    is_changed = np.zeros(n, dtype=bool)
    is_changed[changed] = True
    return {"overlap5": float(overlap), "new_in_top5_inc": int(is_changed[incremental[kept]].sum()),
            "new_in_top5_refit": int(is_changed[refit[kept]].sum())}


def measure(blocks: dict[str, np.ndarray], sizes: Sequence[int], shares: Sequence[float], seeds: int,
            dim: int) -> list[dict[str, Any]]:
    n_all = len(next(iter(blocks.values())))
    order = np.random.default_rng(12345).permutation(n_all)
    rows = []
    for size in sizes:
        subset = {k: np.ascontiguousarray(v[np.sort(order[:min(size, n_all)])]) for k, v in blocks.items()}
        for share in shares:
            started = time.perf_counter()
            cells = [drift_cell(subset, share, seed, dim) for seed in range(seeds)]
            rows.append({"paintings": min(size, n_all), "share": share,
                         "overlap5": round(float(np.mean([c["overlap5"] for c in cells])), 4),
                         "overlap5_min": round(float(min(c["overlap5"] for c in cells)), 4),
                         "new_in_top5_inc": round(float(np.mean([c["new_in_top5_inc"] for c in cells])), 1),
                         "new_in_top5_refit": round(float(np.mean([c["new_in_top5_refit"] for c in cells])), 1),
                         "seconds": round(time.perf_counter() - started, 2)})
            print(_row(rows[-1]), flush=True)
    return rows


HEADER = ("| paintings | changed share | top-5 overlap with a refit (mean, min) | changed in others' top 5: "
          "incremental / refit |\n|---:|---:|---:|---:|")


def _row(r: dict[str, Any]) -> str:
    return (f"| {r['paintings']:,} | {r['share']:.2f} | {r['overlap5']:.3f} ({r['overlap5_min']:.3f}) | "
            f"{r['new_in_top5_inc']:.1f} / {r['new_in_top5_refit']:.1f} |")


def main(argv: Sequence[str] | None = None) -> int:
    from artsim_pipeline.config import Settings
    from artsim_pipeline.core.generations import REQUIRED_VARIANT, current_generation_id, read_generation_manifest
    from artsim_pipeline.core.lake import lake_for
    from artsim_pipeline.core.lake_reads import current_collection

    parser = argparse.ArgumentParser(prog="artsim bench drift", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,256,1698", help="collection sizes, comma-separated")
    parser.add_argument("--shares", default=",".join(map(str, DEFAULT_SHARES)), help="changed shares")
    parser.add_argument("--seeds", type=int, default=3, help="seeded draws per cell (default %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("bench_refresh_drift.json"), help="JSON output")
    args = parser.parse_args(list(argv) if argv is not None else None)
    settings = Settings.from_env()
    lake = lake_for(settings)
    generation = current_generation_id(lake)
    if generation is None:
        parser.error(f"no index in {lake.root}: build the lake with `artsim run` first")
    models = sorted({m.split("@", 1)[0] for m in read_generation_manifest(lake, generation).get("models", [])})
    full = current_collection(lake, models)[REQUIRED_VARIANT]
    blocks = {k: np.asarray(v, dtype=np.float32) for k, v in tap_blocks(full.blocks, settings.taps).items()}
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    shares = [float(s) for s in args.shares.split(",") if s.strip()]
    if not sizes or min(sizes) < 2 * TOP or not shares or not all(0 < s < 1 for s in shares) or args.seeds < 1:
        parser.error("--sizes >= 10 paintings each, --shares in (0, 1), --seeds >= 1")
    print(f"{len(full)} paintings, models {', '.join(models)}, taps {settings.taps}, PCA {settings.pca_dim}")
    print(HEADER)
    rows = measure(blocks, sizes, shares, args.seeds, settings.pca_dim)
    atomic_write_text(args.out, json.dumps({"benchmark": "refresh_drift", "lake_paintings": len(full),
                                            "models": models, "results": rows}, indent=2))
    print(f"wrote {args.out}")
    return 0
