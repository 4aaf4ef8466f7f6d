"""``pca_model`` (standardise + PCA per variant) and ``faiss_index`` (IVF-Flat / Flat, cosine).

Both read the active batches and paintings from ``tables/filtered_paintings.parquet`` (never
``catalog.duckdb``). Heavy imports (FAISS, torch via the embedding reader) happen when they run.
"""

import hashlib
import json
import time

import pandas as pd
from dagster import AssetExecutionContext, AssetsDefinition, DataVersion, MaterializeResult, MetadataValue, asset

from ..automation import COLLECTION
from ..config import Settings
from ..core.storage import DataLake
from ..resources import lake_for
from .versions import code_version

def current_catalog(lake: DataLake) -> tuple[list[str], list[int]]:
    """Active batch keys and the objectids currently in ``filtered_paintings``."""
    paintings = pd.read_parquet(lake.filtered_paintings_parquet, columns=["objectid", "batch_key"])
    return sorted(paintings["batch_key"].dropna().unique().tolist()), paintings["objectid"].astype(int).tolist()


def current_collection(settings: Settings, lake: DataLake) -> dict:
    """The aligned vectors (per variant) of the paintings now in the catalog."""
    from ..core.collection import load_collection

    active, ids = current_catalog(lake)
    return load_collection(lake, settings.models, active, keep_ids=ids)


def index_assets(settings: Settings, embedding_assets: list[AssetsDefinition]) -> list[AssetsDefinition]:
    """``pca_model`` and ``faiss_index`` over the selected models' embeddings."""
    lake = lake_for(settings)

    @asset(
        deps=embedding_assets,
        code_version=code_version("pca_model", settings),
        group_name="index",
        automation_condition=COLLECTION,
        description="Per variant (full, face): the models' vectors concatenated, standardised with collection "
        "statistics, balanced per model and reduced by PCA (≤ ARTSIM_PCA_DIM).",
    )
    def pca_model(context: AssetExecutionContext) -> MaterializeResult:
        from ..core.fusion import fit_fusion, save_fusion

        started = time.perf_counter()
        collection = current_collection(settings, lake)
        metadata: dict[str, object] = {}
        versions = []
        for variant, vectors in collection.items():
            target = lake.fusion_path(variant)
            if len(vectors) < 2:
                target.unlink(missing_ok=True)
                metadata[f"{variant}_images"] = MetadataValue.int(len(vectors))
                continue
            fusion = fit_fusion(vectors.blocks, n_components=settings.pca_dim)
            save_fusion(fusion, target)
            versions.append(hashlib.sha256(target.read_bytes()).hexdigest())
            explained = float(fusion.explained_variance_ratio.sum()) if fusion.explained_variance_ratio is not None else 1.0
            metadata[f"{variant}_images"] = MetadataValue.int(len(vectors))
            metadata[f"{variant}_input_dim"] = MetadataValue.int(fusion.n_features)
            metadata[f"{variant}_output_dim"] = MetadataValue.int(fusion.output_dim)
            metadata[f"{variant}_explained_variance"] = MetadataValue.float(round(explained, 4))
        context.log.info(json.dumps({k: getattr(v, "value", v) for k, v in metadata.items()}))
        return MaterializeResult(
            metadata={
                **metadata,
                "models": ", ".join(settings.models),
                "seconds": MetadataValue.float(round(time.perf_counter() - started, 2)),
            },
            data_version=DataVersion(hashlib.sha256("".join(versions).encode()).hexdigest()[:16]),
        )

    @asset(
        deps=[pca_model],
        code_version=code_version("faiss_index", settings),
        group_name="index",
        automation_condition=COLLECTION,
        description="FAISS inner-product index (IVF-Flat, or Flat when small) over the fused, L2-normalised "
        "vectors of each variant; ids are objectids.",
    )
    def faiss_index(context: AssetExecutionContext) -> MaterializeResult:
        from ..core.fusion import load_fusion, transform
        from ..core.index import build_index, save_index

        collection = current_collection(settings, lake)
        metadata: dict[str, object] = {}
        versions = []
        for variant, vectors in collection.items():
            if not lake.fusion_path(variant).is_file() or len(vectors) < 2:
                metadata[f"{variant}_size"] = MetadataValue.int(0)
                continue
            fused = transform(load_fusion(lake.fusion_path(variant)), vectors.blocks)
            bundle = build_index(fused, vectors.objectids)
            versions.append(save_index(bundle, lake.index_path(variant)))
            for key in ("index_type", "nlist", "nprobe", "recall_at_10"):
                if key in bundle.info:
                    value = bundle.info[key]
                    metadata[f"{variant}_{key}"] = round(value, 4) if isinstance(value, float) else value
            metadata[f"{variant}_size"] = MetadataValue.int(len(vectors))
        return MaterializeResult(
            metadata=metadata,
            data_version=DataVersion(hashlib.sha256("".join(versions).encode()).hexdigest()[:16]),
        )

    return [pca_model, faiss_index]
