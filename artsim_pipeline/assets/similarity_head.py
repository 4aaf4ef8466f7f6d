"""``similarity_head``: an optional learned projection of the fused vectors (``ARTSIM_EPOCHS`` > 0).

Trained on the staged ``full`` fusion's vectors (no image passes) with the catalog's artist labels
(:mod:`artsim_pipeline.core.head`: supervised contrastive loss, identity start, epochs chosen on held-back
artists). Written to ``<data_lake>/index/similarity_head.npz``; ``faiss_index`` folds it into the ``full``
fusion it publishes, so the index and every query use the projected vectors. The ``face`` variant has
its own fusion space and is served unprojected.

The asset exists only when ``ARTSIM_EPOCHS`` > 0 (a setting that shapes the graph, fixed at load). It is
off by default: on the shared NGA mirror it gained +0.013 P@5 / +0.025 mAP on held-out artists (mean
of 3 splits), short of the +0.03 P@5 that would justify serving it; ``eval_report``'s ``learned`` block
measures it on every run.
"""

import time

import numpy as np
from dagster import AssetExecutionContext, AssetsDefinition, DataVersion, MaterializeResult, MetadataValue, asset

from ..automation import COLLECTION
from ..code_versions import code_version
from ..config import Settings
from ..core.fusion import transform
from ..core.generations import REQUIRED_VARIANT, load_staged_fusions
from ..core.head import save_head, train_head
from ..core.index import sha256_hex
from ..deploy import tags
from ..core.lake_reads import catalog_paintings, current_collection
from ..resources import lake_for
from .common import OWNERS, lake_path


def similarity_head_assets(settings: Settings, pca_model: AssetsDefinition) -> list[AssetsDefinition]:
    """``[similarity_head]`` when ``ARTSIM_EPOCHS`` > 0, else ``[]``."""
    if settings.epochs <= 0:
        return []
    lake = lake_for(settings)

    @asset(
        deps=[pca_model],
        pool=tags.pool("similarity_head"),
        code_version=code_version("similarity_head", settings),
        group_name="index",
        kinds={"pytorch"},
        owners=OWNERS,
        automation_condition=COLLECTION,
        description=f"Linear projection of the fused vectors trained on artist labels (supervised contrastive, "
        f"up to ARTSIM_EPOCHS={settings.epochs} epochs, chosen on held-back artists). faiss_index and search "
        "use the projected vectors.",
    )
    def similarity_head(context: AssetExecutionContext) -> MaterializeResult:
        started = time.perf_counter()
        staged = load_staged_fusions(lake)
        if staged is None or REQUIRED_VARIANT not in staged.fusions:
            raise RuntimeError(f"no staged {REQUIRED_VARIANT} fusion in {lake.staging_dir}; materialize pca_model first")
        vectors = current_collection(lake, settings.models, settings.taps)[REQUIRED_VARIANT]
        fused = transform(staged.fusions[REQUIRED_VARIANT], vectors.blocks)
        paintings = catalog_paintings(lake, columns=["artist_key"])
        artist = dict(zip(paintings["objectid"].astype(int), paintings["artist_key"].fillna("").astype(str)))
        labels = [artist.get(int(oid), "") for oid in vectors.objectids]
        head = train_head(fused, labels, settings.epochs, seed=0)
        head.info["stage"] = staged.stage
        save_head(head, lake.similarity_head_path)
        info = head.info
        context.log.info(f"similarity_head: {info['epochs']} epoch(s) on {info['n_vectors']} paintings by "
                         f"{info['n_artists']} artists in {info['train_seconds']}s")
        return MaterializeResult(
            metadata={
                "epochs_chosen": MetadataValue.int(int(info["epochs"])),
                "max_epochs": MetadataValue.int(settings.epochs),
                "paintings": MetadataValue.int(int(info["n_vectors"])),
                "artists": MetadataValue.int(int(info["n_artists"])),
                "validation_map_identity": MetadataValue.float(float(info.get("validation_map_identity", float("nan")))),
                "validation_map_best": MetadataValue.float(float(info.get("validation_map_best", float("nan")))),
                "train_seconds": MetadataValue.float(float(info["train_seconds"])),
                "seconds": MetadataValue.float(round(time.perf_counter() - started, 2)),
                "staged_fusion": staged.stage,
                "path": lake_path(lake, lake.similarity_head_path),
            },
            data_version=DataVersion(sha256_hex(np.ascontiguousarray(head.weight, dtype=np.float32).tobytes())[:16]),
        )

    return [similarity_head]
