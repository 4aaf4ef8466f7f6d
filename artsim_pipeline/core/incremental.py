"""Incremental index refresh: when to refit the fusion + IVF, and how to update an index without it.

Plain Python (no Dagster). A refresh that adds or changes a small share of the collection keeps the
served generation's fitted fusion (standardisation + PCA) and trained IVF coarse quantizer, projects
only the new or changed paintings' vectors with that fusion and adds them to a copy of the served
index (paintings no longer in the catalog, and the old vectors of changed ones, are removed). The
result is published as a new generation (copy-on-write: the served one is never modified).

:func:`decide_fit` is the rule. A full refit happens when any of these holds, checked in this order
(the first one that holds is recorded as the ``reason``):

* ``no_generation``: nothing is served yet (or the served generation cannot be read);
* ``no_fit_record``: the served generation predates fit records;
* ``settings_changed``: the fit configuration (``pca_model``'s code version: code and the settings
  that shape its output) differs from the served fit's;
* ``blocks_changed``: the collection's fusion blocks (models, taps, widths) differ from the fit's;
* ``ivf_now``: the served index is an exact Flat one and the collection is now large enough for IVF;
* ``share``: the paintings added or re-embedded since the last full fit (cumulative over incremental
  refreshes) are more than ``refit_share`` of the collection;
* ``drift``: the new vectors' residual share under the fitted PCA (:func:`.fusion.residual_share`)
  is more than ``refit_drift`` times what the fit leaves of paintings it did not see
  (:func:`holdout_residual`, measured at the full fit: a PCA fit on 90% of the collection, its residual
  share on the other 10%; a fit's residual on its own vectors is far lower when the collection is not
  much larger than ``ARTSIM_PCA_DIM``, so it is no baseline);
* ``head``: a learned similarity head is on (it is trained on a fresh fit each time);
* ``small_collection``: the collection has fewer than :data:`SMALL_FIT_FACTOR` times the fit's output dimensions. A PCA
  with about as many components as paintings spans the paintings it saw, so a painting it did not see loses
  its own part: on the 1,698-painting mirror cut to 64 and 256 paintings, keeping the fit for 2–10% changed
  paintings kept only 87–97% of each top 5 (a refit: 100%) and put changed paintings into the others' top 5
  twice as often as a refit; at 1,698 paintings (3.3 × 512) 94–97% and 1.4 times (``artsim bench drift``,
  docs/benchmarks.md). At such sizes a refit takes seconds.

Otherwise the refresh is ``incremental``. The decision is stored in the staged fusion's manifest and,
once published, in the generation manifest under ``fit`` (schema: :class:`FitRecord`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import faiss
import numpy as np

from .fusion import FusionModel, fit_fusion, residual_share, transform
from .index import IndexBundle, choose_nlist
from .recall import tune_nprobe

#: Default thresholds (``ARTSIM_REFIT_SHARE``, ``ARTSIM_REFIT_DRIFT``).
DEFAULT_REFIT_SHARE = 0.25
DEFAULT_REFIT_DRIFT = 1.5
#: A collection smaller than this many times the fit's output dimensions is always refitted (``small_collection``).
SMALL_FIT_FACTOR = 2
#: Held-out share and cap of :func:`holdout_residual`.
HOLDOUT_SHARE = 0.1
HOLDOUT_MAX = 1000
#: A served vector counts as unchanged when every coordinate is within this of the new projection.
_SAME_VECTOR_TOLERANCE = 1e-4


@dataclass(frozen=True)
class FitRecord:
    """How a generation's fusion and index were obtained (``generation.json`` key ``fit``).

    ``mode``: ``full`` (fitted on this collection) or ``incremental`` (the fit of ``fit_id`` reused).
    ``fit_id``: the staged-fusion id of the full fit in use. ``config``: the fit configuration it was
    made under. ``fit_n``: paintings the fit saw; ``fit_residual``: the residual share it leaves of paintings
    it did not see (:func:`holdout_residual`), the ``drift`` baseline.
    ``since_fit``: paintings added or re-embedded since that fit (cumulative). ``added``/``changed``/
    ``removed``: this refresh's delta against the base generation (``base_generation``). ``share`` and
    ``drift``: the measured values the thresholds were applied to (None when not measured).
    """

    mode: str
    reason: str
    config: str
    fit_id: str | None = None
    fit_n: int = 0
    fit_residual: float = 0.0
    since_fit: int = 0
    base_generation: str | None = None
    added: int = 0
    changed: int = 0
    removed: int = 0
    share: float | None = None
    drift: float | None = None
    refit_share: float = DEFAULT_REFIT_SHARE
    refit_drift: float = DEFAULT_REFIT_DRIFT

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | None) -> "FitRecord | None":
        if not isinstance(raw, Mapping) or raw.get("mode") not in ("full", "incremental"):
            return None
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in raw.items() if k in fields})


@dataclass(frozen=True)
class Delta:
    """What changed between a served index and the collection's current vectors.

    ``add_rows``: rows of the collection (new paintings and changed ones) to project and add;
    ``remove_ids``: objectids to drop from the served index (gone, or changed);
    ``keep``: number of served vectors kept as they are.
    """

    add_rows: np.ndarray
    remove_ids: np.ndarray
    n_new: int
    n_changed: int
    keep: int

    @property
    def removed(self) -> int:
        return int(len(self.remove_ids)) - self.n_changed


def holdout_residual(blocks: Mapping[str, np.ndarray], n_components: int, seed: int = 0) -> float:
    """Residual share of unseen paintings under a fit like the collection's (the ``drift`` baseline).

    Fits the fusion on a seeded 90% of the rows (at most :data:`HOLDOUT_MAX` held out) and returns
    :func:`.fusion.residual_share` of the held-out rows. Costs one more PCA fit, at full fits only.
    """
    n = int(len(next(iter(blocks.values()))))
    held = min(HOLDOUT_MAX, int(round(n * HOLDOUT_SHARE)))
    if held < 1 or n - held < 2:
        return 0.0
    rows = np.random.default_rng(seed).permutation(n)
    test, train = np.sort(rows[:held]), np.sort(rows[held:])
    fusion = fit_fusion({k: np.asarray(v)[train] for k, v in blocks.items()}, n_components=n_components)
    return residual_share(fusion, {k: np.asarray(v)[test] for k, v in blocks.items()})


def index_delta(bundle: IndexBundle, fused: np.ndarray, objectids: np.ndarray) -> Delta:
    """Compare ``bundle`` with the collection's vectors ``fused`` (projected with the bundle's fusion).

    A painting in both is *changed* when its served vector differs from its new projection (it was
    re-embedded: a new image, a new face crop).
    """
    ids = np.asarray(objectids, dtype=np.int64)
    served = np.asarray(bundle.ids, dtype=np.int64)
    in_served = np.isin(ids, served)
    common = ids[in_served]
    changed_mask = np.zeros(len(ids), dtype=bool)
    if common.size:
        old = bundle.index.reconstruct_batch(common)
        differs = np.abs(old - fused[in_served]).max(axis=1) > _SAME_VECTOR_TOLERANCE
        changed_mask[np.flatnonzero(in_served)[differs]] = True
    gone = np.setdiff1d(served, ids)
    add_rows = np.flatnonzero(~in_served | changed_mask)
    remove_ids = np.concatenate([gone, ids[changed_mask]]).astype(np.int64)
    n_changed = int(changed_mask.sum())
    return Delta(add_rows, remove_ids, int((~in_served).sum()), n_changed, int(len(served) - len(remove_ids)))


def decide_fit(
    *,
    config: str,
    served_fit: FitRecord | None,
    served_generation: str | None,
    served_fusion: FusionModel | None,
    served_bundle: IndexBundle | None,
    blocks: Mapping[str, np.ndarray],
    objectids: np.ndarray,
    refit_share: float = DEFAULT_REFIT_SHARE,
    refit_drift: float = DEFAULT_REFIT_DRIFT,
    head: bool = False,
) -> tuple[FitRecord, Delta | None]:
    """Full refit or incremental update for the collection ``blocks`` (rows = ``objectids``).

    Returns the decision and, when incremental, the delta against ``served_bundle``.
    """
    base = dict(config=config, base_generation=served_generation, refit_share=float(refit_share),
                refit_drift=float(refit_drift))

    def full(reason: str, **measured: Any) -> tuple[FitRecord, None]:
        return FitRecord(mode="full", reason=reason, fit_n=int(len(objectids)), **base, **measured), None

    if served_generation is None or served_fusion is None or served_bundle is None:
        return full("no_generation")
    if served_fit is None:
        return full("no_fit_record")
    if served_fit.config != config:
        return full("settings_changed")
    if tuple(sorted(blocks)) != served_fusion.model_names or \
            tuple(int(np.shape(blocks[name])[1]) for name in served_fusion.model_names) != served_fusion.dims:
        return full("blocks_changed")
    if not served_bundle.is_ivf and choose_nlist(len(objectids)) >= 2:
        return full("ivf_now")
    if head:
        return full("head")
    if len(objectids) < SMALL_FIT_FACTOR * served_fusion.output_dim:
        return full("small_collection")
    fused = transform(served_fusion, blocks)
    delta = index_delta(served_bundle, fused, objectids)
    touched = delta.n_new + delta.n_changed
    since_fit = int(served_fit.since_fit) + touched
    share = since_fit / max(1, len(objectids))
    drift = None
    if touched:
        rows = delta.add_rows
        drift = residual_share(served_fusion, {k: np.asarray(v)[rows] for k, v in blocks.items()}) / \
            max(served_fit.fit_residual, 1e-12)
    measured = dict(share=round(share, 6), drift=None if drift is None else round(drift, 6), added=delta.n_new,
                    changed=delta.n_changed, removed=delta.removed)
    if share > refit_share:
        return full("share", **measured)
    if drift is not None and drift > refit_drift:
        return full("drift", **measured)
    record = FitRecord(mode="incremental", reason="small_change", fit_id=served_fit.fit_id, fit_n=served_fit.fit_n,
                       fit_residual=served_fit.fit_residual, since_fit=since_fit, **base, **measured)
    return record, delta


def update_index(bundle: IndexBundle, fused: np.ndarray, objectids: np.ndarray, *, seed: int = 0,
                 target_recall: float | None = None) -> tuple[IndexBundle, Delta]:
    """A copy of ``bundle`` holding exactly the collection ``fused`` (rows = ``objectids``).

    Only the new and changed rows are added (assigned to the trained IVF lists); gone and changed
    objectids are removed. The served ``bundle`` is not modified. ``nprobe`` is re-tuned for the
    updated index (same target recall as the bundle's build), so its recall@10 is measured as a
    fresh build's is.
    """
    delta = index_delta(bundle, fused, objectids)
    index = faiss.clone_index(bundle.index)
    if bundle.is_ivf:
        ivf = faiss.extract_index_ivf(index)
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
    if delta.remove_ids.size:
        # an IVF index with a hashtable direct map removes only through an IDSelectorArray
        remove = np.ascontiguousarray(delta.remove_ids, dtype=np.int64)
        index.remove_ids(faiss.IDSelectorArray(len(remove), faiss.swig_ptr(remove)))
    ids = np.asarray(objectids, dtype=np.int64)
    if delta.add_rows.size:
        index.add_with_ids(np.ascontiguousarray(fused[delta.add_rows], dtype=np.float32), ids[delta.add_rows])
    served = np.asarray(bundle.ids, dtype=np.int64)
    new_ids = np.concatenate([served[~np.isin(served, delta.remove_ids)], ids[delta.add_rows]])  # insertion order
    info = {k: v for k, v in bundle.info.items() if k != "build_seconds"}
    info["n_vectors"] = int(len(new_ids))
    info["updated_from"] = {"n_vectors": int(len(bundle.ids)), "added": int(delta.add_rows.size),
                            "removed": int(delta.remove_ids.size)}
    if bundle.is_ivf:
        target = float(target_recall if target_recall is not None else bundle.info.get("target_recall", 0.99))
        order = np.argsort(ids)
        vectors = np.ascontiguousarray(fused[order], dtype=np.float32)
        nprobe, recall, n_queries = tune_nprobe(ivf, vectors, ids[order], target_recall=target, seed=seed)
        info.update(nprobe=int(nprobe), recall_at_10=float(recall), recall_queries=int(n_queries))
    return IndexBundle(index=index, ids=new_ids, info=info), delta
