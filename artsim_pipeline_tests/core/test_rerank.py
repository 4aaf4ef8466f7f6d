"""Re-ranking (core/rerank.py): the honest leave-one-out against a from-scratch reference, the vectorised
augmentation against the scalar one, the IVF neighbour table against exact search, the stored augmented
vectors, the served re-scoring, and the study's choice rule."""

import numpy as np
import pytest

from artsim_pipeline.core import rerank as rr
from artsim_pipeline.core.evaluation.protocol import ItemMeta, evaluate_method
from artsim_pipeline.core.evaluation.reranking import evaluate_reranking
from artsim_pipeline.core.index import build_index, load_index, save_index
from artsim_pipeline.core.rerank import (METHODS, Augmented, LeaveOneOut, RerankOptions, ServedDatabase, augment,
                                         augment_bundle, augment_row, expand, loo_scores_one, neighbour_table)
from artsim_pipeline_tests.core.support import clustered, objectids

OPTIONS = [RerankOptions(m, dba_top=3, qe_top=2, alpha=2.0) for m in METHODS]


@pytest.mark.parametrize("options", OPTIONS, ids=[o.method for o in OPTIONS])
def test_leave_one_out_equals_a_database_rebuilt_without_the_query(options):
    x = clustered(80, dim=12, n_clusters=8, seed=1)
    scores = LeaveOneOut(Augmented.build(x, options)).scores(np.arange(len(x)))
    for q in range(len(x)):
        reference = loo_scores_one(x, q, options)
        others = np.arange(len(x)) != q
        np.testing.assert_allclose(scores[q][others], reference[others], atol=1e-5)


def test_the_exclusion_matters_the_naive_augmented_database_differs():
    """Without the correction the query's own vector would sit inside its neighbours' augmented vectors."""
    x = clustered(80, dim=12, n_clusters=8, seed=1)
    options = RerankOptions("dba", dba_top=3, alpha=1.0)
    aug = Augmented.build(x, options)
    loo = LeaveOneOut(aug)
    touched = [q for q in range(len(x)) if len(loo.touched[q])]
    assert touched, "some painting is another's neighbour"
    q = touched[0]
    naive = aug.database @ x[q]
    honest = loo.scores(np.array([q]))[0]
    cols = loo.touched[q]
    assert np.all(naive[cols] > honest[cols] + 1e-4)  # its neighbours looked closer than they are
    others = np.setdiff1d(np.arange(len(x)), np.append(cols, q))
    np.testing.assert_allclose(naive[others], honest[others], atol=1e-6)


def test_vectorised_augmentation_equals_the_scalar_one():
    x = clustered(50, dim=10, n_clusters=5, seed=2)
    rows, sims = neighbour_table(x, 4)
    database = augment(x, rows[:, :3], sims[:, :3], 3.0)
    for j in range(len(x)):
        np.testing.assert_allclose(database[j], augment_row(x, j, rows[j], sims[j], 3.0, 3), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(database, axis=1), 1.0, atol=1e-5)


def test_ivf_neighbour_table_beyond_the_exact_limit_agrees_with_exact_search(monkeypatch):
    x = clustered(3000, dim=16, n_clusters=30, seed=3)
    exact_rows, _ = neighbour_table(x, 4)
    monkeypatch.setattr(rr, "EXACT_NEIGHBOURS_MAX", 1000)
    rows, sims = neighbour_table(x, 4)
    assert rows.shape == (3000, 4) and not np.any(rows == np.arange(3000)[:, None])
    agreement = np.mean([len(set(a) & set(b)) / 4 for a, b in zip(rows, exact_rows)])
    assert agreement >= 0.95, agreement
    np.testing.assert_allclose(sims[:, 0], np.sum(x * x[rows[:, 0]], axis=1), atol=1e-5)


def test_augmented_vectors_are_stored_with_the_index_and_checked(tmp_path):
    x, ids = clustered(300, dim=16, seed=4), objectids(300)
    bundle = augment_bundle(build_index(x, ids), x, ids, RerankOptions("dba_qe", dba_top=3))
    assert bundle.info["augmentation"]["dba_top"] == 3 and bundle.info["augmentation"]["neighbours"] == "exact"
    # rows follow the bundle's ids: row of objectid i is the augmentation of x[i]
    rows, sims = neighbour_table(x, 3)
    order = {int(o): r for r, o in enumerate(ids)}
    expected = augment(x, rows, sims, 3.0)
    for pos, oid in enumerate(bundle.ids[:20]):
        np.testing.assert_allclose(bundle.augmented[pos], expected[order[int(oid)]], atol=1e-6)
    save_index(bundle, tmp_path / "ix")
    loaded = load_index(tmp_path / "ix")
    np.testing.assert_array_equal(loaded.augmented, bundle.augmented)
    damaged = next((tmp_path / "ix").glob("augmented-*.npy"))
    blob = bytearray(damaged.read_bytes())
    blob[-3] ^= 0xFF
    damaged.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="checksum"):
        load_index(tmp_path / "ix")


@pytest.mark.parametrize("method", METHODS)
def test_served_rescoring_over_every_candidate_equals_the_whole_collection_rescored(method):
    x, ids = clustered(200, dim=16, seed=5), objectids(200)
    options = RerankOptions(method, dba_top=3, qe_top=3, alpha=3.0)
    bundle = augment_bundle(build_index(x, ids), x, ids, options)
    served = ServedDatabase(bundle)
    query = clustered(1, dim=16, seed=6)[0]
    got = served.rescore(query, ids, options)
    aug = Augmented.build(x, options)
    s = query[None] @ aug.database.T
    if options.uses_qe:
        s = expand(query[None], aug.database, s, 3, 3.0) @ aug.database.T
    np.testing.assert_allclose(got, s[0], atol=1e-5)


def test_the_query_painting_is_not_merged_into_its_own_expansion():
    x, ids = clustered(120, dim=16, seed=7), objectids(120)
    options = RerankOptions("qe", qe_top=2, alpha=1.0)
    served = ServedDatabase(build_index(x, ids))
    with_self = served.rescore(x[0], ids, options)
    without = served.rescore(x[0], ids, options, exclude_id=int(ids[0]))
    reference = loo_scores_one(x, 0, options)
    np.testing.assert_allclose(without[1:], reference[1:], atol=1e-5)
    assert not np.allclose(with_self, without)


def test_options_are_validated_with_names():
    with pytest.raises(ValueError, match="re-ranking method"):
        RerankOptions("kreciprocal")
    with pytest.raises(ValueError, match="dba_top"):
        RerankOptions("dba", dba_top=0)
    assert RerankOptions("dba_qe", 8, 3, 3.0).label == "dba_qe(m=8,n=3,a=3)"


def _labelled(n_artists=24, per=8, seed=0):
    x = clustered(n_artists * per, dim=24, n_clusters=n_artists, spread=2.5, seed=seed)
    rng = np.random.default_rng(seed)
    labels = np.argmax(x @ rng.standard_normal((24, n_artists)), axis=1)  # noisy clusters as artists
    ids = np.arange(len(x), dtype=np.int64) + 1
    meta = ItemMeta.from_records(ids, [{"artist": f"artist {a}"} for a in labels])
    return x, meta


def test_evaluation_with_none_is_the_plain_protocol():
    x, meta = _labelled()
    plain = evaluate_method(x, meta, "visual", "artist", ks=(5,))
    none = evaluate_method(x, meta, "visual", "artist", ks=(5,), rerank=RerankOptions("none"))
    for key in plain.per_query:
        np.testing.assert_array_equal(plain.per_query[key], none.per_query[key])


def test_the_study_picks_parameters_on_held_out_artists_and_states_the_rule():
    x, meta = _labelled()
    grid = {"qe": [RerankOptions("qe", qe_top=n) for n in (1, 3)],
            "dba_qe": [RerankOptions("dba_qe", dba_top=m, qe_top=2) for m in (1, 3)]}
    configured = RerankOptions("dba_qe", dba_top=3, qe_top=2)
    block = evaluate_reranking(x, meta, configured, grid=grid)
    assert block["available"]
    rows = {row["label"]: row for row in block["rows"]}
    grid_rows = {row["label"]: row for row in block["grid"]}
    for method, options in grid.items():
        best = max(options, key=lambda o: (grid_rows[o.label]["heldout_precision_at_5"], grid_rows[o.label]["heldout_map"]))
        assert rows[best.label]["chosen"]
    none = rows["none"]
    mine = rows[configured.label]
    assert mine["configured"]
    wins = all(mine[k] > none[k] for k in ("heldout_precision_at_5", "heldout_map", "precision_at_5", "map"))
    assert block["configured_wins"] == wins
    # the all-queries numbers are the protocol's
    direct = evaluate_method(x, meta, "visual", "artist", ks=(5,), rerank=configured)
    assert mine["precision_at_5"] == pytest.approx(direct.mean("precision@5"))
