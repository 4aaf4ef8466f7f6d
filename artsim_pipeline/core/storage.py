"""Safe ids and atomic file writes and reads, local or on an object store (plain Python, no Dagster).

The lake's root is a local directory (a :class:`pathlib.Path`, the default) or an object-store URL
(``s3://bucket/prefix``; a ``upath.UPath`` over fsspec/s3fs, endpoint and credentials from the standard
``AWS_*`` variables). Both have the same paths (:class:`~artsim_pipeline.core.lake.DataLake`) and the same pathlib API (``/``,
``exists``, ``is_file``, ``read_bytes``, ``glob``, ``unlink``...); the primitives below cover what
pathlib cannot do on both:

* :func:`atomic_path` / :func:`atomic_write_bytes`: a writer gets a *local* temp file; on success it
  replaces a local target (``os.replace``) or is uploaded with one PUT (an object appears complete or
  not at all); on failure nothing is left behind.
* :func:`read_parquet`, :func:`read_table`, :func:`read_parquet_schema`: pandas / pyarrow reads through
  the path's filesystem; :func:`readable` hands readers that take a path or a file object (Pillow,
  ``np.load``) a remote file's bytes in memory; :func:`register_filesystem` lets DuckDB read ``s3://``.
* :func:`remove_tree`, :func:`place_dir` (a finished local directory moved / uploaded into the lake).

What cannot live on an object store (``catalog.duckdb``, Dagster's home, the index publish lock) lives in
:attr:`~artsim_pipeline.core.lake.DataLake.work_dir`: the lake root itself for a local lake, ``ARTSIM_WORK_DIR`` for a remote one.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Iterator, Union

from .defaults import HTTP_RETRIES, HTTP_TIMEOUT_S

if TYPE_CHECKING:
    # pandas here: every CLI command (--help included) imports this module; most read no table
    import pandas as pd
    import pyarrow as pa

#: A path of the lake: local, or (object-store lake) a ``upath.UPath``.
LakePath = Union[Path, Any]

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


def is_remote(path: object) -> bool:
    """True for a path on an object store (a ``UPath``); False for a local path."""
    return not isinstance(path, (PurePath, str)) and getattr(path, "fs", None) is not None


@dataclass(frozen=True)
class ObjectStoreOptions:
    """Timeout and retries of an object-store client: a hung endpoint fails after them instead of stalling a
    run for as long as it hangs. :func:`~artsim_pipeline.core.lake.lake_for` passes the settings' values
    (``ARTSIM_HTTP_TIMEOUT``, ``ARTSIM_HTTP_RETRIES``: the same as HTTP downloads); a path made without
    options (e.g. from a path stored in a table) gets the settings' defaults.

    botocore tries once; s3fs retries (:attr:`attempts` in all, with backoff), so a call takes at most about
    attempts x (connect + read timeout).
    """

    timeout_s: float = HTTP_TIMEOUT_S
    retries: int = HTTP_RETRIES

    @property
    def attempts(self) -> int:
        """Tries in all of s3fs's retry loop."""
        return int(self.retries) + 1

    def client_config(self) -> dict[str, Any]:
        """botocore ``Config`` arguments: connect timeout at most 10 s, read timeout, botocore tries once."""
        return {"connect_timeout": min(float(self.timeout_s), 10.0), "read_timeout": float(self.timeout_s),
                "retries": {"max_attempts": 1, "mode": "standard"}}


def remote_path(url: str, options: ObjectStoreOptions | None = None) -> Any:
    """The ``UPath`` of an object-store URL, without listing caches (other processes write the lake too).

    ``options`` (default :class:`ObjectStoreOptions`) are its client's timeout and retries; paths joined
    onto it (``path / "x"``) keep them. Raises ``ValueError`` naming the URL when its filesystem package
    (``s3fs``) is not installed.
    """
    # the object-store packages (the optional s3 extra): a local lake needs neither
    import fsspec
    from upath import UPath

    options = options if options is not None else ObjectStoreOptions()
    protocol = url.split("://", 1)[0]
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        raise ValueError(f"{url!r}: the {protocol}:// data lake needs the s3 extra (pip install 'artsim[s3]'): {exc}") from None
    storage_options: dict[str, Any] = {"use_listings_cache": False}
    if protocol in ("s3", "s3a"):
        storage_options["config_kwargs"] = options.client_config()
    path = UPath(url, **storage_options)
    if protocol in ("s3", "s3a"):
        # s3fs's own retry loop (its class default is 5). s3fs takes no argument for it, so it is set on the
        # filesystem fsspec caches per storage options: options with the same timeout share that filesystem,
        # and the retries of the last such path made hold for all of them
        path.fs.retries = options.attempts
    return path


def lake_path(value: Any, options: ObjectStoreOptions | None = None) -> LakePath:
    """A path of the lake from a path or its text (tables store ``str(path)``): a URL gives a ``UPath``
    (with ``options``, see :func:`remote_path`); a path is returned as it is."""
    if isinstance(value, Path) or is_remote(value):
        return value
    text = os.fspath(value)
    return remote_path(text, options) if "://" in text else Path(text)


#: Write errors that are the lake's, not one file's: every further write would fail the same way.
_LAKE_WRITE_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
                      errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied"}


class LakeWriteError(OSError):
    """The lake cannot be written (disk full, read-only, no permission): the message names the file."""


@contextlib.contextmanager
def atomic_path(target: LakePath | str) -> Iterator[Path]:
    """Yield a local temp path; on success it replaces ``target`` atomically.

    Local: the temp file is beside ``target`` and renamed over it. Remote: the temp file is in the
    system's temp directory and uploaded as one PUT. On any exception the temp file is removed and
    ``target`` is left untouched. A disk-full, read-only or permission error becomes a
    :class:`LakeWriteError` naming ``target``.
    """
    target = lake_path(target)
    try:
        with _atomic_path(target) as tmp:
            yield tmp
    except OSError as exc:
        why = _LAKE_WRITE_ERRNOS.get(exc.errno)
        if why is None or isinstance(exc, LakeWriteError):
            raise
        raise LakeWriteError(exc.errno, f"cannot write {target}: {why} ({exc.strerror or exc})") from exc


@contextlib.contextmanager
def _atomic_path(target: LakePath) -> Iterator[Path]:
    if is_remote(target):
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        local = Path(name)
        try:
            yield local
            target.fs.put_file(str(local), target.path)
        finally:
            local.unlink(missing_ok=True)
        return
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


def atomic_write_bytes(target: LakePath | str, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically (temp file + fsync + rename; remote: one PUT)."""
    target = lake_path(target)
    if is_remote(target):
        target.fs.pipe_file(target.path, bytes(data))
        return
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_text(target: LakePath | str, text: str) -> None:
    """Write UTF-8 ``text`` to ``target`` atomically."""
    atomic_write_bytes(target, text.encode("utf-8"))


def readable(source: Any) -> Any:
    """``source`` for readers taking a local path or a file object (Pillow, ``np.load``): a remote file
    (a ``UPath`` or an ``s3://`` string) becomes an in-memory copy; anything else is returned as is."""
    if isinstance(source, str) and "://" in source:
        source = lake_path(source)
    return io.BytesIO(source.read_bytes()) if is_remote(source) else source


def error_line(exc: BaseException, limit: int = 160) -> str:
    """``"<Type>: <first line of the message>"`` (cut at ``limit``): a lake file's error in one line."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:limit]}" if text else type(exc).__name__


class DamagedFileError(OSError):
    """A lake file's Parquet page checksum does not match its bytes: it was altered after it was written."""

    def __init__(self, message: str, path: Any = None) -> None:
        super().__init__(message)
        self.path = path


def _checked(path: Any, read):
    try:
        return read()
    except OSError as exc:
        if "checksum" in str(exc).lower() or "crc" in str(exc).lower():
            raise DamagedFileError(f"{path} is damaged (a Parquet page checksum does not match): "
                                   f"re-run `artsim run` to rebuild it", path) from exc
        raise


def write_table(table: "pa.Table", target: LakePath | str) -> None:
    """Write an Arrow table to a lake Parquet file atomically (:func:`atomic_path`), with page checksums,
    which :func:`read_table` / :func:`read_parquet` verify."""
    # pyarrow here: every CLI command (--help included) imports this module; most read no table
    import pyarrow.parquet as pq

    with atomic_path(target) as tmp:
        pq.write_table(table, tmp, write_page_checksum=True)


def read_parquet(path: LakePath | str, **kwargs: Any) -> "pd.DataFrame":
    """``pandas.read_parquet`` of a lake file (keyword arguments passed on); page checksums, where the
    writer stored them, are verified (:class:`DamagedFileError`)."""
    # pandas here: every CLI command (--help included) imports this module; most read no table
    import pandas as pd

    kwargs.setdefault("page_checksum_verification", True)
    path = lake_path(path)
    if is_remote(path):
        return _checked(path, lambda: pd.read_parquet(path.path, filesystem=path.fs, **kwargs))
    return _checked(path, lambda: pd.read_parquet(path, **kwargs))


def read_table(path: LakePath | str, **kwargs: Any) -> "pa.Table":
    """``pyarrow.parquet.read_table`` of a lake file (keyword arguments passed on); page checksums are
    verified as in :func:`read_parquet`."""
    # pyarrow here: every CLI command (--help included) imports this module; most read no table
    import pyarrow.parquet as pq

    kwargs.setdefault("page_checksum_verification", True)
    path = lake_path(path)
    if is_remote(path):
        return _checked(path, lambda: pq.read_table(path.path, filesystem=path.fs, **kwargs))
    return _checked(path, lambda: pq.read_table(path, **kwargs))


def read_parquet_schema(path: LakePath | str) -> "pa.Schema":
    """The Arrow schema (with its metadata) of a lake Parquet file, reading only its footer."""
    # pyarrow here: every CLI command (--help included) imports this module; most read no table
    import pyarrow.parquet as pq

    path = lake_path(path)
    if is_remote(path):
        with path.open("rb") as handle:
            return pq.read_schema(handle)
    return pq.read_schema(path)


def remove_tree(path: LakePath) -> None:
    """Delete a file or a directory tree (remote: every object under the prefix); absent is fine."""
    path = lake_path(path)
    if is_remote(path):
        try:
            path.fs.rm(path.path, recursive=True)
        except FileNotFoundError:
            pass
    elif path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def place_dir(local: Path, target: LakePath, last: tuple[str, ...] = ()) -> None:
    """Move the finished local directory ``local`` to ``target`` (which must not exist).

    Local: one ``os.replace`` (atomic). Remote: every file is uploaded (the top-level files named in
    ``last`` after all others, so their presence means the directory is complete), then ``local`` is
    deleted; readers must only name ``target`` once this returns.
    """
    target = lake_path(target)
    if not is_remote(target):
        os.replace(local, target)
        return
    files = sorted(p for p in Path(local).rglob("*") if p.is_file())
    files.sort(key=lambda p: p.parent == Path(local) and p.name in last)
    for file in files:
        target.fs.put_file(str(file), (target / file.relative_to(local).as_posix()).path)
    shutil.rmtree(local, ignore_errors=True)


def local_tmp_dir(parent: LakePath, prefix: str) -> Path:
    """A new empty local directory to build ``parent``'s next entry in: beside it for a local lake (so
    :func:`place_dir` is a rename), in the system's temp directory for a remote one."""
    if is_remote(parent):
        return Path(tempfile.mkdtemp(prefix=prefix))
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f"{prefix}{uuid.uuid4().hex}"
    tmp.mkdir()  # the usual mode (mkdtemp's is 0700): the directory is published by a rename
    return tmp


def register_filesystem(con: Any, path: LakePath) -> None:
    """Let the DuckDB connection ``con`` read ``path``'s URLs (``s3://...``) through fsspec; no-op when local.

    DuckDB's own ``httpfs`` extension is not used (it would be downloaded at run time).
    """
    if is_remote(path) and path.fs.protocol[0] not in con.list_filesystems():
        con.register_filesystem(path.fs)
