"""Index part of the search benchmark: per-query latency of IVF vs Flat on synthetic vectors.

Vectors are a Gaussian mixture on the unit sphere (clustered, as image embeddings are, so IVF's
coarse partition is meaningful). For each size both index kinds are built with
:func:`artsim_pipeline.core.index.build_index`; each of ``n_queries`` held-out queries (drawn from
the same mixture, not in the index) is searched alone for its top 10 and timed; recall@10 of IVF
is measured against the Flat results for the same queries.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

import faiss
import numpy as np

from artsim_pipeline.core.index import build_index, search
from artsim_pipeline.core.recall import neighbour_recall
from artsim_pipeline.core.storage import atomic_write_text

DEFAULT_SIZES = (10_000, 100_000)
DEFAULT_DIM = 512
DEFAULT_QUERIES = 200
TOP_K = 10


def clustered_vectors(
    n: int, dim: int, seed: int, n_clusters: int = 200, spread: float = 2.0
) -> np.ndarray:
    """``n`` L2-normalised float32 vectors from a mixture of ``n_clusters`` Gaussians.

    Centres are standard normal; each point is its centre plus ``spread``-scaled standard normal noise.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    labels = rng.integers(0, n_clusters, size=n)
    x = centres[labels] + spread * rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _mixture_split(n: int, n_queries: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Collection and held-out queries drawn from one mixture."""
    both = clustered_vectors(n + n_queries, dim, seed)
    return np.ascontiguousarray(both[:n]), np.ascontiguousarray(both[n:])


def _latencies_ms(bundle, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Search each query alone; return per-query milliseconds and the result ids."""
    times = np.empty(len(queries))
    found = np.empty((len(queries), k), np.int64)
    search(bundle, queries[:1], k)  # warm-up
    for i in range(len(queries)):
        start = time.perf_counter()
        _, ids = search(bundle, queries[i:i + 1], k)
        times[i] = (time.perf_counter() - start) * 1000.0
        found[i] = ids[0]
    return times, found


def index_latency_table(
    sizes: Sequence[int] = DEFAULT_SIZES,
    dim: int = DEFAULT_DIM,
    n_queries: int = DEFAULT_QUERIES,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per (size, index kind): build time, p50/p99 per-query latency, recall@10 vs Flat."""
    rows: list[dict[str, Any]] = []
    threads = faiss.omp_get_max_threads()
    for n in sizes:
        vectors, queries = _mixture_split(int(n), n_queries, dim, seed)
        ids = np.arange(len(vectors), dtype=np.int64)
        bundles = {"Flat": build_index(vectors, ids, nlist=0), "IVFFlat": build_index(vectors, ids, seed=seed)}
        results = {}
        for kind, bundle in bundles.items():
            times, found = _latencies_ms(bundle, queries, TOP_K)
            results[kind] = found
            rows.append(
                {
                    "n": int(n),
                    "dim": int(dim),
                    "index": bundle.info["index_type"],
                    "nlist": bundle.info["nlist"],
                    "nprobe": bundle.info["nprobe"],
                    "build_s": bundle.info["build_seconds"],
                    "p50_ms": round(float(np.percentile(times, 50)), 4),
                    "p99_ms": round(float(np.percentile(times, 99)), 4),
                    "recall_at_10": None,
                    "n_queries": int(n_queries),
                    "threads": int(threads),
                }
            )
        for row in rows[-2:]:
            row["recall_at_10"] = round(neighbour_recall(results[row["index"]], results["Flat"]), 4)
        del bundles
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Fixed-width text table of :func:`index_latency_table` rows."""
    cols = ("n", "dim", "index", "nlist", "nprobe", "build_s", "p50_ms", "p99_ms", "recall_at_10")
    cells = [[("-" if row.get(c) is None else str(row.get(c))) for c in cols] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="search_index", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(str(s) for s in DEFAULT_SIZES),
                        help="comma-separated collection sizes (default %(default)s)")
    parser.add_argument("--dim", type=int, default=DEFAULT_DIM, help="vector width (default %(default)s)")
    parser.add_argument("--queries", type=int, default=DEFAULT_QUERIES,
                        help="timed queries per index (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        print(f"search_index: --sizes must be integers, got {args.sizes!r}")
        return 2
    if not sizes or min(sizes) < 1 or args.dim < 1 or args.queries < 1:
        print("search_index: sizes, --dim and --queries must be positive")
        return 2
    rows = index_latency_table(sizes, args.dim, args.queries, args.seed)
    print(format_table(rows))
    if args.out is not None:
        payload = {"benchmark": "index_search", "k": TOP_K, "seed": args.seed, "rows": rows}
        atomic_write_text(args.out, json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
