"""Code versions: what Dagster compares to decide that an asset's logic or output-shaping settings changed.

Each asset's ``code_version`` is its logic version (bump it when the code changes) plus a short hash of
the settings that change what it computes (:data:`OUTPUT_SETTINGS`). Those settings are fixed when the
code location loads (``ARTSIM_*`` variables), so Dagster's own staleness (the UI's badges, the
automation conditions and ``artsim run``) sees a change of, say, ``ARTSIM_FACE_THRESHOLD`` as a new
code version of ``face_crops`` and re-runs it and what depends on it, and nothing else.
Run-time knobs that never change an output (download workers, rate limits, retries, device, embedding
batch size) live in the ``artsim`` resource instead (:mod:`artsim_pipeline.resources`).
"""

from __future__ import annotations

import hashlib
import json

from .config import Settings, settings_shaping

CODE_VERSIONS: dict[str, str] = {
    "nga_opendata": "1",  # the observable source: a new ARTSIM_NGA_SOURCE makes the automation observe it
    "raw_objects": "1",
    "filtered_paintings": "4",  # 4: artist_key is normalize_artist (the one artist label)
    "batch_views": "1",
    "image_cache": "2",
    "face_crops": "2",
    "embeddings": "3",  # bump when a registry entry's taps (core/models.py) change
    "pca_model": "3",
    "faiss_index": "6",  # 3: database-side augmented vectors stored with each index; 4: explanations too; 5: identify;
    # 6: identification's geometric check (its calibration is made anew)
    "similarity_head": "1",
    "eval_report": "6",  # 4: the per-refresh part only; the rest is eval_study's; 5: re-ranking (ARTSIM_RERANK);
    # 6: the chance level of style relevance exact (was simulated)
    "eval_study": "3",  # 2: the re-ranking study; 3: ablations of whitening with shrinkage and of power normalisation
    "collection_map": "2",
}

#: Per asset, the output settings that shape it: derived from each setting's declaration (``shapes`` in
#: :mod:`artsim_pipeline.config`). ``embeddings`` adds the model name and weights file (see embeddings.py).
OUTPUT_SETTINGS: dict[str, tuple[str, ...]] = {asset: settings_shaping(asset) for asset in CODE_VERSIONS}


def settings_fingerprint(names: tuple[str, ...], settings: Settings, **extra: object) -> str:
    """Short hash of the named settings (plus ``extra`` values)."""
    values = settings.as_dict()
    chosen = {name: values[name] for name in names} | {k: str(v) for k, v in extra.items()}
    return hashlib.sha256(json.dumps(chosen, sort_keys=True, default=str).encode()).hexdigest()[:10]


def code_version(asset_name: str, settings: Settings, **extra: object) -> str:
    """``<logic version>`` or ``<logic version>-<settings hash>`` for ``asset_name`` (``embeddings`` for
    every ``embeddings_<model>``)."""
    names = OUTPUT_SETTINGS[asset_name]
    if not names and not extra:
        return CODE_VERSIONS[asset_name]
    return f"{CODE_VERSIONS[asset_name]}-{settings_fingerprint(names, settings, **extra)}"
