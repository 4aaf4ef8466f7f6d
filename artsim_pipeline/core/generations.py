"""Index generations: a fusion model and the FAISS indexes built with it, served as ONE unit (plain Python).

``pca_model`` stages its fitted fusions (:func:`stage_fusions`); ``faiss_index`` builds the indexes with
exactly those fusions and publishes fusions + indexes of every variant as one new generation
(:func:`publish_generation`); readers load one whole generation (:func:`load_generation`). The files and the
swap rule are below; paths come from :class:`~artsim_pipeline.core.lake.DataLake`.

One module (about 530 lines) on purpose: staging, publishing, verifying and loading are the four sides of one
protocol (the files, the publish lock, the pointer files and the swap rule) and must change together; split,
each part would import the others' private helpers. The FAISS and fusion formats themselves live in
:mod:`~artsim_pipeline.core.index` and :mod:`~artsim_pipeline.core.fusion`.
"""

from __future__ import annotations

import calendar
import contextlib
import hashlib
import io
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping


from artsim_pipeline.core.fusion import FusionModel, fusion_fingerprint, load_fusion, save_fusion
from artsim_pipeline.core.index import IndexBundle, read_bundle_manifest, sha256_hex, load_index, save_index
from artsim_pipeline.core.storage import atomic_write_bytes, atomic_write_text, error_line, is_remote, local_tmp_dir, place_dir, readable, remove_tree, safe_id
from artsim_pipeline.core.lake import DataLake

# ---------------------------------------------------------------- generations
#
# The searchable state is swapped as ONE unit. Its files (paths from :class:`DataLake`):
#
#   index/STAGED                      id of the fusion set pca_model fitted last (faiss_index's input)
#   index/staging/<stage>/            fusion_<variant>.npz + staged.json (never read by search)
#   index/CURRENT                     id of the served generation (the only file a swap replaces)
#   index/generations/<generation>/   generation.json + fusion_<variant>.npz + <variant>/ (FAISS bundle)
#
# A generation directory is written under a temporary name, fsynced, renamed into place complete and
# never modified afterwards; then ``CURRENT`` is replaced atomically (temp + fsync + os.replace).
# Readers resolve ``CURRENT`` once and load every variant's fusion and index from that directory, so
# they see one complete generation, old or new, never a mix. The previous generation stays on disk (a
# reader may be loading it); older ones are deleted by the next publish.
#
# Object-store lake (``s3://``): a generation is built in a local temp directory and uploaded under its
# final name, which nothing names until ``CURRENT`` (one PUT, atomic per object) is replaced; a failed
# upload is deleted. The publish lock is local (``DataLake.index_lock_path``): across machines, Dagster
# runs one ``faiss_index`` / ``pca_model`` at a time; as a second guard, clean-up never deletes a remote
# generation younger than an hour (its id starts with its UTC creation time), so two overlapping
# publishes cannot delete each other's new generation.

GENERATION_FORMAT_VERSION = 1
STAGE_FORMAT_VERSION = 1
GENERATION_MANIFEST = "generation.json"
REQUIRED_VARIANT = "full"  # a generation without it cannot answer a query
_TMP_PREFIX = ".tmp-"
_STALE_TMP_SECONDS = 3600.0
_LOAD_ATTEMPTS = 3


class NoGenerationError(FileNotFoundError):
    """The data lake has no published index generation (``index/CURRENT`` is missing)."""


@dataclass
class StagedFusions:
    """Fusions fitted by ``pca_model`` and not yet published: the input of the next generation."""

    stage: str
    fusions: dict[str, FusionModel]
    manifest: dict[str, Any]


@dataclass
class Generation:
    """One loaded generation: every variant's fusion and index, all from the same directory."""

    id: str
    directory: Path
    manifest: dict[str, Any]
    fusions: dict[str, FusionModel]
    bundles: dict[str, IndexBundle]

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(sorted(self.bundles))

    @property
    def content_hash(self) -> str:
        return str(self.manifest["content_hash"])


@dataclass(frozen=True)
class PublishResult:
    """What :func:`publish_generation` did."""

    generation: str  # the generation served now
    content_hash: str  # deterministic hash of what it serves (fusions, id maps, indexes)
    swapped: bool  # False: the served generation already had this content, nothing was written
    previous: str | None  # the generation served before (kept on disk one more round)
    removed: tuple[str, ...] = ()  # older generations deleted


def _fsync_dir(path: Path) -> None:
    """Make a rename / new entry in ``path`` durable (no-op where directories cannot be opened)."""
    if is_remote(path):
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def _publish_lock(lake: DataLake) -> Iterator[None]:
    """Serialise publishes (and their clean-up) across processes; readers never take it."""
    lake.index_lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: no cross-process lock
        yield
        return
    with open(lake.index_lock_path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _read_pointer(path: Path, what: str) -> str | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    if not text:
        return None
    return safe_id(text, what)


def _write_pointer(path: Path, value: str) -> None:
    atomic_write_text(path, value + "\n")  # temp + fsync + os.replace
    _fsync_dir(path.parent)


def _clean_dir(parent: Path, keep: set[str]) -> tuple[str, ...]:
    """Delete entries of ``parent`` not in ``keep``; temp dirs only once stale (a writer may own them)."""
    removed = []
    if not parent.is_dir():
        return ()
    now = time.time()
    for entry in sorted(parent.iterdir(), key=lambda entry: entry.name):
        if entry.name in keep:
            continue
        if is_remote(entry) and _created_within(entry.name, _STALE_TMP_SECONDS, now):
            continue  # maybe another machine's publish in progress (no shared lock on an object store)
        if entry.name.startswith(_TMP_PREFIX):
            if is_remote(entry):  # never written to an object store (temp directories are local)
                continue
            try:
                if now - entry.stat().st_mtime < _STALE_TMP_SECONDS:
                    continue
            except FileNotFoundError:
                continue
        remove_tree(entry)
        if not entry.name.startswith(_TMP_PREFIX):
            removed.append(entry.name)
    return tuple(removed)


def _created_within(generation: str, seconds: float, now: float) -> bool:
    """True when ``generation``'s id (``YYYYmmddTHHMMSSZ-...``) says it was created less than ``seconds`` ago."""
    try:
        created = calendar.timegm(time.strptime(generation[:16], "%Y%m%dT%H%M%SZ"))
    except ValueError:
        return False  # not a generation id (a staged fusion set: content-hash names)
    return now - created < seconds


def _fresh_tmp_dir(parent: Path) -> Path:
    return local_tmp_dir(parent, _TMP_PREFIX)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True).encode("utf-8")


# -- staging (pca_model -> faiss_index) ------------------------------------------------------------

def stage_fusions(lake: DataLake, fusions: Mapping[str, FusionModel],
                  counts: Mapping[str, int] | None = None, fit: Mapping[str, Any] | None = None) -> str:
    """Record ``fusions`` (variant -> fitted model) as the input of the next generation; return its id.

    Search never reads staged fusions, so staging changes nothing that is served. The id is a content
    hash of the fusions and of ``fit`` (how they were obtained: a full fit or the served fit reused,
    :class:`~artsim_pipeline.core.incremental.FitRecord`), so it is deterministic.
    ``index/STAGED`` is replaced atomically to name the new set.
    """
    if not fusions:
        raise ValueError("stage_fusions needs at least one variant's fusion")
    prints = {variant: fusion_fingerprint(model) for variant, model in sorted(fusions.items())}
    keyed = prints if fit is None else {"fusions": prints, "fit": dict(fit)}
    stage = hashlib.sha256(_json_bytes(keyed)).hexdigest()[:32]
    target = lake.staged_dir(stage)
    with _publish_lock(lake):
        previous = _read_pointer(lake.staged_pointer_path, "staged fusion id")
        if not lake.staged_manifest_path(stage).is_file():
            tmp = _fresh_tmp_dir(lake.staging_dir)
            try:
                for variant, model in fusions.items():
                    save_fusion(model, tmp / lake.staged_fusion_path(stage, variant).name)
                manifest = {
                    "format_version": STAGE_FORMAT_VERSION,
                    "stage": stage,
                    "created": _utc_now(),
                    "fingerprints": prints,
                    "counts": {v: int(n) for v, n in (counts or {}).items()},
                    **({"fit": dict(fit)} if fit is not None else {}),
                    "variants": {
                        v: {"models": list(m.model_names), "dims": list(m.dims), "output_dim": m.output_dim}
                        for v, m in sorted(fusions.items())
                    },
                }
                atomic_write_bytes(tmp / lake.staged_manifest_path(stage).name, _json_bytes(manifest))
                _fsync_dir(tmp)
                remove_tree(target)  # a leftover without a manifest
                place_dir(tmp, target, last=(lake.staged_manifest_path(stage).name,))
                _fsync_dir(lake.staging_dir)
            except BaseException:
                remove_tree(tmp)
                raise
        _write_pointer(lake.staged_pointer_path, stage)
        _clean_dir(lake.staging_dir, {stage} | ({previous} if previous else set()))
    return stage


def load_staged_fusions(lake: DataLake) -> StagedFusions | None:
    """The fusions ``index/STAGED`` names (fingerprints verified), or None when nothing is staged."""
    stage = _read_pointer(lake.staged_pointer_path, "staged fusion id")
    if stage is None:
        return None
    manifest = json.loads(lake.staged_manifest_path(stage).read_text(encoding="utf-8"))
    if manifest.get("format_version") != STAGE_FORMAT_VERSION:
        raise ValueError(f"{lake.staged_manifest_path(stage)}: unsupported format {manifest.get('format_version')!r}")
    fusions = {}
    for variant, expected in manifest["fingerprints"].items():
        model = load_fusion(readable(lake.staged_fusion_path(stage, variant)))
        if fusion_fingerprint(model) != expected:
            raise ValueError(f"{lake.staged_fusion_path(stage, variant)}: content does not match {stage}")
        fusions[variant] = model
    return StagedFusions(stage, fusions, manifest)


# -- publish / load --------------------------------------------------------------------------------

def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def current_generation_id(lake: DataLake) -> str | None:
    """The id in ``index/CURRENT`` (None when no generation was ever published)."""
    return _read_pointer(lake.index_pointer_path, "index generation")


def read_generation_manifest(lake: DataLake, generation: str) -> dict[str, Any]:
    """``generation.json`` of one generation (models, dims, counts, created time, checksums)."""
    path = lake.generation_manifest_path(generation)
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format_version") != GENERATION_FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported generation format version {manifest.get('format_version')!r}")
    return manifest


def verify_generation(lake: DataLake, generation: str) -> list[str]:
    """What is wrong with a stored generation (empty when every file matches its recorded sha256)."""
    try:
        manifest = read_generation_manifest(lake, generation)
        variants = manifest["variants"]
    except Exception as exc:  # noqa: BLE001 - missing, not JSON, wrong format
        return [f"{lake.generation_manifest_path(generation)}: {error_line(exc)}"]
    problems = []
    for variant, facts in sorted(variants.items()):
        checks = [(lake.generation_fusion_path(generation, variant), facts.get("fusion_sha256"))]
        root = lake.generation_index_path(generation, variant)
        try:
            bundle = read_bundle_manifest(root)
            checks += [(root / bundle["files"][key], bundle["sha256"][key]) for key in bundle["files"]]
            if bundle["sha256"].get("index") != facts.get("index_sha256"):
                problems.append(f"{root}: its index is not the one {GENERATION_MANIFEST} records")
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{root}: {error_line(exc)}")
        for path, expected in checks:
            try:
                if sha256_hex(path.read_bytes()) != expected:
                    problems.append(f"{path}: checksum does not match the recorded one")
            except OSError as exc:
                problems.append(f"{path}: {type(exc).__name__}")
    for name, expected in sorted((manifest.get("files") or {}).items()):  # e.g. identify.json
        path = lake.generation_dir(generation) / name
        try:
            if sha256_hex(path.read_bytes()) != expected:
                problems.append(f"{path}: checksum does not match the recorded one")
        except OSError as exc:
            problems.append(f"{path}: {type(exc).__name__}")
    if REQUIRED_VARIANT not in variants:
        problems.append(f"{lake.generation_dir(generation)}: no {REQUIRED_VARIANT!r} variant")
    return problems


def read_generation_file(lake: DataLake, generation: str, name: str) -> bytes | None:
    """A generation's extra file ``name`` (``files`` of :func:`publish_generation`), checked against the sha256
    its manifest records; None when the generation has none (older generations). A damaged file raises
    ``ValueError``."""
    expected = (read_generation_manifest(lake, generation).get("files") or {}).get(name)
    if expected is None:
        return None
    path = lake.generation_dir(generation) / name
    blob = path.read_bytes()
    if sha256_hex(blob) != expected:
        raise ValueError(f"{path}: checksum does not match {GENERATION_MANIFEST}")
    return blob


def served_generation_problems(lake: DataLake) -> list[str] | None:
    """Problems of what ``index/CURRENT`` names (:func:`verify_generation`); None when nothing is published."""
    try:
        generation = current_generation_id(lake)
    except Exception as exc:  # noqa: BLE001 - a garbage pointer
        return [f"{lake.index_pointer_path}: {error_line(exc)}"]
    return None if generation is None else verify_generation(lake, generation)


def _check_parts(parts: Mapping[str, tuple[FusionModel, IndexBundle]]) -> None:
    """Raise ValueError unless ``parts`` holds ``full`` and every variant's fusion fits its index."""
    if REQUIRED_VARIANT not in parts:
        raise ValueError(f"a generation needs the {REQUIRED_VARIANT!r} variant (got {sorted(parts)})")
    for variant, (fusion, bundle) in parts.items():
        safe_id(variant, "variant")
        if fusion.output_dim != bundle.index.d:
            raise ValueError(f"{variant}: fusion outputs {fusion.output_dim} dims but the index holds {bundle.index.d}")
        if len(bundle.ids) != bundle.index.ntotal:
            raise ValueError(f"{variant}: {len(bundle.ids)} ids for {bundle.index.ntotal} vectors")


def _write_variant(tmp: Path, variant: str, fusion: FusionModel, bundle: IndexBundle) -> dict[str, Any]:
    """Write one variant's fusion and index into ``tmp``; its manifest entry (sizes, models, hashes)."""
    fusion_name = f"fusion_{variant}.npz"
    save_fusion(fusion, tmp / fusion_name)
    save_index(bundle, tmp / variant)
    _fsync_dir(tmp / variant)
    bundle_manifest = read_bundle_manifest(tmp / variant)
    return {
        "n_vectors": int(len(bundle.ids)),
        "dim": int(bundle.index.d),
        "input_dim": int(fusion.n_features),
        "models": list(fusion.model_names),
        "model_dims": list(fusion.dims),
        "fusion_file": fusion_name,
        "fusion_sha256": sha256_hex((tmp / fusion_name).read_bytes()),
        "fusion_fingerprint": fusion_fingerprint(fusion),
        "index_dir": variant,
        "index_sha256": bundle_manifest["sha256"]["index"],
        "ids_sha256": bundle_manifest["sha256"]["ids"],
        "augmented_sha256": bundle_manifest["sha256"].get("augmented"),
        "explain_sha256": bundle_manifest["sha256"].get("explain"),
        "augmentation": bundle.info.get("augmentation"),
        **{key: bundle.info.get(key) for key in ("index_type", "nlist", "nprobe", "recall_at_10")},
    }


def _write_files(tmp: Path, files: Mapping[str, bytes] | None) -> dict[str, str]:
    """Write the extra ``files`` (name -> bytes) into ``tmp``; their sha256 by name."""
    extra_files = {safe_id(name, "generation file"): blob for name, blob in sorted((files or {}).items())}
    for name, blob in extra_files.items():
        atomic_write_bytes(tmp / name, blob)
    return {name: sha256_hex(blob) for name, blob in extra_files.items()}


def _content_hash(variants: Mapping[str, Mapping[str, Any]], file_hashes: Mapping[str, str]) -> str:
    """The hash of what a generation serves: each variant's fusion, index, ids, augmented and explain hashes
    (and the extra files' hashes, when there are any)."""
    content: dict[str, Any] = {v: {k: d[k] for k in ("fusion_fingerprint", "index_sha256", "ids_sha256",
                                                    "augmented_sha256", "explain_sha256")}
                               for v, d in variants.items()}
    if file_hashes:  # only then: a generation without extra files keeps its earlier content hash
        content = {**content, "files": dict(file_hashes)}
    return hashlib.sha256(_json_bytes(content)).hexdigest()


def _serves_content(lake: DataLake, generation: str, content_hash: str) -> bool:
    """Whether ``generation`` (the served one) holds ``content_hash`` with its files intact (a damaged one
    is replaced)."""
    try:
        served = read_generation_manifest(lake, generation)
    except (FileNotFoundError, ValueError):
        return False
    return served.get("content_hash") == content_hash and not verify_generation(lake, generation)


def _new_generation_id(lake: DataLake, content_hash: str) -> str:
    """A fresh generation id: the UTC time and the content hash (a suffix where that directory exists)."""
    generation = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{content_hash[:12]}"
    if lake.generation_dir(generation).exists():
        generation += f"-{uuid.uuid4().hex[:6]}"
    return generation


def _swap_in(lake: DataLake, tmp: Path, final: Path, generation: str) -> None:
    """Move the complete ``tmp`` to ``final`` (its manifest last), then point ``index/CURRENT`` at it."""
    place_dir(tmp, final, last=(GENERATION_MANIFEST,))  # complete before anyone can name it
    _fsync_dir(lake.generations_dir)
    _write_pointer(lake.index_pointer_path, generation)  # THE swap


def _prune_generations(lake: DataLake, keep: set[str]) -> tuple[str, ...]:
    """Delete the generations not in ``keep`` and the legacy index paths; the generations removed."""
    removed = _clean_dir(lake.generations_dir, keep)
    for legacy in lake.legacy_index_paths():
        if legacy.exists():
            remove_tree(legacy)
    return removed


def publish_generation(
    lake: DataLake,
    parts: Mapping[str, tuple[FusionModel, IndexBundle]],
    *,
    extra: Mapping[str, Any] | None = None,
    files: Mapping[str, bytes] | None = None,
) -> PublishResult:
    """Write ``parts`` (variant -> (fusion, index bundle)) as a new generation and serve it.

    Every variant's fusion must output the dimension its index holds, and ``parts`` must contain
    ``full``. The new directory is complete and durable before ``index/CURRENT`` is swapped; a
    failure at any point leaves the served generation untouched (and no partial directory behind).
    When the served generation already has the same content (fusions, id maps and indexes), nothing
    is written and it stays served. After a swap, generations other than the new and the previous
    one are deleted. ``extra`` is merged into the manifest (e.g. the staged fusion id); ``files`` (name ->
    bytes, e.g. the identification calibration) are written into the generation directory with their sha256
    under the manifest's ``files`` (part of the content hash).
    """
    _check_parts(parts)
    with _publish_lock(lake):
        try:
            previous = current_generation_id(lake)
        except ValueError:  # a damaged pointer names nothing: the new generation replaces it
            previous = None
        tmp = _fresh_tmp_dir(lake.generations_dir)
        final = None
        try:
            variants = {variant: _write_variant(tmp, variant, fusion, bundle)
                        for variant, (fusion, bundle) in sorted(parts.items())}
            file_hashes = _write_files(tmp, files)
            content_hash = _content_hash(variants, file_hashes)
            if previous is not None and _serves_content(lake, previous, content_hash):
                remove_tree(tmp)
                return PublishResult(previous, content_hash, False, previous)
            generation = _new_generation_id(lake, content_hash)
            manifest = {
                "format_version": GENERATION_FORMAT_VERSION,
                "generation": generation,
                "created": _utc_now(),
                "content_hash": content_hash,
                "models": variants[REQUIRED_VARIANT]["models"],
                "variants": variants,
                "previous": previous,
                **({"files": file_hashes} if file_hashes else {}),
                **dict(extra or {}),
            }
            atomic_write_bytes(tmp / GENERATION_MANIFEST, _json_bytes(manifest))
            _fsync_dir(tmp)
            final = lake.generation_dir(generation)
            _swap_in(lake, tmp, final, generation)
        except BaseException:
            remove_tree(tmp)
            if final is not None and current_generation_id(lake) != final.name:
                remove_tree(final)
            raise
        removed = _prune_generations(lake, {generation} | ({previous} if previous else set()))
    return PublishResult(generation, content_hash, True, previous, removed)


def load_generation(lake: DataLake, generation: str | None = None) -> Generation:
    """Load one whole generation: ``generation``, or the one ``index/CURRENT`` names (read once).

    Raises :class:`NoGenerationError` when none was published. Files are checked against the
    manifest (fusion checksums, index checksums, fusion output dim = index dim). When the current
    generation vanishes while it is read (two publishes in the meantime deleted it), the pointer is
    resolved again, so the result is always one complete generation.
    """
    last_error: Exception | None = None
    for _ in range(1 if generation is not None else _LOAD_ATTEMPTS):
        target = generation or current_generation_id(lake)
        if target is None:
            raise NoGenerationError(
                f"no index generation in {lake.index_dir} ({lake.index_pointer_path.name} is missing)"
            )
        try:
            return _load_generation_dir(lake, target)
        except FileNotFoundError as exc:
            if generation is not None or current_generation_id(lake) == target:
                raise
            last_error = exc  # swapped and cleaned while we read: resolve the pointer again
    assert last_error is not None
    raise last_error


def _load_generation_dir(lake: DataLake, generation: str) -> Generation:
    directory = lake.generation_dir(generation)
    manifest = read_generation_manifest(lake, generation)
    fusions, bundles = {}, {}
    for variant, facts in sorted(manifest["variants"].items()):
        fusion_path = lake.generation_fusion_path(generation, variant)
        blob = fusion_path.read_bytes()
        if sha256_hex(blob) != facts["fusion_sha256"]:
            raise ValueError(f"{fusion_path}: checksum does not match {GENERATION_MANIFEST}")
        fusion = load_fusion(io.BytesIO(blob))
        bundle = load_index(lake.generation_index_path(generation, variant))
        if fusion.output_dim != bundle.index.d or fusion_fingerprint(fusion) != facts["fusion_fingerprint"]:
            raise ValueError(f"{directory}: {variant} fusion (dim {fusion.output_dim}) does not match its index "
                             f"(dim {bundle.index.d}) or the manifest")
        fusions[variant], bundles[variant] = fusion, bundle
    if REQUIRED_VARIANT not in bundles:
        raise ValueError(f"{directory}: generation has no {REQUIRED_VARIANT!r} variant")
    return Generation(generation, directory, manifest, fusions, bundles)
