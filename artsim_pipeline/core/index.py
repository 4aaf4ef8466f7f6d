"""FAISS nearest-neighbour index over fused vectors, keyed by objectid (plain Python, no Dagster).

Index choice (:func:`build_index`), inner product on L2-normalised vectors (= cosine):

* ``IndexIVFFlat`` with ``nlist = round(4 * sqrt(N))``, capped at ``N // 39`` so k-means has at
  least 39 training points per centroid (FAISS's own minimum), when ``N >= IVF_MIN_N`` (1000)
  and that gives ``nlist >= 2``;
* otherwise an exact ``IndexFlatIP`` (wrapped in ``IndexIDMap2``): below ~1000 vectors an
  exhaustive scan is as fast as IVF and has no recall loss.

IVF k-means trains on every vector up to ``TRAIN_POINTS_PER_LIST`` (40) per list, beyond that on a seeded
uniform sample of ``40 * nlist`` of them (FAISS's own range is 39 to 256 per centroid). With ``nlist``
growing as ``sqrt(N)`` a training pass costs ``points x nlist``: all points make it grow as ``N^1.5``,
a fixed number per list as ``N``. Below ~25,000 vectors (the cap above binds) every vector is used, as
before; the nprobe tuning then holds recall@10 at the target whatever the centroids.

The faiss ids are the objectids themselves (``add_with_ids``), so search results need no mapping.
The IVF default ``nprobe`` is the smallest one whose recall@10 against exact search, measured on up
to 1000 of the collection's own vectors, reaches ``target_recall`` (0.99), or ``nlist``.

Serving: a fusion model and the index built with it are only meaningful together, so they are
published together as one *generation* (:mod:`artsim_pipeline.core.generations`).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import faiss
import numpy as np

from artsim_pipeline.core.storage import atomic_write_bytes, lake_path

INDEX_FORMAT_VERSION = 1
IVF_MIN_N = 1000
MIN_POINTS_PER_CENTROID = 39
#: IVF training points per list beyond which k-means trains on a seeded sample (see the module docstring).
TRAIN_POINTS_PER_LIST = 40
RECALL_K = 10
MAX_RECALL_QUERIES = 1000
DEFAULT_TARGET_RECALL = 0.99
# A filtered search over at most this many allowed ids is done exactly on their reconstructed vectors.
EXACT_SUBSET_MAX = 20_000
MANIFEST_NAME = "manifest.json"
_NORM_TOLERANCE = 1e-3
_QUERY_CHUNK = 1024


@dataclass
class IndexBundle:
    """A built (or loaded) index: the faiss index, the objectids it holds and build facts."""

    index: faiss.Index
    ids: np.ndarray  # int64 [N] objectids, in insertion order
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def is_ivf(self) -> bool:
        return self.info.get("index_type") == "IVFFlat"


def choose_nlist(n: int, min_ivf_size: int = IVF_MIN_N) -> int:
    """IVF list count for ``n`` vectors, or 0 when an exact flat index should be used."""
    if n < min_ivf_size:
        return 0
    nlist = min(int(round(4 * np.sqrt(n))), n // MIN_POINTS_PER_CENTROID)
    return nlist if nlist >= 2 else 0


def training_rows(n: int, n_lists: int, seed: int = 0) -> np.ndarray | None:
    """Rows IVF k-means trains on: None (all ``n``) up to ``TRAIN_POINTS_PER_LIST * n_lists``, else a seeded
    sorted uniform sample of that many."""
    size = TRAIN_POINTS_PER_LIST * int(n_lists)
    if n <= size:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def _check_vectors(vectors: np.ndarray, what: str = "vectors") -> np.ndarray:
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{what}: expected a non-empty 2-d array [n, d], got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what}: contains NaN or infinite values")
    return x


def _check_ids(ids: np.ndarray, n: int) -> np.ndarray:
    out = np.ascontiguousarray(ids, dtype=np.int64)
    if out.ndim != 1 or out.shape[0] != n:
        raise ValueError(f"ids: expected {n} ids, got shape {out.shape}")
    if out.size and out.min() < 0:
        raise ValueError("ids: objectids must be >= 0 (-1 marks an empty result slot)")
    if np.unique(out).size != n:
        raise ValueError("ids: objectids must be unique")
    return out


def build_index(
    vectors: np.ndarray,
    ids: np.ndarray,
    *,
    target_recall: float = DEFAULT_TARGET_RECALL,
    min_ivf_size: int = IVF_MIN_N,
    nlist: int | None = None,
    seed: int = 0,
) -> IndexBundle:
    """Build an inner-product index over L2-normalised ``vectors`` keyed by objectid ``ids``.

    ``nlist`` overrides :func:`choose_nlist` (0 forces a flat index).
    """
    started = time.perf_counter()
    x = _check_vectors(vectors)
    n, d = x.shape
    norms = np.linalg.norm(x, axis=1)
    if np.any(np.abs(norms - 1.0) > _NORM_TOLERANCE):
        raise ValueError("vectors: rows must be L2-normalised (inner product is used as cosine)")
    objectids = _check_ids(ids, n)
    n_lists = choose_nlist(n, min_ivf_size) if nlist is None else int(nlist)
    if n_lists > n:
        raise ValueError(f"nlist={n_lists} exceeds the number of vectors ({n})")

    info: dict[str, Any] = {
        "format_version": INDEX_FORMAT_VERSION,
        "metric": "inner_product",
        "n_vectors": int(n),
        "dim": int(d),
        "seed": int(seed),
        "faiss_version": faiss.__version__,
    }
    if n_lists < 2:
        index: faiss.Index = faiss.IndexIDMap2(faiss.IndexFlatIP(d))
        index.add_with_ids(x, objectids)
        info.update(index_type="Flat", nlist=None, nprobe=None, recall_at_10=1.0, recall_queries=0)
    else:
        quantizer = faiss.IndexFlatIP(d)
        ivf = faiss.IndexIVFFlat(quantizer, d, n_lists, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.seed = int(seed)
        ivf.cp.spherical = True  # centroids on the unit sphere, like the data
        train = training_rows(n, n_lists, seed)
        ivf.train(x if train is None else x[train])
        ivf.add_with_ids(x, objectids)
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # reconstruct(objectid) for filtered search
        index = ivf
        nprobe, recall, n_queries = tune_nprobe(ivf, x, objectids, target_recall=target_recall, seed=seed)
        info.update(
            index_type="IVFFlat", nlist=int(n_lists), nprobe=int(nprobe), recall_at_10=float(recall),
            recall_queries=int(n_queries), trained_on=int(n if train is None else train.size),
        )
    info.update(target_recall=float(target_recall), build_seconds=round(time.perf_counter() - started, 3))
    return IndexBundle(index=index, ids=objectids, info=info)


def neighbour_recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over rows of ``|found_row ∩ truth_row| / k`` (ids; ``-1`` never matches)."""
    found = np.asarray(found)
    truth = np.asarray(truth)
    if truth.size == 0:
        return 1.0
    hits = [np.intersect1d(f[f >= 0], t[t >= 0]).size for f, t in zip(found, truth)]
    return float(np.sum(hits) / truth.size)


def tune_nprobe(
    ivf: faiss.IndexIVF,
    vectors: np.ndarray,
    ids: np.ndarray,
    *,
    target_recall: float = DEFAULT_TARGET_RECALL,
    k: int = RECALL_K,
    max_queries: int = MAX_RECALL_QUERIES,
    seed: int = 0,
) -> tuple[int, float, int]:
    """Smallest nprobe with recall@k >= target on a sample of the collection: (nprobe, recall, n_queries).

    IVF-Flat finds a true neighbour exactly when its list is among the ``nprobe`` lists closest to the
    query (distances inside a list are exact), so one coarse ranking gives the recall of every nprobe
    at once (:func:`predicted_recalls`): the smallest that meets the target is taken, then measured by
    one real search (the recall reported). Should that measurement fall short (ties at the k-th score),
    doubling then bisection by real searches from there decides, as before; valid because recall only
    grows with nprobe (more lists probed is a superset of candidates). Cost: one search of every
    centroid per query instead of ~15 searches of a growing share of the collection.
    """
    n = vectors.shape[0]
    k = min(k, n)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(max_queries, n), replace=False))
    queries = vectors[rows]
    _, truth_rows = exact_topk(vectors, queries, k, exclude_self=False)
    truth = ids[truth_rows]

    cache: dict[int, float] = {}

    def recall_for(nprobe: int) -> float:
        if nprobe not in cache:
            params = faiss.SearchParametersIVF(nprobe=nprobe)
            _, found = ivf.search(queries, k, params=params)
            cache[nprobe] = neighbour_recall(found, truth)
        return cache[nprobe]

    nlist = int(ivf.nlist)
    predicted = predicted_recalls(ivf, queries, vectors[truth_rows.ravel()].reshape(*truth_rows.shape, -1))
    meets = np.flatnonzero(predicted >= target_recall)
    first = int(meets[0]) + 1 if meets.size else nlist
    if recall_for(first) >= target_recall or first == nlist:
        if first == 1 or recall_for(first - 1) < target_recall:
            return first, recall_for(first), len(rows)
    low, high = (first, min(2 * first, nlist)) if recall_for(first) < target_recall else (0, first)
    while high < nlist and recall_for(high) < target_recall:
        low, high = high, min(2 * high, nlist)
    if recall_for(high) >= target_recall:
        while high - low > 1:
            mid = (low + high) // 2
            if recall_for(mid) >= target_recall:
                high = mid
            else:
                low = mid
    return high, recall_for(high), len(rows)


def predicted_recalls(ivf: faiss.IndexIVF, queries: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Recall@k of the IVF index at every nprobe 1..nlist (entry ``p - 1``), for ``queries`` [q, d] whose true
    top-k are ``neighbours`` [q, k, d]: the share of true neighbours whose list ranks below ``p`` among the
    query's closest centroids (the list a vector lives in is the quantizer's nearest centroid, as when added)."""
    q, k = neighbours.shape[:2]
    nlist = int(ivf.nlist)
    if q == 0 or k == 0:
        return np.ones(nlist)
    _, order = ivf.quantizer.search(np.ascontiguousarray(queries, dtype=np.float32), nlist)  # [q, nlist] by closeness
    rank = np.empty_like(order)
    rank[np.arange(q)[:, None], order] = np.arange(nlist)[None, :]  # rank[query, list]
    _, lists = ivf.quantizer.search(np.ascontiguousarray(neighbours.reshape(q * k, -1), dtype=np.float32), 1)
    found_at = rank[np.repeat(np.arange(q), k), lists[:, 0]]  # nprobe - 1 at which each neighbour is found
    counts = np.bincount(found_at, minlength=nlist)
    return np.cumsum(counts) / float(q * k)


def exact_topk(
    vectors: np.ndarray,
    queries: np.ndarray,
    k: int,
    exclude_self: bool = True,
    query_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k: ``(scores float32 [q, k'], rows int64 [q, k'])``.

    ``rows`` index into ``vectors``; ties in score are broken by the lower row. With
    ``exclude_self`` query ``i`` is ``vectors[query_rows[i]]`` (default: ``queries`` *is*
    ``vectors``, query i = row i) and that row is left out. ``k' = min(k, available rows)``.
    """
    x = _check_vectors(vectors)
    q = _check_vectors(np.atleast_2d(queries), "queries")
    if q.shape[1] != x.shape[1]:
        raise ValueError(f"queries have dim {q.shape[1]}, vectors have dim {x.shape[1]}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = x.shape[0]
    self_rows: np.ndarray | None = None
    if exclude_self:
        if query_rows is None:
            if q.shape[0] != n:
                raise ValueError("exclude_self needs query_rows unless queries are the vectors themselves")
            self_rows = np.arange(n)
        else:
            self_rows = np.asarray(query_rows, dtype=np.int64)
    k_eff = min(k, n - (1 if exclude_self else 0))
    if k_eff < 1:
        return np.zeros((q.shape[0], 0), np.float32), np.zeros((q.shape[0], 0), np.int64)

    out_scores = np.empty((q.shape[0], k_eff), np.float32)
    out_rows = np.empty((q.shape[0], k_eff), np.int64)
    for start in range(0, q.shape[0], _QUERY_CHUNK):
        stop = min(start + _QUERY_CHUNK, q.shape[0])
        sim = q[start:stop] @ x.T
        if self_rows is not None:
            sim[np.arange(stop - start), self_rows[start:stop]] = -np.inf
        rows = _topk_rows(sim, k_eff)
        out_rows[start:stop] = rows
        out_scores[start:stop] = np.take_along_axis(sim, rows, axis=1)
    return out_scores, out_rows


def _topk_rows(sim: np.ndarray, k: int) -> np.ndarray:
    """Per row, the columns of the k largest values; ties broken by lower column, deterministically."""
    n = sim.shape[1]
    if k >= n:
        part = np.broadcast_to(np.arange(n), sim.shape).copy()
    else:
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        kth = np.take_along_axis(sim, part, axis=1).min(axis=1)
        tied = np.flatnonzero((sim >= kth[:, None]).sum(axis=1) > k)
        for r in tied:  # a tie straddles the cut: settle it by column order
            part[r] = np.argsort(-sim[r], kind="stable")[:k]
    vals = np.take_along_axis(sim, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    return np.take_along_axis(part, order, axis=1)


def _as_id_array(allowed_ids: Iterable[int] | np.ndarray) -> np.ndarray:
    if isinstance(allowed_ids, np.ndarray):
        arr = allowed_ids.astype(np.int64, copy=False).ravel()
    else:
        arr = np.fromiter((int(i) for i in allowed_ids), dtype=np.int64)
    return np.unique(arr)


def search(
    bundle: IndexBundle,
    queries: np.ndarray,
    k: int,
    allowed_ids: Iterable[int] | np.ndarray | None = None,
    nprobe: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by inner product: ``(scores float32 [q, k], objectids int64 [q, k])``.

    Empty slots (fewer than k results) have id ``-1`` and score ``-inf``; callers drop them.
    ``allowed_ids`` restricts results to those objectids. When at most ``EXACT_SUBSET_MAX`` of them
    are in the index, the search is exact over their vectors (reconstructed from the index), so a
    small allowed set is never starved by IVF probing only some lists. Larger sets use a faiss
    ``IDSelectorBatch``; any query row that comes back short is then redone exactly.
    """
    q = _check_vectors(np.atleast_2d(queries), "queries")
    if q.shape[1] != bundle.index.d:
        raise ValueError(f"queries have dim {q.shape[1]}, index has dim {bundle.index.d}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    probe = int(nprobe if nprobe is not None else bundle.info.get("nprobe") or 1)

    if allowed_ids is None:
        params = faiss.SearchParametersIVF(nprobe=probe) if bundle.is_ivf else None
        scores, ids = bundle.index.search(q, k, params=params)
        return _clean(scores, ids)

    present = np.intersect1d(_as_id_array(allowed_ids), bundle.ids)
    if present.size <= EXACT_SUBSET_MAX:
        return _exact_subset(bundle, q, k, present)
    selector = faiss.IDSelectorBatch(present)
    if bundle.is_ivf:
        params = faiss.SearchParametersIVF(sel=selector, nprobe=probe)
    else:
        params = faiss.SearchParameters(sel=selector)
    scores, ids = _clean(*bundle.index.search(q, k, params=params))
    short = np.flatnonzero((ids >= 0).sum(axis=1) < min(k, present.size))
    if short.size:
        scores[short], ids[short] = _exact_subset(bundle, q[short], k, present)
    return scores, ids


def _clean(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float32).copy()
    ids = np.asarray(ids, dtype=np.int64).copy()
    scores[ids < 0] = -np.inf
    return scores, ids


def _exact_subset(bundle: IndexBundle, q: np.ndarray, k: int, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact search over the sorted objectids ``present`` (ties -> lower objectid)."""
    scores = np.full((q.shape[0], k), -np.inf, np.float32)
    ids = np.full((q.shape[0], k), -1, np.int64)
    if present.size == 0:
        return scores, ids
    vecs = bundle.index.reconstruct_batch(present)
    top_scores, rows = exact_topk(vecs, q, k, exclude_self=False)
    width = rows.shape[1]
    scores[:, :width] = top_scores
    ids[:, :width] = present[rows]
    return scores, ids


# ---------------------------------------------------------------- persistence

def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_index(bundle: IndexBundle, directory: Path | str) -> str:
    """Write the bundle under ``directory`` (local or a lake ``UPath``); return the version written.

    Crash-safe by construction: the index, id map and info are written as *new* files whose names
    carry a fresh version (``index-<v>.faiss``, ``ids-<v>.npy``, ``info-<v>.json``), each via a temp
    file + fsync + ``os.replace``. Only then is ``manifest.json`` atomically replaced to name them
    (with their sha256). A reader goes through the manifest, so it sees the old set or the new set,
    never a mix; a save that fails midway leaves the old manifest, and its files, untouched.
    Afterwards files of versions other than the new and the previous one are deleted (the previous
    is kept for a reader that read the old manifest just before the switch).
    """
    root = lake_path(directory)
    root.mkdir(parents=True, exist_ok=True)
    version = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}"
    names = {"index": f"index-{version}.faiss", "ids": f"ids-{version}.npy", "info": f"info-{version}.json"}
    payloads = {
        "index": faiss.serialize_index(bundle.index).tobytes(),
        "ids": _npy_bytes(np.asarray(bundle.ids, dtype=np.int64)),
        "info": json.dumps(bundle.info, indent=2, sort_keys=True).encode("utf-8"),
    }
    try:
        previous: dict[str, Any] | None = read_bundle_manifest(root)
    except (FileNotFoundError, ValueError):  # first save, or an unreadable manifest to replace
        previous = None
    try:
        for key in ("index", "ids", "info"):
            atomic_write_bytes(root / names[key], payloads[key])
        manifest = {
            "format_version": INDEX_FORMAT_VERSION,
            "version": version,
            "files": names,
            "sha256": {key: sha256_hex(payloads[key]) for key in names},
            "n_vectors": int(len(bundle.ids)),
            "index_type": bundle.info.get("index_type"),
        }
        atomic_write_bytes(root / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8"))
    except BaseException:
        for name in names.values():
            (root / name).unlink(missing_ok=True)
        raise
    keep = set(names.values()) | (set(previous["files"].values()) if previous else set())
    for pattern in ("index-*.faiss", "ids-*.npy", "info-*.json"):
        for path in root.glob(pattern):
            if path.name not in keep:
                path.unlink(missing_ok=True)
    return version


def _npy_bytes(arr: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, arr, allow_pickle=False)
    return buffer.getvalue()


def read_bundle_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST_NAME
    if not path.exists():
        raise FileNotFoundError(f"no index manifest at {path}")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format_version") != INDEX_FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported index format version {manifest.get('format_version')!r}")
    return manifest


def load_index(directory: Path | str) -> IndexBundle:
    """Read the bundle named by ``directory/manifest.json`` (checksums verified)."""
    root = lake_path(directory)
    manifest = read_bundle_manifest(root)
    data: dict[str, bytes] = {}
    for key, name in manifest["files"].items():
        blob = (root / name).read_bytes()
        if sha256_hex(blob) != manifest["sha256"][key]:
            raise ValueError(f"{root / name}: checksum does not match the manifest")
        data[key] = blob
    index = faiss.deserialize_index(np.frombuffer(data["index"], dtype=np.uint8))
    ids = np.load(io.BytesIO(data["ids"]), allow_pickle=False).astype(np.int64)
    info = json.loads(data["info"].decode("utf-8"))
    if info.get("index_type") == "IVFFlat":
        ivf = faiss.extract_index_ivf(index)
        if ivf.direct_map.type != faiss.DirectMap.Hashtable:
            ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
    return IndexBundle(index=index, ids=ids, info=info)
