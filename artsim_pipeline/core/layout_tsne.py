"""The t-SNE engine behind :mod:`artsim_pipeline.core.layout`: openTSNE over FAISS neighbours.

Plain Python (no Dagster). Works in raw t-SNE coordinates (unnormalised); :mod:`.layout` maps them
into [0, 1]². Two entry points:

* :func:`fit_embedding`: a from-scratch layout. Neighbours (``3 x perplexity`` per point) from FAISS
  (exact up to :data:`EXACT_KNN_MAX` points; above, an inverted file of 4·√n lists of which
  :data:`IVF_NPROBE` are searched, about √n work per query, so the search grows as n^1.5 instead of
  n²; recall@90 0.9997 at 131,072 clustered points), perplexity-calibrated affinities, PCA
  initialisation, then openTSNE's FFT-interpolated gradients (linear in n per iteration;
  Barnes-Hut below :data:`FFT_MIN` points, where the FFT grid's fixed cost dominates):
  :data:`EARLY_ITER` iterations with exaggeration 12, the rest without.
* :func:`place_embedding`: new points into an existing layout (openTSNE's ``transform``): each new
  point starts at the median of its :data:`PLACE_INIT_K` nearest reference points and is optimised
  against the fixed reference only (perplexity :data:`PLACE_PERPLEXITY`); the reference never moves.

Both are deterministic for a given seed and thread count (FAISS k-means and openTSNE are seeded).
"""

from __future__ import annotations

import os

import faiss
import numpy as np

EARLY_ITER = 250  # early-exaggeration iterations (openTSNE's default)
EARLY_EXAGGERATION = 12.0
FFT_MIN = 10_000  # from this many (reference) points on, FFT gradients; Barnes-Hut below (openTSNE's rule)
EXACT_KNN_MAX = 16_384  # reference sizes up to this use exact search
IVF_NPROBE = 24  # inverted lists searched per query (of 4·√n)
PLACE_PERPLEXITY = 5.0  # openTSNE's transform defaults
PLACE_INIT_K = 25
PLACE_ITER = 250


def _gradient_method(n: int) -> str:
    return "fft" if n >= FFT_MIN else "bh"


def _threads(n_jobs: int | None, n: int) -> int:
    """``n_jobs``, or by default one thread for Barnes-Hut sizes (an iteration is too little work to share:
    two threads took 4.6x longer at 1,200 points) and two for FFT sizes."""
    if n_jobs is not None:
        return max(1, int(n_jobs))
    return 1 if n < FFT_MIN else max(1, min(2, os.cpu_count() or 1))


class Neighbours:
    """k nearest reference rows by Euclidean distance (FAISS; exact or an inverted file, see module doc)."""

    def __init__(self, reference: np.ndarray, seed: int = 0):
        self.reference = np.ascontiguousarray(reference, dtype=np.float32)
        n, dim = self.reference.shape
        if n <= EXACT_KNN_MAX:
            self.index = faiss.IndexFlatL2(dim)
        else:
            nlist = int(4 * np.sqrt(n))
            quantizer = faiss.IndexFlatL2(dim)
            self.index = faiss.IndexIVFFlat(quantizer, dim, nlist)
            self.index.cp.seed = int(seed)
            self.index.train(self.reference)
            self.index.nprobe = min(nlist, IVF_NPROBE)
            self._quantizer = quantizer  # keep alive beside the index
        self.index.add(self.reference)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        distances, rows = self.index.search(queries, k)
        short = np.where((rows < 0).any(axis=1))[0]
        if len(short):  # an inverted file can come back short: exact search for those queries
            exact = faiss.IndexFlatL2(self.reference.shape[1])
            exact.add(self.reference)
            distances[short], rows[short] = exact.search(queries[short], k)
        return distances, rows

    def query(self, queries: np.ndarray, k: int, skip_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(neighbour rows ``[M, k]`` int64, Euclidean distances ``[M, k]`` float64); ``skip_self``: the
        queries are the reference rows themselves, and each one's own row is left out."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        distances, rows = self._search(queries, k + 1 if skip_self else k)
        if skip_self:
            keep = rows != np.arange(len(queries))[:, None]
            keep[keep.sum(axis=1) > k, -1] = False  # own row not among them (duplicates): drop the farthest
            rows, distances = rows[keep].reshape(len(queries), k), distances[keep].reshape(len(queries), k)
        return rows.astype(np.int64), np.sqrt(np.maximum(distances, 0.0)).astype(np.float64)


def _affinities(rows: np.ndarray, distances: np.ndarray, perplexity: float, n_reference: int,
                symmetric: bool, n_jobs: int):
    # openTSNE here: the server imports this module (through core.layout); only a fit or a placement needs it
    from openTSNE.affinity import joint_probabilities_nn

    return joint_probabilities_nn(rows, distances, [perplexity], symmetrize=symmetric,
                                  normalization="pair-wise" if symmetric else "point-wise",
                                  n_reference_samples=None if symmetric else n_reference, n_jobs=n_jobs)


def fit_embedding(reduced: np.ndarray, seed: int = 0, *, n_iter: int = 750, n_jobs: int | None = None) -> np.ndarray:
    """Raw 2-D t-SNE coordinates ``[N, 2]`` of ``reduced`` (``[N, d]``, N >= 5); ``n_iter`` counts all
    iterations (the first :data:`EARLY_ITER` of them, or a third when fewer, exaggerated)."""
    # openTSNE here: the server imports this module (through core.layout); only a fit or a placement needs it
    from openTSNE import TSNEEmbedding
    from openTSNE.affinity import Affinities
    from openTSNE.initialization import pca, rescale

    n = len(reduced)
    threads = _threads(n_jobs, n)
    perplexity = float(min(30.0, (n - 1) / 3.0))
    k = int(min(n - 1, 3 * perplexity))
    rows, distances = Neighbours(reduced, seed).query(reduced, k, skip_self=True)
    affinities = Affinities()
    affinities.P = _affinities(rows, distances, perplexity, n, symmetric=True, n_jobs=threads)
    init = rescale(pca(reduced, random_state=seed))
    embedding = TSNEEmbedding(init, affinities, negative_gradient_method=_gradient_method(n), n_jobs=threads,
                              random_state=seed)
    early = min(EARLY_ITER, max(1, int(n_iter) // 3))
    embedding = embedding.optimize(n_iter=early, exaggeration=EARLY_EXAGGERATION, momentum=0.5,
                                   learning_rate="auto")
    embedding = embedding.optimize(n_iter=max(1, int(n_iter) - early), exaggeration=1.0, momentum=0.8,
                                   learning_rate="auto")
    return np.asarray(embedding, dtype=np.float64)


class _ReferenceAffinities:
    """openTSNE's ``Affinities`` protocol for placement only: ``to_new`` from :class:`Neighbours`."""

    def __init__(self, neighbours: Neighbours, n_jobs: int):
        # scipy here: the server imports this module (through core.layout); only a placement needs it
        import scipy.sparse as sp

        n = len(neighbours.reference)
        self.neighbours, self.n_jobs = neighbours, n_jobs
        self.P = sp.csr_matrix((n, n))  # the reference's own affinities are not needed: it stays fixed
        self.n_samples = n

    def to_new(self, data, perplexity=PLACE_PERPLEXITY, return_distances=False):
        k = int(min(self.n_samples, max(PLACE_INIT_K, 3 * perplexity)))
        perplexity = min(float(perplexity), k / 3.0)
        rows, distances = self.neighbours.query(data, k)
        P = _affinities(rows, distances, perplexity, self.n_samples, symmetric=False, n_jobs=self.n_jobs)
        return (P, rows, distances) if return_distances else P


def place_embedding(reference: np.ndarray, reference_xy: np.ndarray, new: np.ndarray, seed: int = 0,
                    *, n_jobs: int | None = None) -> np.ndarray:
    """Raw coordinates ``[M, 2]`` of the ``new`` rows placed into the fixed layout ``reference_xy`` of the
    ``reference`` rows (same feature space as ``new``)."""
    # openTSNE here: the server imports this module (through core.layout); only a fit or a placement needs it
    from openTSNE import TSNEEmbedding

    threads = _threads(n_jobs, len(reference_xy))
    if len(new) == 0:
        return np.zeros((0, 2))
    xy = np.array(reference_xy, dtype=np.float64)
    centre = (xy.max(axis=0) + xy.min(axis=0)) / 2  # openTSNE centres the reference in place; undo after
    xy -= centre
    ref = TSNEEmbedding(xy, _ReferenceAffinities(Neighbours(reference, seed), threads),
                        negative_gradient_method=_gradient_method(len(xy)), n_jobs=threads, random_state=seed)
    placed = ref.transform(np.ascontiguousarray(new, dtype=np.float32), perplexity=PLACE_PERPLEXITY,
                           k=PLACE_INIT_K, n_iter=PLACE_ITER)
    return np.asarray(placed, dtype=np.float64) + centre


__all__ = ["Neighbours", "fit_embedding", "place_embedding"]
