"""Geometric verification (core/photo_match.py): a photo of a painting holds many ORB matches that agree with one
perspective transform onto that painting's image, and only chance ones onto another painting's."""

from __future__ import annotations

from PIL import Image
from skimage import data

from artsim_pipeline.core.photo_match import MAX_SIDE, NO_KEYPOINTS, KeypointCache, best_match, inliers, keypoints
from artsim_pipeline.core.photo_sim import DISTORTIONS, simulate_photo

PAINTINGS = {1: data.astronaut(), 2: data.coffee(), 3: data.chelsea(), 4: data.rocket()}


def _image(oid: int, side: int = 160) -> Image.Image:
    image = Image.fromarray(PAINTINGS[oid])
    return image.resize((side, round(side * image.height / image.width)))


def test_a_photo_matches_its_own_painting_and_not_the_others():
    references = {oid: keypoints(_image(oid)) for oid in PAINTINGS}
    for distortion in DISTORTIONS:
        photo = keypoints(simulate_photo(_image(2), distortion, seed=3))
        own = inliers(photo, references[2])
        others = [inliers(photo, references[oid]) for oid in (1, 3, 4)]
        assert own >= 15 and max(others) < 10 and own > 3 * max(others), (distortion, own, others)


def test_best_match_names_the_painting_in_the_photo_and_sizes_are_bounded():
    cache = KeypointCache(lambda oid: _image(oid, 1200) if oid in PAINTINGS else None, size=2)
    photo = keypoints(simulate_photo(_image(3, 1200), "frame", seed=1))
    assert best_match(photo, [1, 4, 3, 99], cache) == (3, inliers(photo, cache(3)))
    assert best_match(photo, [], cache) == (-1, 0)
    assert len(cache._items) <= 2 and cache(99) is NO_KEYPOINTS  # bounded; a missing image has no keypoints
    assert photo.xy.max() <= MAX_SIDE  # a large photo is compared at MAX_SIDE
    # flat or tiny images have no keypoints and match nothing
    flat = keypoints(Image.new("RGB", (200, 200), (120, 90, 60)))
    assert len(flat) == 0 and inliers(flat, cache(1)) == 0
    assert len(keypoints(Image.new("RGB", (20, 20)))) == 0
    # deterministic: the same images give the same count
    assert inliers(photo, cache(3)) == inliers(photo, cache(3))


def test_same_work_tells_another_image_of_a_work_from_another_painting():
    from artsim_pipeline.core.photo_match import same_work

    rescan = {1: _image(1, 300), 2: _image(1, 180).rotate(2, expand=True), 3: _image(3, 300)}
    cache = KeypointCache(lambda oid: rescan.get(oid))
    assert same_work(cache, 1, 2) and same_work(cache, 2, 1)  # another, smaller, slightly turned scan
    assert not same_work(cache, 1, 3) and not same_work(cache, 1, -1)
    assert same_work(cache, 3, 3)


def test_best_match_stops_at_a_certain_match():
    from artsim_pipeline.core.photo_match import CERTAIN_INLIERS

    opened: list[int] = []
    cache = KeypointCache(lambda oid: opened.append(oid) or _image(oid, 300))
    photo = keypoints(simulate_photo(_image(2, 300), "rotation", seed=2))
    oid, count = best_match(photo, [2, 1, 3], cache)
    assert (oid, opened) == (2, [2]) and count >= CERTAIN_INLIERS  # the nearest is the painting: nothing else opened
    assert best_match(photo, [1, 3, 2], cache)[0] == 2 and opened == [2, 1, 3]
