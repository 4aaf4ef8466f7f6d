"""``embeddings_<model>``: one partitioned asset per selected backbone (``ARTSIM_MODELS``).

Each writes ``<data_lake>/embeddings/<model>/<batch>.parquet`` (objectid, uuid, variant, vector). Its
``code_version`` names the model, the weights and the precision, so changing one model re-runs only
that model's embeddings and what is downstream. The set of models shapes the graph and is fixed when
the code location loads. Torch is imported when a batch runs, not when the code location loads.
"""

import functools
import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, AssetsDefinition, DataVersion, MaterializeResult, MetadataValue, asset

from ..automation import batch_step
from ..code_versions import code_version
from ..config import Settings
from ..core.embedding_store import embed_batch_to_parquet, read_embedding_blocks
from ..core.generations import REQUIRED_VARIANT
from ..core.lake_reads import usable_images
from ..core.storage import read_parquet
from ..core.lake import DataLake
from ..partitions import image_batches
from ..resources import ArtsimRuntimeResource, lake_for
from . import checks
from .common import OWNERS, lake_path, progress_logger, share_cores
from ..deploy import tags

log = logging.getLogger(__name__)

BF16_CHECK_IMAGES = 8


def weights_tag(weights: str) -> str:
    """Short, stable tag of a weights setting for code versions (a file: its size and mtime)."""
    if weights in ("pretrained", "random"):
        return weights
    path = Path(weights).expanduser()
    stat = path.stat() if path.is_file() else None
    raw = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}" if stat else str(path)
    return "file-" + hashlib.sha256(raw.encode()).hexdigest()[:10]


@functools.lru_cache(maxsize=4)
def cached_model(name: str, weights: str, device: str):
    """Load a model once per process (``artsim run`` materializes many batches in one process)."""
    # torch (core.models) here: every step's process loads the definitions; only an embeddings step needs torch
    from ..core.models import load_model

    return load_model(name, weights=weights, device=device)


def batch_images(lake: DataLake, batch: str) -> pd.DataFrame:
    """The batch's usable images with their face crop boxes (columns for ``embed_batch_to_parquet``)."""
    usable = usable_images(lake, batch)[["objectid", "uuid", "path"]]
    faces = read_parquet(lake.faces_path(batch), columns=["objectid", "crop_x0", "crop_y0", "crop_x1", "crop_y1"])
    return usable.merge(faces, on="objectid", how="left").reset_index(drop=True)


def _check_vectors(path: Path, expected_rows: int, expected_width: int, model: str):
    """The ``embeddings_valid`` check of a written batch file: rows, finite values and width of ``full``."""
    meta, blocks = read_embedding_blocks(path, blocks=["final"])
    final = blocks.get("final", np.zeros((0, 0), dtype=np.float32))
    full = final[(meta["variant"] == REQUIRED_VARIANT).to_numpy()] if len(meta) else final[:0]
    finite = int(np.isfinite(full).all(axis=1).sum()) if full.size else 0
    width = int(full.shape[1]) if full.ndim == 2 and len(full) else 0
    return checks.embeddings_result(expected_rows, len(full), finite, width, expected_width, model)


def embeddings_asset(model_name: str, settings: Settings) -> AssetsDefinition:
    """Build the ``embeddings_<model_name>`` asset."""
    lake = lake_for(settings)
    version = code_version("embeddings", settings, model=model_name, weights_file=weights_tag(settings.weights))

    @asset(
        name=f"embeddings_{model_name}",
        partitions_def=image_batches,
        deps=["face_crops"],
        code_version=version,
        group_name="embeddings",
        kinds={"pytorch", "parquet"},
        owners=OWNERS,
        pool=tags.pool("embeddings"), op_tags=tags.op_tags("embeddings"),
        automation_condition=batch_step(),
        check_specs=[checks.spec(
            checks.EMBEDDINGS_VALID, f"embeddings_{model_name}", partitions_def=image_batches,
            description=f"One finite {model_name} vector of the expected width per usable image of the batch "
            "(variant full); a failure keeps this batch's new vectors out of the index (blocking).")],
        description=f"{model_name} features (classification head removed) of each image "
        "(variant `full`) and of its face crop (variant `face`), one Parquet file per batch.",
    )
    def _embeddings(context: AssetExecutionContext, artsim: ArtsimRuntimeResource) -> MaterializeResult:
        # torch (core.embedding, core.models) here: every step's process loads the definitions; only this one needs it
        from ..core.embedding import BF16_MIN_COSINE, check_bf16
        from ..core.models import resolve_device

        batch = context.partition_key
        run_settings = artsim.apply(settings)  # the one settings object below: this run's knobs included
        device = str(resolve_device(run_settings.device))
        threads = share_cores(context, run_settings.executor)
        model = cached_model(model_name, run_settings.weights, device)
        images = batch_images(lake, batch)
        precision, bf16_cosine = run_settings.precision, None
        if precision == "bf16" and len(images):
            bf16_cosine = check_bf16(model, images["path"].head(BF16_CHECK_IMAGES).tolist())
            if bf16_cosine < BF16_MIN_COSINE:
                context.log.warning(f"{model_name}: bf16 cosine {bf16_cosine:.4f} < {BF16_MIN_COSINE}; using fp32")
                precision = "fp32"
        if model.weights_id == "random":
            context.log.warning(f"{model_name} has RANDOM weights: these embeddings are meaningless (tests only)")
        result = embed_batch_to_parquet(
            model, images, lake, batch, batch_size=run_settings.embed_batch_size, precision=precision,
            progress=progress_logger(context, batch), reuse_version=version,  # unchanged images: vectors reused
        )
        log.info(f"{model_name} {batch}: {result.rows} vectors ({result.encoded} encoded, {result.reused} reused), "
                 f"{result.images_per_s:.1f} vectors/s")
        check = _check_vectors(result.path, expected_rows=len(images), expected_width=model.dim, model=model_name)
        return MaterializeResult(
            metadata={
                "model": model_name,
                "dim": MetadataValue.int(model.dim),
                "weights": model.weights_id,
                "precision": precision,
                "bf16_min_cosine": MetadataValue.float(round(bf16_cosine, 5)) if bf16_cosine is not None else "not checked",
                "images": MetadataValue.int(result.images),
                "full_vectors": MetadataValue.int(result.full_rows),
                "face_vectors": MetadataValue.int(result.face_rows),
                "encoded": MetadataValue.int(result.encoded),
                "reused": MetadataValue.int(result.reused),
                "seconds": MetadataValue.float(round(result.seconds, 2)),
                "vectors_per_s": MetadataValue.float(round(result.images_per_s, 2)),
                "torch_threads": MetadataValue.int(threads),
                "parquet": lake_path(lake, result.path),
            },
            data_version=DataVersion(hashlib.sha256(result.path.read_bytes()).hexdigest()[:16]),
            check_results=[check],
        )

    return _embeddings


def embeddings_assets(settings: Settings) -> list[AssetsDefinition]:
    """One embeddings asset per model in ``ARTSIM_MODELS``."""
    return [embeddings_asset(name, settings) for name in settings.models]
