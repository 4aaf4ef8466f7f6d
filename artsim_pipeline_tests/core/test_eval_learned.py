"""The learned head on held-out artists: artist-disjoint seeded splits, training on the other artists only,
and a learnable direction that helps artists the head never saw."""

from __future__ import annotations

import numpy as np
import pytest

from artsim_pipeline.core.evaluation import (
    EVAL_EPOCHS,
    ItemMeta,
    evaluate_learned,
    evaluate_method,
    heldout_artists,
    split_rows,
    splittable_artists,
)
from artsim_pipeline.core.head import SimilarityHead, train_head


def signal_in_few_dims(n_classes: int = 30, per: int = 8, d: int = 24, signal: int = 3, seed: int = 0,
                       strength: float = 1.5):
    """Class identity lives only in the first ``signal`` dims, drowned by noise in the other ``d - signal``:
    cosine on the raw vectors barely sees it; a linear map that weights those dims recovers it."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), per)
    x = rng.normal(size=(len(labels), d))
    x[:, :signal] = strength * rng.normal(size=(n_classes, signal))[labels] + 0.2 * rng.normal(size=(len(labels), signal))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    meta = ItemMeta.from_records(list(range(100, 100 + len(labels))), [{"artist": f"Painter {c}"} for c in labels])
    return x.astype(np.float32), meta


def between_class_trainer(seen: list[set[str]]):
    """A head that learns per-dimension weights (between-class / total variance) from its training labels."""

    def train(vectors, labels, max_epochs, *, seed=0):
        seen.append(set(labels))
        x = np.asarray(vectors, dtype=np.float64)
        keys = np.asarray(labels)
        means = np.stack([x[keys == k].mean(axis=0) for k in np.unique(keys)])
        ratio = means.var(axis=0) / np.maximum(x.var(axis=0), 1e-12)
        return SimilarityHead(np.diag(ratio / ratio.max()).astype(np.float32), {"epochs": max_epochs})

    return train


def test_splits_are_seeded_artist_disjoint_thirds_of_the_artists_with_two_paintings():
    keys = ["a", "a", "b", "b", "b", "c", "c", "d", "d", "e", "e", "f", "f", "solo", ""]
    assert splittable_artists(keys).tolist() == ["a", "b", "c", "d", "e", "f"]
    splits = {seed: heldout_artists(keys, seed) for seed in (0, 1, 2)}
    assert all(len(held) == 2 for held in splits.values())  # 6 // 3
    assert heldout_artists(keys, 0) == splits[0]  # seeded
    assert len({tuple(h) for h in splits.values()}) > 1  # the seeds draw different artists
    for held in splits.values():
        train, test = split_rows(keys, held)
        assert {keys[r] for r in train}.isdisjoint({keys[r] for r in test})
        assert {keys[r] for r in test} == set(held)
        assert "solo" in {keys[r] for r in train} and 14 not in train and 14 not in test  # unlabelled: neither
        assert len(train) + len(test) == 14


def test_a_learnable_direction_helps_held_out_artists_and_training_never_sees_them():
    vectors, meta = signal_in_few_dims()
    seen: list[set[str]] = []
    block = evaluate_learned(vectors, meta, epochs=0, train=between_class_trainer(seen))
    assert block["available"] and not block["enabled"] and block["epochs"] == EVAL_EPOCHS
    assert [row["seed"] for row in block["splits"]] == [0, 1, 2]
    assert block["heldout_artists"] == {"per_split": [10, 10, 10], "mean": 10.0}
    for row, labels in zip(block["splits"], seen):
        assert labels.isdisjoint(row["artists"]) and len(labels) == 20  # trained on the other 20 artists only
        assert row["heldout_paintings"] == row["n_queries"] == 80 and row["train_paintings"] == 160
        assert row["precision_at_5_learned"] > row["precision_at_5_pca"] + 0.1
        assert row["map_learned"] > row["map_pca"]
        rows = np.flatnonzero(np.isin(meta.artist_keys, row["artists"]))  # the protocol on the held-out paintings
        same = evaluate_method(vectors[rows], meta.subset(rows), "visual", "artist", ks=(5,))
        assert row["precision_at_5_pca"] == same.mean("precision@5") and row["map_pca"] == same.mean("map")
    mean_pca = np.mean([row["precision_at_5_pca"] for row in block["splits"]])
    assert block["precision_at_5_pca"] == pytest.approx(mean_pca) and block["precision_at_5_pca"] < 0.5
    assert block["delta_precision_at_5"] == pytest.approx(block["precision_at_5_learned"] - block["precision_at_5_pca"])


def test_the_served_budget_is_used_and_small_collections_are_reported_unavailable():
    vectors, meta = signal_in_few_dims(n_classes=6, per=3, d=8)
    seen: list[set[str]] = []
    block = evaluate_learned(vectors, meta, epochs=7, seeds=(4,), train=between_class_trainer(seen))
    assert block["enabled"] and block["epochs"] == 7 and block["splits"][0]["epochs"] == 7
    assert block["heldout_artists"]["per_split"] == [2]
    two = meta.subset(np.arange(6))  # 2 artists
    out = evaluate_learned(vectors[:6], two, epochs=0)
    assert out["available"] is False and "2 artists with at least 2 paintings" in out["reason"]
    with pytest.raises(ValueError, match="epochs must be >= 0"):
        evaluate_learned(vectors, meta, epochs=-1)


def test_the_real_head_learns_a_planted_artist_signal_from_the_training_artists_only():
    """The real head (SupCon, core/head.py) on 60 artists whose identity lives in 4 of 32 dims: on the artists
    it never saw it ranks same-artist paintings better than the vectors as they are, every split; it trained
    on exactly the other artists; each row is what the protocol measures through that head (trained again,
    deterministically, outside the evaluation)."""
    vectors, meta = signal_in_few_dims(n_classes=60, per=20, d=32, signal=4, strength=1.0)
    seen: list[list[str]] = []

    def recording(x, labels, max_epochs, *, seed=0):
        seen.append(list(labels))
        return train_head(x, labels, max_epochs, seed=seed)

    block = evaluate_learned(vectors, meta, epochs=0, seeds=(0, 1), train=recording)
    assert block["epochs"] == EVAL_EPOCHS and block["heldout_artists"]["per_split"] == [20, 20]
    everyone = set(meta.artist_keys)
    for row, labels in zip(block["splits"], seen):
        assert set(labels) == everyone - set(row["artists"]) and len(labels) == row["train_paintings"] == 800
        assert 0 < row["epochs"] <= EVAL_EPOCHS
        assert row["precision_at_5_learned"] > row["precision_at_5_pca"] + 0.02, row
        assert row["map_learned"] > row["map_pca"] + 0.01, row
        train_rows, held_rows = split_rows(meta.artist_keys, row["artists"])
        head = train_head(vectors[train_rows], labels, EVAL_EPOCHS, seed=row["seed"])
        again = evaluate_method(head.apply(vectors[held_rows]), meta.subset(held_rows), "visual", "artist", ks=(5,))
        assert (again.mean("precision@5"), again.mean("map")) == (row["precision_at_5_learned"], row["map_learned"])
    assert block["delta_precision_at_5"] > 0.02
