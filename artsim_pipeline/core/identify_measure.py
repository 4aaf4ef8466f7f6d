"""Measuring photos for identification: simulated photos of the collection, their evidence, the calibration
(plain Python, no Dagster; torch only through the backbones it is handed).

The rule and the fit live in :mod:`~artsim_pipeline.core.identify`; this module produces what they read, in
batches (the calibration in ``faiss_index`` and ``artsim bench identify`` alike):

* :func:`simulated_photos` — seeded photos of a sample of paintings (:mod:`~artsim_pipeline.core.photo_sim`);
* :func:`view_vectors` — per view (:data:`~artsim_pipeline.core.identify.VIEWS`), the photos' fused vectors;
* :func:`measure_photos` — a :class:`~artsim_pipeline.core.identify.PhotoEvidence`: per view the nearest
  paintings in the ``full`` index (each photo's own painting left out for non-members) and the best geometric
  match among them (:mod:`~artsim_pipeline.core.photo_match`);
* :func:`same_work_named` — for non-member photos, whether what they could be named as is another image of the
  same work (a second scan or a replica in the collection: naming it is right, so it is no false identification);
* :func:`calibrate_collection` — all of it on the collection's own paintings, then the fit.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Sequence

import numpy as np

from .fusion import block_key, transform
from .identify import GEOMETRY_CANDIDATES, VIEWS, Calibration, PhotoEvidence, fit_views
from .index import search as index_search
from .photo_match import KeypointCache, Keypoints, best_match, better_match, keypoints, same_work
from .photo_sim import centre_crop, photo_plan, simulate_photo

CALIBRATION_PAINTINGS = 256
PHOTOS_PER_PAINTING = 2
SEED = 0


def neighbours(bundle: Any, vectors: np.ndarray, k: int, exclude: Sequence[int | None] | None = None,
               ) -> tuple[np.ndarray, np.ndarray]:
    """``[n, k]`` cosines and objectids of the ``k`` nearest paintings of ``[n, d]`` fused vectors in ``bundle``
    (the full index), each row leaving out its ``exclude`` objectid; missing places are cosine 0, objectid -1."""
    scores, ids = index_search(bundle, np.asarray(vectors, np.float32), k + 1)
    n = len(scores)
    out_scores, out_ids = np.zeros((n, k)), np.full((n, k), -1, np.int64)
    for row in range(n):
        drop = None if exclude is None else exclude[row]
        keep = [(float(s), int(i)) for s, i in zip(scores[row], ids[row]) if i >= 0 and int(i) != drop][:k]
        for place, (score, oid) in enumerate(keep):
            out_scores[row, place], out_ids[row, place] = score, oid
    return out_scores, out_ids


def best_two(bundle: Any, vectors: np.ndarray, exclude: Sequence[int | None] | None = None,
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(top-1 cosines, top-2 cosines, top-1 objectids) of ``[n, d]`` fused vectors (:func:`neighbours`)."""
    scores, ids = neighbours(bundle, vectors, 2, exclude)
    return scores[:, 0], scores[:, 1], ids[:, 0]


def encode_photos(models: Sequence[Any], fusion: Any, photos: Sequence[Any], precision: str,
                  batch: int = 32) -> np.ndarray:
    """``[n, d]`` fused vectors of PIL photos: every backbone with the collection's preprocessing, then ``fusion``."""
    # torch (core.embedding) here: the search imports this module; only encoding photos needs it
    from .embedding import forward_prepared, load_and_prepare

    out = []
    for start in range(0, len(photos), batch):
        chunk = photos[start:start + batch]
        blocks: dict[str, np.ndarray] = {}
        for model in models:
            arrays = np.stack([load_and_prepare(photo, model.spec) for photo in chunk])
            for name, values in forward_prepared(model, arrays, precision, taps=True).items():
                blocks[block_key(model.name, name)] = values
        out.append(transform(fusion, blocks))
    return np.concatenate(out, axis=0) if out else np.zeros((0, fusion.output_dim), np.float32)


def sample_paintings(objectids: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A seeded sample of at most ``n`` of ``objectids`` (sorted first, so the sample is the same for the same set)."""
    ids = np.unique(np.asarray(objectids, dtype=np.int64))
    if len(ids) <= n:
        return ids
    return np.sort(np.random.default_rng(seed).choice(ids, size=n, replace=False))


def simulated_photos(objectids: np.ndarray, image_of: Callable[[int], Any], per_painting: int,
                     seed: int) -> tuple[list[Any], list[int], list[str]]:
    """(photos, their source objectids, their distortions) for the paintings whose image ``image_of`` opens."""
    photos, sources, kinds = [], [], []
    for oid, distortion, photo_seed in photo_plan(objectids, per_painting, seed):
        image = image_of(oid)
        if image is None:
            continue
        photos.append(simulate_photo(image, distortion, photo_seed))
        sources.append(oid)
        kinds.append(distortion)
    return photos, sources, kinds


def view_vectors(models: Sequence[Any], fusion: Any, photos: Sequence[Any], precision: str,
                 views: Sequence[float] = VIEWS) -> list[np.ndarray]:
    """Per view (:data:`VIEWS`), the ``[n, d]`` fused vectors of the photos' central ``view`` share."""
    return [encode_photos(models, fusion, photos if v >= 1.0 else [centre_crop(p, v) for p in photos], precision)
            for v in views]


def measure_photos(bundle: Any, vectors: Sequence[np.ndarray], photo_keypoints: Sequence[Keypoints] | None = None,
                   painting_keypoints: Callable[[int], Keypoints] | None = None,
                   exclude: Sequence[int | None] | None = None,
                   candidates: int = GEOMETRY_CANDIDATES) -> PhotoEvidence:
    """The :class:`PhotoEvidence` of photos whose views' fused vectors are ``vectors`` (whole first): per view the
    embedding's best two and, with ``photo_keypoints`` and ``painting_keypoints``, the best geometric match among
    the ``candidates`` nearest paintings of the views so far. ``exclude``: per photo an objectid left out."""
    k = max(2, candidates)
    found = [neighbours(bundle, v, k, exclude) for v in vectors]
    top1 = np.stack([s[:, 0] for s, _ in found], axis=1)
    top2 = np.stack([s[:, 1] for s, _ in found], axis=1)
    best = np.stack([i[:, 0] for _, i in found], axis=1)
    if photo_keypoints is None or painting_keypoints is None:
        return PhotoEvidence(top1, top2, best)
    n, views = top1.shape
    geo_oid, geo_inl = np.full((n, views), -1, np.int64), np.zeros((n, views), np.int64)
    for row in range(n):
        seen: list[int] = []
        current = (-1, 0)
        for v in range(views):
            fresh = [int(c) for c in found[v][1][row, :candidates] if c >= 0 and int(c) not in seen]
            seen += fresh
            current = better_match(current, best_match(photo_keypoints[row], fresh, painting_keypoints))
            geo_oid[row, v], geo_inl[row, v] = current
    return PhotoEvidence(top1, top2, best, geo_oid, geo_inl,
                         keypoints=np.array([len(p) for p in photo_keypoints], dtype=np.int64))


def same_work_named(evidence: PhotoEvidence, sources: np.ndarray, painting_keypoints: Callable[[int], Keypoints],
                    ) -> np.ndarray:
    """``[n]``: whether a painting the photo could be named as (the embedding's best of any view, or geometry's
    best) is another image of the photo's own work (:func:`~artsim_pipeline.core.photo_match.same_work`)."""
    out = np.zeros(len(evidence), dtype=bool)
    for row, source in enumerate(np.asarray(sources, dtype=np.int64).tolist()):
        named = set(evidence.best[row].tolist())
        if evidence.geo_objectid is not None:
            named |= set(evidence.geo_objectid[row].tolist())
        out[row] = any(same_work(painting_keypoints, source, oid) for oid in named if oid >= 0)
    return out


def calibrate_collection(bundle: Any, fusion: Any, models: Sequence[Any], precision: str,
                         image_of: Callable[[int], Any], *, paintings: int = CALIBRATION_PAINTINGS,
                         per_painting: int = PHOTOS_PER_PAINTING, seed: int = SEED,
                         views: Sequence[float] = VIEWS, candidates: int = GEOMETRY_CANDIDATES) -> Calibration:
    """Simulate photos of a sample of the indexed paintings, measure them as members and non-members, fit.

    ``image_of(objectid)`` returns the painting's cached image (a PIL image) or None. Raises ``ValueError``
    when too few photos could be made (:func:`~artsim_pipeline.core.identify.fit_views`)."""
    chosen = sample_paintings(bundle.ids, paintings, seed)
    photos, sources, kinds = simulated_photos(chosen, image_of, per_painting, seed)
    vectors = view_vectors(models, fusion, photos, precision, views)
    photo_points = [keypoints(photo) for photo in photos]
    painting_points = KeypointCache(image_of, size=1 << 16)
    member = measure_photos(bundle, vectors, photo_points, painting_points, candidates=candidates)
    outsider = measure_photos(bundle, vectors, photo_points, painting_points, exclude=sources, candidates=candidates)
    src = np.asarray(sources, dtype=np.int64)
    outsider = replace(outsider, same_work=same_work_named(outsider, src, painting_points))
    stats = {"paintings": int(len(set(sources))), "photos": int(len(photos)), "seed": int(seed),
             "member_top1_accuracy": round(float((member.best[:, 0] == src).mean()), 4) if len(src) else 0.0,
             "distortions": sorted(set(kinds))}  # no timings: the same collection gives the same file
    return fit_views(member, src, outsider, views=views, candidates=candidates, stats=stats)


__all__ = ["CALIBRATION_PAINTINGS", "PHOTOS_PER_PAINTING", "SEED", "best_two", "calibrate_collection",
           "encode_photos", "measure_photos", "neighbours", "same_work_named", "sample_paintings", "simulated_photos",
           "view_vectors"]
