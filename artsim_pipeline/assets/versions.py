"""Code versions and the settings each asset depends on.

Bump an asset's code version when its logic changes; Dagster then shows it and its dependents as
stale. ``config_fingerprint`` hashes only the settings an asset reads, so changing, say, the models
invalidates the embeddings but not the image cache.
"""

from __future__ import annotations

import hashlib
import json

from ..config import Settings

CODE_VERSIONS: dict[str, str] = {
    "raw_objects": "1",
    "filtered_paintings": "1",
    "image_cache": "1",
    "face_crops": "1",
    "embeddings": "1",
    "pca_model": "1",
    "faiss_index": "1",
    "eval_report": "1",
}

CONFIG_DEPENDENCIES: dict[str, tuple[str, ...]] = {
    "raw_objects": (),  # the source location shows up through nga_opendata's data version
    "filtered_paintings": ("min_side", "limit", "batch_size"),
    "image_cache": ("image_size", "min_side"),
    "face_crops": ("face_threshold", "face_margin", "face_max_side"),
    "embeddings": ("weights", "precision"),
    "pca_model": ("models", "pca_dim"),
    "faiss_index": (),
    "eval_report": ("models", "weights", "pca_dim"),
}


def config_fingerprint(asset_name: str, settings: Settings, **extra: object) -> str:
    """Short hash of the settings ``asset_name`` depends on (plus ``extra`` values)."""
    values = settings.as_dict()
    chosen = {name: values[name] for name in CONFIG_DEPENDENCIES[asset_name]} | {k: str(v) for k, v in extra.items()}
    return hashlib.sha256(json.dumps(chosen, sort_keys=True, default=str).encode()).hexdigest()[:12]


def asset_config_fingerprint(asset_name: str, settings: Settings) -> str:
    """The fingerprint an asset records, by asset name (``embeddings_<model>`` adds its model)."""
    if asset_name.startswith("embeddings_"):
        return config_fingerprint("embeddings", settings, model=asset_name.removeprefix("embeddings_"))
    return config_fingerprint(asset_name, settings)
