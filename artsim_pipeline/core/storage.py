"""Data-lake layout, safe ids and atomic file writes (plain Python, no Dagster)."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

_UMASK = os.umask(0)
os.umask(_UMASK)

_SAFE_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")


class InvalidIdError(ValueError):
    """An id (uuid, batch key, model name) is not safe to use as a file name."""


def safe_id(value: object, what: str = "id") -> str:
    """Return ``value`` as a string if it is safe as a single path component, else raise."""
    text = str(value)
    if not _SAFE_ID.match(text) or ".." in text:
        raise InvalidIdError(f"{what} {text!r} is not a safe identifier (letters, digits, '_', '-', '.')")
    return text


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temp path beside ``target``; on success it replaces ``target`` atomically.

    On any exception the temp file is removed and ``target`` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; published files get the usual mode
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically (temp file + fsync + rename)."""
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_text(target: Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``target`` atomically."""
    atomic_write_bytes(target, text.encode("utf-8"))


def _fusion_name(variant: str) -> str:
    """File name of one variant's fitted standardisation + PCA (``fusion_full.npz``)."""
    return f"fusion_{safe_id(variant, 'variant')}.npz"


@dataclass(frozen=True)
class DataLake:
    """Where every artsim artefact lives under one root (``ARTSIM_DATA_LAKE``)."""

    root: Path

    @property
    def catalog_db(self) -> Path:
        return self.root / "catalog.duckdb"

    def raw_dir(self, source_version: str) -> Path:
        return self.root / "raw" / safe_id(source_version, "source version")

    @property
    def filtered_paintings_parquet(self) -> Path:
        return self.root / "tables" / "filtered_paintings.parquet"

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    def image_path(self, uuid: str) -> Path:
        return self.images_dir / f"{safe_id(uuid, 'image uuid')}.jpg"

    @property
    def image_status_dir(self) -> Path:
        return self.root / "image_status"

    def image_status_path(self, batch: str) -> Path:
        return self.image_status_dir / f"{safe_id(batch, 'batch key')}.parquet"

    @property
    def faces_dir(self) -> Path:
        return self.root / "faces"

    def faces_path(self, batch: str) -> Path:
        return self.faces_dir / f"{safe_id(batch, 'batch key')}.parquet"

    def embeddings_path(self, model: str, batch: str) -> Path:
        return self.root / "embeddings" / safe_id(model, "model name") / f"{safe_id(batch, 'batch key')}.parquet"

    @property
    def index_dir(self) -> Path:
        """Everything search serves: generations, the ``CURRENT`` pointer, the staged fusion."""
        return self.root / "index"

    # The searchable state (fusion + FAISS bundle of every variant + a manifest) is one *generation*
    # directory; ``index/CURRENT`` names the one served and is the only thing a swap replaces.
    @property
    def index_pointer_path(self) -> Path:
        """``index/CURRENT``: the id of the served generation (one line, replaced atomically)."""
        return self.index_dir / "CURRENT"

    @property
    def index_lock_path(self) -> Path:
        """Lock file serialising generation publishes (and their clean-up)."""
        return self.index_dir / ".lock"

    @property
    def generations_dir(self) -> Path:
        return self.index_dir / "generations"

    def generation_dir(self, generation: str) -> Path:
        """One complete, never-modified generation: ``index/generations/<id>/``."""
        return self.generations_dir / safe_id(generation, "index generation")

    def generation_manifest_path(self, generation: str) -> Path:
        """The generation's manifest (models, dims, counts, created time, file checksums)."""
        return self.generation_dir(generation) / "generation.json"

    def generation_fusion_path(self, generation: str, variant: str) -> Path:
        """Fitted standardisation + PCA of one variant (``full`` or ``face``) in a generation."""
        return self.generation_dir(generation) / _fusion_name(variant)

    def generation_index_path(self, generation: str, variant: str) -> Path:
        """FAISS bundle directory (``manifest.json`` + files) of one variant in a generation."""
        return self.generation_dir(generation) / safe_id(variant, "variant")

    # ``pca_model``'s output: fitted fusions waiting for ``faiss_index`` to build a generation on them.
    # Never read by search.
    @property
    def staged_pointer_path(self) -> Path:
        """``index/STAGED``: the id of the fusion set ``faiss_index`` builds the next generation from."""
        return self.index_dir / "STAGED"

    @property
    def staging_dir(self) -> Path:
        return self.index_dir / "staging"

    def staged_dir(self, stage: str) -> Path:
        return self.staging_dir / safe_id(stage, "staged fusion id")

    def staged_manifest_path(self, stage: str) -> Path:
        return self.staged_dir(stage) / "staged.json"

    def staged_fusion_path(self, stage: str, variant: str) -> Path:
        return self.staged_dir(stage) / _fusion_name(variant)

    def legacy_index_paths(self, variants: tuple[str, ...] = ("full", "face")) -> list[Path]:
        """Files of the pre-generation layout (``index/fusion_<v>.npz``, ``index/<v>/``), removed on publish."""
        out: list[Path] = []
        for variant in variants:
            out += [self.index_dir / _fusion_name(variant), self.index_dir / safe_id(variant, "variant")]
        return out

    @property
    def collection_map_path(self) -> Path:
        """``collection_map``: 2-D layout of the served generation's vectors (objectid, x, y)."""
        return self.root / "tables" / "collection_map.parquet"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster_home"

