"""The index recipes that the ``faiss_index`` asset, ``artsim bench scale`` and the evaluation share, so each
step is written once:

* :func:`build_index_bundle`: one variant's searchable bundle from its fused vectors: the FAISS index built
  (:func:`.index.build_index`) or a served bundle updated with the new and changed paintings
  (:func:`.incremental.update_index`), then the re-ranking's augmented vectors (:func:`.rerank.augment_bundle`)
  and what explains each match (:func:`.explain.explain_bundle`), both stored with the index;
* :func:`load_served_generation`: the generation search serves, or None when there is none or it cannot be read
  (one error policy; the caller says what an unreadable one means to it);
* :func:`served_version`: the served generation's id and its content hash as a data version;
* :func:`index_searcher`: a bundle as the evaluation's index check (each painting's neighbours, itself left out).

The index, re-ranking, explanation and generation modules are imported here (a caller that times the recipe imports this
module first) and called through their modules, so a replaced function (a test's) is the one that runs.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from . import explain, generations, incremental, index, rerank
from .lake import DataLake

#: The data version when nothing is served (the hash of nothing).
NOTHING = hashlib.sha256(b"").hexdigest()[:16]


def build_index_bundle(
    fused: np.ndarray,
    objectids: np.ndarray,
    model_names: Sequence[str],
    blocks: Mapping[str, np.ndarray],
    rerank_options: Any,
    base: index.IndexBundle | None = None,
) -> tuple[index.IndexBundle, Any]:
    """(bundle, delta): the index of ``fused`` (rows ``objectids``), or ``base`` updated with them (``delta``:
    what changed; None when built afresh), with the re-ranking's augmented vectors and the explanations'
    per-block projections of ``blocks`` (the fusion's input, ``model_names`` its models) added."""
    delta = None
    if base is not None:
        bundle, delta = incremental.update_index(base, fused, objectids)
    else:
        bundle = index.build_index(fused, objectids)
    bundle = rerank.augment_bundle(bundle, fused, objectids, rerank_options)
    bundle = explain.explain_bundle(bundle, model_names, blocks, objectids, fused)
    return bundle, delta


def load_served_generation(lake: DataLake, unreadable: Callable[[Exception], None] | None = None):
    """The served generation, or None: none published yet, or one that cannot be read (``OSError``,
    ``ValueError``, ``KeyError``: then ``unreadable(exc)`` is called, e.g. to log what the caller does instead)."""
    try:
        return generations.load_generation(lake)
    except generations.NoGenerationError:
        return None
    except (OSError, ValueError, KeyError) as exc:
        if unreadable is not None:
            unreadable(exc)
        return None


def served_version(lake: DataLake) -> tuple[str | None, str]:
    """(served generation or None, its content hash as a data version; :data:`NOTHING` when none is served)."""
    served = generations.current_generation_id(lake)
    if served is None:
        return None, NOTHING
    return served, str(generations.read_generation_manifest(lake, served)["content_hash"])[:16]


def index_searcher(bundle: index.IndexBundle | None):
    """``(vectors, objectids, k) -> [N, k] objectids`` searching ``bundle`` (each painting itself left out,
    ``-1`` where fewer than ``k`` are found), or None without a bundle."""
    if bundle is None:
        return None

    def top_ids(vectors: np.ndarray, objectids: np.ndarray, k: int) -> np.ndarray:
        _, found = index.search(bundle, vectors, k + 1)
        out = np.full((len(objectids), k), -1, dtype=np.int64)
        for i, (own, row) in enumerate(zip(objectids, found)):
            others = [int(o) for o in row if o >= 0 and o != own][:k]
            out[i, : len(others)] = others
        return out

    return top_ids
