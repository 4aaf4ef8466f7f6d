"""Identification's calibration (core/identify.py) and the simulated photos it is measured on (core/photo_sim.py):
planted score distributions, storage in an index generation with a verified hash, a damaged file as missing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from artsim_pipeline.core.fusion import fit_fusion, transform
from artsim_pipeline.core.generations import publish_generation, read_generation_file, verify_generation
from artsim_pipeline.core.identify import (CALIBRATION_FILE, MIN_INLIERS, NO_CALIBRATION_NOTE, Calibration,
                                           PhotoEvidence, decide_all, fit_calibration, fit_views, load_calibration)
from artsim_pipeline.core.identify_measure import best_two
from artsim_pipeline.core.index import build_index
from artsim_pipeline.core.lake import DataLake
from artsim_pipeline.core.photo_sim import DISTORTIONS, photo_plan, simulate_photo


def _planted(seed: int = 0, n: int = 400):
    """Members: top-1 ~ 0.9, a clear margin; non-members: top-1 ~ 0.6, neighbours close together."""
    rng = np.random.default_rng(seed)
    pos1 = rng.normal(0.9, 0.04, n)
    pos = np.c_[pos1, pos1 - rng.uniform(0.15, 0.3, n)]
    neg1 = rng.normal(0.6, 0.08, n)
    neg = np.c_[neg1, neg1 - rng.uniform(0.0, 0.05, n)]
    return pos, neg


def test_threshold_from_planted_distributions_holds_the_false_rate():
    pos, neg = _planted()
    calibration = fit_calibration(pos, neg)
    s_neg = np.array([calibration.score(a, b) for a, b in neg])
    s_pos = np.array([calibration.score(a, b) for a, b in pos])
    # at most half the 1 % target of the calibration's negatives pass (the safety margin), and no fewer
    # positives than with any other allowed threshold: the threshold sits just above the 2nd-highest negative
    assert (s_neg >= calibration.threshold).sum() == int(0.005 * len(neg))
    assert calibration.stats["false_rate"] <= 0.005 and calibration.stats["recall"] > 0.95
    assert calibration.margin_weight > 0  # the margin separates these sets: it is used
    # fresh draws of the same distributions: the false rate stays within the 1 % target
    fresh_pos, fresh_neg = _planted(seed=1, n=4000)
    fresh = np.array([calibration.score(a, b) for a, b in fresh_neg])
    assert (fresh >= calibration.threshold).mean() <= 0.01
    assert np.mean([calibration.score(a, b) >= calibration.threshold for a, b in fresh_pos]) > 0.95
    # the confidence is monotone, at least 50 % from the (strict) threshold on, and agrees with the verdict
    assert 0.5 <= calibration.confidence(calibration.threshold) < calibration.confidence(calibration.threshold + 0.05)
    assert calibration.confidence(s_pos.max()) > 0.95 and calibration.confidence(s_neg.min()) < 0.05
    identified = calibration.verdict(calibration.decide([0.95], [0.7], [7]))
    assert identified["verdict"] == "identified" and identified["confidence"] > 0.5
    assert identified["basis"] == "embedding" and identified["inliers"] is None
    rejected = calibration.verdict(calibration.decide([0.6], [0.59], [7]))
    assert rejected["verdict"] == "not_in_collection" and rejected["confidence"] > 0.5
    assert "top-1" in rejected["method"] and "1%" in rejected["method"] and "ORB" not in rejected["method"]


def _planted_evidence(seed: int = 0, n: int = 400):
    """Member photos in two views: half have a clear embedding margin, half (blurred, framed) a weak one but many
    inliers on their own painting; non-members: a weak margin and a handful of chance inliers."""
    rng = np.random.default_rng(seed)
    sources = np.arange(n, dtype=np.int64)
    clear = np.arange(n) % 2 == 0
    top1 = np.where(clear, rng.normal(0.9, 0.03, n), rng.normal(0.62, 0.06, n))
    top2 = top1 - np.where(clear, rng.uniform(0.15, 0.3, n), rng.uniform(0.0, 0.05, n))
    member = PhotoEvidence(np.c_[top1, top1 - 0.01], np.c_[top2, top2], np.c_[sources, sources],
                           np.c_[sources, sources], np.c_[rng.integers(20, 200, n), rng.integers(20, 200, n)])
    out1 = rng.normal(0.6, 0.08, n)
    outsider = PhotoEvidence(np.c_[out1, out1], np.c_[out1 - rng.uniform(0, 0.05, n), out1 - 0.05],
                             np.c_[sources + 1, sources + 1], np.c_[sources + 2, sources + 2],
                             np.c_[rng.integers(0, 7, n), rng.integers(0, 8, n)])
    return member, sources, outsider


def test_geometry_identifies_what_the_embedding_margin_cannot_and_keeps_the_false_rate():
    member, sources, outsider = _planted_evidence()
    with_geometry = fit_views(member, sources, outsider, views=(1.0, 0.75), candidates=5)
    without = fit_views(PhotoEvidence(member.top1, member.top2, member.best), sources,
                        PhotoEvidence(outsider.top1, outsider.top2, outsider.best), views=(1.0, 0.75))
    assert with_geometry.uses_geometry and not without.uses_geometry
    assert MIN_INLIERS <= with_geometry.geometry_threshold <= 20  # above every chance count, below the members'
    assert without.stats["identified_correct"] < 0.6 < 0.95 < with_geometry.stats["identified_correct"]
    assert with_geometry.stats["by_geometry"] > 0.4 and with_geometry.stats["false_rate"] <= 0.005
    decided = decide_all(with_geometry, member)
    weak = [d for d, clear in zip(decided, np.arange(len(sources)) % 2 == 0) if not clear]
    assert all(d.basis == "geometry" and d.inliers >= with_geometry.geometry_threshold for d in weak if d.identified)
    assert all(d.objectid == s for d, s in zip(decided, sources) if d.identified)
    # fresh non-members: geometry's chance counts never reach the threshold; the embedding's tail (set on 400
    # negatives) stays near the target
    _, _, fresh = _planted_evidence(seed=1, n=4000)
    fresh_decided = decide_all(with_geometry, fresh)
    assert not any(d.basis == "geometry" for d in fresh_decided)
    assert np.mean([d.identified for d in fresh_decided]) <= 0.02
    # the verdict of a geometric identification names its evidence, its confidence high; format round trip
    verdict = with_geometry.verdict(decided[1])
    assert verdict["basis"] == "geometry" and verdict["inliers"] >= verdict["inlier_threshold"] > 0
    assert verdict["confidence"] > 0.5 and "ORB" in verdict["method"]
    assert Calibration.from_bytes(with_geometry.to_bytes()) == with_geometry


def test_the_stages_stop_at_the_first_that_identifies():
    member, sources, outsider = _planted_evidence()
    calibration = fit_views(member, sources, outsider, views=(1.0, 0.75), candidates=5)
    t = calibration.threshold
    # the whole photo's embedding decides before geometry is looked at, even when geometry names another painting
    first = calibration.decide([t + 0.2], [t - 0.5], [11], [12], [500])
    assert (first.identified, first.objectid, first.basis) == (True, 11, "embedding")
    # geometry of the whole photo's candidates before the centre crop's embedding
    second = calibration.decide([0.3, t + 0.5], [0.29, 0.0], [11, 13], [12, 12], [100, 100])
    assert (second.objectid, second.basis) == (12, "geometry")
    # nothing passes: not identified, the closest painting and the best inliers are reported
    none = calibration.decide([0.3, 0.31], [0.29, 0.3], [11, 13], [12, 12], [3, 4])
    assert not none.identified and none.objectid == 13 and none.inliers == 4
    assert calibration.verdict(none)["confidence"] > 0.5  # confidently not in the collection


def test_a_calibration_needs_both_sides():
    pos, neg = _planted(n=10)
    with pytest.raises(ValueError, match="at least 2"):
        fit_calibration(pos[:1], neg)
    with pytest.raises(ValueError, match="at least 2"):
        fit_calibration(pos, np.zeros((0, 2)))


def test_near_duplicate_level_stays_near_one():
    pos, neg = _planted()
    assert fit_calibration(pos, neg).near_duplicate == 0.95  # non-members' best cosines are far below
    close = neg.copy()
    close[:, 0] = 0.999
    assert fit_calibration(pos, close).near_duplicate == 0.99


def _parts(n: int = 40):
    rng = np.random.default_rng(3)
    blocks = {"m": rng.standard_normal((n, 12)).astype(np.float32)}
    fusion = fit_fusion(blocks, n_components=6)
    fused = transform(fusion, blocks)
    ids = np.arange(1000, 1000 + n, dtype=np.int64)
    return {"full": (fusion, build_index(fused, ids))}, fused, ids


def test_stored_with_the_generation_and_verified(tmp_path):
    lake = DataLake(tmp_path / "lake")
    parts, fused, ids = _parts()
    calibration = fit_calibration(*_planted())
    plain = publish_generation(lake, parts)  # an older generation: no calibration
    assert load_calibration(lake, plain.generation) == (None, NO_CALIBRATION_NOTE)
    result = publish_generation(lake, parts, files={CALIBRATION_FILE: calibration.to_bytes()})
    assert result.swapped and result.content_hash != plain.content_hash  # the calibration is content
    manifest = json.loads(lake.generation_manifest_path(result.generation).read_text())
    assert set(manifest["files"]) == {CALIBRATION_FILE}
    loaded, note = load_calibration(lake, result.generation)
    assert note is None and loaded == calibration
    assert verify_generation(lake, result.generation) == []
    # the same content again: nothing is written
    assert not publish_generation(lake, parts, files={CALIBRATION_FILE: calibration.to_bytes()}).swapped

    # a damaged file counts as missing: no calibration (a note says why), and the lake check reports it
    path = lake.generation_dir(result.generation) / CALIBRATION_FILE
    path.write_bytes(path.read_bytes().replace(b"threshold", b"threshhold"))
    loaded, note = load_calibration(lake, result.generation)
    assert loaded is None and note.startswith(NO_CALIBRATION_NOTE) and "checksum" in note
    assert any("checksum" in problem for problem in verify_generation(lake, result.generation))
    with pytest.raises(ValueError, match="checksum"):
        read_generation_file(lake, result.generation, CALIBRATION_FILE)
    path.unlink()
    assert load_calibration(lake, result.generation)[0] is None


def test_best_two_leaves_the_source_out():
    parts, fused, ids = _parts()
    bundle = parts["full"][1]
    top1, top2, best = best_two(bundle, fused[:5])
    assert list(best) == list(ids[:5]) and np.allclose(top1, 1.0, atol=1e-5) and (top2 < top1).all()
    out1, _, out_best = best_two(bundle, fused[:5], exclude=list(ids[:5]))
    assert not set(out_best) & set(ids[:5]) and np.allclose(out1, top2, atol=1e-6)


def test_round_trip_and_a_foreign_format_is_refused():
    calibration = fit_calibration(*_planted())
    assert Calibration.from_bytes(calibration.to_bytes()) == calibration
    data = json.loads(calibration.to_bytes())
    data["format_version"] = 99
    with pytest.raises(ValueError, match="format"):
        Calibration.from_bytes(json.dumps(data).encode())


def test_simulated_photos_are_seeded_and_every_distortion_changes_the_image():
    rng = np.random.default_rng(0)
    painting = Image.fromarray(rng.integers(0, 255, (120, 90, 3), dtype=np.uint8)).resize((180, 240))
    for distortion in DISTORTIONS:
        photo = simulate_photo(painting, distortion, seed=5)
        again = simulate_photo(painting, distortion, seed=5)
        assert photo.mode == "RGB" and np.array_equal(np.asarray(photo), np.asarray(again)), distortion
        other = simulate_photo(painting, distortion, seed=6)
        assert not np.array_equal(np.asarray(photo), np.asarray(other)), distortion
        if photo.size == painting.size:
            assert np.abs(np.asarray(photo, np.int16) - np.asarray(painting, np.int16)).mean() > 1, distortion
    assert simulate_photo(painting, "frame", 1).size[0] > painting.size[0]  # the wall around the frame
    with pytest.raises(ValueError, match="unknown distortion"):
        simulate_photo(painting, "sepia", 1)
    plan = photo_plan(np.array([7, 8, 9]), 2, seed=1)
    assert [p[0] for p in plan] == [7, 7, 8, 8, 9, 9] and len({p[2] for p in plan}) == 6
    assert [p[1] for p in plan] == list(DISTORTIONS[:6])


def test_another_image_of_the_same_work_is_no_false_identification():
    from dataclasses import replace

    member, sources, outsider = _planted_evidence()
    inliers = outsider.geo_inliers.copy()
    inliers[:8] = 150  # 8 non-member photos whose painting has a second scan in the collection
    twins = replace(outsider, geo_inliers=inliers)
    unflagged = fit_views(member, sources, twins, views=(1.0, 0.75), candidates=5)
    assert unflagged.geometry_threshold > 150  # counted as false identifications, they make geometry useless
    flagged = fit_views(member, sources, replace(twins, same_work=np.arange(len(sources)) < 8), views=(1.0, 0.75),
                        candidates=5)
    assert flagged.geometry_threshold <= 20 and flagged.stats["non_members_same_work"] == 8
    assert flagged.stats["identified_correct"] > unflagged.stats["identified_correct"] + 0.2


def test_a_photo_with_corners_is_identified_by_geometry_only():
    member, sources, outsider = _planted_evidence()
    calibration = fit_views(member, sources, outsider, views=(1.0, 0.75), candidates=5)
    t, corners = calibration.threshold, calibration.geometry_keypoints
    assert corners > 0
    # a look-alike (a pendant panel): the embedding is sure, but none of its image is in the photo
    lookalike = calibration.decide([t + 0.3], [t - 0.5], [11], [11], [4], photo_keypoints=corners)
    assert not lookalike.identified and lookalike.objectid == 11
    # a flat or blurred photo: geometry cannot speak, the embedding decides
    flat = calibration.decide([t + 0.3], [t - 0.5], [11], [11], [0], photo_keypoints=corners - 1)
    assert (flat.identified, flat.basis) == (True, "embedding")
    assert "keypoints" in calibration.method
