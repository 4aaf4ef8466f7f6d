"""Evaluation protocol: leave-one-out metrics, relevance, hybrid without the label, the chance level."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from artsim_pipeline.core.evaluation import (
    METHODS,
    ItemMeta,
    EvaluationRequest,
    QuerySample,
    VariantInput,
    evaluate,
    evaluate_collection,
    evaluate_method,
    evaluate_methods,
    random_rows,
    ranked_rows,
    relevant_counts,
    relevant_rows,
)
from artsim_pipeline.core.metrics import evaluate_retrieval
from artsim_pipeline.core.scoring import ScoringWeights, rerank

from .support import clustered, random_records

def six_paintings() -> tuple[np.ndarray, ItemMeta]:
    """Artist A: rows 0-2, artist B: rows 3-5; unit vectors at these angles (degrees), no ties."""
    angles = np.radians([0, 12, 50, 30, 80, 95])
    vectors = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    records = [{"artist": a} for a in ["Painter A"] * 3 + ["Painter B"] * 3]
    return vectors, ItemMeta.from_records([10, 11, 12, 13, 14, 15], records)


def test_leave_one_out_on_six_paintings_matches_hand_computation():
    vectors, meta = six_paintings()
    result = evaluate_method(vectors, meta, "visual", "artist", ks=(1, 5))
    # rankings (relevant = same painter, 2 per query):
    # q0: 11 A, 13 B, 12 A, 14 B, 15 B -> P@1 1, AP (1 + 2/3)/2
    # q1: 10 A, 13 B, 12 A, 14, 15      -> P@1 1, AP (1 + 2/3)/2
    # q2: 13 B, 14 B, 11 A, 15 B, 10 A  -> P@1 0, AP (1/3 + 2/5)/2
    # q3: 11 A, 12 A, 10 A, 14 B, 15 B  -> P@1 0, AP (1/4 + 2/5)/2
    # q4: 15 B, 12 A, 13 B, 11, 10      -> P@1 1, AP (1 + 2/3)/2
    # q5: 14 B, 12 A, 13 B, 11, 10      -> P@1 1, AP (1 + 2/3)/2
    ap = [5 / 6, 5 / 6, (1 / 3 + 2 / 5) / 2, (1 / 4 + 2 / 5) / 2, 5 / 6, 5 / 6]
    assert result.n_queries == 6
    assert list(result.query_ids) == [10, 11, 12, 13, 14, 15]
    np.testing.assert_allclose(result.per_query["precision@1"], [1, 1, 0, 0, 1, 1])
    np.testing.assert_allclose(result.per_query["precision@5"], [0.4] * 6)
    np.testing.assert_allclose(result.per_query["recall@5"], [1.0] * 6)
    np.testing.assert_allclose(result.per_query["recall@1"], [0.5, 0.5, 0, 0, 0.5, 0.5])
    np.testing.assert_allclose(result.per_query["map@1"], [1, 1, 0, 0, 1, 1])
    np.testing.assert_allclose(result.per_query["map"], ap)
    assert result.mean("precision@1") == pytest.approx(4 / 6)
    assert result.mean("map") == pytest.approx(np.mean(ap))
    row = next(r for r in result.rows() if r["k"] == 5)
    assert row == {"method": "visual", "relevance": "artist", "k": 5, "precision_at_k": pytest.approx(0.4),
                   "recall_at_k": pytest.approx(1.0), "map_at_k": pytest.approx(np.mean(ap)),
                   "map": pytest.approx(np.mean(ap)), "n_queries": 6, "n_eligible_queries": 6, "leaks_label": False}


def test_queries_without_relevant_items_are_skipped_and_style_lists_count():
    vectors = np.random.default_rng(0).normal(size=(5, 4))
    records = [
        {"artist": "A", "style": "Baroque; Rococo"}, {"artist": "A", "style": "Rococo"}, {"artist": "B", "style": None},
        {"artist": "Attributed to A", "style": "Cubism"}, {"artist": None, "style": "Baroque"},
    ]
    meta = ItemMeta.from_records([1, 2, 3, 4, 5], records)
    assert list(relevant_counts(meta, "artist")) == [2, 2, 0, 2, 0]  # "Attributed to A" is A; no artist: no query
    assert list(relevant_counts(meta, "style")) == [2, 1, 0, 0, 1]
    assert list(evaluate_method(vectors, meta, "visual", "artist").query_ids) == [1, 2, 4]
    assert list(evaluate_method(vectors, meta, "visual", "style").query_ids) == [1, 2, 5]


def test_visual_protocol_agrees_with_evaluate_retrieval_including_ties():
    rng = np.random.default_rng(3)
    vectors = rng.integers(-2, 3, size=(80, 3)).astype(float)  # many exactly tied scores
    vectors[vectors.sum(axis=1) == 0] += 1.0
    labels = [f"artist {i}" for i in rng.integers(0, 6, size=80)]
    ids = rng.permutation(1000)[:80]
    order = np.argsort(ids)
    meta = ItemMeta.from_records(ids[order], [{"artist": labels[i]} for i in order])
    mine = evaluate_method(vectors[order], meta, "visual", "artist", ks=(1, 5, 10))
    reference = evaluate_retrieval(vectors[order], [labels[i] for i in order], ks=(1, 5, 10), ids=ids[order])
    for key in ("precision@1", "precision@5", "recall@10", "map@5", "map@10", "map"):
        assert mine.mean(key) == pytest.approx(reference[key], abs=1e-12), key
    assert mine.n_queries == reference["n_queries"]


def _bonus_case(records):
    """Query row 0; row 1 is visually closest (cosine 0.9), row 2 a bit further (0.85), row 3 far away.

    A bonus of the label (artist: 0.3 * 0.3 = 0.09, style: 0.3 * 0.4 = 0.12 on the final score)
    lifts row 2 over row 1 (0.7 * 0.05 = 0.035 visual gap).
    """
    vectors = np.array([[1.0, 0.0], [0.9, np.sqrt(1 - 0.81)], [0.85, np.sqrt(1 - 0.85**2)], [-1.0, 0.1]])
    return vectors, ItemMeta.from_records([1, 2, 3, 4], records)


LABEL_ONLY = {
    "artist": [{"artist": "Painter A"}, {"artist": "Painter B"}, {"artist": "Painter A"}, {"artist": "Painter B"}],
    "style": [{"style": "Baroque"}, {"style": "Rococo"}, {"style": "Baroque; Rococo"}, {"style": "Cubism"}],
}


@pytest.mark.parametrize("relevance", ["artist", "style"])
def test_hybrid_no_label_does_not_use_the_bonus_of_the_label(relevance):
    vectors, meta = _bonus_case(LABEL_ONLY[relevance])
    no_label = evaluate_method(vectors, meta, "hybrid_no_label", relevance, ks=(1,))
    leaky = evaluate_method(vectors, meta, "hybrid_all_leaky", relevance, ks=(1,))
    visual = evaluate_method(vectors, meta, "visual", relevance, ks=(1,))
    assert list(no_label.query_ids)[0] == 1
    assert no_label.per_query["precision@1"][0] == 0.0  # row 1 (other painter/style) stays first
    assert visual.per_query["precision@1"][0] == 0.0
    assert leaky.per_query["precision@1"][0] == 1.0  # the bonus of the label lifts row 2
    assert leaky.leaks_label and not no_label.leaks_label
    # full-ranking AP re-ranks the whole collection: only the leaky bonus moves the relevant row up
    assert no_label.per_query["map"][0] == 0.5 and leaky.per_query["map"][0] == 1.0
    top, _ = ranked_rows(vectors, meta, [0], "hybrid_no_label", relevance, k=1)
    assert top.tolist() == [[1]]


def test_hybrid_no_label_keeps_the_bonuses_that_are_not_the_label():
    records = [{"artist": "Painter A", "style": "Baroque"}, {"artist": "Painter B", "style": "Rococo"},
               {"artist": "Painter A", "style": "Baroque"}, {"artist": "Painter B", "style": "Rococo"}]
    vectors, meta = _bonus_case(records)
    # artist relevance: the shared style (+0.12) still lifts row 2, the artist bonus is not needed
    assert evaluate_method(vectors, meta, "hybrid_no_label", "artist", ks=(1,)).per_query["precision@1"][0] == 1.0
    assert evaluate_method(vectors, meta, "visual", "artist", ks=(1,)).per_query["precision@1"][0] == 0.0


def test_hybrid_top_k_equals_scoring_rerank_of_the_visual_candidates():
    rng = np.random.default_rng(5)
    n = 40
    records = random_records(n, seed=9)
    vectors = rng.normal(size=(n, 6))
    meta = ItemMeta.from_records(list(range(100, 100 + n)), records)
    frame = pd.DataFrame(records)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cases = [("artist", "hybrid_no_label"), ("style", "hybrid_no_label"), ("artist", "hybrid_all_leaky")]
    for relevance, method in cases:
        weights = ScoringWeights()
        if method == "hybrid_no_label":
            weights = replace(weights, use_artist=relevance != "artist", use_style=relevance != "style")
        for k in (1, 5):
            top, _ = ranked_rows(vectors, meta, np.arange(n), method, relevance, k)
            for q in range(n):
                sims = unit @ unit[q]
                sims[q] = -np.inf
                visual_order = np.lexsort((meta.objectids, -sims))[: weights.n_candidates(k)]
                cands = frame.iloc[visual_order].assign(
                    objectid=meta.objectids[visual_order], visual=sims[visual_order])
                expected = rerank(records[q], cands, weights, k)["objectid"].tolist()
                assert meta.objectids[top[q]].tolist() == expected, (method, relevance, k, q)


@pytest.mark.parametrize("relevance", ["artist", "style"])
def test_protocol_random_ranking_averages_to_the_analytic_chance_level(relevance):
    labels = ["a"] * 3 + ["b"] * 6 + ["c"] * 1 + [None] * 2 + ["d"] * 8
    styles = ["Baroque"] * 4 + ["Baroque; Rococo"] * 3 + ["Rococo"] * 2 + [None] * 3 + ["Impressionism"] * 7 + ["Cubism"]
    records = [{"artist": a, "style": s} for a, s in zip(labels, styles)]
    meta = ItemMeta.from_records(list(range(len(labels))), records)
    ks = (1, 3, 5, 30)
    analytic = {row["k"]: row for row in random_rows(meta, relevance, ks)}
    trials = [evaluate_method(np.ones((len(labels), 1)), meta, "random", relevance, ks, seed=s) for s in range(600)]
    assert analytic[1]["n_queries"] == trials[0].n_queries == {"artist": 17, "style": 16}[relevance]
    assert analytic[1]["estimate"] == "analytic"
    for k in ks:
        for key, name in (("precision_at_k", f"precision@{k}"), ("recall_at_k", f"recall@{k}"),
                          ("map_at_k", f"map@{k}"), ("map", "map")):
            simulated = np.mean([t.mean(name) for t in trials])
            assert simulated == pytest.approx(analytic[k][key], abs=0.01), (k, key)


# ---------------------------------------------------------------- linear relevant counts, sampled queries

def _collection(n: int, seed: int = 0) -> tuple[np.ndarray, ItemMeta, list[dict]]:
    """``n`` clustered vectors with random metadata (style lists, missing artists and styles)."""
    records = random_records(n, seed=seed)
    rng = np.random.default_rng(seed)
    for i in rng.choice(n, size=n // 10, replace=False):
        records[i] = {**records[i], "artist": None}
    for i in rng.choice(n, size=n // 8, replace=False):
        records[i] = {**records[i], "style": "Baroque; Rococo" if i % 2 else None}
    ids = rng.permutation(10 * n)[:n] + 1
    return clustered(n, dim=12, n_clusters=9, seed=seed), ItemMeta.from_records(ids, records), records


@pytest.mark.parametrize("relevance", ["artist", "style"])
def test_relevant_counts_equal_the_relevance_matrix_row_sums(relevance):
    _, meta, _ = _collection(300, seed=4)
    rel = relevant_rows(meta, relevance, np.arange(len(meta)))
    np.fill_diagonal(rel, False)
    counts = relevant_counts(meta, relevance)
    assert counts.dtype == np.int64 and counts.tolist() == rel.sum(axis=1).tolist()
    assert 0 < (counts > 0).sum() < len(meta)  # some paintings are no query


def test_query_sample_is_seeded_keyed_on_objectids_and_stable_as_the_collection_grows():
    sample = QuerySample(full_up_to=100, size=40, seed=3)
    ids = np.random.default_rng(0).permutation(5000)[:600] + 1
    eligible = np.arange(0, 600, 2)
    assert sample.rows(eligible[:100], ids).tolist() == eligible[:100].tolist()  # up to full_up_to: all
    rows = sample.rows(eligible, ids)
    assert len(rows) == 40 and rows.tolist() == sorted(rows.tolist()) and set(rows) <= set(eligible)
    assert rows.tolist() == sample.rows(eligible, ids).tolist()  # deterministic
    order = np.random.default_rng(1).permutation(600)  # the same paintings in another row order
    back = np.argsort(order)
    assert sorted(ids[order][sample.rows(back[eligible], ids[order])]) == sorted(ids[rows])
    assert set(ids[QuerySample(100, 40, seed=4).rows(eligible, ids)]) != set(ids[rows])  # the seed matters
    grown = np.concatenate([ids, np.arange(6000, 6010)])  # ten new eligible paintings
    kept = set(grown[sample.rows(np.concatenate([eligible, np.arange(600, 610)]), grown)]) & set(ids[rows])
    assert len(kept) >= 30
    with pytest.raises(ValueError, match="size <= full_up_to"):
        QuerySample(full_up_to=10, size=20)


@pytest.mark.parametrize("relevance", ["artist", "style"])
def test_sampled_queries_get_exactly_the_full_protocol_numbers(relevance):
    vectors, meta, _ = _collection(260, seed=2)
    sample = QuerySample(full_up_to=50, size=25, seed=0)
    for method in METHODS:
        sampled = evaluate_method(vectors, meta, method, relevance, (1, 5, 10), sample=sample)
        full = evaluate_method(vectors, meta, method, relevance, (1, 5, 10), sample=None)
        assert sampled.n_queries == 25 and sampled.n_eligible_queries == full.n_queries > 50
        rows = np.flatnonzero(np.isin(meta.objectids, sampled.query_ids))
        at = np.flatnonzero(np.isin(full.query_ids, sampled.query_ids))
        same_rows = evaluate_method(vectors, meta, method, relevance, (1, 5, 10), query_rows=rows, sample=None)
        assert same_rows.query_ids.tolist() == sampled.query_ids.tolist()
        for key, values in sampled.per_query.items():
            assert np.array_equal(values, same_rows.per_query[key]), (method, key)  # bit for bit
            assert np.array_equal(values, full.per_query[key][at]), (method, key)
        row = sampled.rows()[1]
        assert (row["n_queries"], row["n_eligible_queries"]) == (25, full.n_queries)
    again = evaluate_method(vectors, meta, "visual", relevance, sample=sample)
    assert again.query_ids.tolist() == sampled.query_ids.tolist()


def test_chunking_does_not_change_any_number():
    vectors, meta, _ = _collection(120, seed=5)
    for method in ("visual", "hybrid_no_label", "random"):
        one = evaluate_method(vectors, meta, method, "style", seed=7)
        small = evaluate_method(vectors, meta, method, "style", seed=7, chunk=7)
        for key, values in one.per_query.items():
            assert np.array_equal(values, small.per_query[key]), (method, key)


def test_evaluate_collection_reports_how_many_queries_were_sampled_of_how_many():
    vectors, meta, records = _collection(240, seed=6)
    order = np.argsort(meta.objectids)
    ids = meta.objectids[order]
    catalog = pd.DataFrame([records[i] for i in order]).assign(objectid=ids, uuid=[f"u{i}" for i in ids])
    full = VariantInput(ids, catalog["uuid"].to_numpy(), {"model_a": vectors[order]})
    asked: list[int] = []

    def index_check(_vectors, query_ids, k):
        asked.append(len(query_ids))
        return np.tile(ids[:k], (len(query_ids), 1))

    sample = QuerySample(full_up_to=60, size=30, seed=1)
    report = evaluate(EvaluationRequest(full, catalog, lambda _u: None, pca_dim=6, study=False,
                                        index_check=index_check, query_sample=sample)).report
    head = report["headline"]
    eligible = int((relevant_counts(meta, "artist") > 0).sum())
    assert (head["n_queries"], head["n_eligible_queries"], head["n_paintings"]) == (30, eligible, 240)
    assert report["settings"]["query_sample"] == sample.describe()
    assert all(r["n_queries"] == 30 for r in report["methods"])
    assert asked == [30] and report["index_check"]["n_checked"] == 30
    every = evaluate_collection(full, catalog, lambda _u: None, pca_dim=6, study=False,
                                query_sample=QuerySample(full_up_to=240, size=30)).report["headline"]
    assert every["n_queries"] == every["n_eligible_queries"] == eligible


def test_the_keyword_form_runs_the_same_request():
    vectors, meta, records = _collection(80, seed=4)
    catalog = pd.DataFrame(records).assign(objectid=meta.objectids, uuid=[f"u{i}" for i in meta.objectids])
    full = VariantInput(meta.objectids, catalog["uuid"].to_numpy(), {"model_a": vectors})
    lines: list[str] = []
    request = EvaluationRequest(full, catalog, lambda _u: None, pca_dim=6, study=False, seed=5, ks=(1, 5),
                                settings={"limit": 80}, log=lines.append)
    by_request = evaluate(request).report
    by_keywords = evaluate_collection(full, catalog, lambda _u: None, pca_dim=6, study=False, seed=5, ks=(1, 5),
                                      settings={"limit": 80}).report
    for report in (by_request, by_keywords):
        report.pop("timings_s")
    assert json.dumps(by_request, sort_keys=True, default=str) == json.dumps(by_keywords, sort_keys=True, default=str)
    assert by_request["settings"]["limit"] == 80 and by_request["settings"]["seed"] == 5
    assert lines[0].startswith("eval: 80 paintings") and lines[-1].startswith("eval: done in")
    with pytest.raises(TypeError, match="pca_dims"):
        evaluate_collection(full, catalog, lambda _u: None, pca_dims=6)  # a misspelt option is refused
    with pytest.raises(ValueError, match="must include 5"):
        evaluate(EvaluationRequest(full, catalog, lambda _u: None, ks=(1, 10)))


@pytest.mark.parametrize("relevance", ["artist", "style"])
def test_methods_in_one_pass_equal_separate_calls_bit_for_bit(relevance):
    vectors, meta, _ = _collection(150, seed=8)
    sample = QuerySample(full_up_to=60, size=40)
    methods = ("visual", "random", "hybrid_no_label", "hybrid_all_leaky")
    together = evaluate_methods(vectors, meta, methods, relevance, (1, 5), seed=3, sample=sample, chunk=16)
    assert [r.method for r in together] == list(methods) and all(r.seconds > 0 for r in together)
    for res in together:
        alone = evaluate_method(vectors, meta, res.method, relevance, (1, 5), seed=3, sample=sample)
        assert res.query_ids.tolist() == alone.query_ids.tolist() and res.leaks_label == alone.leaks_label
        for key, values in alone.per_query.items():
            assert np.array_equal(values, res.per_query[key]), (res.method, key)
    with pytest.raises(ValueError, match="each method once"):
        evaluate_methods(vectors, meta, ("visual", "visual"), relevance)
