"""The data lake's paths: where every artefact lives (plain Python, no Dagster).

:class:`DataLake` is the one home of the lake's paths (every module asks it, none rebuilds a path); the
file primitives they are read and written with (atomic writes, Parquet reads, object-store paths) are in
:mod:`~artsim_pipeline.core.storage`. A lake is local (a directory) or on an object store
(``s3://bucket/prefix``) with the same paths; what cannot live on an object store (``catalog.duckdb``,
Dagster's home, the index publish lock) lives in :attr:`DataLake.work_dir`.

:func:`lake_for` is the one way from the settings to their lake (absolute local paths, the settings'
object-store timeouts); :func:`lake_at` opens a lake from a location alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .storage import LakePath, ObjectStoreOptions, is_remote, lake_path, safe_id

#: Where ``catalog.duckdb``, ``dagster_home`` and the index lock live with an object-store lake (relative: cwd).
DEFAULT_WORK_DIR = Path("artsim_work")


def _fusion_name(variant: str) -> str:
    """File name of one variant's fitted standardisation + PCA (``fusion_full.npz``)."""
    return f"fusion_{safe_id(variant, 'variant')}.npz"


@dataclass(frozen=True)
class DataLake:
    """Where every artsim artefact lives under one root (``ARTSIM_DATA_LAKE``: a directory or ``s3://...``).

    ``work`` is the local working directory of a remote lake (``catalog.duckdb``, ``dagster_home``, the
    index lock); default :data:`DEFAULT_WORK_DIR`. A local lake keeps them in its root.
    """

    root: LakePath
    work: Path | None = field(default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", lake_path(self.root))

    @property
    def is_remote(self) -> bool:
        """True when the lake is on an object store."""
        return is_remote(self.root)

    @property
    def work_dir(self) -> Path:
        """Local directory of the files that cannot live on an object store (the root, for a local lake)."""
        if not self.is_remote:
            return self.root
        return Path(self.work) if self.work is not None else DEFAULT_WORK_DIR

    @property
    def catalog_db(self) -> Path:
        return self.work_dir / "catalog.duckdb"

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

    @property
    def embeddings_dir(self) -> Path:
        """``embeddings/<model>/<batch>.parquet``: one folder per model."""
        return self.root / "embeddings"

    def embeddings_model_dir(self, model: str) -> Path:
        return self.embeddings_dir / safe_id(model, "model name")

    def embeddings_path(self, model: str, batch: str) -> Path:
        return self.embeddings_model_dir(model) / f"{safe_id(batch, 'batch key')}.parquet"

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
        """Lock file serialising generation publishes (and their clean-up) on this machine.

        A remote lake's lock is local (``<work_dir>/index.lock``): publishes from several machines are
        serialised by Dagster instead (one ``faiss_index`` run at a time).
        """
        return self.work_dir / "index.lock" if self.is_remote else self.index_dir / ".lock"

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

    @property
    def similarity_head_path(self) -> LakePath:
        """``similarity_head``'s output (``index/similarity_head.npz``): the learned projection, for the staged
        fusion its ``info`` names; ``faiss_index`` folds it into the full fusion it publishes."""
        return self.index_dir / "similarity_head.npz"

    def legacy_index_paths(self, variants: tuple[str, ...] = ("full", "face")) -> list[Path]:
        """Files of the pre-generation index format (``index/fusion_<v>.npz``, ``index/<v>/``), removed on publish."""
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
        return self.work_dir / "dagster_home"


def lake_at(location: Path | str, work_dir: Path | str | None = None, *, absolute: bool = False,
            store: ObjectStoreOptions | None = None) -> DataLake:
    """The lake at ``location`` (a directory or an ``s3://bucket/prefix`` URL) with its ``work_dir``.

    With ``absolute``, local paths (the root, the work directory) are made absolute. ``store`` are the
    object-store client's timeout and retries (an ``s3://`` lake; default :class:`.storage.ObjectStoreOptions`).
    A local ``location`` that is a file is a :class:`NotADirectoryError` naming ``ARTSIM_DATA_LAKE``.
    Code that has the settings opens the lake with :func:`lake_for`.
    """
    root = lake_path(location, store)
    if is_remote(root):
        work = Path(work_dir) if work_dir is not None else DEFAULT_WORK_DIR
        return DataLake(root, work.expanduser().resolve() if absolute else work)
    if root.expanduser().exists() and not root.expanduser().is_dir():
        raise NotADirectoryError(f"ARTSIM_DATA_LAKE={location} is a file, not a directory: point ARTSIM_DATA_LAKE "
                                 "at a directory (it is created when missing)")
    return DataLake(root.expanduser().resolve() if absolute else root)


class LakeSettings(Protocol):
    """What :func:`lake_for` reads of the settings (:class:`artsim_pipeline.config.Settings` has them)."""

    data_lake: Path | str
    work_dir: Path
    http_timeout_s: float
    http_retries: int


def lake_for(settings: LakeSettings) -> DataLake:
    """The data lake the settings name: the one way from settings to the lake (``ARTSIM_DATA_LAKE``,
    ``ARTSIM_WORK_DIR``; an object store's client with ``ARTSIM_HTTP_TIMEOUT`` / ``ARTSIM_HTTP_RETRIES``).

    Local paths are always absolute: a path handed to a subprocess, a Dagster run (which may start in
    another working directory), metadata or a log then names the same file everywhere, and every caller gets
    the same lake from the same settings. The timeouts go with this lake's paths only; building settings
    changes nothing else.
    """
    store = ObjectStoreOptions(timeout_s=settings.http_timeout_s, retries=settings.http_retries)
    return lake_at(settings.data_lake, settings.work_dir, absolute=True, store=store)
