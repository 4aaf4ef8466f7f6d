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
to 1000 of the collection's own vectors, reaches ``target_recall`` (0.99), or ``nlist``
(:func:`artsim_pipeline.core.recall.tune_nprobe`; exact search and recall live there too).

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

from artsim_pipeline.core.recall import DEFAULT_TARGET_RECALL, check_vectors, exact_topk, tune_nprobe
from artsim_pipeline.core.storage import atomic_write_bytes, lake_path

from .explain import Explainer

INDEX_FORMAT_VERSION = 1
IVF_MIN_N = 1000
MIN_POINTS_PER_CENTROID = 39
#: IVF training points per list beyond which k-means trains on a seeded sample (see the module docstring).
TRAIN_POINTS_PER_LIST = 40
# A filtered search over at most this many allowed ids is done exactly on their reconstructed vectors.
EXACT_SUBSET_MAX = 20_000
MANIFEST_NAME = "manifest.json"
_NORM_TOLERANCE = 1e-3


@dataclass
class IndexBundle:
    """A built (or loaded) index: the faiss index, the objectids it holds and build facts."""

    index: faiss.Index
    ids: np.ndarray  # int64 [N] objectids, in insertion order
    info: dict[str, Any] = field(default_factory=dict)
    #: float32 [N, d] database-side augmented vectors (rows as ``ids``; :mod:`~artsim_pipeline.core.rerank`),
    #: or None; ``info["augmentation"]`` says with which parameters
    augmented: np.ndarray | None = field(default=None, repr=False)
    #: the per-block projections that explain a match (:class:`~artsim_pipeline.core.explain.Explainer`), or None
    explain: Any = field(default=None, repr=False)

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
    x = check_vectors(vectors)
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
    q = check_vectors(np.atleast_2d(queries), "queries")
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

    Crash-safe by construction: the index, id map and info (and the augmented vectors when the bundle has
    them) are written as *new* files whose names carry a fresh version (``index-<v>.faiss``, ``ids-<v>.npy``,
    ``info-<v>.json``, ``augmented-<v>.npy``; the explanations when it has them, ``explain-<v>.npz``), each via a temp
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
    if bundle.augmented is not None:
        if bundle.augmented.shape != (len(bundle.ids), bundle.index.d):
            raise ValueError(f"augmented vectors have shape {bundle.augmented.shape}, the index holds "
                             f"{len(bundle.ids)} x {bundle.index.d}")
        names["augmented"] = f"augmented-{version}.npy"
        payloads["augmented"] = _npy_bytes(np.ascontiguousarray(bundle.augmented, dtype=np.float32))
    if bundle.explain is not None:
        names["explain"] = f"explain-{version}.npz"
        payloads["explain"] = bundle.explain.to_bytes()
    try:
        previous: dict[str, Any] | None = read_bundle_manifest(root)
    except (FileNotFoundError, ValueError):  # first save, or an unreadable manifest to replace
        previous = None
    try:
        for key in names:
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
    for pattern in ("index-*.faiss", "ids-*.npy", "info-*.json", "augmented-*.npy", "explain-*.npz"):
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
    augmented = np.load(io.BytesIO(data["augmented"]), allow_pickle=False) if "augmented" in data else None
    if augmented is not None and augmented.shape != (len(ids), index.d):
        raise ValueError(f"{root}: augmented vectors of shape {augmented.shape} for {len(ids)} x {index.d}")
    explain = None
    if "explain" in data:
        explain = Explainer.from_bytes(data["explain"])
    if info.get("index_type") == "IVFFlat":
        ivf = faiss.extract_index_ivf(index)
        if ivf.direct_map.type != faiss.DirectMap.Hashtable:
            ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
    return IndexBundle(index=index, ids=ids, info=info, augmented=augmented, explain=explain)
