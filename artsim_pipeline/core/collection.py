"""The embedded collection: every model's vectors for the current paintings, aligned per variant.

Plain Python. Reads ``embeddings/<model>/<batch>.parquet`` for the given batches, keeps the objectids
still in the catalog (removed paintings drop out here even when their batch was not re-run) and
aligns the models row by row on (objectid, variant). ``blocks`` holds every fusion block: ``<model>`` (the
final feature) and ``<model>@<module>.<stat>`` for the model's tap features (see :mod:`.fusion`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pandas as pd

from .embedding import FINAL, VARIANTS
from .embedding_store import read_embedding_blocks
from .fusion import block_key, in_tap_set
from .lake import DataLake


@dataclass
class CollectionVectors:
    """One variant's aligned vectors: ``blocks[name]`` is ``[N, width]``, row i is ``objectids[i]``.

    Block names: ``<model>`` and ``<model>@<module>.<stat>`` (see :func:`.fusion.block_key`).
    """

    variant: str
    objectids: np.ndarray
    uuids: np.ndarray
    blocks: dict[str, np.ndarray]

    def __len__(self) -> int:
        return int(len(self.objectids))


def load_collection(
    lake: DataLake, models: Iterable[str], batches: Iterable[str], keep_ids: Iterable[int] | None = None,
    tap_set: str | None = None,
) -> dict[str, CollectionVectors]:
    """Aligned vectors per variant (``full``, ``face``) for ``models`` over ``batches``.

    ``tap_set`` (``none`` | ``mean`` | ``mean+std``) picks the tap blocks loaded beside each final
    feature; ``None`` loads every block the files share. A painting appears in a variant only when
    every model has a vector for it; rows are sorted by objectid. Missing batch files are an error
    naming the file (run the embeddings first).
    """
    models = list(models)
    batches = list(batches)
    keep = None if keep_ids is None else np.asarray(sorted(set(int(i) for i in keep_ids)), dtype=np.int64)
    per_model: dict[str, tuple[pd.DataFrame, dict[str, np.ndarray]]] = {}
    for model in models:
        paths = [lake.embeddings_path(model, batch) for batch in batches]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"embeddings missing for model {model}: {', '.join(missing[:3])}")
        meta, stored = read_embedding_blocks(paths)
        if FINAL not in stored:
            stored[FINAL] = np.zeros((0, 0), dtype=np.float32)
        stored = {name: v for name, v in stored.items() if tap_set is None or in_tap_set(block_key(model, name), tap_set)}
        meta = meta.assign(row=np.arange(len(meta)))
        if keep is not None:
            meta = meta[meta["objectid"].isin(keep)]
        per_model[model] = (meta, stored)
    result: dict[str, CollectionVectors] = {}
    for variant in VARIANTS:
        joined: pd.DataFrame | None = None
        for model in models:
            meta = per_model[model][0]
            part = meta[meta["variant"] == variant][["objectid", "uuid", "row"]].rename(columns={"row": model})
            part = part.drop_duplicates("objectid", keep="last")
            joined = part if joined is None else joined.merge(part.drop(columns="uuid"), on="objectid", how="inner")
        joined = joined.sort_values("objectid").reset_index(drop=True) if joined is not None else pd.DataFrame()
        blocks = {
            block_key(model, name): values[joined[model].to_numpy(dtype=np.int64)]
            for model in models for name, values in per_model[model][1].items()
        }
        result[variant] = CollectionVectors(
            variant=variant,
            objectids=joined["objectid"].to_numpy(dtype=np.int64) if len(joined) else np.zeros(0, np.int64),
            uuids=joined["uuid"].astype(str).to_numpy() if len(joined) else np.zeros(0, dtype=object),
            blocks=blocks,
        )
    return result


def collection_digest(vectors: CollectionVectors) -> str:
    """Content hash of one variant's aligned vectors: objectids and every block's values, in order.

    Equal for equal inputs whatever produced them (a data version for what the fusion is applied to).
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(np.ascontiguousarray(vectors.objectids, dtype=np.int64).tobytes())
    for name in sorted(vectors.blocks):
        block = np.ascontiguousarray(vectors.blocks[name], dtype=np.float32)
        digest.update(f"|{name}|{block.shape}|".encode())
        digest.update(block.tobytes())
    return digest.hexdigest()
