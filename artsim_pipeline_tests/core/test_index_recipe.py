"""The index recipes shared by ``faiss_index``, ``artsim bench scale`` and the evaluation
(:mod:`artsim_pipeline.core.index_recipe`): a variant's bundle built or updated with its re-ranking and
explanations, the served generation's error policy, and the index searcher."""

from __future__ import annotations

import numpy as np
import pytest

from artsim_pipeline.core import generations
from artsim_pipeline.core.index import build_index
from artsim_pipeline.core.index_recipe import build_index_bundle, index_searcher, load_served_generation
from artsim_pipeline.core.lake import DataLake
from artsim_pipeline.core.rerank import RerankOptions

NAMES = ["m", "n"]


def _collection(n: int, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """(blocks, fused, objectids) of ``n`` paintings: two blocks, their normalised concatenation."""
    rng = np.random.default_rng(seed)
    blocks = {"m": rng.standard_normal((n, 12)).astype(np.float32), "n": rng.standard_normal((n, 8)).astype(np.float32)}
    fused = np.concatenate([blocks[k] for k in NAMES], axis=1)
    fused = (fused / np.linalg.norm(fused, axis=1, keepdims=True)).astype(np.float32)
    return blocks, fused, np.arange(1, n + 1, dtype=np.int64)


def test_a_built_bundle_carries_its_reranking_and_explanations():
    blocks, fused, ids = _collection(120)
    bundle, delta = build_index_bundle(fused, ids, NAMES, blocks, RerankOptions())
    assert delta is None
    assert sorted(int(i) for i in bundle.ids) == ids.tolist()
    assert {"augmentation", "explanation"} <= set(bundle.info)
    assert bundle.info["explanation"]["blocks"] == len(NAMES) and bundle.explain is not None


def test_a_served_bundle_is_updated_with_only_the_new_paintings():
    blocks, fused, ids = _collection(130)
    served, _ = build_index_bundle(fused[:120], ids[:120], NAMES, {k: v[:120] for k, v in blocks.items()},
                                   RerankOptions())
    bundle, delta = build_index_bundle(fused, ids, NAMES, blocks, RerankOptions(), base=served)
    assert delta is not None and delta.n_new == 10 and delta.n_changed == 0
    assert sorted(int(i) for i in bundle.ids) == ids.tolist()
    assert len(served.ids) == 120  # the served bundle is left as it was
    assert {"augmentation", "explanation"} <= set(bundle.info)


def test_the_searcher_leaves_each_painting_out_of_its_own_neighbours():
    _, fused, ids = _collection(6)
    top = index_searcher(build_index(fused, ids))
    found = top(fused, ids, 5)
    assert found.shape == (6, 5)
    for own, row in zip(ids, found):
        assert own not in row and sorted(row.tolist()) == sorted(set(ids.tolist()) - {int(own)})
    padded = top(fused[:1], ids[:1], 7)  # only 5 others: the rest is -1
    assert padded[0, 5:].tolist() == [-1, -1]
    assert index_searcher(None) is None


def test_no_served_generation_is_none_and_an_unreadable_one_is_reported(tmp_path, monkeypatch):
    lake = DataLake(tmp_path)
    seen: list[Exception] = []
    assert load_served_generation(lake, unreadable=seen.append) is None and seen == []  # none published yet

    def damaged(_lake):
        raise ValueError("manifest is not JSON")

    monkeypatch.setattr(generations, "load_generation", damaged)
    assert load_served_generation(lake, unreadable=seen.append) is None
    assert [str(e) for e in seen] == ["manifest is not JSON"]
    assert load_served_generation(lake) is None  # no callback: still None

    def broken(_lake):
        raise RuntimeError("a bug")

    monkeypatch.setattr(generations, "load_generation", broken)
    with pytest.raises(RuntimeError, match="a bug"):  # only unreadable files are tolerated, not bugs
        load_served_generation(lake, unreadable=seen.append)
