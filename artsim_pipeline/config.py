"""artsim settings: the one home of every knob, read from ``ARTSIM_*`` environment variables.

Plain Python (no Dagster import) so the CLI, the core modules and the Dagster resource share it.
Every field has a documented default (README "Configuration"); a bad value raises
:class:`ConfigError` naming the variable.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from .core.fusion import TAP_SETS

NGA_OPENDATA_BASE = "https://raw.githubusercontent.com/NationalGalleryOfArt/opendata/main"

NOTEBOOK_MODELS = ("resnet101", "efficientnet_b3", "vit_b_16")

#: Hosts that serve NGA open-data images (``iiifurl`` in published_images.csv), plus the loopback
#: names (plain http is only ever accepted for those; tests serve images from 127.0.0.1).
NGA_IMAGE_HOSTS = ("api.nga.gov",)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULT_IMAGE_HOSTS = (*NGA_IMAGE_HOSTS, "127.0.0.1", "localhost")

INT64_MAX = 2**63 - 1

#: How a launched run executes its steps (``ARTSIM_EXECUTOR``; see ``artsim_pipeline/deploy``).
EXECUTORS = ("in_process", "multiprocess", "celery", "k8s")


class ConfigError(ValueError):
    """A setting has a value artsim cannot use; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Validated artsim settings. Build with :meth:`from_env` or :meth:`with_overrides`."""

    nga_source: str = NGA_OPENDATA_BASE
    data_lake: Path | str = Path("data_lake")  # a directory, or an object-store URL (s3://bucket/prefix)
    work_dir: Path = Path("artsim_work")  # catalog.duckdb + dagster_home of an object-store lake
    limit: int = 1000
    min_side: int = 300
    batch_size: int = 256
    image_size: int = 1200
    download_workers: int = 8
    requests_per_second: float = 10.0
    http_timeout_s: float = 30.0
    http_retries: int = 5
    max_failure_share: float = 0.2
    face_threshold: float = 0.90
    face_margin: float = 0.10
    face_max_side: int = 1024
    models: tuple[str, ...] = NOTEBOOK_MODELS
    weights: str = "pretrained"
    embed_batch_size: int = 32
    precision: str = "fp32"
    device: str = "auto"
    pca_dim: int = 512
    taps: str = "mean"  # mid-level features fused beside each backbone's final one: none | mean | mean+std
    epochs: int = 0  # similarity_head training epochs (maximum; 0 = no learned head)
    refresh_cron: str = "0 4 * * *"
    max_shrink: float = 0.5
    refit_share: float = 0.25  # refit the fusion + IVF when this share of paintings is new since the last fit
    refit_drift: float = 1.5  # ... or when new vectors' PCA residual exceeds this multiple of the fit's
    image_hosts: tuple[str, ...] = DEFAULT_IMAGE_HOSTS
    executor: str = "in_process"

    def __post_init__(self) -> None:
        _check_source(self.nga_source)
        object.__setattr__(self, "data_lake", _check_lake(self.data_lake))
        _check_range("ARTSIM_LIMIT", self.limit, 0)
        _check_range("ARTSIM_MIN_SIDE", self.min_side, 1)
        _check_range("ARTSIM_BATCH_SIZE", self.batch_size, 1)
        _check_range("ARTSIM_IMAGE_SIZE", self.image_size, 16)
        _check_range("ARTSIM_DOWNLOAD_WORKERS", self.download_workers, 1)
        _check_range("ARTSIM_REQUESTS_PER_SECOND", self.requests_per_second, 0.01)
        _check_range("ARTSIM_HTTP_TIMEOUT", self.http_timeout_s, 0.01)
        _check_range("ARTSIM_HTTP_RETRIES", self.http_retries, 0)
        # the object-store client (an s3:// lake) uses the same timeout and retries as HTTP downloads
        from .core.storage import configure_object_store

        configure_object_store(self.http_timeout_s, self.http_retries)
        _check_range("ARTSIM_MAX_FAILURE_SHARE", self.max_failure_share, 0.0, 1.0)
        _check_range("ARTSIM_FACE_THRESHOLD", self.face_threshold, 0.0, 1.0)
        _check_range("ARTSIM_FACE_MARGIN", self.face_margin, 0.0, 1.0)
        _check_range("ARTSIM_FACE_MAX_SIDE", self.face_max_side, 32)
        _check_range("ARTSIM_EMBED_BATCH_SIZE", self.embed_batch_size, 1)
        _check_range("ARTSIM_PCA_DIM", self.pca_dim, 1)
        _check_range("ARTSIM_EPOCHS", self.epochs, 0, 10_000)
        if self.taps not in TAP_SETS:
            raise ConfigError(f"ARTSIM_TAPS must be one of {', '.join(TAP_SETS)}, got {self.taps!r}")
        _check_range("ARTSIM_MAX_SHRINK", self.max_shrink, 0.0, 1.0)
        _check_range("ARTSIM_REFIT_SHARE", self.refit_share, 0.0, 1.0)
        _check_range("ARTSIM_REFIT_DRIFT", self.refit_drift, 1.0)
        _check_hosts("ARTSIM_IMAGE_HOSTS", self.image_hosts)
        if not self.models:
            raise ConfigError("ARTSIM_MODELS must name at least one model")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"ARTSIM_PRECISION must be fp32 or bf16, got {self.precision!r}")
        if self.executor not in EXECUTORS:
            raise ConfigError(f"ARTSIM_EXECUTOR must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        if self.device not in ("auto", "cpu", "cuda", "mps"):
            raise ConfigError(f"ARTSIM_DEVICE must be auto, cpu, cuda or mps, got {self.device!r}")
        if len(self.refresh_cron.split()) != 5 or not _valid_cron(self.refresh_cron):
            raise ConfigError(f"ARTSIM_REFRESH_CRON must be a valid 5-field cron string (minute hour day month "
                              f"weekday, e.g. '0 4 * * *'), got {self.refresh_cron!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Read every ``ARTSIM_*`` variable that is set; unset ones keep their defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for var, (name, parse) in ENV_VARS.items():
            raw = env.get(var)
            if raw is not None and raw != "" and raw.strip() == "" and var in _NO_BLANK:
                raise ConfigError(f"{var} is set to blanks ({raw!r}): unset it for the default or name a value")
            if raw is None or raw.strip() == "":
                continue
            try:
                values[name] = parse(raw.strip())
            except ValueError as exc:
                raise ConfigError(f"{var}={raw!r} is not valid: {exc}") from None
        return cls(**values)

    def with_overrides(self, **changes: Any) -> "Settings":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def as_env(self) -> dict[str, str]:
        """The settings as ``ARTSIM_*`` variables (inverse of :meth:`from_env`)."""
        out: dict[str, str] = {}
        for var, (name, _parse) in ENV_VARS.items():
            value = getattr(self, name)
            out[var] = ",".join(value) if isinstance(value, tuple) else str(value)
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view, for metadata and reports."""
        return {
            f.name: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
            for f in fields(self)
            for v in [getattr(self, f.name)]
        }

    @property
    def is_local_source(self) -> bool:
        """True when ``nga_source`` is a directory rather than a URL."""
        return not self.nga_source.startswith(("http://", "https://"))


_NO_BLANK = frozenset({"ARTSIM_DATA_LAKE", "ARTSIM_WORK_DIR"})  # a blank path would silently mean the default


def _valid_cron(text: str) -> bool:
    """Whether Dagster's schedule parser (croniter's rules) accepts ``text``."""
    from dagster._utils.schedules import is_valid_cron_string  # what the schedule itself is checked with

    return bool(is_valid_cron_string(text))


def _int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError("expected an integer") from None


def _float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("expected a number") from None
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def _models(raw: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    if not names:
        raise ValueError("expected a comma-separated list of model names")
    return names


def _hosts(raw: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip().lower() for part in raw.split(",") if part.strip()))
    if not names:
        raise ValueError("expected a comma-separated list of host names")
    return names


ENV_VARS: dict[str, tuple[str, Any]] = {
    "ARTSIM_NGA_SOURCE": ("nga_source", str),
    "ARTSIM_DATA_LAKE": ("data_lake", lambda raw: raw if "://" in raw else Path(raw)),
    "ARTSIM_WORK_DIR": ("work_dir", Path),
    "ARTSIM_LIMIT": ("limit", _int),
    "ARTSIM_MIN_SIDE": ("min_side", _int),
    "ARTSIM_BATCH_SIZE": ("batch_size", _int),
    "ARTSIM_IMAGE_SIZE": ("image_size", _int),
    "ARTSIM_DOWNLOAD_WORKERS": ("download_workers", _int),
    "ARTSIM_REQUESTS_PER_SECOND": ("requests_per_second", _float),
    "ARTSIM_HTTP_TIMEOUT": ("http_timeout_s", _float),
    "ARTSIM_HTTP_RETRIES": ("http_retries", _int),
    "ARTSIM_MAX_FAILURE_SHARE": ("max_failure_share", _float),
    "ARTSIM_FACE_THRESHOLD": ("face_threshold", _float),
    "ARTSIM_FACE_MARGIN": ("face_margin", _float),
    "ARTSIM_FACE_MAX_SIDE": ("face_max_side", _int),
    "ARTSIM_MODELS": ("models", _models),
    "ARTSIM_WEIGHTS": ("weights", str),
    "ARTSIM_EMBED_BATCH_SIZE": ("embed_batch_size", _int),
    "ARTSIM_PRECISION": ("precision", str),
    "ARTSIM_DEVICE": ("device", str),
    "ARTSIM_PCA_DIM": ("pca_dim", _int),
    "ARTSIM_TAPS": ("taps", str),
    "ARTSIM_EPOCHS": ("epochs", _int),
    "ARTSIM_REFRESH_CRON": ("refresh_cron", str),
    "ARTSIM_MAX_SHRINK": ("max_shrink", _float),
    "ARTSIM_REFIT_SHARE": ("refit_share", _float),
    "ARTSIM_REFIT_DRIFT": ("refit_drift", _float),
    "ARTSIM_IMAGE_HOSTS": ("image_hosts", _hosts),
    "ARTSIM_EXECUTOR": ("executor", str),
}


def _check_range(var: str, value: float, low: float, high: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{var} must be a number, got {value!r}")
    if not isinstance(value, numbers.Integral) and not math.isfinite(value):
        raise ConfigError(f"{var} must be a finite number, got {value}")
    if isinstance(value, numbers.Integral) and abs(int(value)) > INT64_MAX:
        raise ConfigError(f"{var} must be at most {INT64_MAX} (a 64-bit integer), got {value}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ConfigError(f"{var} must be {bound}, got {value}")


_HOSTNAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\Z")
_IPV6 = re.compile(r"[0-9a-f:]*:[0-9a-f:]*\Z")


def _check_hosts(var: str, hosts: tuple[str, ...]) -> None:
    if isinstance(hosts, str) or not hosts:
        raise ConfigError(f"{var} must name at least one host (comma-separated), got {hosts!r}")
    for host in hosts:
        if not isinstance(host, str) or host != host.lower() or not (_HOSTNAME.match(host) or _IPV6.match(host)):
            raise ConfigError(f"{var}: {host!r} is not a lowercase host name (no scheme, port, path or user@)")


def url_host_problem(url: str, allowed_hosts: tuple[str, ...] | None = None) -> str | None:
    """Why ``url`` may not be fetched (``None`` when it may).

    The host is what ``urllib.parse.urlsplit`` parses (the one a client connects to): userinfo
    (``user:pass@``) is refused, plain ``http`` only for loopback hosts, and with ``allowed_hosts``
    the host must be one of them (exact, case-insensitive).
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return f"scheme {parts.scheme!r} is not http(s)"
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        return "user:password@ in a URL is not accepted"
    host = (parts.hostname or "").lower()
    if not host:
        return "no host"
    if parts.scheme == "http" and host not in LOOPBACK_HOSTS:
        return f"plain http is only accepted for 127.0.0.1/localhost, not host {host!r}; use https://"
    if allowed_hosts is not None and host not in allowed_hosts:
        return f"host {host!r} is not in the allowed hosts ({', '.join(allowed_hosts)})"
    return None


_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")


def _check_lake(lake: Path | str) -> Path | str:
    """``ARTSIM_DATA_LAKE`` as a local ``Path``, or an ``s3://bucket[/prefix]`` URL (checked)."""
    if isinstance(lake, Path) or (isinstance(lake, str) and lake.strip() and "://" not in lake):
        return Path(lake)
    if not isinstance(lake, str):
        raise ConfigError(f"ARTSIM_DATA_LAKE must be a directory or an s3://bucket/prefix URL, got {lake!r}")
    parts = urlsplit(lake)
    if parts.scheme != "s3":
        raise ConfigError(f"ARTSIM_DATA_LAKE={lake!r}: only s3:// URLs are supported (or a local directory)")
    if not _BUCKET.match(parts.netloc) or parts.query or parts.fragment or ".." in parts.path:
        raise ConfigError(f"ARTSIM_DATA_LAKE={lake!r}: expected s3://<bucket>/<prefix> with a valid bucket name "
                          "(lowercase letters, digits, '.', '-'), no query, '..' or user@")
    return lake


def _check_source(source: str) -> None:
    if not isinstance(source, str) or not source.strip():
        raise ConfigError(f"ARTSIM_NGA_SOURCE must be a URL or a local directory, got {source!r}")
    if source.startswith(("http://", "https://")):
        problem = url_host_problem(source)
        if problem is not None:
            raise ConfigError(f"ARTSIM_NGA_SOURCE={source!r}: {problem}")
        return
    if "://" in source:
        raise ConfigError(f"ARTSIM_NGA_SOURCE={source!r}: expected an https:// URL or a local directory")
