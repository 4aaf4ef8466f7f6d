"""The NGA opendata source: fetch its CSVs (HTTP or a local mirror) into versioned snapshots.

A *source* is either a base URL (``<base>/data/<name>.csv``, e.g. NGA's GitHub raw URLs) or a local
directory laid out like NGA's repository (``data/*.csv`` plus optional ``images/<uuid>.jpg``). Both go
through the same path: each CSV is streamed into ``raw/<version>/`` (temp file + rename, or one upload per
file on an object-store lake with ``snapshot.json`` last; over HTTP a body
shorter than its ``Content-Length`` is retried, then refused with :class:`IncompleteSourceError`) and hashed,
and the snapshot's version is a hash of the five file hashes, so identical content gives the same version
whatever the transport.

:func:`probe_version` is the cheap update check: HTTP conditional requests (ETag / Last-Modified) for a
URL source, size + modification time for a local mirror.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .http import FetchError, HttpClient, IncompleteBodyError
from .storage import atomic_path, atomic_write_text, is_remote, remove_tree
from .lake import DataLake

NGA_FILES = ("objects", "published_images", "constituents", "objects_constituents", "objects_terms")

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "objects": ("objectid", "title", "attribution", "classification", "displaydate", "beginyear", "endyear", "medium"),
    "published_images": ("uuid", "iiifurl", "viewtype", "width", "height", "depictstmsobjectid"),
    "constituents": ("constituentid", "forwarddisplayname"),
    "objects_constituents": ("objectid", "constituentid", "roletype", "displayorder"),
    "objects_terms": ("objectid", "termtype", "term"),
}

_CHUNK = 1 << 20


LATEST_FETCH = "latest.json"  # under raw/: the source and validators of the last download


class SourceError(RuntimeError):
    """The NGA source cannot be read; the message names the source and the file."""


@dataclass(frozen=True)
class Snapshot:
    """One downloaded copy of the five CSVs."""

    version: str
    directory: Path
    file_hashes: dict[str, str]
    validators: dict[str, dict[str, str]] = field(default_factory=dict)
    source: str = ""

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.csv"


@dataclass
class NgaSource:
    """Reads NGA opendata from ``location`` (URL base or local directory)."""

    location: str
    client: HttpClient = field(default_factory=HttpClient)

    @property
    def is_local(self) -> bool:
        return not self.location.startswith(("http://", "https://"))

    @property
    def local_root(self) -> Path:
        root = Path(self.location).expanduser()
        if not (root / "data").is_dir():
            raise SourceError(
                f"ARTSIM_NGA_SOURCE={self.location!r}: no such directory with a data/ folder "
                "(expected an NGA-like mirror: data/*.csv plus optional images/<uuid>.jpg)"
            )
        return root

    @property
    def mirror_images_dir(self) -> Path | None:
        """``images/`` of a local mirror, if present (image_cache copies from there)."""
        if not self.is_local:
            return None
        images = self.local_root / "images"
        return images if images.is_dir() else None

    def file_url(self, name: str) -> str:
        return f"{self.location.rstrip('/')}/data/{name}.csv"

    def _local_file(self, name: str) -> Path:
        path = self.local_root / "data" / f"{name}.csv"
        if not path.is_file():
            raise SourceError(f"NGA source {self.location!r}: missing data/{name}.csv")
        return path

    def _copy_local(self, name: str, target: Path) -> None:
        with open(self._local_file(name), "rb") as source, open(target, "wb") as handle:
            shutil.copyfileobj(source, handle, _CHUNK)

    def _download(self, name: str, target: Path) -> dict[str, str]:
        """Download one CSV into ``target``; returns its HTTP validators (ETag / Last-Modified).

        The body is checked against ``Content-Length`` (a short body is retried, then refused with
        :class:`IncompleteSourceError` naming the file): a CSV cut short must never become a snapshot.
        """
        url = self.file_url(name)
        try:
            download = self.client.download(url, target)
        except IncompleteBodyError as exc:
            raise IncompleteSourceError(
                f"NGA file {name}.csv from {url} arrived incomplete ({exc.reason}); nothing was loaded, "
                "the previous snapshot stays in use. Try again later."
            ) from exc
        return {k: download.headers[k] for k in ("ETag", "Last-Modified") if k in download.headers}

    def fetch(self, lake: DataLake) -> Snapshot:
        """Download all five CSVs into ``raw/<version>/``; re-uses an identical earlier snapshot."""
        with _unreachable_hint(self.location):
            return self._fetch(lake)

    def _fetch(self, lake: DataLake) -> Snapshot:
        # downloads land in a local staging folder (beside raw/ for a local lake, a temp folder for a remote one)
        staging = Path(tempfile.mkdtemp(prefix="artsim-incoming-")) if lake.is_remote else lake.root / "raw" / ".incoming"
        staging.mkdir(parents=True, exist_ok=True)
        hashes: dict[str, str] = {}
        validators: dict[str, dict[str, str]] = {}
        for name in NGA_FILES:
            with atomic_path(staging / f"{name}.csv") as tmp:
                if self.is_local:
                    self._copy_local(name, tmp)
                    validators[name] = {}
                else:
                    validators[name] = self._download(name, tmp)
                hashes[name] = _file_sha256(tmp)
        version = snapshot_version(hashes)
        target = lake.raw_dir(version)
        if not (target / "snapshot.json").is_file():
            target.mkdir(parents=True, exist_ok=True)
            for name in NGA_FILES:
                if is_remote(target):  # one PUT per file; snapshot.json (below, last) marks the snapshot complete
                    target.fs.put_file(str(staging / f"{name}.csv"), (target / f"{name}.csv").path)
                else:
                    (staging / f"{name}.csv").replace(target / f"{name}.csv")
            manifest = {"version": version, "source": self.location, "files": hashes, "validators": validators}
            atomic_write_text(target / "snapshot.json", json.dumps(manifest, indent=2))
        shutil.rmtree(staging, ignore_errors=True)
        latest = {"version": version, "source": self.location, "validators": validators}
        atomic_write_text(lake.root / "raw" / LATEST_FETCH, json.dumps(latest, indent=2))
        return Snapshot(version, target, hashes, validators, self.location)

    def last_validators(self, lake: DataLake) -> dict[str, dict[str, str]] | None:
        """HTTP validators (ETag / Last-Modified per file) of the last download from this source, if any."""
        path = lake.root / "raw" / LATEST_FETCH
        try:
            latest = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if latest.get("source") != self.location or not isinstance(latest.get("validators"), dict):
            return None
        return latest["validators"]

    def probe_version(self, previous: dict[str, dict[str, str]] | None = None) -> str:
        """A cheap fingerprint of the upstream files, without downloading them.

        URL source: HEAD requests, ``If-None-Match`` sent when ``previous`` validators are known; the
        fingerprint is a hash of the ETag/Last-Modified headers. Local mirror: size and mtime in ns.
        """
        with _unreachable_hint(self.location):
            return self._probe_version(previous)

    def _probe_version(self, previous: dict[str, dict[str, str]] | None) -> str:
        parts: list[str] = []
        for name in NGA_FILES:
            if self.is_local:
                stat = self._local_file(name).stat()
                parts.append(f"{name}:{stat.st_size}:{stat.st_mtime_ns}")
                continue
            known = (previous or {}).get(name, {})
            headers = {}
            if known.get("ETag"):
                headers["If-None-Match"] = known["ETag"]
            if known.get("Last-Modified"):
                headers["If-Modified-Since"] = known["Last-Modified"]
            response = self.client.head(self.file_url(name), headers=headers)
            if response.status_code == 304 and headers:
                parts.append(f"{name}:{known.get('ETag') or known.get('Last-Modified')}")
                continue
            tag = response.headers.get("ETag") or response.headers.get("Last-Modified")
            if not tag:  # no validators: fall back to the content itself
                tag = hashlib.sha256(self.client.get(self.file_url(name), stream=False).content).hexdigest()
            parts.append(f"{name}:{tag}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def raw_snapshots(lake: DataLake) -> list[Path]:
    """The complete snapshots under ``raw/`` (a ``snapshot.json`` each), newest first (by that file's time)."""
    raw = lake.root / "raw"
    try:
        dirs = [d for d in raw.iterdir() if d.is_dir() and d.name.startswith("v") and (d / "snapshot.json").is_file()]
    except (FileNotFoundError, NotADirectoryError):
        return []

    def written(directory: Path) -> float:
        info = (directory / "snapshot.json").stat()
        return float(getattr(info, "st_mtime", 0.0) or 0.0)

    return sorted(dirs, key=lambda d: (written(d), d.name), reverse=True)


def prune_raw_snapshots(lake: DataLake, keep: int, loaded: str) -> list[str]:
    """Remove all but the ``keep`` newest complete snapshots of ``raw/``, never the one ``loaded`` (the
    catalog just read it: it counts as the newest); returns the versions removed. A folder without its
    ``snapshot.json`` (a download in progress, or killed) is left alone."""
    keep = max(1, int(keep))
    current = lake.raw_dir(loaded)
    if not is_remote(current):
        with contextlib.suppress(OSError):
            (current / "snapshot.json").touch()  # loaded again: it is the newest now
    snapshots = [d for d in raw_snapshots(lake) if d.name != current.name]
    removed = []
    for directory in snapshots[keep - 1:]:
        remove_tree(directory)
        removed.append(directory.name)
    return removed


class IncompleteSourceError(SourceError):
    """An NGA CSV arrived shorter than its ``Content-Length`` on every attempt."""


class SourceUnreachableError(SourceError):
    """The NGA source URL could not be fetched after all retries."""


@contextlib.contextmanager
def _unreachable_hint(location: str) -> Iterator[None]:
    try:
        yield
    except FetchError as exc:
        raise SourceUnreachableError(
            f"{exc}. Is the network reachable? Offline, set ARTSIM_NGA_SOURCE to a local directory laid out "
            f"like NGA's repository (data/*.csv, optional images/<uuid>.jpg) instead of {location!r}."
        ) from exc


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def snapshot_version(file_hashes: dict[str, str]) -> str:
    """Version id of a snapshot: a short hash over the per-file content hashes."""
    joined = "\n".join(f"{name}:{file_hashes[name]}" for name in NGA_FILES)
    return "v" + hashlib.sha256(joined.encode()).hexdigest()[:16]
