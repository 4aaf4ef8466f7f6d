"""Geometric verification: is a painting's own image *in* this photo? (plain Python, no Dagster, no torch).

The fused embedding says which paintings a photo resembles; a photo of a member painting also contains that
painting's image, warped by the camera. Identification (:mod:`~artsim_pipeline.core.identify`) checks its
candidates the way instance-retrieval systems do: ORB keypoints (scikit-image's, with the peak suppression of
:mod:`~artsim_pipeline.core.orb`: FAST corners with rotated BRIEF descriptors over an image pyramid) of the photo
and of the candidate painting's cached image, matched both ways (mutual nearest neighbours, Lowe's ratio), and a
projective transform fitted to the matches with RANSAC.
The matching and RANSAC are scikit-image's, computed as batches (:func:`mutual_matches`: all Hamming distances
at once, on packed bits; :func:`ransac_inliers`: all seeded trials' fits and residuals at once): the same matches and
inlier counts as its ``match_descriptors`` and ``ransac`` loops (a test holds them equal), 5-6x less time.
The number of matches that agree with one transform (**inliers**) is the verification score: dozens to hundreds
for the painting in the photo, a handful for any other painting (random matches agree with a 4-point homography
only by chance).

Both images are compared in grey at most :data:`MAX_SIDE` pixels on the longer side (a 4000 px phone photo and
a 1200 px cached image alike); the pyramid covers the scale between them (1.2^7, about 3.6x). Everything is
deterministic: RANSAC's random draws are seeded.

:class:`Keypoints` are what one image contributes (``xy``: ``[n, 2]`` float (x, y) in the resized image;
``descriptors``: ``[n, 256]`` bool); :func:`keypoints` makes them, :func:`inliers` compares two. The same test
between two of the collection's own images tells another image of the same work (a second scan, a replica):
:func:`same_work`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

MAX_SIDE = 320
KEYPOINTS = 300
FAST_THRESHOLD = 0.05
MAX_RATIO = 0.85  # Lowe's ratio test on Hamming distances
RESIDUAL_PX = 3.0  # a match agrees with the transform when it lands within this many pixels
RANSAC_TRIALS = 300
MIN_MATCHES = 5
#: two of the collection's images show the same work (another scan, a replica, a view that contains it) when this
#: many of their keypoints agree with one transform: 1.5 x the most that two different paintings of the
#: evaluation mirror share (0-10); second scans share 43-241, a chapel wall with the fresco on it 16
SAME_WORK_INLIERS = 15
#: a candidate with this many inliers is the painting in the photo (or another image of its work): the candidates
#: after it are not matched (a photo's painting is usually the embedding's nearest, so this saves most of the work)
CERTAIN_INLIERS = 60


@dataclass(frozen=True)
class Keypoints:
    """One image's ORB keypoints: ``xy`` ``[n, 2]`` (x, y) and ``descriptors`` ``[n, 256]`` bool."""

    xy: np.ndarray
    descriptors: np.ndarray

    def __len__(self) -> int:
        return len(self.xy)


NO_KEYPOINTS = Keypoints(np.zeros((0, 2)), np.zeros((0, 256), dtype=bool))


def _grey(image: Image.Image) -> np.ndarray:
    grey = image.convert("L")
    w, h = grey.size
    side = max(w, h)
    if side > MAX_SIDE:
        grey = grey.resize((max(1, round(w * MAX_SIDE / side)), max(1, round(h * MAX_SIDE / side))),
                           Image.Resampling.BILINEAR)
    return np.asarray(grey, dtype=np.float64) / 255.0


def keypoints(image: Image.Image) -> Keypoints:
    """ORB keypoints of ``image`` (any PIL mode) at most :data:`MAX_SIDE` px; none for an image too small or
    too flat to have corners."""
    # scikit-image here: the search imports this module; an objectid query needs no keypoints
    from .orb import ORB

    grey = _grey(image)
    if min(grey.shape) < 32:
        return NO_KEYPOINTS
    orb = ORB(n_keypoints=KEYPOINTS, fast_threshold=FAST_THRESHOLD, downscale=1.2, n_scales=8)
    try:
        orb.detect_and_extract(grey)
    except (RuntimeError, ValueError, IndexError):  # no corners at all (a flat image)
        return NO_KEYPOINTS
    return Keypoints(np.asarray(orb.keypoints, dtype=np.float64)[:, ::-1].copy(),
                     np.asarray(orb.descriptors, dtype=bool))


def inliers(photo: Keypoints, painting: Keypoints, seed: int = 0) -> int:
    """How many of the mutual ORB matches between ``photo`` and ``painting`` agree with one projective transform
    (RANSAC, :data:`RESIDUAL_PX`); 0 with fewer than :data:`MIN_MATCHES` matches."""
    if len(photo) < MIN_MATCHES or len(painting) < MIN_MATCHES:
        return 0
    matches = mutual_matches(photo.descriptors, painting.descriptors)
    if len(matches) < MIN_MATCHES:
        return 0
    src, dst = photo.xy[matches[:, 0]], painting.xy[matches[:, 1]]
    try:
        return ransac_inliers(src, dst, seed)
    except (ValueError, np.linalg.LinAlgError):
        return 0


def mutual_matches(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[m, 2]`` rows of ``a`` and ``b`` (bool descriptors) that are each other's nearest by Hamming distance and
    pass Lowe's ratio (:data:`MAX_RATIO`): scikit-image's ``match_descriptors(cross_check=True, max_ratio=…)``,
    the same pairs, with the distances counted on packed bits (64 a word) instead of SciPy's pairwise loop.
    Not a float product: BLAS would start its threads, which then spin beside the next forward pass (a model
    pass right after one took 3x as long)."""
    packed_a = np.packbits(a, axis=1).view(np.uint64)
    packed_b = np.packbits(b, axis=1).view(np.uint64)
    counts = np.bitwise_count(packed_a[:, None, :] ^ packed_b[None, :, :]).sum(axis=2, dtype=np.int64)
    distances = counts / a.shape[1]  # SciPy's hamming: the share of differing bits
    rows = np.arange(len(a))
    nearest = np.argmin(distances, axis=1)
    mutual = rows == np.argmin(distances, axis=0)[nearest]
    rows, nearest = rows[mutual], nearest[mutual]
    best = distances[rows, nearest]
    distances[rows, nearest] = np.inf
    second = distances[rows, np.argmin(distances[rows], axis=1)]
    second[second == 0] = np.finfo(np.float64).eps
    keep = best / second < MAX_RATIO
    return np.column_stack((rows[keep], nearest[keep]))


def ransac_inliers(src: np.ndarray, dst: np.ndarray, seed: int = 0) -> int:
    """The inliers of scikit-image's ``ransac((src, dst), ProjectiveTransform, min_samples=4,
    residual_threshold=RESIDUAL_PX, max_trials=RANSAC_TRIALS, rng=seed)``: the same seeded samples, the same
    normalised DLT fit of each, the same early stop; the trials' fits and residuals computed as one batch
    (the count of the best trial is the answer: the final refit on its inliers does not change it). Falls back
    to scikit-image's loop if a batch of fits fails to converge."""
    n = len(src)
    if n < 4:
        raise ValueError(f"RANSAC needs at least 4 matches, got {n}")
    rng = np.random.default_rng(seed)
    draws = np.stack([rng.choice(n, 4, replace=False) for _ in range(RANSAC_TRIALS)])
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        try:
            valid, fits = _homographies(src[draws], dst[draws])
        except np.linalg.LinAlgError:
            return _skimage_ransac_inliers(src, dst, seed)
        projected = np.append(src, np.ones((n, 1)), axis=1) @ fits.transpose(0, 2, 1)
        divs = projected[..., 2]
        divs = np.where(divs == 0, np.finfo(float).eps, divs)
        residuals = np.sqrt(np.sum((projected[..., :2] / divs[..., None] - dst) ** 2, axis=2))
        counts = np.count_nonzero(residuals < RESIDUAL_PX, axis=1)
    best, trials = 0, RANSAC_TRIALS
    for trial, (ok, count) in enumerate(zip(valid, counts), start=1):
        if ok and count > best:
            best = int(count)
            trials = min(trials, _dynamic_trials(best, n))
        if trial >= trials:
            break
    return best


def _normalised(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each sample of ``points`` ``[t, k, 2]`` centred and scaled to unit RMS distance as scikit-image's
    ``_center_and_normalize_points`` does it: the ``[t, 3, 3]`` matrices, the points they give, and whether each
    matrix is finite (where not, the identity stands in: a NaN would fail the whole batch's SVD)."""
    centroid = np.mean(points, axis=1)
    divisor = np.sqrt(np.mean((points - centroid[:, None, :]) ** 2, axis=(1, 2)))
    matrix = np.tile(np.eye(3), (len(points), 1, 1))
    matrix[:, :2, 2] = -centroid
    matrix[:, :2, :] /= divisor[:, None, None]
    ok = (divisor != 0) & np.all(np.isfinite(matrix), axis=(1, 2))
    matrix[~ok] = np.eye(3)
    moved = np.append(points, np.ones(points.shape[:2] + (1,)), axis=2) @ matrix.transpose(0, 2, 1)
    return matrix, moved[..., :2] / moved[..., 2:3], ok


def _homographies(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each sample's projective transform ``[t, 3, 3]`` from its 4 point pairs ``[t, 4, 2]`` as scikit-image's
    ``ProjectiveTransform`` estimates it (normalised points, the right singular vector of the smallest singular
    value), and whether the fit succeeded (finite normalisation, a last element not close to 0)."""
    t = len(src)
    src_matrix, s, src_ok = _normalised(src)
    dst_matrix, d, dst_ok = _normalised(dst)
    ok = src_ok & dst_ok
    a = np.zeros((t, 8, 9))
    for axis in range(2):
        rows = slice(axis * 4, axis * 4 + 4)
        a[:, rows, axis * 3:axis * 3 + 2] = s
        a[:, rows, axis * 3 + 2] = 1
        a[:, rows, 6:8] = s
        a[:, rows, 8] = -1
        a[:, rows, 6:] *= -d[:, :, axis:axis + 1]
    _, _, v = np.linalg.svd(a)
    last = v[:, -1, :]
    ok &= ~np.isclose(last[:, -1], 0)
    h = np.ones((t, 9))
    h[:, :8] = -last[:, :8] / last[:, 8:9]
    fits = np.linalg.inv(dst_matrix) @ h.reshape(t, 3, 3) @ src_matrix
    return ok, fits / fits[:, 2:3, 2:3]


def _dynamic_trials(found: int, n: int) -> float:
    """scikit-image's ``_dynamic_max_trials`` at its default stop probability 1: the trials after which a
    best fit with ``found`` of ``n`` inliers ends the search."""
    eps = np.spacing(1)
    ratio = np.clip(1 - (found / n) ** 4, eps, 1 - eps)
    return float(np.ceil(np.log(eps) / np.log(ratio)))


def _skimage_ransac_inliers(src: np.ndarray, dst: np.ndarray, seed: int) -> int:
    # scikit-image here: the search imports this module; an objectid query needs no keypoints
    from skimage.measure import ransac
    from skimage.transform import ProjectiveTransform

    _, agree = ransac((src, dst), ProjectiveTransform, min_samples=4, residual_threshold=RESIDUAL_PX,
                      max_trials=RANSAC_TRIALS, rng=seed)
    return 0 if agree is None else int(np.count_nonzero(agree))


class KeypointCache:
    """The collection's images' keypoints, computed on first use (``image_of(objectid)`` opens a cached image
    or returns None) and kept for the ``size`` most recent paintings; safe to share between threads."""

    def __init__(self, image_of: Any, size: int = 512):
        self._image_of, self._size = image_of, size
        self._items: dict[int, Keypoints] = {}
        self._lock = threading.Lock()

    def __call__(self, objectid: int) -> Keypoints:
        oid = int(objectid)
        with self._lock:
            if oid in self._items:
                self._items[oid] = self._items.pop(oid)  # most recent last
                return self._items[oid]
        image = self._image_of(oid)
        found = NO_KEYPOINTS if image is None else keypoints(image)
        with self._lock:
            self._items[oid] = found
            while len(self._items) > self._size:
                self._items.pop(next(iter(self._items)))
        return found


def same_work(painting_keypoints: Any, a: int, b: int) -> bool:
    """Whether paintings ``a`` and ``b`` of the collection are images of the same work (their own images match:
    :data:`SAME_WORK_INLIERS`); a painting is its own work."""
    if int(a) == int(b):
        return True
    if int(a) < 0 or int(b) < 0:
        return False
    return inliers(painting_keypoints(int(a)), painting_keypoints(int(b))) >= SAME_WORK_INLIERS


def better_match(current: tuple[int, int], found: tuple[int, int]) -> tuple[int, int]:
    """The better of two ``(objectid, inliers)`` matches: ``found`` when it names a painting and has more inliers
    than ``current`` (or ``current`` names none); the earlier one on ties."""
    return found if found[0] >= 0 and (current[0] < 0 or found[1] > current[1]) else current


def best_match(photo: Keypoints, candidates: Any, painting_keypoints: Any) -> tuple[int, int]:
    """``(objectid, inliers)`` of the candidate (objectids, nearest first) with the most inliers in ``photo``
    (the first on ties), or of the first to reach :data:`CERTAIN_INLIERS` (the rest are not looked at);
    ``(-1, 0)`` without candidates."""
    best = (-1, 0)
    for oid in candidates:
        if int(oid) < 0:
            continue
        count = inliers(photo, painting_keypoints(int(oid)))
        if count > best[1] or best[0] < 0:
            best = (int(oid), count)
        if count >= CERTAIN_INLIERS:
            break
    return best


__all__ = [
    "KEYPOINTS",
    "MAX_SIDE",
    "NO_KEYPOINTS",
    "SAME_WORK_INLIERS",
    "KeypointCache",
    "Keypoints",
    "best_match",
    "better_match",
    "inliers",
    "keypoints",
    "mutual_matches",
    "ransac_inliers",
    "same_work",
]
