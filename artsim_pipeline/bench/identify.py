"""``artsim bench identify``: does a photo of a painting get identified, and a photo of another painting not?

On the served index generation of a data lake (``--data-lake``, default ``ARTSIM_DATA_LAKE``) with its stored
identification calibration (:mod:`artsim_pipeline.core.identify`):

* a seeded sample of ``--paintings`` indexed paintings (seed ``--seed``, default 1000: held out from the
  calibration's seed 0, so these photos are not the ones the threshold was set on), one simulated photo of each
  with every distortion (:mod:`artsim_pipeline.core.photo_sim`), embedded with the index's backbones and fusion;
* **members** — each photo against the whole index: top-1 accuracy (the whole photo's top-1 painting is its
  source), the share identified, identified-and-correct, the share identified by the geometric check (ORB +
  RANSAC against the candidates' images), and wrong identifications (identified as another painting);
* **non-members** — the same photo with its source painting left out of the index (leave-one-out, as the
  evaluation does): the share identified as another work (a false identification: that painting is "not in the
  collection"), and, apart, the share identified as another image of the same work (a second scan or a replica
  that the collection holds, :func:`~artsim_pipeline.core.photo_match.same_work`: right, not false);
* per distortion and overall; targets (overall): identified-and-correct >= 0.90 of member photos, non-members
  identified <= 0.01;
* **latency** — ``--latency-photos`` of the member photos through :meth:`SearchEngine.search` (JPEG bytes, k=10:
  decoding, embedding, identification, re-ranking, explanations; what ``POST /api/search`` runs), p50 and p90
  per photo; each search's verdict is checked against the measured one (``search_agrees``).

Prints a table and writes JSON (``--out``, default ``<data_lake>/reports/bench_identify.json``) with the load
average before and after and the CPU count.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from artsim_pipeline.core.storage import atomic_write_text

TARGET_IDENTIFIED_CORRECT = 0.90
TARGET_NON_MEMBER_IDENTIFIED = 0.01


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="artsim bench identify", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-lake", type=Path, help="the lake to measure (default: ARTSIM_DATA_LAKE)")
    parser.add_argument("--paintings", type=int, default=60, help="paintings photographed (default %(default)s)")
    parser.add_argument("--seed", type=int, default=1000, help="sample and photo seed (default %(default)s)")
    parser.add_argument("--latency-photos", type=int, default=40, help="photos timed end to end (default %(default)s)")
    parser.add_argument("--out", type=Path, help="JSON report (default <data_lake>/reports/bench_identify.json)")
    return parser


def photos_of(engine: Any, paintings: int, seed: int) -> tuple[list[bytes], list[int], list[str]]:
    """One simulated photo (a JPEG file) per sampled painting and distortion
    (:data:`~artsim_pipeline.core.photo_sim.DISTORTIONS`)."""
    from PIL import Image

    from artsim_pipeline.core.generations import REQUIRED_VARIANT
    from artsim_pipeline.core.identify_measure import sample_paintings
    from artsim_pipeline.core.photo_sim import DISTORTIONS, simulate_photo_bytes

    photos, sources, kinds = [], [], []
    for i, oid in enumerate(sample_paintings(engine.variants[REQUIRED_VARIANT].bundle.ids, paintings, seed).tolist()):
        path = engine.image_path(int(oid))
        if path is None or not path.is_file():
            continue
        with Image.open(path) as image:
            painting = image.convert("RGB")
        for j, distortion in enumerate(DISTORTIONS):
            photos.append(simulate_photo_bytes(painting, distortion, seed * 1_000_003 + i * len(DISTORTIONS) + j))
            sources.append(int(oid))
            kinds.append(distortion)
    return photos, sources, kinds


def verdicts(engine: Any, vectors: list[np.ndarray], photos: list[Any], sources: list[int]) -> dict[str, np.ndarray]:
    """Per photo (its views' vectors, :data:`~artsim_pipeline.core.identify.VIEWS`, and the decoded photo for the
    geometric check): member top-1 correct (the whole photo's embedding), identified, identified-and-correct,
    identified by geometry; non-member (its painting left out) identified. The rule is the served one
    (:func:`~artsim_pipeline.core.identify.decide_all` on :func:`~artsim_pipeline.core.identify_measure.measure_photos`)."""
    from artsim_pipeline.core.generations import REQUIRED_VARIANT
    from artsim_pipeline.core.identify import decide_all
    from artsim_pipeline.core.identify_measure import measure_photos
    from artsim_pipeline.core.photo_match import keypoints, same_work

    calibration, bundle = engine.calibration, engine.variants[REQUIRED_VARIANT].bundle
    src = np.asarray(sources, dtype=np.int64)
    points = [keypoints(photo) for photo in photos] if calibration.uses_geometry else None
    k = calibration.geometry_candidates or 2
    measured = measure_photos(bundle, vectors, points, engine.painting_keypoints, candidates=k)
    member = decide_all(calibration, measured)
    outsider = decide_all(calibration, measure_photos(bundle, vectors, points, engine.painting_keypoints,
                                                      exclude=sources, candidates=k))
    identified = np.array([d.identified for d in member], dtype=bool)
    named = np.array([d.objectid for d in member], dtype=np.int64)
    twin = np.array([d.identified and same_work(engine.painting_keypoints, s, d.objectid)
                     for d, s in zip(outsider, sources)], dtype=bool)
    return {"top1": measured.best[:, 0] == src, "identified": identified, "correct": identified & (named == src),
            "wrong": identified & (named != src), "geometry": np.array([d.basis == "geometry" for d in member], bool),
            "non_member": np.array([d.identified for d in outsider], dtype=bool) & ~twin, "same_work": twin}


def table_rows(kinds: list[str], measured: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    labels = np.asarray(kinds)
    rows = []
    for name in [*dict.fromkeys(kinds), "all"]:
        pick = np.ones(len(labels), bool) if name == "all" else labels == name
        row = {"distortion": name, "photos": int(pick.sum())}
        for key, column in (("top1_accuracy", "top1"), ("identified", "identified"),
                            ("identified_correct", "correct"), ("by_geometry", "geometry"),
                            ("wrong_identified", "wrong"), ("non_member_same_work", "same_work"),
                            ("non_member_identified", "non_member")):
            row[key] = round(float(measured[column][pick].mean()), 4) if pick.any() else 0.0
        rows.append(row)
    return rows


def latency(engine: Any, photos: list[bytes], measured: dict[str, np.ndarray], n: int) -> dict[str, Any]:
    """p50/p90 of :meth:`SearchEngine.search` per photo (its JPEG file, k=10) and its verdicts' agreement."""
    times, agree = [], 0
    step = max(1, len(photos) // max(1, n))  # every distortion alike
    for i in range(0, len(photos), step)[:n]:
        started = time.perf_counter()
        response = engine.search(photos[i], k=10)
        times.append((time.perf_counter() - started) * 1000.0)
        agree += (response.identification["verdict"] == "identified") == bool(measured["identified"][i])
    if not times:
        return {"photos": 0}
    return {"photos": len(times), "p50_ms": round(float(np.percentile(times, 50)), 1),
            "p90_ms": round(float(np.percentile(times, 90)), 1), "search_agrees": f"{agree}/{len(times)}"}


def format_table(rows: list[dict[str, Any]]) -> str:
    cols = ("distortion", "photos", "top1_accuracy", "identified", "identified_correct", "by_geometry", "wrong_identified",
            "non_member_identified", "non_member_same_work")
    cells = [[str(r[c]) if not isinstance(r[c], float) else f"{r[c]:.3f}" for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = lambda values: "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths)))
    return "\n".join([line(cols), line(["-" * w for w in widths]), *(line(row) for row in cells)])


def main(argv: list[str] | None = None) -> int:
    from artsim_pipeline.config import Settings
    from PIL import Image

    from artsim_pipeline.core.generations import REQUIRED_VARIANT
    from artsim_pipeline.core.identify_measure import view_vectors
    from artsim_pipeline.core.search import SearchEngine
    from artsim_pipeline.core.search_query import QueryError

    args = build_parser().parse_args(argv)
    if args.paintings < 1 or args.latency_photos < 0:
        print("artsim bench identify: --paintings must be >= 1 and --latency-photos >= 0", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    if args.data_lake is not None:
        settings = settings.with_overrides(data_lake=args.data_lake)
    load_before = os.getloadavg()[0]
    try:
        engine = SearchEngine.from_settings(settings)
    except QueryError as exc:
        print(f"artsim bench identify: {exc}", file=sys.stderr)
        return 2
    if engine.calibration is None:
        print(f"artsim bench identify: {engine.calibration_note}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    photos, sources, kinds = photos_of(engine, args.paintings, args.seed)
    decoded = []
    for data in photos:
        with Image.open(io.BytesIO(data)) as image:
            decoded.append(image.convert("RGB"))
    vectors = view_vectors(engine.models, engine.variants[REQUIRED_VARIANT].fusion, decoded, engine.precision,
                           engine.calibration.views)
    encode_s = time.perf_counter() - started
    measured = verdicts(engine, vectors, decoded, sources)
    rows = table_rows(kinds, measured)
    timing = latency(engine, photos, measured, args.latency_photos)
    overall = rows[-1]
    targets = {"identified_correct": {"target": f">= {TARGET_IDENTIFIED_CORRECT}",
                                      "meets": overall["identified_correct"] >= TARGET_IDENTIFIED_CORRECT},
               "non_member_identified": {"target": f"<= {TARGET_NON_MEMBER_IDENTIFIED}",
                                         "meets": overall["non_member_identified"] <= TARGET_NON_MEMBER_IDENTIFIED}}
    calibration = engine.calibration
    report = {
        "benchmark": "identify", "data_lake": str(engine.lake.root), "generation": engine.generation,
        "models": list(engine.model_names), "paintings": len(set(sources)), "photos": len(photos), "seed": args.seed,
        "calibration": {"threshold": calibration.threshold, "margin_weight": calibration.margin_weight,
                        "geometry_threshold": calibration.geometry_threshold,
                        "geometry_candidates": calibration.geometry_candidates,
                        "views": list(calibration.views),
                        "near_duplicate": calibration.near_duplicate, **calibration.stats},
        "rows": rows, "targets": targets, "latency": timing, "encode_s": round(encode_s, 1),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)},
    }
    print(f"identify on {engine.lake.root} (generation {engine.generation}; {len(set(sources))} paintings x "
          f"{len(photos) // max(1, len(set(sources)))} distortions, seed {args.seed}; threshold "
          f"{calibration.threshold:.4f}, margin weight {calibration.margin_weight:g}; geometry: "
          f"{calibration.geometry_threshold} inliers on {calibration.geometry_candidates} candidates):")
    print(format_table(rows))
    print(f"latency per photo (search, k=10): {json.dumps(timing)}; load {load_before:.2f} -> "
          f"{report['machine']['load_after']:.2f} on {os.cpu_count()} CPUs")
    for name, target in targets.items():
        print(f"target {name} {target['target']}: {'pass' if target['meets'] else 'fail'}")
    out = args.out or engine.lake.root / "reports" / "bench_identify.json"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(out), json.dumps(report, indent=2, default=str))
    print(f"wrote {out}")
    return 0 if all(t["meets"] for t in targets.values()) else 1


__all__ = ["main"]
