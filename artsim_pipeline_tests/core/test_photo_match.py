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


def _skimage_inliers(photo, painting) -> int:
    """The reference: scikit-image's matcher and RANSAC loop with the module's settings."""
    import numpy as np
    from skimage.feature import match_descriptors
    from skimage.measure import ransac
    from skimage.transform import ProjectiveTransform

    from artsim_pipeline.core import photo_match as pm

    if len(photo) < pm.MIN_MATCHES or len(painting) < pm.MIN_MATCHES:
        return 0
    matches = match_descriptors(photo.descriptors, painting.descriptors, cross_check=True, max_ratio=pm.MAX_RATIO)
    if len(matches) < pm.MIN_MATCHES:
        return 0
    _, agree = ransac((photo.xy[matches[:, 0]], painting.xy[matches[:, 1]]), ProjectiveTransform, min_samples=4,
                      residual_threshold=pm.RESIDUAL_PX, max_trials=pm.RANSAC_TRIALS, rng=0)
    return 0 if agree is None else int(np.count_nonzero(agree))


def test_batched_matching_and_ransac_equal_scikit_images_loop():
    """mutual_matches and ransac_inliers compute as one batch what scikit-image computes pair by pair and trial
    by trial: the same matches and the same inlier counts, own paintings (early stop) and others (all trials)."""
    import numpy as np
    from skimage.feature import match_descriptors

    from artsim_pipeline.core.photo_match import MAX_RATIO, mutual_matches

    references = {oid: keypoints(_image(oid)) for oid in PAINTINGS}
    compared, own_counts = 0, []
    for oid in PAINTINGS:
        for seed, distortion in enumerate(DISTORTIONS):
            photo = keypoints(simulate_photo(_image(oid, 400), distortion, seed=seed))
            for other, reference in references.items():
                expected = match_descriptors(photo.descriptors, reference.descriptors, cross_check=True,
                                             max_ratio=MAX_RATIO)
                assert np.array_equal(mutual_matches(photo.descriptors, reference.descriptors), expected)
                count = inliers(photo, reference)
                assert count == _skimage_inliers(photo, reference), (oid, distortion, other)
                compared += 1
                if other == oid:
                    own_counts.append(count)
    assert compared == len(PAINTINGS) ** 2 * len(DISTORTIONS)
    assert max(own_counts) >= 60  # RANSAC's early stop was reached, not only runs of all trials


def test_orb_keypoints_equal_scikit_images_orb():
    """core/orb's ORB (peak suppression in bulk) finds scikit-image's keypoints, in its order, with its
    descriptors: photos of every distortion and the paintings at two sizes."""
    import numpy as np
    from skimage.feature import ORB as SkimageORB

    from artsim_pipeline.core import photo_match as pm
    from artsim_pipeline.core.orb import ORB

    images = [_image(oid, side) for oid in PAINTINGS for side in (160, 1200)]
    images += [simulate_photo(_image(oid, 400), d, seed=s) for oid in PAINTINGS for s, d in enumerate(DISTORTIONS)]
    compared = 0
    for image in images:
        grey = pm._grey(image)
        found = []
        for detector in (ORB, SkimageORB):
            orb = detector(n_keypoints=pm.KEYPOINTS, fast_threshold=pm.FAST_THRESHOLD, downscale=1.2, n_scales=8)
            orb.detect_and_extract(grey)
            found.append((orb.keypoints, orb.descriptors, orb.scales, orb.orientations))
        for ours, theirs in zip(*found):
            assert np.array_equal(ours, theirs)
        compared += len(found[0][0])
    assert compared > 100 * len(images) // 2  # real keypoints were compared, not empty sets
