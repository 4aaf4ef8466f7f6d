"""FAISS index: type choice, nprobe tuning, objectids, filtered search, atomic persistence."""

from __future__ import annotations

import json

import numpy as np
import pytest

from artsim_pipeline.core import index as index_mod
from artsim_pipeline.core.index import (
    build_index,
    choose_nlist,
    load_index,
    save_index,
    search,
)
from artsim_pipeline.core.recall import exact_topk, neighbour_recall, predicted_recalls, tune_nprobe
from artsim_pipeline_tests.core.support import clustered as _clustered
from artsim_pipeline_tests.core.support import objectids as _objectids


@pytest.fixture(scope="module")
def ivf_case() -> tuple[np.ndarray, np.ndarray, index_mod.IndexBundle]:
    x = _clustered(5000)
    ids = _objectids(5000)
    return x, ids, build_index(x, ids)


def test_choose_nlist() -> None:
    assert choose_nlist(999) == 0
    assert choose_nlist(1000) == 25  # 4*sqrt(1000)=126, capped at 1000 // 39
    assert choose_nlist(5000) == 128
    assert choose_nlist(100_000) == 1265  # 4*sqrt(N) below the cap
    assert choose_nlist(1000, min_ivf_size=10) == 25
    assert choose_nlist(77, min_ivf_size=10) == 0  # 77 // 39 = 1 list: not worth IVF


def test_ivf_recall_at_chosen_nprobe(ivf_case) -> None:
    x, ids, bundle = ivf_case
    info = bundle.info
    assert info["index_type"] == "IVFFlat" and info["nlist"] == 128
    assert 1 <= info["nprobe"] <= 128 and info["recall_at_10"] >= 0.99
    assert info["recall_queries"] == 1000
    # Independent check over other collection vectors than the tuning sample might use.
    rows = np.arange(0, 5000, 3)
    _, found = search(bundle, x[rows], 10)
    _, truth_rows = exact_topk(x, x[rows], 10, exclude_self=False)
    assert neighbour_recall(found, ids[truth_rows]) >= 0.985
    if info["nprobe"] > 1:  # the chosen nprobe is the smallest that meets the target
        recall, _ = _recall_at(bundle, x, ids, info["nprobe"] - 1)
        assert recall < 0.99


def _recall_at(bundle, x, ids, nprobe):
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(len(x), 1000, replace=False))
    _, found = search(bundle, x[rows], 10, nprobe=nprobe)
    _, truth = exact_topk(x, x[rows], 10, exclude_self=False)
    return neighbour_recall(found, ids[truth]), rows


def test_results_are_objectids(ivf_case) -> None:
    x, ids, bundle = ivf_case
    scores, found = search(bundle, x[:20], 5)
    assert found.dtype == np.int64 and scores.dtype == np.float32
    np.testing.assert_array_equal(found[:, 0], ids[:20])  # each vector finds itself first
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    assert set(found.ravel()) <= set(ids)


def test_flat_for_small_collections() -> None:
    for n in (5, 999):
        x = _clustered(n, seed=n)
        bundle = build_index(x, _objectids(n))
        assert bundle.info["index_type"] == "Flat" and bundle.info["nlist"] is None
        scores, found = search(bundle, x[:3], 10)
        _, truth = exact_topk(x, x[:3], 10, exclude_self=False)
        np.testing.assert_array_equal(found[:, : truth.shape[1]], _objectids(n)[truth])
    scores, found = search(build_index(_clustered(5), _objectids(5)), _clustered(5)[:1], 8)
    assert list(found[0, 5:]) == [-1, -1, -1] and np.all(np.isneginf(scores[0, 5:]))


def test_build_validates_inputs() -> None:
    x = _clustered(10)
    with pytest.raises(ValueError, match="normalised"):
        build_index(x * 2, _objectids(10))
    with pytest.raises(ValueError, match="unique"):
        build_index(x, np.zeros(10, np.int64))
    with pytest.raises(ValueError, match="10 ids"):
        build_index(x, _objectids(9))


@pytest.mark.parametrize("subset_max", [index_mod.EXACT_SUBSET_MAX, 3])
def test_allowed_ids_filter(ivf_case, monkeypatch, subset_max: int) -> None:
    """Few allowed ids: exact subset search; with the threshold lowered, the faiss selector path."""
    monkeypatch.setattr(index_mod, "EXACT_SUBSET_MAX", subset_max)
    x, ids, bundle = ivf_case
    rng = np.random.default_rng(1)
    allowed = rng.choice(ids, size=7, replace=False)
    queries = x[:25]
    scores, found = search(bundle, queries, 5, allowed_ids=set(int(a) for a in allowed))
    assert set(found.ravel()) <= set(allowed)
    # Matches brute force over the allowed subset, even though IVF would not probe their lists.
    rows = np.flatnonzero(np.isin(ids, allowed))
    order = np.argsort(ids[rows])
    rows = rows[order]
    exact_scores, exact_rows = exact_topk(x[rows], queries, 5, exclude_self=False)
    np.testing.assert_array_equal(found, ids[rows][exact_rows])
    np.testing.assert_allclose(scores, exact_scores, atol=1e-5)
    # Unknown ids are ignored; nothing allowed -> nothing found.
    _, none = search(bundle, queries[:2], 3, allowed_ids=np.array([1, 2, 3]))
    assert np.all(none == -1)


def test_allowed_ids_on_flat_index_with_selector(monkeypatch) -> None:
    monkeypatch.setattr(index_mod, "EXACT_SUBSET_MAX", 0)
    x = _clustered(300)
    ids = _objectids(300)
    bundle = build_index(x, ids)
    allowed = ids[::10]
    _, found = search(bundle, x[:10], 4, allowed_ids=allowed)
    assert set(found.ravel()) <= set(allowed)
    _, exact_rows = exact_topk(x[::10], x[:10], 4, exclude_self=False)
    np.testing.assert_array_equal(found, allowed[exact_rows])


def test_exact_topk_ties_and_self_exclusion() -> None:
    v = np.array([[1, 0], [1, 0], [0, 1], [1, 0], [-1, 0]], dtype=np.float32)
    scores, rows = exact_topk(v, v, 3)
    assert rows[0].tolist() == [1, 3, 2]  # ties with equal score: lower row first; self (0) excluded
    assert rows[1].tolist() == [0, 3, 2]
    assert scores[0].tolist() == [1.0, 1.0, 0.0]
    _, rows = exact_topk(v, v[:1], 2, exclude_self=False)
    assert rows[0].tolist() == [0, 1]
    _, rows = exact_topk(v, v, 10)
    assert rows.shape == (5, 4)
    with pytest.raises(ValueError, match="query_rows"):
        exact_topk(v, v[:2], 2)
    _, rows = exact_topk(v, v[2:3], 2, query_rows=np.array([2]))
    assert rows[0].tolist() == [0, 1]


def test_save_load_roundtrip(tmp_path, ivf_case) -> None:
    x, ids, bundle = ivf_case
    save_index(bundle, tmp_path)
    loaded = load_index(tmp_path)
    assert loaded.info == bundle.info
    np.testing.assert_array_equal(loaded.ids, ids)
    a = search(bundle, x[:50], 10)
    b = search(loaded, x[:50], 10)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])
    _, filtered = search(loaded, x[:2], 3, allowed_ids=ids[100:104])  # reconstruct works after load
    assert set(filtered.ravel()) <= set(ids[100:104])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["files"]) == {"index", "ids", "info"}


def test_failed_save_leaves_old_index_intact(tmp_path, monkeypatch) -> None:
    old_x, new_x = _clustered(50, seed=1), _clustered(60, seed=2)
    old = build_index(old_x, _objectids(50))
    new = build_index(new_x, _objectids(60))
    save_index(old, tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())

    real_write = index_mod.atomic_write_bytes
    calls = {"n": 0}

    def flaky(target, data):
        calls["n"] += 1
        if calls["n"] == 2:  # index file written, crash while writing the id map
            raise OSError("disk full")
        real_write(target, data)

    monkeypatch.setattr(index_mod, "atomic_write_bytes", flaky)
    with pytest.raises(OSError, match="disk full"):
        save_index(new, tmp_path)
    monkeypatch.setattr(index_mod, "atomic_write_bytes", real_write)

    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no partial new files
    loaded = load_index(tmp_path)
    assert loaded.info["n_vectors"] == 50
    np.testing.assert_array_equal(search(loaded, old_x[:3], 1)[1][:, 0], _objectids(50)[:3])

    # A good save switches over; the previous version is kept one round, then cleaned.
    v_new = save_index(new, tmp_path)
    assert load_index(tmp_path).info["n_vectors"] == 60
    assert len(list(tmp_path.glob("index-*.faiss"))) == 2
    v_third = save_index(new, tmp_path)
    names = sorted(p.name for p in tmp_path.glob("index-*.faiss"))
    assert names == sorted([f"index-{v_new}.faiss", f"index-{v_third}.faiss"])


def test_load_detects_corruption(tmp_path) -> None:
    bundle = build_index(_clustered(20), _objectids(20))
    save_index(bundle, tmp_path)
    ids_file = next(tmp_path.glob("ids-*.npy"))
    ids_file.write_bytes(ids_file.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ValueError, match="checksum"):
        load_index(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_index(tmp_path / "missing")


def test_ivf_trains_on_a_seeded_sample_beyond_its_points_per_list(monkeypatch) -> None:
    x = _clustered(3000)
    ids = _objectids(3000)
    full = build_index(x, ids)  # 76 lists x 40 = 3040 >= 3000: every vector trains
    assert full.info["trained_on"] == 3000 and index_mod.training_rows(3000, 76) is None
    monkeypatch.setattr(index_mod, "TRAIN_POINTS_PER_LIST", 20)
    rows = index_mod.training_rows(3000, 76)
    assert rows.size == 1520 and np.all(np.diff(rows) > 0)
    sampled = build_index(x, ids)
    assert sampled.info["trained_on"] == 1520 and sampled.info["nlist"] == full.info["nlist"]
    assert sampled.info["recall_at_10"] >= 0.99  # nprobe tuning holds the target with the sampled centroids
    assert sampled.index.ntotal == 3000  # every vector is added
    _, found = search(sampled, x[::7], 10)
    _, truth_rows = exact_topk(x, x[::7], 10, exclude_self=False)
    assert neighbour_recall(found, ids[truth_rows]) >= 0.985


def test_predicted_recall_of_every_nprobe_is_what_a_search_measures(ivf_case) -> None:
    x, ids, bundle = ivf_case
    ivf = bundle.index
    rows = np.arange(0, 5000, 11)
    _, truth_rows = exact_topk(x, x[rows], 10, exclude_self=False)
    predicted = predicted_recalls(ivf, x[rows], x[truth_rows.ravel()].reshape(*truth_rows.shape, -1))
    assert predicted.shape == (ivf.nlist,) and predicted[-1] == 1.0 and np.all(np.diff(predicted) >= 0)
    for nprobe in (1, 2, 3, 5, 8, 13, 40, 128):
        _, found = ivf.search(x[rows], 10, params=index_mod.faiss.SearchParametersIVF(nprobe=nprobe))
        assert predicted[nprobe - 1] == pytest.approx(neighbour_recall(found, ids[truth_rows]), abs=1e-9)


def test_tuned_nprobe_is_the_smallest_a_search_accepts(ivf_case) -> None:
    x, ids, bundle = ivf_case
    for target in (0.5, 0.9, 0.99, 1.0):
        nprobe, recall, n_queries = tune_nprobe(bundle.index, x, ids, target_recall=target)
        smallest = next(p for p in range(1, bundle.index.nlist + 1) if _recall_at(bundle, x, ids, p)[0] >= target)
        assert nprobe == smallest and recall >= target and n_queries == 1000
