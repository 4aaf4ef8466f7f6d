"""The web tests' small lake (:mod:`artsim_pipeline_tests.web_lake`) with an identification calibration: its
generation published again with ``identify.json``, measured like ``faiss_index`` does (simulated photos of its
paintings through the lake's backbone, random-weight ``mobilenet_v2``). A few seconds; no Dagster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from artsim_pipeline.core.generations import load_generation, publish_generation
from artsim_pipeline.core.identify import CALIBRATION_FILE
from artsim_pipeline.core.identify_measure import calibrate_collection
from artsim_pipeline.core.lake import DataLake
from artsim_pipeline.core.models import load_model
from artsim_pipeline_tests.nga_fixtures import NGA_MIRROR
from artsim_pipeline_tests.web_lake import MODEL, N_PAINTINGS, build_web_lake, painting_rows


def calibrate(lake: DataLake) -> str:
    """Publish the served generation again, with its identification calibration; returns the new generation."""
    generation = load_generation(lake)
    parts = {variant: (generation.fusions[variant], bundle) for variant, bundle in generation.bundles.items()}
    uuids = dict(zip(painting_rows()["objectid"].tolist(), painting_rows()["uuid"].tolist()))

    def image_of(objectid: int):
        with Image.open(lake.image_path(uuids[int(objectid)])) as image:
            return image.convert("RGB")

    fusion, bundle = parts["full"]
    calibration = calibrate_collection(bundle, fusion, [load_model(MODEL, weights="random", device="cpu")], "fp32",
                                       image_of)
    return publish_generation(lake, parts, files={CALIBRATION_FILE: calibration.to_bytes()}).generation


def build_identify_lake(root: Path) -> tuple[DataLake, np.ndarray]:
    lake, raw = build_web_lake(root)
    calibrate(lake)
    return lake, raw


def outside_images(n: int = 3) -> list[Path]:
    """Images of the shared mirror that are not in the web lake (it holds the first ``N_PAINTINGS``); [] without it."""
    files = sorted((NGA_MIRROR / "images").glob("*.jpg")) if (NGA_MIRROR / "images").is_dir() else []
    return files[N_PAINTINGS + 40:N_PAINTINGS + 40 + n] if len(files) >= N_PAINTINGS + 40 + n else []


def with_near_duplicate(lake: DataLake, copy: int, of: int) -> None:
    """Make painting ``copy``'s image another image of painting ``of`` (its file re-encoded as a JPEG at quality 80)
    and publish the generation again (fused afresh, explanations included); then :func:`calibrate` it."""
    import io

    from artsim_pipeline_tests.web_lake import publish, raw_blocks

    frame = painting_rows()
    uuids = dict(zip(frame["objectid"].tolist(), frame["uuid"].tolist()))
    with Image.open(lake.image_path(uuids[of])) as image:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=80)
    lake.image_path(uuids[copy]).write_bytes(buffer.getvalue())
    blocks = raw_blocks(lake, frame)
    publish(lake, blocks[MODEL], frame["objectid"].to_numpy(np.int64), blocks=blocks)
    calibrate(lake)
