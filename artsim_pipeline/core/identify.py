"""Identification: does a photo show a painting of the collection, and which? (plain Python, no Dagster).

An image query's fused vector is searched in the ``full`` index; two numbers of its answer decide:

* ``top1`` — the cosine of the best painting, and
* the margin ``top1 - top2`` — how far it stands out from the next one (a photo of a member painting
  is much closer to it than to anything else; a photo of another painting sits among several).

``score = top1 + w · margin`` and the photo is identified as the top-1 painting when ``score >= threshold``.
A photo is scored in :data:`VIEWS`: whole, and its central 75 % (a painting photographed in its frame on a wall
fills the middle of the photo); the best view counts.
Nothing here is a constant: :func:`calibrate_collection` (run by ``faiss_index`` when it builds an index
generation) takes a seeded sample of at most :data:`CALIBRATION_PAINTINGS` paintings of the collection,
makes :data:`PHOTOS_PER_PAINTING` simulated photos of each (:mod:`~artsim_pipeline.core.photo_sim`:
perspective, crop, rotation, blur, noise, colour cast, glare, a frame and wall, JPEG), embeds them with
the real backbones and fusion, and measures every photo twice:

* **member** — against the whole index: its source painting is in the collection; the photo counts as a
  positive when the top-1 painting is its source (a wrong top-1 would be a false identification, so it
  counts as a negative);
* **non-member** — with its source painting left out of the index (leave-one-out, as the evaluation
  does): a photo of a painting that is not in the collection; always a negative.

:func:`fit_calibration` then picks ``w`` from :data:`MARGIN_WEIGHTS` and the threshold so that at most
``SAFETY · target`` (half of the 1 % target) of the negatives score at or above it, with the most
positives above it; the **confidence** is a logistic fit of P(correct identification | score) on the two
sets (classes weighted equally). A verdict's ``confidence`` is that probability for ``identified`` and one
minus it for ``not_in_collection``; the threshold is stricter than the fit's 50 % point, so an identification's
confidence is high, and a photo just below the threshold reads "not in the collection" with a low confidence.

**Near-duplicates** (another image of the same work): a result of an objectid search whose cosine with
the query painting is at least :attr:`Calibration.near_duplicate` (the 99th percentile of the non-member
photos' best cosine to *another* painting, within [0.95, 0.99]; 0.95 without a calibration).

The calibration is stored in the index generation as ``identify.json`` (its sha256 in ``generation.json``,
:func:`~artsim_pipeline.core.generations.publish_generation`); :func:`load_calibration` verifies it; a missing
or damaged file means no verdict (search still answers, with a note).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .photo_sim import DISTORTIONS, centre_crop, photo_plan, simulate_photo

CALIBRATION_PAINTINGS = 256
PHOTOS_PER_PAINTING = 2
SEED = 0
TARGET_FALSE_RATE = 0.01
SAFETY = 0.5  # the threshold is set at half the target on the calibration photos: it must hold on new ones
MARGIN_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0)
NEAR_DUPLICATE_RANGE = (0.95, 0.99)
#: the views of a photo that are scored: the whole photo, then its central 75 % (a framed painting on a wall);
#: the best-scoring view decides (serving looks at the crop only when the whole photo is not identified)
VIEWS = (1.0, 0.75)
CALIBRATION_FILE = "identify.json"
FORMAT_VERSION = 1
NO_CALIBRATION_NOTE = ("this index generation has no identification calibration (built before identification, or "
                       "its file is damaged): no verdict on whether the photo shows a painting of the collection; "
                       "re-run `artsim run` to add it")


@dataclass(frozen=True)
class Calibration:
    """How scores become verdicts, measured on the collection's own simulated photos (module doc)."""

    threshold: float
    margin_weight: float
    slope: float  # confidence = sigmoid(slope * (score - centre))
    centre: float
    near_duplicate: float
    target_false_rate: float = TARGET_FALSE_RATE
    stats: dict[str, Any] = field(default_factory=dict)
    views: tuple[float, ...] = (1.0,)  # VIEWS: the central share of each side each view keeps

    def score(self, top1: float, top2: float) -> float:
        return float(top1 + self.margin_weight * (top1 - top2))

    def best_view(self, top1: Sequence[float], top2: Sequence[float]) -> int:
        """The view whose score is highest (the first on ties)."""
        scores = [self.score(a, b) for a, b in zip(top1, top2)]
        return int(np.argmax(scores))

    def confidence(self, score: float) -> float:
        """P(correct identification | score), from the logistic fit."""
        z = self.slope * (float(score) - self.centre)
        return float(1.0 / (1.0 + math.exp(-z))) if z > -700 else 0.0

    @property
    def method(self) -> str:
        n = self.stats.get("negatives", 0)
        return (f"score = top-1 cosine + {self.margin_weight:g} × (top-1 − top-2 cosine); identified when the score "
                f"is at least {self.threshold:.4f}, set for at most {self.target_false_rate:.0%} false identifications "
                f"of {n} simulated photos of paintings left out of the index; confidence: a logistic fit on the "
                f"collection's simulated photos")

    def verdict(self, top1: float, top2: float) -> dict[str, Any]:
        """The ``identification`` of a search response for a query whose best cosines are ``top1``, ``top2``."""
        score = self.score(top1, top2)
        p = self.confidence(score)
        identified = score >= self.threshold
        return {"verdict": "identified" if identified else "not_in_collection", "score": round(score, 6),
                "threshold": round(self.threshold, 6), "confidence": round(p if identified else 1.0 - p, 4),
                "method": self.method}

    def to_bytes(self) -> bytes:
        return json.dumps({"format_version": FORMAT_VERSION, **asdict(self)}, indent=2, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, blob: bytes) -> "Calibration":
        data = json.loads(blob.decode("utf-8"))
        if data.pop("format_version", None) != FORMAT_VERSION:
            raise ValueError("unsupported identification calibration format")
        data["views"] = tuple(float(v) for v in data.get("views", (1.0,)))
        return cls(**data)


# ---------------------------------------------------------------------------------------------- fitting

def _threshold(negatives: np.ndarray, allowed_share: float) -> float:
    """The lowest threshold at which at most ``allowed_share`` of ``negatives`` score at or above it."""
    ranked = np.sort(np.asarray(negatives, dtype=np.float64))[::-1]
    allowed = int(math.floor(allowed_share * len(ranked)))
    return float(np.nextafter(ranked[allowed], np.inf)) if allowed < len(ranked) else float(ranked[-1])


def _logistic(x: np.ndarray, y: np.ndarray, ridge: float = 0.05, steps: int = 200) -> tuple[float, float]:
    """(slope, centre) of ``P(y=1|x) = sigmoid(slope·(x − centre))``: damped Newton steps, classes weighted
    equally, a small ridge on the standardised slope so a separable set stays finite."""
    mean, std = float(x.mean()), float(x.std()) or 1.0
    z = (x - mean) / std
    weight = np.where(y == 1, 0.5 / max(1, int((y == 1).sum())), 0.5 / max(1, int((y == 0).sum())))
    a, b = 1.0, 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(a * z + b)))
        gradient = np.array([np.sum(weight * (p - y) * z) + ridge * a, np.sum(weight * (p - y))])
        h = weight * p * (1 - p)
        hessian = np.array([[np.sum(h * z * z) + ridge, np.sum(h * z)], [np.sum(h * z), np.sum(h) + 1e-9]])
        step = np.clip(np.linalg.solve(hessian, gradient), -5.0, 5.0)
        a, b = a - float(step[0]), b - float(step[1])
        if np.abs(step).max() < 1e-10:
            break
    a = max(a, 1e-6)  # higher scores never mean a lower confidence
    return a / std, mean - b * std / a


def fit_calibration(positives: np.ndarray, negatives: np.ndarray, *, target: float = TARGET_FALSE_RATE,
                    stats: dict[str, Any] | None = None) -> Calibration:
    """A :class:`Calibration` from ``[n, 2]`` arrays of ``(top1, top2)`` cosines of one view: ``positives``
    (photos whose top-1 is their painting) and ``negatives`` (photos of paintings not in the index, and wrong
    top-1s). Raises ``ValueError`` with fewer than 2 photos on either side (:func:`fit_views`)."""
    pos, neg = np.asarray(positives, np.float64).reshape(-1, 2), np.asarray(negatives, np.float64).reshape(-1, 2)
    return fit_views(pos[:, None, 0], pos[:, None, 1], np.ones((len(pos), 1), bool), neg[:, None, 0],
                     neg[:, None, 1], target=target, stats=stats)


def fit_views(top1: np.ndarray, top2: np.ndarray, correct: np.ndarray, non_top1: np.ndarray, non_top2: np.ndarray,
              *, views: Sequence[float] = (1.0,), target: float = TARGET_FALSE_RATE,
              stats: dict[str, Any] | None = None) -> Calibration:
    """A :class:`Calibration` from ``[n, V]`` cosines of member photos' views (``correct``: the view's top-1 is
    the photo's painting) and ``[m, V]`` of non-member photos' views. For each margin weight a photo's score is
    its best view's; members whose best view names another painting count as negatives."""
    top1, top2, correct = np.asarray(top1, np.float64), np.asarray(top2, np.float64), np.asarray(correct, bool)
    non_top1, non_top2 = np.asarray(non_top1, np.float64), np.asarray(non_top2, np.float64)
    rows = np.arange(len(top1))
    best: tuple[float, float, float] | None = None  # (identified-and-correct share, -weight, threshold)
    for w in MARGIN_WEIGHTS:
        s = top1 + w * (top1 - top2)
        view = np.argmax(s, axis=1) if len(s) else np.zeros(0, int)
        ms, mc = s[rows, view], correct[rows, view]
        neg = np.r_[np.max(non_top1 + w * (non_top1 - non_top2), axis=1) if len(non_top1) else [], ms[~mc]]
        if mc.sum() < 2 or len(neg) < 2:
            raise ValueError(f"a calibration needs at least 2 correct member photos and 2 non-member photos "
                             f"(got {int(mc.sum())} and {len(neg)})")
        threshold = _threshold(neg, SAFETY * target)
        share = float((mc & (ms >= threshold)).mean())
        if best is None or (share, -w) > best[:2]:
            best = (share, -w, threshold)
    assert best is not None
    weight, threshold = -best[1], best[2]
    s = top1 + weight * (top1 - top2)
    view = np.argmax(s, axis=1)
    ms, mc = s[rows, view], correct[rows, view]
    s_pos = ms[mc]
    s_neg = np.r_[np.max(non_top1 + weight * (non_top1 - non_top2), axis=1), ms[~mc]]
    slope, centre = _logistic(np.concatenate([s_pos, s_neg]), np.r_[np.ones(len(s_pos)), np.zeros(len(s_neg))])
    near = float(np.clip(np.quantile(non_top1[:, 0], 0.99), *NEAR_DUPLICATE_RANGE))
    facts = {"positives": int(len(s_pos)), "negatives": int(len(s_neg)), "recall": round(float((s_pos >= threshold).mean()), 4),
             "identified_correct": round(best[0], 4),
             "false_rate": round(float((s_neg >= threshold).mean()), 4),
             "positive_score_q05": round(float(np.quantile(s_pos, 0.05)), 4),
             "negative_score_q99": round(float(np.quantile(s_neg, 0.99)), 4)}
    return Calibration(threshold=threshold, margin_weight=weight, slope=slope, centre=centre, near_duplicate=near,
                       target_false_rate=target, stats={**facts, **(stats or {})}, views=tuple(float(v) for v in views))


# ---------------------------------------------------------------------------------------------- measuring

def best_two(bundle: Any, vectors: np.ndarray, exclude: Sequence[int | None] | None = None,
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(top-1 cosines, top-2 cosines, top-1 objectids) of ``[n, d]`` fused vectors in ``bundle`` (the full
    index), each row leaving out its ``exclude`` objectid (leave-one-out; None keeps every painting).
    A missing second neighbour counts as cosine 0."""
    from .index import search as index_search

    scores, ids = index_search(bundle, np.asarray(vectors, np.float32), 3)
    n = len(scores)
    top1, top2, best = np.zeros(n), np.zeros(n), np.full(n, -1, np.int64)
    for row in range(n):
        drop = None if exclude is None else exclude[row]
        keep = [(float(s), int(i)) for s, i in zip(scores[row], ids[row]) if i >= 0 and int(i) != drop]
        if keep:
            top1[row], best[row] = keep[0]
        if len(keep) > 1:
            top2[row] = keep[1][0]
    return top1, top2, best


def encode_photos(models: Sequence[Any], fusion: Any, photos: Sequence[Any], precision: str,
                  batch: int = 32) -> np.ndarray:
    """``[n, d]`` fused vectors of PIL photos: every backbone with the collection's preprocessing, then ``fusion``."""
    from .embedding import forward_prepared, load_and_prepare
    from .fusion import block_key, transform

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


def measure_views(bundle: Any, vectors: Sequence[np.ndarray], exclude: Sequence[int | None] | None = None,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[n, V]`` top-1 cosines, top-2 cosines and top-1 objectids of every view (:func:`best_two`)."""
    measured = [best_two(bundle, v, exclude=exclude) for v in vectors]
    return tuple(np.stack([m[i] for m in measured], axis=1) for i in range(3))  # type: ignore[return-value]


def calibrate_collection(bundle: Any, fusion: Any, models: Sequence[Any], precision: str,
                         image_of: Callable[[int], Any], *, paintings: int = CALIBRATION_PAINTINGS,
                         per_painting: int = PHOTOS_PER_PAINTING, seed: int = SEED,
                         views: Sequence[float] = VIEWS) -> Calibration:
    """Simulate photos of a sample of the indexed paintings, measure them as members and non-members, fit.

    ``image_of(objectid)`` returns the painting's cached image (a PIL image) or None. Raises ``ValueError``
    when too few photos could be made (:func:`fit_calibration`)."""
    chosen = sample_paintings(bundle.ids, paintings, seed)
    photos, sources, kinds = simulated_photos(chosen, image_of, per_painting, seed)
    vectors = view_vectors(models, fusion, photos, precision, views)
    m1, m2, m_best = measure_views(bundle, vectors)
    n1, n2, _ = measure_views(bundle, vectors, exclude=sources)
    correct = m_best == np.asarray(sources, dtype=np.int64)[:, None]
    stats = {"paintings": int(len(set(sources))), "photos": int(len(photos)), "seed": int(seed),
             "member_top1_accuracy": round(float(correct[:, 0].mean()), 4) if len(correct) else 0.0,
             "distortions": sorted(set(kinds))}  # no timings: the same collection gives the same file
    return fit_views(m1, m2, correct, n1, n2, views=views, stats=stats)


# ---------------------------------------------------------------------------------------------- serving

def identify_views(calibration: Calibration | None, bundle: Any, rows: Mapping[int, Mapping[str, Any]],
                   vectors: Sequence[np.ndarray], exclude: int | None = None) -> dict[str, Any]:
    """A search response's ``{"identified": {objectid, title, attribution, confidence} | None, "identification":
    {verdict, score, threshold, confidence, method, closest_objectid}}`` for the fused ``full`` vectors of a
    photo's views (whole first, then its centre crops): the best-scoring view decides. ``rows``: the catalog by
    objectid; ``exclude``: an objectid left out (a painting not in the collection). Both None without a calibration."""
    if calibration is None:
        return {"identified": None, "identification": None}
    top1, top2, best = measure_views(bundle, [np.asarray(v)[None] for v in vectors], exclude=[exclude])
    view = calibration.best_view(top1[0], top2[0])
    verdict = calibration.verdict(float(top1[0, view]), float(top2[0, view]))
    oid = int(best[0, view])
    verdict["closest_objectid"] = oid if oid >= 0 else None
    identified = None
    if verdict["verdict"] == "identified" and oid in rows:
        row = rows[oid]
        identified = {"objectid": oid, "title": _text(row.get("title")), "attribution": _text(row.get("artist")),
                      "confidence": verdict["confidence"]}
    return {"identified": identified, "identification": verdict}


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def load_calibration(lake: Any, generation: str) -> tuple[Calibration | None, str | None]:
    """(the generation's calibration, None) or (None, a note saying why there is none): absent (an older
    generation), or its file damaged (checksum mismatch, unreadable): then it counts as missing."""
    from .generations import read_generation_file

    try:
        blob = read_generation_file(lake, generation, CALIBRATION_FILE)
        if blob is None:
            return None, NO_CALIBRATION_NOTE
        return Calibration.from_bytes(blob), None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"{NO_CALIBRATION_NOTE} ({type(exc).__name__}: {str(exc)[:160]})"


__all__ = [
    "CALIBRATION_FILE", "CALIBRATION_PAINTINGS", "Calibration", "DISTORTIONS", "NO_CALIBRATION_NOTE",
    "PHOTOS_PER_PAINTING", "VIEWS", "best_two", "calibrate_collection", "encode_photos", "fit_calibration",
    "fit_views", "identify_views", "load_calibration", "measure_views", "sample_paintings", "simulated_photos", "view_vectors",
]
