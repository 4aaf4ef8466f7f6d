"""Explanations (core/explain.py): the stored projections against a projection of the raw blocks, the
vectorised block cosines against a scalar loop, tap depths by module number (the registry's order), the words against planted
agreements, byte-stable storage, and the metadata bonuses against the metadata score."""

import numpy as np
import pytest

from artsim_pipeline.core.explain import (DEPTHS, Explainer, depth_level, fit_explainer, phrase, summary,
                                          tap_depths)
from artsim_pipeline.core.index import build_index, load_index, save_index
from artsim_pipeline.core.scoring import metadata_bonuses, metadata_score

NAMES = ("m", "m@t1.mean", "m@t2.mean", "m@t3.mean", "m@t4.mean", "n")


def _blocks(n=400, seed=0):
    """Planted structure: paintings come in pairs (2i, 2i+1) that share their early taps' pattern but
    have independent final features; the middle taps are shared within groups of 4."""
    rng = np.random.default_rng(seed)
    early = rng.standard_normal((n // 2, 24))
    middle = rng.standard_normal((n // 4, 20))
    blocks = {
        "m": rng.standard_normal((n, 30)),
        "n": rng.standard_normal((n, 16)),
        "m@t1.mean": np.repeat(early, 2, axis=0) + 0.2 * rng.standard_normal((n, 24)),
        "m@t2.mean": np.repeat(early, 2, axis=0) + 0.2 * rng.standard_normal((n, 24)),
        "m@t3.mean": np.repeat(middle, 4, axis=0) + 0.5 * rng.standard_normal((n, 20)),
        "m@t4.mean": np.repeat(middle, 4, axis=0) + 0.5 * rng.standard_normal((n, 20)),
    }
    return {k: v.astype(np.float32) for k, v in blocks.items()}


def _fused(blocks):
    x = np.concatenate([blocks[k] for k in NAMES], axis=1)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_the_registry_declares_taps_in_the_numeric_order_depths_assume():
    from artsim_pipeline.core.explain import _module_order
    from artsim_pipeline.core.models import REGISTRY

    for name, spec in REGISTRY.items():
        assert list(spec.taps) == sorted(spec.taps, key=_module_order), name


@pytest.mark.slow
def test_explanations_need_no_torch():
    """faiss_index builds them: a step that runs no model must not import torch."""
    import subprocess
    import sys

    probe = ("import sys; from artsim_pipeline.core.explain import tap_depths, fit_explainer; "
             "tap_depths(['m', 'm@blocks.3.mean']); assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_tap_depths_follow_the_numbers_in_module_names():
    depths = tap_depths(["efficientnet_lite0", "efficientnet_lite0@blocks.6.mean", "efficientnet_lite0@blocks.3.mean",
                         "efficientnet_lite0@blocks.3.std", "efficientnet_lite0@blocks.5.mean"])
    assert depths == {"efficientnet_lite0": "final", "efficientnet_lite0@blocks.6.mean": "middle",
                      "efficientnet_lite0@blocks.3.mean": "early", "efficientnet_lite0@blocks.3.std": "early",
                      "efficientnet_lite0@blocks.5.mean": "middle"}
    assert tap_depths(["vit", "vit@encoder.layers.encoder_layer_8.mean", "vit@encoder.layers.encoder_layer_5.mean",
                       "r", "r@layer3.mean"]) == {"vit": "final", "vit@encoder.layers.encoder_layer_8.mean": "middle",
                                                  "vit@encoder.layers.encoder_layer_5.mean": "early", "r": "final",
                                                  "r@layer3.mean": "middle"}
    assert tap_depths(NAMES) == {"m": "final", "n": "final", "m@t1.mean": "early", "m@t2.mean": "early",
                                 "m@t3.mean": "middle", "m@t4.mean": "middle"}
    assert tap_depths(["x", "x@only.mean"])["x@only.mean"] == "middle"


def test_stored_rows_are_the_projection_of_the_raw_blocks_and_cosines_match_a_scalar_loop():
    blocks = _blocks()
    ids = np.arange(400, dtype=np.int64)[::-1] * 3 + 5
    ex = fit_explainer(NAMES, blocks, ids, _fused(blocks))
    projected = ex.project(blocks)
    stored = ex.rows(ids)
    np.testing.assert_allclose(stored, projected, atol=2e-3)  # float16 storage
    assert np.isnan(ex.rows([999_999])).all()
    q, others = projected[7], projected[:5]
    cos = ex.block_cosines(q, others)
    start = 0
    for b, width in enumerate(ex.dims):
        for i in range(5):
            expected = float(np.dot(q[start:start + width], others[i, start:start + width]))
            assert cos[i, b] == pytest.approx(expected, abs=1e-5)
        start += width
    groups = ex.groups(cos)
    assert set(groups["depths"]) == set(DEPTHS) and set(groups["backbones"]) == {"m", "n"}
    np.testing.assert_allclose(groups["depths"]["early"], cos[:, [1, 2]].mean(axis=1))
    np.testing.assert_allclose(groups["backbones"]["m"], cos[:, :5].mean(axis=1))


def test_planted_agreement_reads_as_the_words_say():
    blocks = _blocks()
    ids = np.arange(400, dtype=np.int64) + 1
    ex = fit_explainer(NAMES, blocks, ids, _fused(blocks))
    query = ex.rows([ids[10]])[0]
    # 11 shares 10's early taps and middle group, 12 only the middle group, 300 nothing
    got = dict(zip((11, 12, 300), ex.explain(query, ids[[11, 12, 300]])))
    assert got[11]["levels"]["early"] in ("close", "very close")
    assert got[11]["depths"]["early"] > got[12]["depths"]["early"]
    assert got[12]["levels"]["middle"] in ("close", "very close") and got[12]["levels"]["early"] != "very close"
    assert got[300]["levels"]["early"] in ("different", "somewhat alike")
    assert got[11]["levels"]["final"] in ("different", "somewhat alike")  # independent final features
    cal = ex.calibration["early"]
    assert cal["random_q50"] < cal["random_q75"] < cal["random_q90"] <= cal["neighbour_q75"] + 1e-9
    assert cal["neighbour_q25"] <= cal["neighbour_q50"] <= cal["neighbour_q75"]
    self_match = ex.explain(query, ids[[10]])[0]
    assert all(level == "very close" for level in self_match["levels"].values())


def test_words_follow_the_calibration_rule():
    cal = {"random_q50": 0.0, "random_q75": 0.1, "random_q90": 0.3, "neighbour_q25": 0.4, "neighbour_q50": 0.5,
           "neighbour_q75": 0.7}
    assert [depth_level(v, cal) for v in (0.8, 0.7, 0.5, 0.4, 0.2, 0.1, 0.05)] == [
        "very close", "very close", "close", "close", "somewhat alike", "somewhat alike", "different"]
    assert phrase("different", "final") == "different subject and composition"
    assert phrase("close", "early") == "close in palette and brushwork"
    text = summary({"early": "close", "final": "different"}, {"artist": 0.3, "date": 0.1})
    assert text == "close in palette and brushwork; different subject and composition; same artist; " \
                   "painted within 50 years"


def test_storage_round_trips_with_stable_bytes_inside_the_index_bundle(tmp_path):
    blocks = _blocks(120)
    ids = np.arange(120, dtype=np.int64) + 1
    fused = _fused(blocks)
    ex = fit_explainer(NAMES, blocks, ids, fused)
    again = fit_explainer(NAMES, blocks, ids, fused)
    assert ex.to_bytes() == again.to_bytes()  # same collection, same bytes (the generation's content hash)
    back = Explainer.from_bytes(ex.to_bytes())
    np.testing.assert_array_equal(back.vectors, ex.vectors)
    assert back.calibration == ex.calibration and back.blocks == ex.blocks
    bundle = build_index(fused, ids)
    from dataclasses import replace

    save_index(replace(bundle, explain=ex), tmp_path / "ix")
    loaded = load_index(tmp_path / "ix")
    np.testing.assert_array_equal(loaded.explain.vectors, ex.vectors)
    path = next((tmp_path / "ix").glob("explain-*.npz"))
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="checksum"):
        load_index(tmp_path / "ix")


def test_a_query_missing_a_block_is_named():
    blocks = _blocks(60)
    ex = fit_explainer(NAMES, blocks, np.arange(60) + 1, _fused(blocks))
    with pytest.raises(ValueError, match="m@t3.mean"):
        ex.project({k: v for k, v in blocks.items() if k != "m@t3.mean"})


@pytest.mark.parametrize("cand,expected", [
    ({"artist": "Attributed to Claude Monet", "style": "Impressionism", "medium": "oil on canvas", "beginyear": 1880},
     {"artist": 0.3, "style": 0.4, "medium": 0.2, "date": 0.1}),
    ({"artist": "Degas", "style": "Realism", "medium": "oil on panel", "beginyear": 1700}, {"medium_partial": 0.1}),
    ({}, {}),
])
def test_metadata_bonuses_are_the_parts_of_the_metadata_score(cand, expected):
    query = {"artist": "Claude Monet", "style": "Impressionism; Plein air", "medium": "Oil on canvas",
             "beginyear": 1875}
    assert metadata_bonuses(query, cand) == expected
    assert metadata_score(query, cand) == pytest.approx(sum(expected.values()))
