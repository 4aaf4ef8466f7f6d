"""A search's photo-identification stage: does an image query show a painting of the collection? (plain Python).

The :class:`~artsim_pipeline.core.search.SearchEngine` loads the generation's calibration
(:func:`~artsim_pipeline.core.identify.load_calibration`) and keeps a
:class:`~artsim_pipeline.core.photo_match.KeypointCache` of the collection's images (:func:`open_image`); then:

* :func:`identify_views` — ``{"identified", "identification"}`` of a photo
  (:func:`~artsim_pipeline.core.identify.identify_photo`): the top-1 and top-2 cosines of its views' ``full``
  vectors (the whole image first; its central crops embedded only when needed) and, where the calibration
  uses geometry, the ORB keypoint match of the photo against its nearest paintings' images;
* :func:`near_duplicate_level` — the cosine from which another painting counts as a near-duplicate of an
  objectid query (another image of the same work), from the calibration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from .identify import NEAR_DUPLICATE_RANGE, Calibration, identify_photo
from .identify_measure import neighbours
from .index import IndexBundle
from .photo_match import best_match, keypoints
from .photo_sim import centre_crop


def near_duplicate_level(calibration: Calibration | None) -> float:
    """The cosine from which another painting counts as a near-duplicate (another image of the same work)."""
    return calibration.near_duplicate if calibration is not None else NEAR_DUPLICATE_RANGE[0]


def open_image(path: Path | None) -> Any:
    """A cached painting's image (PIL, RGB) or None (no path, no file, or not readable)."""
    if path is None or not path.is_file():
        return None
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError):
        return None


def identify_views(calibration: Calibration | None, bundle: IndexBundle, rows: Mapping[int, Mapping[str, Any]],
                   vectors: Sequence[np.ndarray], *, embed: Callable[[Any], np.ndarray],
                   painting_keypoints: Callable[[int], Any], exclude: int | None = None,
                   photo: Any = None) -> dict[str, Any]:
    """``{"identified", "identification"}`` of a photo whose views' ``full`` vectors are ``vectors`` (whole first),
    searched in ``bundle`` (the ``full`` index); a missing view is embedded (``embed``) from ``photo``, a PIL image,
    which geometric verification (against ``painting_keypoints``) also needs; ``exclude``: an objectid left out."""
    vectors = list(vectors)
    k = max(2, calibration.geometry_candidates if calibration is not None else 2)

    def view_evidence(v: int) -> tuple[float, float, int, Sequence[int]] | None:
        if v >= len(vectors):
            if photo is None:
                return None
            vectors.append(embed(centre_crop(photo, calibration.views[v])))
        scores, ids = neighbours(bundle, np.asarray(vectors[v])[None], k, [exclude])
        return float(scores[0, 0]), float(scores[0, 1]), int(ids[0, 0]), ids[0].tolist()

    geometry, points = None, None
    if photo is not None and calibration is not None and calibration.uses_geometry:
        points = keypoints(photo)

        def geometry(candidates: Sequence[int]) -> tuple[int, int]:
            return best_match(points, candidates, painting_keypoints)
    return identify_photo(calibration, rows, view_evidence, geometry, None if points is None else len(points))


__all__ = ["identify_views", "near_duplicate_level", "open_image"]
