"""``artsim bench layout``: the collection map's layout methods, time and quality, from scratch and placed.

Data: synthetic clustered 512-d L2-normalised vectors (:func:`clustered_vectors`: 40 clusters on the
sphere, each a 6-d Gaussian patch around its centre plus isotropic noise, so that neighbourhoods
inside a cluster have structure a 2-D map can keep). Methods, all after the same PCA to 32 dimensions:

* ``opentsne``: :func:`artsim_pipeline.core.layout.compute_layout` / :func:`~artsim_pipeline.core.layout.place_new`
  (openTSNE, FAISS neighbours; FFT gradients on two threads from 10,000 points, Barnes-Hut on one
  below), the one the pipeline uses, with its default threads;
* ``umap``: umap-learn, when installed (not a dependency): 15 neighbours, seeded, hence one thread
  (UMAP is only reproducible so); ``transform`` places new points; its numba compilation (both
  neighbour paths) is done once beforehand and not timed;
* ``sklearn``: the previous implementation (scikit-learn Barnes-Hut t-SNE, 400 iterations, angle 0.6,
  two threads), from scratch only.

Measured per method and size: from-scratch seconds (wall, and CPU seconds of the process: the growth
exponent between sizes is taken on CPU seconds, which other load on the machine disturbs less); kNN preservation (mean fraction of each point's 10
nearest neighbours in the 512-d input that are among its 10 nearest in 2-D, over a 2,000-point
sample); and "fit on 15/16, place the last 1/16": placement seconds, kNN preservation over the whole
map and over the placed points alone, and the share of placed points whose nearest old neighbour in
2-D is among their 10 nearest old neighbours in the input. Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..config import Settings
from ..core.storage import atomic_write_text

DIM = 512
CLUSTERS = 40
SAMPLE = 2000
K = 10
PCA_DIM = 32


def clustered_vectors(n: int, seed: int = 0, dim: int = DIM, clusters: int = CLUSTERS) -> tuple[np.ndarray, np.ndarray]:
    """(``[n, dim]`` float32 unit vectors, cluster labels): see the module doc."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    bases = rng.standard_normal((clusters, 6, dim)) * 0.35
    labels = rng.integers(0, clusters, n)
    x = centres[labels] + np.einsum("nk,nkd->nd", rng.standard_normal((n, 6)), bases[labels])
    x += 0.05 * rng.standard_normal((n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels


def _knn(base: np.ndarray, queries: np.ndarray, k: int, skip: np.ndarray | None) -> np.ndarray:
    """Rows of ``base`` nearest to each query (exact); ``skip`` = each query's own row in ``base``."""
    import faiss

    index = faiss.IndexFlatL2(base.shape[1])
    index.add(np.ascontiguousarray(base, dtype=np.float32))
    _, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), k + (1 if skip is not None else 0))
    if skip is None:
        return rows
    out = np.empty((len(queries), k), np.int64)
    for i, row in enumerate(rows):
        out[i] = [r for r in row if r != skip[i]][:k]
    return out


def knn_preservation(x: np.ndarray, xy: np.ndarray, rows: np.ndarray, k: int = K) -> float:
    """Mean share of each sampled row's ``k`` input neighbours that are among its ``k`` 2-D neighbours."""
    high = _knn(x, x[rows], k, rows)
    low = _knn(xy, xy[rows], k, rows)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(high, low)]))


def nearest_old_agreement(x: np.ndarray, xy: np.ndarray, old: np.ndarray, new: np.ndarray, k: int = K) -> float:
    """Share of ``new`` rows whose nearest ``old`` row in 2-D is among their ``k`` nearest old rows in the input."""
    high = old[_knn(x[old], x[new], k, None)]
    low = old[_knn(xy[old], xy[new], 1, None)][:, 0]
    return float(np.mean([b in set(a) for a, b in zip(high, low)]))


def _reduce(fit_rows: np.ndarray, *others: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    from sklearn.decomposition import PCA

    pca = PCA(n_components=PCA_DIM, random_state=seed).fit(fit_rows)
    return [pca.transform(a).astype(np.float32) for a in (fit_rows, *others)]


class OpenTSNE:
    name = "opentsne"

    def fit(self, x: np.ndarray, seed: int):
        from ..core.layout import compute_layout

        frame = compute_layout(x, np.arange(len(x)), seed=seed)
        return frame, frame[["x", "y"]].to_numpy()

    def place(self, model, x_all: np.ndarray, seed: int) -> np.ndarray:
        from ..core.layout import place_new

        return place_new(model, x_all, np.arange(len(x_all)), seed=seed)[["x", "y"]].to_numpy()


class Umap:
    name = "umap"

    def warm_up(self) -> float:
        started = time.perf_counter()
        x, _ = clustered_vectors(4400, seed=99)  # >= 4,096: UMAP's approximate-neighbour path (pynndescent)
        model, _ = self.fit(x[:4200], 0)
        self.place(model, x, 0)
        return time.perf_counter() - started

    def fit(self, x: np.ndarray, seed: int):
        import umap

        reduced, = _reduce(x, seed=seed)
        model = umap.UMAP(n_neighbors=15, n_components=2, random_state=seed).fit(reduced)
        return (model, x), model.embedding_

    def place(self, model, x_all: np.ndarray, seed: int) -> np.ndarray:
        fitted, x_old = model
        m = len(x_old)
        _, new = _reduce(x_old, x_all[m:], seed=seed)
        return np.vstack([fitted.embedding_, fitted.transform(new)])


class Sklearn:
    name = "sklearn"

    def fit(self, x: np.ndarray, seed: int):
        from sklearn.manifold import TSNE

        reduced, = _reduce(x, seed=seed)
        tsne = TSNE(n_components=2, perplexity=float(min(30.0, (len(x) - 1) / 3.0)), init="pca", random_state=seed,
                    learning_rate="auto", method="barnes_hut", angle=0.6, n_jobs=2, max_iter=400)
        return None, tsne.fit_transform(reduced)


def _timed(call: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, wall seconds, CPU seconds of this process, all threads)."""
    started, cpu = time.perf_counter(), time.process_time()
    out = call()
    return out, time.perf_counter() - started, time.process_time() - cpu


def measure(method, n: int, seed: int, place: bool) -> dict[str, Any]:
    """One method at one size: from scratch, then (``place``) fit on 15/16 and place the rest."""
    x, _ = clustered_vectors(n, seed=seed)
    sample = np.random.default_rng(seed + 1).choice(n, size=min(SAMPLE, n), replace=False)
    (_, xy), seconds, cpu = _timed(lambda: method.fit(x, seed))
    row: dict[str, Any] = {"method": method.name, "n": n, "fit_s": round(seconds, 2), "fit_cpu_s": round(cpu, 2),
                           "knn_preservation": round(knn_preservation(x, xy, sample), 4)}
    print(f"  {method.name} n={n}: from scratch {seconds:.1f} s", flush=True)
    if place:
        m = n - n // 16
        model, _ = method.fit(x[:m], seed)
        placed, seconds, cpu = _timed(lambda: method.place(model, x, seed))
        new = np.arange(m, n)
        new_sample = new if len(new) <= SAMPLE else np.random.default_rng(seed + 2).choice(new, SAMPLE, replace=False)
        row |= {"placed": n - m, "place_s": round(seconds, 2), "place_cpu_s": round(cpu, 2),
                "placed_map_knn_preservation": round(knn_preservation(x, placed, sample), 4),
                "placed_points_knn_preservation": round(knn_preservation(x, placed, new_sample), 4),
                "nearest_old_agreement": round(nearest_old_agreement(x, placed, np.arange(m), new_sample), 4)}
        print(f"  {method.name} n={n}: placed {n - m} in {seconds:.1f} s", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="artsim bench layout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="4096,32768", help="sizes for every method (default %(default)s)")
    parser.add_argument("--large", default="131072", help="sizes for opentsne only (default %(default)s; '' = none)")
    parser.add_argument("--methods", default="opentsne,umap,sklearn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="JSON (default <data_lake>/reports/bench_layout.json)")
    args = parser.parse_args(argv)
    methods = {m.name: m for m in (OpenTSNE(), Umap(), Sklearn())}
    chosen = [methods[name] for name in args.methods.split(",") if name]
    sizes = [int(s) for s in args.sizes.split(",") if s]
    large = [int(s) for s in args.large.split(",") if s]
    load_before = os.getloadavg()
    rows, warm_up = [], {}
    for method in chosen:
        if method.name == "umap" and importlib.util.find_spec("umap") is None:
            print("umap: skipped (umap-learn is not installed; `pip install umap-learn` to compare it)")
            continue
        if hasattr(method, "warm_up"):
            warm_up[method.name] = round(method.warm_up(), 2)
        for n in sizes + (large if method.name == "opentsne" else []):
            rows.append(measure(method, n, args.seed, place=hasattr(method, "place")))
    for name in {r["method"] for r in rows}:
        mine = sorted((r for r in rows if r["method"] == name), key=lambda r: r["n"])
        for a, b in zip(mine, mine[1:]):
            for key in ("fit_s", "fit_cpu_s"):
                b[key.replace("fit", "growth")] = round(float(np.log(b[key] / a[key]) / np.log(b["n"] / a["n"])), 2)
    result = {"dim": DIM, "clusters": CLUSTERS, "sample": SAMPLE, "k": K, "cpus": os.cpu_count(),
              "load_average_before": [round(v, 2) for v in load_before],
              "load_average_after": [round(v, 2) for v in os.getloadavg()], "warm_up_s": warm_up, "rows": rows}
    print(f"{'method':<10}{'n':>8}{'fit s':>9}{'cpu s':>9}{'growth':>8}{'kNN':>7}{'place s':>9}{'kNN map':>9}"
          f"{'kNN new':>9}{'near old':>10}")
    for r in rows:
        def cell(key: str, width: int, fmt: str) -> str:
            return f"{r[key]:>{width}{fmt}}" if key in r else f"{'-':>{width}}"
        print(f"{r['method']:<10}{r['n']:>8}{cell('fit_s', 9, '.1f')}{cell('fit_cpu_s', 9, '.1f')}"
              f"{cell('growth_cpu_s', 8, '.2f')}"
              f"{cell('knn_preservation', 7, '.3f')}{cell('place_s', 9, '.1f')}"
              f"{cell('placed_map_knn_preservation', 9, '.3f')}{cell('placed_points_knn_preservation', 9, '.3f')}"
              f"{cell('nearest_old_agreement', 10, '.3f')}")
    print(f"load average before {result['load_average_before']}, after {result['load_average_after']} "
          f"on {result['cpus']} CPUs")
    out = args.out or Settings.from_env().data_lake / "reports" / "bench_layout.json"
    atomic_write_text(out, json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
