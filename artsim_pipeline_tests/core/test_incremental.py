"""The incremental index refresh (core.incremental): the refit rule and the index update."""

import numpy as np
import pytest

from artsim_pipeline.core.fusion import fit_fusion, residual_share, transform
from artsim_pipeline.core.incremental import FitRecord, decide_fit, holdout_residual, index_delta, update_index
from artsim_pipeline.core.index import build_index, search
from artsim_pipeline.core.recall import exact_topk, neighbour_recall


def _blocks(n: int, seed: int, shift: float = 0.0, centres: int = 30) -> dict[str, np.ndarray]:
    """Two correlated blocks of clustered vectors (``shift`` moves every cluster: a drifted batch)."""
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(99)
    means = base.normal(size=(centres, 48))
    mix_a, mix_b = base.normal(size=(48, 96)), base.normal(size=(48, 64))
    latent = means[rng.integers(0, centres, n)] + 0.35 * rng.normal(size=(n, 48))
    latent += shift * base.normal(size=48)
    return {"a": (latent @ mix_a + 0.1 * rng.normal(size=(n, 96))).astype(np.float32),
            "b": (latent @ mix_b + 0.1 * rng.normal(size=(n, 64))).astype(np.float32)}


def _concat(*parts):
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


@pytest.fixture(scope="module")
def fitted():
    blocks = _blocks(3000, seed=1)
    ids = np.arange(1, 3001, dtype=np.int64)
    fusion = fit_fusion(blocks, n_components=32)
    bundle = build_index(transform(fusion, blocks), ids)
    assert bundle.is_ivf
    return blocks, ids, fusion, bundle


def test_residual_share_of_the_fit_matches_its_explained_variance(fitted):
    """The fit's own vectors leave what its PCA does not explain (the index step records that share)."""
    blocks, _, fusion, _ = fitted
    unexplained = 1.0 - float(fusion.explained_variance_ratio.sum())
    assert 0.01 < unexplained < 0.9
    assert residual_share(fusion, blocks) == pytest.approx(unexplained, abs=1e-6)
    drifted = _blocks(300, seed=5, shift=3.0)
    assert residual_share(fusion, drifted) > 1.5 * unexplained


def test_update_index_adds_removes_and_replaces_changed_vectors(fitted):
    blocks, ids, fusion, bundle = fitted
    extra = _blocks(200, seed=2)
    keep = np.ones(len(ids), dtype=bool)
    keep[:20] = False  # paintings 1..20 left the catalog
    new_blocks = _concat({k: v[keep] for k, v in blocks.items()}, extra)
    new_ids = np.concatenate([ids[keep], np.arange(5001, 5201)])
    changed = new_ids[:10]  # paintings 21..30 were re-embedded
    for k in new_blocks:
        new_blocks[k][:10] = _blocks(10, seed=3)[k]
    fused = transform(fusion, new_blocks)

    delta = index_delta(bundle, fused, new_ids)
    assert (delta.n_new, delta.n_changed, delta.removed) == (200, 10, 20)

    updated, _ = update_index(bundle, fused, new_ids)
    assert sorted(updated.ids.tolist()) == sorted(new_ids.tolist())
    assert updated.index.ntotal == len(new_ids)
    assert bundle.index.ntotal == 3000 and len(bundle.ids) == 3000  # the served index is untouched
    np.testing.assert_allclose(updated.index.reconstruct_batch(changed), fused[:10], atol=1e-6)
    # its recall against exact search is measured and tuned as a fresh build's is
    assert updated.info["recall_at_10"] >= 0.99
    queries = fused[::7]
    _, truth_rows = exact_topk(fused, queries, 10, exclude_self=False)
    _, found = search(updated, queries, 10)
    assert neighbour_recall(found, new_ids[truth_rows]) >= 0.98
    assert not np.isin(np.arange(1, 21), found).any()


def test_the_drift_baseline_is_the_residual_of_unseen_paintings(fitted):
    blocks, _, fusion, _ = fitted
    baseline = holdout_residual(blocks, n_components=32)
    assert baseline > residual_share(fusion, blocks)  # unseen paintings keep less than the fitted ones
    similar = residual_share(fusion, _blocks(300, seed=8)) / baseline
    drifted = residual_share(fusion, _blocks(300, seed=9, shift=3.0)) / baseline
    assert 0.8 < similar < 1.2 and drifted > 1.5


def _decide(fitted, blocks, ids, **kwargs):
    original, _, fusion, bundle = fitted
    record = FitRecord(mode="full", reason="no_generation", config="3-abc", fit_id="stage1", fit_n=3000,
                       fit_residual=holdout_residual(original, n_components=32))
    options = dict(config="3-abc", served_fit=record, served_generation="g1", served_fusion=fusion,
                   served_bundle=bundle, blocks=blocks, objectids=ids) | kwargs
    return decide_fit(**options)


def test_a_small_similar_batch_is_incremental(fitted):
    blocks, ids, _, _ = fitted
    batch = _blocks(190, seed=4)
    fit, delta = _decide(fitted, _concat(blocks, batch), np.concatenate([ids, np.arange(9001, 9191)]))
    assert (fit.mode, fit.reason, fit.fit_id, fit.added, fit.since_fit) == ("incremental", "small_change", "stage1", 190, 190)
    assert fit.drift < 1.5 and fit.share == pytest.approx(190 / 3190, abs=1e-5)
    assert delta.n_new == 190
    assert FitRecord.from_json(fit.to_json()) == fit


def test_refit_rules(fitted):
    blocks, ids, fusion, bundle = fitted
    grown = _concat(blocks, _blocks(1200, seed=6))
    grown_ids = np.concatenate([ids, np.arange(9001, 10201)])
    assert _decide(fitted, grown, grown_ids)[0].reason == "share"
    drifted = _concat(blocks, _blocks(150, seed=7, shift=3.0))
    fit, _ = _decide(fitted, drifted, np.concatenate([ids, np.arange(9001, 9151)]))
    assert (fit.mode, fit.reason) == ("full", "drift") and fit.drift > 1.5
    assert _decide(fitted, blocks, ids, config="4-abc")[0].reason == "settings_changed"
    assert _decide(fitted, {"a": blocks["a"]}, ids)[0].reason == "blocks_changed"
    assert _decide(fitted, blocks, ids, served_fit=None)[0].reason == "no_fit_record"
    assert _decide(fitted, blocks, ids, served_generation=None)[0].reason == "no_generation"
    assert _decide(fitted, blocks, ids, head=True)[0].reason == "head"
    # cumulative: earlier incremental refreshes count towards the share
    earlier = FitRecord(mode="incremental", reason="small_change", config="3-abc", fit_id="stage1", fit_n=3000,
                        fit_residual=holdout_residual(blocks, n_components=32), since_fit=700)
    batch = _concat(blocks, _blocks(190, seed=4))
    batch_ids = np.concatenate([ids, np.arange(9001, 9191)])
    assert _decide(fitted, batch, batch_ids, served_fit=earlier)[0].reason == "share"
    # a Flat index that the collection outgrew is refitted as IVF
    small = {k: v[:900] for k, v in blocks.items()}
    flat = build_index(transform(fusion, small), ids[:900])
    assert _decide(fitted, blocks, ids, served_bundle=flat)[0].reason == "ivf_now"
