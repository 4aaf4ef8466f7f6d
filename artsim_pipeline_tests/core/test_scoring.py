"""Hybrid score: metadata arithmetic, name/medium/date normalisation, re-ranking order."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from artsim_pipeline.core.scoring import (
    MetadataTable,
    ScoringWeights,
    final_score,
    medium_words,
    metadata_score,
    metadata_scores,
    normalize_artist,
    representative_year,
    rerank,
    rerank_order,
    styles_of,
)
from artsim_pipeline_tests.core.support import random_records

W = ScoringWeights()

def _meta(**kw):
    base = {"artist": None, "style": None, "medium": None, "beginyear": None, "endyear": None, "displaydate": None}
    base.update(kw)
    return base


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Attributed to Jean-Honoré Fragonard", "jean-honore fragonard"),
        ("Workshop of  Rembrandt van Rijn", "rembrandt van rijn"),
        ("Circle of Peter Paul Rubens", "peter paul rubens"),
        ("Follower of Titian", "titian"),
        ("Style of Claude Monet", "claude monet"),
        ("After Raphael", "raphael"),
        ("Rembrandt van Rijn and Workshop", "rembrandt van rijn"),
        ("Anonymous", "anonymous"),
        ("American 19th Century", "american 19th century"),
        ("  Édouard   MANET ", "edouard manet"),
        (None, ""),
        (float("nan"), ""),
    ],
)
def test_normalize_artist(raw, expected) -> None:
    assert normalize_artist(raw) == expected


def test_styles_and_medium_words() -> None:
    assert styles_of("Impressionism; Landscape") == {"impressionism", "landscape"}
    assert styles_of(["Baroque", ""]) == {"baroque"}
    assert styles_of(None) == frozenset() and styles_of("") == frozenset()
    assert medium_words("Oil on canvas") == {"oil", "canvas"}
    assert medium_words("tempera and gold on panel") == {"tempera", "gold", "panel"}


def test_representative_year() -> None:
    assert representative_year(_meta(beginyear=1650, endyear=1660, displaydate="1655")) == 1650
    assert representative_year(_meta(beginyear=float("nan"), endyear=1660.0)) == 1660
    assert representative_year(_meta(displaydate="c. 1505/1510")) == 1505
    assert representative_year(_meta(displaydate="1870s")) == 1870
    assert representative_year(_meta(displaydate="undated")) is None
    assert representative_year(_meta()) is None


def test_same_artist_partial_medium_close_date() -> None:
    q = _meta(artist="Claude Monet", medium="oil on canvas", beginyear=1870)
    c = _meta(artist="Attributed to Claude Monet", medium="oil on panel", beginyear=1915)
    assert metadata_score(q, c, W) == pytest.approx(0.3 + 0.1 + 0.1)


def test_all_bonuses_and_none() -> None:
    q = _meta(artist="A", style="Baroque; Portrait", medium="Oil on canvas", beginyear=1600)
    c = _meta(artist="a", style="Portrait", medium="oil on  canvas", displaydate="c. 1650")
    assert metadata_score(q, c, W) == pytest.approx(0.4 + 0.3 + 0.2 + 0.1)
    far = _meta(artist="B", style="Rococo", medium="tempera on panel", beginyear=1651)
    assert metadata_score(q, far, W) == 0.0  # "on" is a stop word; 51 years apart
    assert metadata_score(_meta(), _meta(), W) == 0.0  # missing everything: no bonus
    substring = _meta(medium="oil-based canvasboard")
    assert metadata_score(_meta(medium="canvas"), substring, W) == 0.0  # words, not substrings


def test_date_window_is_inclusive_and_configurable() -> None:
    q = _meta(beginyear=1800)
    assert metadata_score(q, _meta(beginyear=1850), W) == pytest.approx(0.1)
    assert metadata_score(q, _meta(beginyear=1851), W) == 0.0
    assert metadata_score(q, _meta(beginyear=1851), ScoringWeights(date_window_years=60)) == pytest.approx(0.1)


def test_flags_drop_labels_under_evaluation() -> None:
    q = _meta(artist="X", style="Cubism")
    c = _meta(artist="X", style="Cubism")
    assert metadata_score(q, c, W) == pytest.approx(0.7)
    assert metadata_score(q, c, ScoringWeights(use_artist=False)) == pytest.approx(0.4)
    assert metadata_score(q, c, ScoringWeights(use_style=False)) == pytest.approx(0.3)


def test_final_score_and_candidates() -> None:
    assert final_score(0.8, 0.5, W) == pytest.approx(0.7 * 0.8 + 0.3 * 0.5)
    assert W.n_candidates(10) == 30


def test_rerank_orders_by_final_then_visual_then_objectid() -> None:
    q = _meta(artist="Monet", medium="oil on canvas", beginyear=1870)
    cands = pd.DataFrame(
        {
            "objectid": [10, 11, 12, 13, 14],
            "visual": [0.90, 0.60, 0.60, 0.80, 0.50],
            "artist": ["Other", "Monet", "Monet", None, "Other"],
            "medium": ["watercolor", "oil on canvas", "oil on canvas", "oil on panel", None],
            "beginyear": [1700, 1880, 1880, None, 1870],
        }
    )
    out = rerank(q, cands, W, k=4)
    assert list(out.columns) == ["objectid", "visual", "metadata", "final"]
    # metadata: 10 -> 0; 11,12 -> 0.3+0.2+0.1=0.6; 13 -> 0.1; 14 -> 0.1
    expected = {10: 0.7 * 0.9, 11: 0.7 * 0.6 + 0.3 * 0.6, 12: 0.7 * 0.6 + 0.3 * 0.6, 13: 0.7 * 0.8 + 0.03}
    assert out["objectid"].tolist() == [10, 11, 12, 13]  # finals 0.63, 0.60, 0.60, 0.59 (14: 0.38)
    for _, row in out.iterrows():
        assert row["final"] == pytest.approx(expected[row["objectid"]])
    assert math.isclose(out.loc[1, "metadata"], 0.6)


def test_rerank_tie_breaks() -> None:
    cands = pd.DataFrame({"objectid": [5, 3, 4, 2], "visual": [0.5, 0.5, 0.6, 0.6], "medium": ["x", "x", None, None]})
    q = _meta(medium="x")
    # finals: 5,3 -> 0.35+0.06=0.41; 4,2 -> 0.42
    out = rerank(q, cands, W, k=10)
    assert out["objectid"].tolist() == [2, 4, 3, 5]
    same_final = pd.DataFrame({"objectid": [1, 2], "visual": [0.5, 0.7], "medium": ["x", None]})
    # 1: 0.35 + 0.3*0.2 = 0.41; 2: 0.49 -> ordered by final
    assert rerank(q, same_final, W, k=2)["objectid"].tolist() == [2, 1]
    w = ScoringWeights(visual=0.5, metadata=0.5, medium_exact=0.2)
    tied = pd.DataFrame({"objectid": [7, 6], "visual": [0.3, 0.5], "medium": ["x", None]})
    # 7: 0.15 + 0.1 = 0.25 ; 6: 0.25 -> equal final, higher visual first
    assert rerank(q, tied, w, k=2)["objectid"].tolist() == [6, 7]
    # A float-rounding tie: 0.5*0.3 = 0.15 vs 0.5*0.1 + 0.5*0.2 = 0.15000000000000002.
    w = ScoringWeights(visual=0.5, metadata=0.5, medium_exact=0.2)
    rounding = pd.DataFrame({"objectid": [1, 2], "visual": [0.1, 0.3], "medium": ["x", None]})
    assert rerank(q, rounding, w, k=2)["objectid"].tolist() == [2, 1]


def test_rerank_requires_columns() -> None:
    with pytest.raises(ValueError, match="visual"):
        rerank(_meta(), pd.DataFrame({"objectid": [1]}), W, k=1)


@pytest.mark.parametrize("use_artist,use_style", list(itertools.product([True, False], repeat=2)))
def test_metadata_scores_equal_metadata_score_on_every_pair(use_artist, use_style) -> None:
    records = random_records(60, seed=int(use_artist) * 2 + int(use_style))
    table = MetadataTable.from_records(records)
    weights = ScoringWeights(use_artist=use_artist, use_style=use_style)
    fast = metadata_scores(table, np.arange(60), weights)
    slow = np.array([[metadata_score(q, c, weights) for c in records] for q in records])
    assert np.array_equal(fast, slow)  # exactly: same bonuses added in the same order
    assert len(np.unique(slow)) >= 4  # the random records exercise the bonus combinations


def test_metadata_scores_keep_the_scalar_order_of_additions_with_rounding_weights() -> None:
    records = random_records(80, seed=9)
    table = MetadataTable.from_records(records)
    weights = ScoringWeights(style=0.1, artist=0.2, medium_exact=0.7, medium_partial=0.3, date=0.6)  # 0.1 + 0.2 != 0.3
    fast = metadata_scores(table, np.arange(0, 80, 3), weights)
    slow = np.array([[metadata_score(records[q], c, weights) for c in records] for q in range(0, 80, 3)])
    assert np.array_equal(fast, slow)
    assert fast.dtype == np.float64 and len(np.unique(slow)) >= 6


def test_rerank_order_equals_rerank_on_random_candidates() -> None:
    rng = np.random.default_rng(4)
    records = random_records(30, seed=7)
    table = MetadataTable.from_records(records)
    frame = pd.DataFrame(records)
    w = ScoringWeights(visual=0.5, metadata=0.5)  # float-rounding ties between finals happen
    visual = rng.integers(0, 5, size=(30, 30)) / 10  # and exact visual ties
    ids = rng.permutation(500)[:30]
    final = final_score(visual, metadata_scores(table, np.arange(30), w), w)
    order = rerank_order(final, visual, ids)
    for q in range(30):
        cands = frame.assign(objectid=ids, visual=visual[q])
        assert ids[order[q]].tolist() == rerank(records[q], cands, w, k=30)["objectid"].tolist(), q
    assert len(np.unique(np.round(final, 12))) < final.size // 4  # the case is full of ties
