"""``pca_model`` (standardise + PCA per variant) and ``faiss_index`` (IVF-Flat / Flat, cosine)."""

import hashlib
import json
import time

from dagster import AssetExecutionContext, AssetsDefinition, DataVersion, MaterializeResult, MetadataValue, asset
from dagster_duckdb import DuckDBResource

from ..config import Settings
from ..core import batches
from ..core.collection import CollectionVectors, load_collection
from ..core.embedding import VARIANTS
from ..core.fusion import fit_fusion, load_fusion, save_fusion, transform
from ..core.index import build_index, save_index
from ..core.storage import DataLake
from ..planning import partitions_fingerprint
from ..resources import ArtsimSettingsResource
from .versions import CODE_VERSIONS, asset_config_fingerprint


def current_catalog(duckdb: DuckDBResource) -> tuple[list[str], list[int]]:
    """Active batch keys and the objectids currently in ``filtered_paintings``."""
    with duckdb.get_connection() as con:
        active = batches.active_batches(con)
        ids = [row[0] for row in con.execute("SELECT objectid FROM filtered_paintings").fetchall()]
    return active, ids


def current_collection(
    artsim: ArtsimSettingsResource, duckdb: DuckDBResource
) -> tuple[Settings, DataLake, list[str], dict[str, CollectionVectors]]:
    """Settings, data lake, active batches and the aligned vectors of the paintings now in the catalog."""
    settings = artsim.settings
    active, ids = current_catalog(duckdb)
    return settings, artsim.lake, active, load_collection(artsim.lake, settings.models, active, keep_ids=ids)


def index_assets(settings: Settings, embedding_assets: list[AssetsDefinition]) -> list[AssetsDefinition]:
    """``pca_model`` and ``faiss_index`` over the selected models' embeddings."""
    embedding_names = [a.key.to_user_string() for a in embedding_assets]

    @asset(
        deps=embedding_assets,
        code_version=CODE_VERSIONS["pca_model"],
        group_name="index",
        description="Per variant (full, face): the models' vectors concatenated, standardised with collection "
        "statistics, balanced per model and reduced by PCA (≤ ARTSIM_PCA_DIM).",
    )
    def pca_model(
        context: AssetExecutionContext, artsim: ArtsimSettingsResource, duckdb: DuckDBResource
    ) -> MaterializeResult:
        started = time.perf_counter()
        run_settings, lake, active, collection = current_collection(artsim, duckdb)
        metadata: dict[str, object] = {}
        versions = []
        for variant in VARIANTS:
            vectors = collection[variant]
            target = lake.fusion_path(variant)
            if len(vectors) < 2:
                target.unlink(missing_ok=True)
                metadata[f"{variant}_images"] = MetadataValue.int(len(vectors))
                continue
            fusion = fit_fusion(vectors.blocks, n_components=run_settings.pca_dim)
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
                "models": ", ".join(run_settings.models),
                "seconds": MetadataValue.float(round(time.perf_counter() - started, 2)),
                "inputs_fingerprint": partitions_fingerprint(context.instance, embedding_names, active),
                "config_fingerprint": asset_config_fingerprint("pca_model", run_settings),
            },
            data_version=DataVersion(hashlib.sha256("".join(versions).encode()).hexdigest()[:16]),
        )

    @asset(
        deps=[pca_model],
        code_version=CODE_VERSIONS["faiss_index"],
        group_name="index",
        description="FAISS inner-product index (IVF-Flat, or Flat when small) over the fused, L2-normalised "
        "vectors of each variant; ids are objectids.",
    )
    def faiss_index(
        context: AssetExecutionContext, artsim: ArtsimSettingsResource, duckdb: DuckDBResource
    ) -> MaterializeResult:
        run_settings, lake, _, collection = current_collection(artsim, duckdb)
        metadata: dict[str, object] = {}
        versions = []
        for variant in VARIANTS:
            vectors = collection[variant]
            if not lake.fusion_path(variant).is_file() or len(vectors) < 2:
                metadata[f"{variant}_size"] = MetadataValue.int(0)
                continue
            fused = transform(load_fusion(lake.fusion_path(variant)), vectors.blocks)
            bundle = build_index(fused, vectors.objectids)
            versions.append(save_index(bundle, lake.index_path(variant)))
            for key in ("index_type", "nlist", "nprobe", "recall_at_10"):
                if key in bundle.info:
                    metadata[f"{variant}_{key}"] = bundle.info[key]
            metadata[f"{variant}_size"] = MetadataValue.int(len(vectors))
        return MaterializeResult(
            metadata={**metadata, "config_fingerprint": asset_config_fingerprint("faiss_index", run_settings)},
            data_version=DataVersion(hashlib.sha256("".join(versions).encode()).hexdigest()[:16]),
        )

    return [pca_model, faiss_index]
