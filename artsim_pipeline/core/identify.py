"""Identification: does a photo show a painting of the collection, and which? (plain Python, no Dagster).

Two kinds of evidence, in stages (the cheap one first, each stage only when the earlier ones did not identify):

* **the embedding** — the photo's fused vector searched in the ``full`` index: ``top1`` (the best painting's
  cosine) and the margin ``top1 - top2`` (a photo of a member painting is much closer to it than to anything
  else); ``score = top1 + w · margin``, identified as the top-1 painting when ``score >= threshold``;
* **geometry** — the photo's ORB keypoints matched against the images of its :attr:`Calibration.geometry_candidates`
  nearest paintings, with RANSAC (:mod:`~artsim_pipeline.core.photo_match`): identified as the candidate with the
  most inliers when they reach ``geometry_threshold`` (the painting's own image is *in* the photo: blur, noise, a
  crop or a frame lower the embedding's margin, not this). A photo with corners (at least ``geometry_keypoints``
  ORB keypoints) is identified by geometry only: the embedding alone names look-alikes (a pendant panel, a
  replica) that are not the painting; the embedding decides only where geometry cannot speak.

A photo is looked at in :data:`VIEWS`: whole, then its central 75 % (a painting photographed in its frame on a
wall fills the middle of the photo). The stages (:meth:`Calibration.decide`): embedding of the whole photo →
geometry on its candidates → embedding of the best view → geometry on every view's candidates.

Nothing here is a constant: :func:`~artsim_pipeline.core.identify_measure.calibrate_collection` (run by
``faiss_index`` when it builds an index generation) makes simulated photos of a seeded sample of the collection
(:mod:`~artsim_pipeline.core.photo_sim`) and measures each twice: as a **member** (against the whole index; a
wrong painting named counts as a negative) and as a **non-member** (its painting left out of the index, as the
evaluation does; always a negative). :func:`fit_views` then sets the thresholds so that at most ``SAFETY ·
target`` (half of the 1 % target) of the negatives would be identified: half of that allowance goes to geometry
(never below :data:`MIN_INLIERS`), the rest to the embedding, for each margin weight of :data:`MARGIN_WEIGHTS`;
the weight that identifies most member photos correctly wins. The **confidence** is a logistic fit of
P(correct identification | evidence) on the two sets (classes weighted equally): of the score for the embedding,
of log(1 + inliers) for geometry. A verdict's ``confidence`` is that probability for ``identified`` and one minus
the highest for ``not_in_collection``.

**Near-duplicates** (another image of the same work): a result of an objectid search whose cosine with
the query painting is at least :attr:`Calibration.near_duplicate` (the 99th percentile of the non-member
photos' best cosine to *another* painting, within [0.95, 0.99]; 0.95 without a calibration).

The calibration is stored in the index generation as ``identify.json`` (its sha256 in ``generation.json``,
:func:`~artsim_pipeline.core.generations.publish_generation`); :func:`load_calibration` verifies it; a missing
or damaged file means no verdict (search still answers, with a note). Format 1 (embedding only) still loads.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .generations import read_generation_file
from .photo_match import better_match

TARGET_FALSE_RATE = 0.01
SAFETY = 0.5  # the thresholds are set at half the target on the calibration photos: they must hold on new ones
MARGIN_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0)
NEAR_DUPLICATE_RANGE = (0.95, 0.99)
#: geometry never identifies on fewer inliers (RANSAC's homography on random ORB matches finds 4-7)
MIN_INLIERS = 10
GEOMETRY_CANDIDATES = 5  # nearest paintings per view whose images are matched against the photo
#: a photo with this many ORB keypoints (of at most 300) has the corners geometry needs: it decides alone
GEOMETRY_KEYPOINTS = 100
#: the views of a photo that are scored: the whole photo, then its central 75 % (a framed painting on a wall)
VIEWS = (1.0, 0.75)
CALIBRATION_FILE = "identify.json"
FORMAT_VERSION = 2
NO_CALIBRATION_NOTE = ("this index generation has no identification calibration (built before identification, or "
                       "its file is damaged): no verdict on whether the photo shows a painting of the collection; "
                       "re-run `artsim run` to add it")


@dataclass(frozen=True)
class Decision:
    """The staged rule's outcome for one photo: ``basis`` "embedding" or "geometry" (or "" when not identified),
    ``objectid`` the painting named (or the closest one), ``score`` the best view's embedding score, ``inliers``
    the best geometric match (None when geometry was not measured)."""

    identified: bool
    objectid: int
    basis: str
    score: float
    inliers: int | None


@dataclass(frozen=True)
class Calibration:
    """How evidence becomes verdicts, measured on the collection's own simulated photos (module doc)."""

    threshold: float
    margin_weight: float
    slope: float  # confidence = sigmoid(slope * (score - centre))
    centre: float
    near_duplicate: float
    target_false_rate: float = TARGET_FALSE_RATE
    stats: dict[str, Any] = field(default_factory=dict)
    views: tuple[float, ...] = (1.0,)  # VIEWS: the central share of each side each view keeps
    geometry_threshold: float | None = None  # inliers; None: no geometric stage
    geometry_candidates: int = 0
    geometry_slope: float = 0.0  # confidence = sigmoid(slope * (log1p(inliers) - centre))
    geometry_centre: float = 0.0
    geometry_keypoints: int = 0  # a photo with at least this many ORB keypoints is identified by geometry only
    format_version: int = FORMAT_VERSION  # 1: the embedding only (an older generation's file)

    def score(self, top1: float, top2: float) -> float:
        return float(top1 + self.margin_weight * (top1 - top2))

    def best_view(self, top1: Sequence[float], top2: Sequence[float]) -> int:
        """The view whose score is highest (the first on ties)."""
        scores = [self.score(a, b) for a, b in zip(top1, top2)]
        return int(np.argmax(scores))

    @property
    def uses_geometry(self) -> bool:
        return self.geometry_threshold is not None and self.geometry_candidates > 0

    def confidence(self, score: float) -> float:
        """P(correct identification | embedding score), from the logistic fit."""
        return _sigmoid(self.slope * (float(score) - self.centre))

    def geometry_confidence(self, inliers: int | None) -> float:
        """P(correct identification | inliers), from the logistic fit (0 without geometry)."""
        if inliers is None or not self.uses_geometry:
            return 0.0
        return _sigmoid(self.geometry_slope * (math.log1p(inliers) - self.geometry_centre))

    def embedding_decides(self, photo_keypoints: int | None) -> bool:
        """Whether the embedding may identify a photo with this many ORB keypoints: always without geometry; with
        it, only where geometry cannot speak (a flat or blurred photo, fewer than ``geometry_keypoints``): a
        photo with corners whose candidates' images are not in it is not identified (a pendant panel or a
        replica looks alike to the embedding, not to the geometry)."""
        return not self.uses_geometry or photo_keypoints is None or photo_keypoints < self.geometry_keypoints

    def decide(self, top1: Sequence[float], top2: Sequence[float], best: Sequence[int],
               geo_objectid: Sequence[int] = (), geo_inliers: Sequence[int] = (),
               photo_keypoints: int | None = None) -> Decision:
        """The staged rule on one photo's evidence: per view (whole first) the embedding's ``top1``, ``top2``,
        ``best`` objectid, and the geometric best so far (``geo_objectid``/``geo_inliers``: over the candidates
        of views 0..v; shorter, or empty, where geometry was not measured); ``photo_keypoints``: how many ORB
        keypoints the photo has (:meth:`embedding_decides`)."""
        view = 0
        embedding = self.embedding_decides(photo_keypoints)
        for v in range(len(top1)):
            view = self.best_view(top1[:v + 1], top2[:v + 1])
            score = self.score(top1[view], top2[view])
            inliers = int(geo_inliers[v]) if v < len(geo_inliers) else None
            if embedding and score >= self.threshold:
                return Decision(True, int(best[view]), "embedding", score, inliers)
            if self.uses_geometry and inliers is not None and inliers >= self.geometry_threshold:
                return Decision(True, int(geo_objectid[v]), "geometry", score, inliers)
        last = len(geo_inliers) - 1
        return Decision(False, int(best[view]) if len(best) else -1, "", self.score(top1[view], top2[view]),
                        int(geo_inliers[last]) if last >= 0 else None)

    @property
    def method(self) -> str:
        n = self.stats.get("negatives", 0)
        text = (f"score = top-1 cosine + {self.margin_weight:g} × (top-1 − top-2 cosine); identified when the score "
                f"is at least {self.threshold:.4f}")
        if self.uses_geometry:
            text = (f"identified when at least {self.geometry_threshold:g} ORB keypoint matches of the photo agree "
                    f"with one perspective transform onto one of the {self.geometry_candidates} nearest paintings' "
                    f"images; a photo with fewer than {self.geometry_keypoints} keypoints (too flat or blurred for "
                    f"that) by its embedding: {text}")
        return (f"{text}; set for at most {self.target_false_rate:.0%} false identifications of {n} simulated photos "
                f"of paintings left out of the index; confidence: a logistic fit on the collection's simulated photos")

    def verdict(self, decision: Decision) -> dict[str, Any]:
        """The ``identification`` of a search response for a photo's :class:`Decision`."""
        p_score, p_geo = self.confidence(decision.score), self.geometry_confidence(decision.inliers)
        if decision.identified:
            confidence = p_score if decision.basis == "embedding" else p_geo
        else:
            confidence = 1.0 - max(p_score, p_geo)
        return {"verdict": "identified" if decision.identified else "not_in_collection",
                "basis": decision.basis or None, "score": round(decision.score, 6),
                "threshold": round(self.threshold, 6), "inliers": decision.inliers,
                "inlier_threshold": self.geometry_threshold if self.uses_geometry else None,
                "confidence": round(confidence, 4), "method": self.method}

    @property
    def current(self) -> bool:
        """Made by this code's method (an older file still serves, but a refresh calibrates anew)."""
        return self.format_version == FORMAT_VERSION

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, blob: bytes) -> "Calibration":
        data = json.loads(blob.decode("utf-8"))
        if data.get("format_version") not in (1, FORMAT_VERSION):
            raise ValueError("unsupported identification calibration format")
        data["views"] = tuple(float(v) for v in data.get("views", (1.0,)))
        return cls(**data)


def _sigmoid(z: float) -> float:
    return float(1.0 / (1.0 + math.exp(-z))) if z > -700 else 0.0


# ---------------------------------------------------------------------------------------------- fitting

def _threshold(negatives: np.ndarray, allowed_share: float) -> float:
    """The lowest threshold at which at most ``allowed_share`` of ``negatives`` score at or above it."""
    return _count_threshold(negatives, int(math.floor(allowed_share * len(negatives))))


def _count_threshold(negatives: np.ndarray, allowed: int) -> float:
    """The lowest threshold at which at most ``allowed`` of ``negatives`` are at or above it."""
    ranked = np.sort(np.asarray(negatives, dtype=np.float64))[::-1]
    if allowed < 0:
        return math.inf
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
    """An embedding-only :class:`Calibration` from ``[n, 2]`` arrays of ``(top1, top2)`` cosines of one view:
    ``positives`` (photos whose top-1 is their painting) and ``negatives`` (photos of paintings not in the
    index). Raises ``ValueError`` with fewer than 2 photos on either side (:func:`fit_views`)."""
    pos, neg = np.asarray(positives, np.float64).reshape(-1, 2), np.asarray(negatives, np.float64).reshape(-1, 2)
    member = PhotoEvidence(pos[:, None, 0], pos[:, None, 1], np.zeros((len(pos), 1), np.int64))
    outsider = PhotoEvidence(neg[:, None, 0], neg[:, None, 1], np.ones((len(neg), 1), np.int64))
    return fit_views(member, np.zeros(len(pos), np.int64), outsider, target=target, stats=stats)


@dataclass(frozen=True)
class PhotoEvidence:
    """What was measured of ``n`` photos in ``V`` views (whole first): the embedding's ``top1``, ``top2`` cosines
    and ``best`` objectid ``[n, V]``; geometry's best ``geo_objectid`` and ``geo_inliers`` ``[n, V]``, cumulative
    over the candidates of views 0..v (None without geometry); ``same_work`` ``[n]``: a painting the photo could be
    named as is another image of the photo's own work (:func:`~artsim_pipeline.core.photo_match.same_work`;
    measured for non-member photos, None otherwise)."""

    top1: np.ndarray
    top2: np.ndarray
    best: np.ndarray
    geo_objectid: np.ndarray | None = None
    geo_inliers: np.ndarray | None = None
    same_work: np.ndarray | None = None
    keypoints: np.ndarray | None = None  # [n] the photos' ORB keypoint counts (with geometry)

    def __len__(self) -> int:
        return len(self.top1)

    def subset(self, keep: np.ndarray) -> "PhotoEvidence":
        """The photos where ``keep`` is true."""
        pick = lambda a: None if a is None else a[keep]  # noqa: E731
        return PhotoEvidence(self.top1[keep], self.top2[keep], self.best[keep], pick(self.geo_objectid),
                             pick(self.geo_inliers), pick(self.same_work), pick(self.keypoints))

    def row(self, i: int) -> tuple[Any, Any, Any, Any, Any, int | None]:
        geo_oid = self.geo_objectid[i] if self.geo_objectid is not None else ()
        geo_inl = self.geo_inliers[i] if self.geo_inliers is not None else ()
        points = int(self.keypoints[i]) if self.keypoints is not None else None
        return self.top1[i], self.top2[i], self.best[i], geo_oid, geo_inl, points


def decide_all(calibration: Calibration, evidence: PhotoEvidence) -> list[Decision]:
    """:meth:`Calibration.decide` for every photo of ``evidence``."""
    return [calibration.decide(*evidence.row(i)) for i in range(len(evidence))]


def _candidate(weight: float, geometry: tuple[float, int, int] | None, member: PhotoEvidence, sources: np.ndarray,
               outsider: PhotoEvidence, allowed: int, views: Sequence[float], target: float) -> Calibration:
    """The embedding threshold for one margin weight, given geometry's (threshold, candidates, the negatives its
    threshold lets through: each is counted against ``allowed``)."""
    s = member.top1 + weight * (member.top1 - member.top2)
    view = np.argmax(s, axis=1)
    rows = np.arange(len(s))
    wrong = member.best[rows, view] != sources
    neg = np.r_[np.max(outsider.top1 + weight * (outsider.top1 - outsider.top2), axis=1), s[rows, view][wrong]]
    used = 0 if geometry is None else geometry[2]
    return Calibration(threshold=_count_threshold(neg, allowed - used), margin_weight=weight, slope=1.0, centre=0.0,
                       near_duplicate=NEAR_DUPLICATE_RANGE[0], target_false_rate=target, views=tuple(views),
                       geometry_threshold=None if geometry is None else geometry[0],
                       geometry_candidates=0 if geometry is None else geometry[1],
                       geometry_keypoints=0 if geometry is None else GEOMETRY_KEYPOINTS)


def _geometry_negatives(member: PhotoEvidence, sources: np.ndarray, outsider: PhotoEvidence) -> np.ndarray:
    """Inliers of the non-member photos' best match, and of member photos whose best match is another painting."""
    if outsider.geo_inliers is None or member.geo_inliers is None or outsider.geo_inliers.shape[1] == 0:
        return np.zeros(0)
    wrong = member.geo_objectid[:, -1] != sources
    return np.r_[outsider.geo_inliers[:, -1], member.geo_inliers[:, -1][wrong]].astype(np.float64)


def fit_views(member: PhotoEvidence, sources: np.ndarray, outsider: PhotoEvidence, *,
              views: Sequence[float] = (1.0,), candidates: int = GEOMETRY_CANDIDATES,
              target: float = TARGET_FALSE_RATE, stats: dict[str, Any] | None = None) -> Calibration:
    """A :class:`Calibration` from the member photos' evidence (``sources``: each photo's painting) and the
    non-member photos' (their painting left out). Geometry is used when both carry it (module doc). A non-member
    photo whose painting has another image of the same work in the collection (``outsider.same_work``) is not a
    negative: naming that image is right; such photos are left out of the fit and counted in its stats."""
    sources = np.asarray(sources, dtype=np.int64)
    twins = 0
    if outsider.same_work is not None:
        twins = int(outsider.same_work.sum())
        outsider = outsider.subset(~outsider.same_work)
    stats = {**(stats or {}), "non_members_same_work": twins}
    wrong_top1 = int((member.best[:, 0] != sources).sum())
    n_neg = len(outsider) + wrong_top1
    if len(member) - wrong_top1 < 2 or n_neg < 2:
        raise ValueError(f"a calibration needs at least 2 correct member photos and 2 non-member photos "
                         f"(got {len(member) - wrong_top1} and {n_neg})")
    allowed = int(math.floor(SAFETY * target * n_neg))
    geometry = None
    geo_neg = _geometry_negatives(member, sources, outsider)
    if len(geo_neg):
        inliers = max(float(MIN_INLIERS), _count_threshold(geo_neg, allowed // 2))
        geometry = (inliers, candidates, int((geo_neg >= inliers).sum()))
    best: tuple[float, float, Calibration] | None = None
    for w in MARGIN_WEIGHTS:
        trial = _candidate(w, geometry, member, sources, outsider, allowed, views, target)
        decided = decide_all(trial, member)
        share = float(np.mean([d.identified and d.objectid == s for d, s in zip(decided, sources)]))
        if best is None or (share, -w) > best[:2]:
            best = (share, -w, trial)
    assert best is not None
    return _with_confidence(best[2], member, sources, outsider, geo_neg, best[0], stats)


def _with_confidence(trial: Calibration, member: PhotoEvidence, sources: np.ndarray, outsider: PhotoEvidence,
                     geo_neg: np.ndarray, share: float, stats: dict[str, Any] | None) -> Calibration:
    """``trial`` with its logistic confidences, its near-duplicate level and the facts of its fit (``geo_neg``:
    :func:`_geometry_negatives`)."""
    members, outsiders = decide_all(trial, member), decide_all(trial, outsider)
    correct = np.array([d.identified and d.objectid == s for d, s in zip(members, sources)], bool)
    wrong = np.array([d.identified and d.objectid != s for d, s in zip(members, sources)], bool)
    s_pos = np.array([d.score for d, c in zip(members, correct) if c])
    s_neg = np.r_[[d.score for d in outsiders], [d.score for d, s in zip(members, sources) if d.objectid != s]]
    slope, centre = _logistic(np.r_[s_pos, s_neg], np.r_[np.ones(len(s_pos)), np.zeros(len(s_neg))])
    geo = {}
    if trial.uses_geometry:
        good = member.geo_objectid[:, -1] == sources
        g_pos = np.log1p(member.geo_inliers[:, -1][good].astype(np.float64))
        g_neg = np.log1p(geo_neg)
        g_slope, g_centre = _logistic(np.r_[g_pos, g_neg], np.r_[np.ones(len(g_pos)), np.zeros(len(g_neg))])
        geo = {"geometry_slope": g_slope, "geometry_centre": g_centre}
    near = float(np.clip(np.quantile(outsider.top1[:, 0], 0.99), *NEAR_DUPLICATE_RANGE))
    identified_out = np.array([d.identified for d in outsiders], bool)
    facts = {"positives": int(len(s_pos)), "negatives": int(len(s_neg)),
             "identified_correct": round(share, 4), "recall": round(share, 4), "wrong_identified": round(float(wrong.mean()), 4),
             "false_rate": round(float(identified_out.mean()), 4),
             "by_geometry": round(float(np.mean([d.basis == "geometry" for d in members])), 4),
             "positive_score_q05": round(float(np.quantile(s_pos, 0.05)), 4) if len(s_pos) else None,
             "negative_score_q99": round(float(np.quantile(s_neg, 0.99)), 4)}
    if trial.uses_geometry:
        facts["negative_inliers_max"] = int(geo_neg.max()) if len(geo_neg) else 0
    fields = {**asdict(trial), "slope": slope, "centre": centre, "near_duplicate": near, **geo,
              "stats": {**facts, **(stats or {})}}
    fields["views"] = tuple(fields["views"])
    return Calibration(**fields)


# ---------------------------------------------------------------------------------------------- serving

def identify_photo(calibration: Calibration | None, rows: Mapping[int, Mapping[str, Any]],
                   view_evidence: Callable[[int], tuple[float, float, int, Sequence[int]] | None],
                   geometry: Callable[[Sequence[int]], tuple[int, int]] | None = None,
                   photo_keypoints: int | None = None) -> dict[str, Any]:
    """A search response's ``{"identified": {objectid, title, attribution, confidence} | None, "identification":
    {verdict, basis, score, threshold, inliers, inlier_threshold, confidence, method, closest_objectid}}``, the
    stages measured only as far as needed (:meth:`Calibration.decide`).

    ``view_evidence(v)``: ``(top1, top2, best objectid, candidate objectids)`` of view ``v`` of
    ``calibration.views``, or None where that view cannot be made; ``geometry(candidates)``: ``(objectid, inliers)`` of the best geometric match among
    them (None: no geometric stage); ``photo_keypoints``: the photo's ORB keypoint count
    (:meth:`Calibration.embedding_decides`). Both None without a calibration."""
    if calibration is None:
        return {"identified": None, "identification": None}
    top1, top2, best, geo_oid, geo_inl = [], [], [], [], []
    seen: list[int] = []
    decision = None
    for v in range(len(calibration.views)):
        evidence = view_evidence(v)
        if evidence is None:  # this view cannot be made (no photo to crop)
            break
        a, b, oid, candidates = evidence
        top1.append(a), top2.append(b), best.append(oid)
        if calibration.uses_geometry and geometry is not None:
            fresh = [int(c) for c in candidates[:calibration.geometry_candidates] if int(c) not in seen]
            seen += fresh
            current = (geo_oid[-1], geo_inl[-1]) if geo_inl else (-1, 0)
            found = better_match(current, geometry(fresh) if fresh else (-1, 0))
            geo_oid.append(found[0]), geo_inl.append(found[1])
        decision = calibration.decide(top1, top2, best, geo_oid, geo_inl, photo_keypoints)
        if decision.identified:
            break
    assert decision is not None
    verdict = calibration.verdict(decision)
    verdict["closest_objectid"] = decision.objectid if decision.objectid >= 0 else None
    identified = None
    if decision.identified and decision.objectid in rows:
        row = rows[decision.objectid]
        identified = {"objectid": decision.objectid, "title": _text(row.get("title")),
                      "attribution": _text(row.get("artist")), "confidence": verdict["confidence"]}
    return {"identified": identified, "identification": verdict}


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def load_calibration(lake: Any, generation: str) -> tuple[Calibration | None, str | None]:
    """(the generation's calibration, None) or (None, a note saying why there is none): absent (an older
    generation), or its file damaged (checksum mismatch, unreadable): then it counts as missing."""
    try:
        blob = read_generation_file(lake, generation, CALIBRATION_FILE)
        if blob is None:
            return None, NO_CALIBRATION_NOTE
        return Calibration.from_bytes(blob), None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"{NO_CALIBRATION_NOTE} ({type(exc).__name__}: {str(exc)[:160]})"


__all__ = [
    "CALIBRATION_FILE", "Calibration", "Decision", "GEOMETRY_CANDIDATES", "MIN_INLIERS", "NO_CALIBRATION_NOTE",
    "PhotoEvidence", "VIEWS", "decide_all", "fit_calibration", "fit_views", "identify_photo", "load_calibration",
]
