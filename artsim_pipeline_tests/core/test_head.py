"""similarity_head core: SupCon training from the identity, epochs chosen on held-back artists, files, fusion."""

from __future__ import annotations

import numpy as np
import pytest

from artsim_pipeline.core.fusion import fit_fusion, fusion_fingerprint, load_fusion, save_fusion, transform, with_projection
from artsim_pipeline.core.head import SimilarityHead, load_head, save_head, train_head
from artsim_pipeline.core.metrics import evaluate_retrieval


def _artists(n_artists: int, per_artist: int, seed: int, dim: int = 24, signal: int = 4) -> tuple[np.ndarray, list[str]]:
    """Vectors whose artist lives in ``signal`` dims that loud shared noise dims drown out.

    A projection that learns to down-weight the noise dims helps artists it never saw too.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_artists, signal))
    rows, labels = [], []
    for a in range(n_artists):
        for _ in range(per_artist):
            x = np.concatenate([centres[a] + 0.3 * rng.normal(size=signal), 2.0 * rng.normal(size=dim - signal)])
            rows.append(x)
            labels.append(f"artist-{seed}-{a}")
    x = np.asarray(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), labels


def test_head_learns_a_projection_that_helps_artists_it_never_saw() -> None:
    train_x, train_labels = _artists(16, 12, seed=1)
    test_x, test_labels = _artists(6, 12, seed=2)
    head = train_head(train_x, train_labels, max_epochs=60, seed=0, learning_rate=1e-2)  # one step an epoch here
    assert head.info["epochs"] > 0 and head.info["validation_map_best"] > head.info["validation_map_identity"]
    before = evaluate_retrieval(test_x, test_labels, ks=(5,))
    after = evaluate_retrieval(head.apply(test_x), test_labels, ks=(5,))
    assert after["map"] > before["map"] + 0.05, (before, after)
    assert np.allclose(np.linalg.norm(head.apply(test_x), axis=1), 1.0, atol=1e-5)


def test_head_is_deterministic_and_zero_epochs_is_the_identity() -> None:
    x, labels = _artists(12, 8, seed=3)
    a = train_head(x, labels, max_epochs=10, seed=0)
    b = train_head(x, labels, max_epochs=10, seed=0)
    np.testing.assert_array_equal(a.weight, b.weight)
    off = train_head(x, labels, max_epochs=0)
    np.testing.assert_array_equal(off.weight, np.eye(x.shape[1], dtype=np.float32))
    np.testing.assert_allclose(off.apply(x), x, atol=1e-6)
    few = train_head(x[:20], labels[:20], max_epochs=10)  # too few artists to hold some back: identity
    assert few.info["epochs"] == 0 and "labelled artists" in few.info["note"]


def test_head_rejects_bad_input_and_round_trips(tmp_path) -> None:
    x, labels = _artists(8, 6, seed=4)
    with pytest.raises(ValueError, match="vectors and n labels"):
        train_head(x, labels[:-1], max_epochs=5)
    with pytest.raises(ValueError, match="max_epochs"):
        train_head(x, labels, max_epochs=-1)
    head = SimilarityHead(np.random.default_rng(0).normal(size=(24, 24)).astype(np.float32), {"epochs": 3})
    with pytest.raises(ValueError, match="expects 24-d vectors, got 5-d"):
        head.apply(np.ones((2, 5)))
    save_head(head, tmp_path / "head.npz")
    back = load_head(tmp_path / "head.npz")
    np.testing.assert_array_equal(back.weight, head.weight)
    assert back.info["epochs"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["head.npz"]


def test_fusion_with_projection_is_the_head_applied_to_the_fused_vectors(tmp_path) -> None:
    rng = np.random.default_rng(5)
    blocks = {"m": rng.normal(size=(40, 12)), "m@blocks.3.mean": rng.normal(size=(40, 6))}
    base = fit_fusion(blocks, n_components=8)
    head = SimilarityHead(rng.normal(size=(8, 8)).astype(np.float32))
    fused = with_projection(base, head.weight)
    np.testing.assert_allclose(transform(fused, blocks), head.apply(transform(base, blocks)), atol=1e-5)
    assert fusion_fingerprint(fused) != fusion_fingerprint(base)
    save_fusion(fused, tmp_path / "f.npz")
    np.testing.assert_allclose(transform(load_fusion(tmp_path / "f.npz"), blocks), transform(fused, blocks), atol=1e-6)
    save_fusion(base, tmp_path / "b.npz")
    assert load_fusion(tmp_path / "b.npz").projection is None
    with pytest.raises(ValueError, match="does not fit the fusion's 8-d output"):
        with_projection(base, np.eye(5))
