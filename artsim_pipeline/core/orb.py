"""scikit-image's ORB with its peak suppression done in bulk (plain Python, no Dagster, no torch).

Profiled on a 320 px photo, a third of ``skimage.feature.ORB.detect_and_extract`` (~50 of ~150 ms) is
``corner_peaks``' Python loop, which asks a KD-tree, peak by peak, for the neighbours each kept peak suppresses.
With ``min_distance=1`` (what ORB asks for) a peak's neighbours are the 8 pixels around it, and most FAST peaks
have none: :func:`corner_peaks` finds them with one lookup in a grid of peak numbers and runs the same greedy
loop over the crowded peaks only, so the peaks, their order and every keypoint and descriptor after them are
the same (``test_photo_match`` holds them equal to scikit-image's own ORB). :class:`ORB` is scikit-image's
class with that one step replaced; the rest (pyramid, FAST, Harris, orientations, rBRIEF) is scikit-image's.
"""

from __future__ import annotations

import numpy as np
from skimage.feature import ORB as _SkimageORB
from skimage.feature import (
    corner_fast,
    corner_harris,
    corner_orientations,
    peak_local_max,
)
from skimage.feature.orb import OFAST_MASK
from skimage.feature.util import _mask_border_keypoints

_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def corner_peaks(response: np.ndarray) -> np.ndarray:
    """``skimage.feature.corner_peaks(response, min_distance=1)``: the same ``[n, 2]`` (row, col) peaks in the
    same order (the strongest first; of two adjacent peaks the earlier one stays)."""
    coords = peak_local_max(response, min_distance=1, exclude_border=True)
    if len(coords) == 0:
        return coords
    number = np.full((response.shape[0] + 2, response.shape[1] + 2), -1, dtype=np.intp)  # a border of no peak
    number[coords[:, 0] + 1, coords[:, 1] + 1] = np.arange(len(coords))
    around = np.stack([number[coords[:, 0] + 1 + dy, coords[:, 1] + 1 + dx] for dy, dx in _NEIGHBOURS], axis=1)
    rejected = np.zeros(len(coords), dtype=bool)
    for peak in np.flatnonzero((around >= 0).any(axis=1)):  # only a peak with a neighbour can suppress or be
        if not rejected[peak]:
            neighbours = around[peak]
            rejected[neighbours[neighbours >= 0]] = True
    return coords[~rejected]


class ORB(_SkimageORB):
    """``skimage.feature.ORB`` whose octaves use :func:`corner_peaks` (module doc)."""

    def _detect_octave(self, octave_image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        dtype = octave_image.dtype
        fast_response = corner_fast(octave_image, self.fast_n, self.fast_threshold)
        keypoints = corner_peaks(fast_response)
        if len(keypoints) == 0:
            return np.zeros((0, 2), dtype=dtype), np.zeros((0,), dtype=dtype), np.zeros((0,), dtype=dtype)
        keypoints = keypoints[_mask_border_keypoints(octave_image.shape, keypoints, distance=16)]
        orientations = corner_orientations(octave_image, keypoints, OFAST_MASK)
        harris_response = corner_harris(octave_image, method="k", k=self.harris_k)
        return keypoints, orientations, harris_response[keypoints[:, 0], keypoints[:, 1]]


__all__ = ["ORB", "corner_peaks"]
