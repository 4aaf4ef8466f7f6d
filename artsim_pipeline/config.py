"""artsim settings: the one home of every knob, read from ``ARTSIM_*`` environment variables.

Plain Python, so the CLI, the core modules and the Dagster resource share it: Dagster is imported only
to validate an ``ARTSIM_REFRESH_CRON`` other than the default (:func:`_valid_cron`), never on import.
Every field has a documented default (README "Configuration"); a bad value raises
:class:`ConfigError` naming the variable.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from .core import defaults
from .core.fusion import TAP_SETS
from .core.http import DEFAULT_IMAGE_HOSTS, url_host_problem
from .core.rerank import METHODS as RERANK_METHODS, RerankOptions

NGA_OPENDATA_BASE = "https://raw.githubusercontent.com/NationalGalleryOfArt/opendata/main"

NOTEBOOK_MODELS = ("resnet101", "efficientnet_b3", "vit_b_16")


INT64_MAX = 2**63 - 1

#: How a launched run executes its steps (``ARTSIM_EXECUTOR``; see ``artsim_pipeline/deploy``).
EXECUTORS = ("in_process", "multiprocess", "celery", "k8s")


class ConfigError(ValueError):
    """A setting has a value artsim cannot use; the message names the variable."""


ROLES = ("output", "runtime", "deployment")
"""What a setting is for: ``output`` changes what the assets it ``shapes`` compute (part of their code
versions: changing it makes exactly those stale); ``runtime`` only changes how fast or how a run works (the
``artsim`` resource, changeable per run in the launchpad); ``deployment`` says where things live and how runs
are launched (read when the code location loads; no output changes)."""


def setting(default: Any, var: str, parse: Callable[[str], Any], role: str, *, shapes: tuple[str, ...] = (),
            bounds: tuple[float, float | None] | None = None, choices: tuple[str, ...] | None = None) -> Any:
    """Declare one setting: its default, ``ARTSIM_*`` variable, parser, role, the assets whose output it
    shapes (``output`` only) and its valid range or values. Everything else is derived from these
    declarations: :data:`ENV_VARS`, the run-time resource's fields (:mod:`.resources`) and the code-version
    inputs (:mod:`.code_versions`)."""
    if role not in ROLES:
        raise ValueError(f"{var}: role must be one of {ROLES}, got {role!r}")
    if (role == "output") != bool(shapes):
        raise ValueError(f"{var}: an output setting names the assets it shapes, and only an output setting does")
    meta = {"var": var, "parse": parse, "role": role, "shapes": tuple(shapes), "bounds": bounds, "choices": choices}
    return field(default=default, metadata=meta)


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



_COLLECTION = ("pca_model", "eval_report", "eval_study")


@dataclass(frozen=True)
class Settings:
    """Validated artsim settings. Build with :meth:`from_env` or :meth:`with_overrides`.

    Each field is declared once, with :func:`setting` (variable, parser, role, what it shapes, valid values).
    """

    nga_source: str = setting(NGA_OPENDATA_BASE, "ARTSIM_NGA_SOURCE", str, "output", shapes=("nga_opendata",))
    # a directory, or an object-store URL (s3://bucket/prefix)
    data_lake: Path | str = setting(Path("data_lake"), "ARTSIM_DATA_LAKE",
                                    lambda raw: raw if "://" in raw else Path(raw), "deployment")
    # catalog.duckdb + dagster_home of an object-store lake
    work_dir: Path = setting(Path("artsim_work"), "ARTSIM_WORK_DIR", Path, "deployment")
    limit: int = setting(1000, "ARTSIM_LIMIT", _int, "output", shapes=("filtered_paintings",), bounds=(0, None))
    min_side: int = setting(defaults.MIN_SIDE, "ARTSIM_MIN_SIDE", _int, "output", shapes=("filtered_paintings", "image_cache"),
                            bounds=(1, None))
    batch_size: int = setting(256, "ARTSIM_BATCH_SIZE", _int, "output", shapes=("filtered_paintings",),
                              bounds=(1, None))
    image_size: int = setting(defaults.IMAGE_SIZE, "ARTSIM_IMAGE_SIZE", _int, "output", shapes=("image_cache",), bounds=(16, None))
    download_workers: int = setting(defaults.DOWNLOAD_WORKERS, "ARTSIM_DOWNLOAD_WORKERS", _int, "runtime", bounds=(1, None))
    requests_per_second: float = setting(defaults.REQUESTS_PER_SECOND, "ARTSIM_REQUESTS_PER_SECOND", _float, "runtime", bounds=(0.01, None))
    http_timeout_s: float = setting(defaults.HTTP_TIMEOUT_S, "ARTSIM_HTTP_TIMEOUT", _float, "runtime", bounds=(0.01, None))
    http_retries: int = setting(defaults.HTTP_RETRIES, "ARTSIM_HTTP_RETRIES", _int, "runtime", bounds=(0, None))
    max_failure_share: float = setting(0.2, "ARTSIM_MAX_FAILURE_SHARE", _float, "runtime", bounds=(0.0, 1.0))
    face_threshold: float = setting(0.90, "ARTSIM_FACE_THRESHOLD", _float, "output", shapes=("face_crops",),
                                    bounds=(0.0, 1.0))
    face_margin: float = setting(0.10, "ARTSIM_FACE_MARGIN", _float, "output", shapes=("face_crops",),
                                 bounds=(0.0, 1.0))
    face_max_side: int = setting(1024, "ARTSIM_FACE_MAX_SIDE", _int, "output", shapes=("face_crops",),
                                 bounds=(32, None))
    models: tuple[str, ...] = setting(NOTEBOOK_MODELS, "ARTSIM_MODELS", _models, "output",
                                      shapes=("pca_model", "eval_report", "eval_study"))
    weights: str = setting("pretrained", "ARTSIM_WEIGHTS", str, "output",
                           shapes=("embeddings", "eval_report", "eval_study"))
    embed_batch_size: int = setting(32, "ARTSIM_EMBED_BATCH_SIZE", _int, "runtime", bounds=(1, None))
    precision: str = setting("fp32", "ARTSIM_PRECISION", str, "output", shapes=("embeddings",),
                             choices=("fp32", "bf16"))
    device: str = setting("auto", "ARTSIM_DEVICE", str, "runtime", choices=("auto", "cpu", "cuda", "mps"))
    pca_dim: int = setting(512, "ARTSIM_PCA_DIM", _int, "output", shapes=_COLLECTION, bounds=(1, None))
    # mid-level features fused beside each backbone's final one: none | mean | mean+std
    taps: str = setting("mean", "ARTSIM_TAPS", str, "output", shapes=_COLLECTION, choices=TAP_SETS)
    # similarity_head training epochs (maximum; 0 = no learned head)
    epochs: int = setting(0, "ARTSIM_EPOCHS", _int, "output", shapes=("similarity_head", "eval_study"),
                          bounds=(0, 10_000))
    refresh_cron: str = setting("0 4 * * *", "ARTSIM_REFRESH_CRON", str, "deployment")
    # the catalog's blocking check no_sudden_shrink: a refresh dropping more than this share is refused
    max_shrink: float = setting(0.2, "ARTSIM_MAX_SHRINK", _float, "runtime", bounds=(0.0, 1.0))
    # faiss_index's blocking check: an index finding less of the exact top 10 than this is not published
    min_recall: float = setting(0.95, "ARTSIM_MIN_RECALL", _float, "runtime", bounds=(0.0, 1.0))
    # eval_report's warning check: P@5 more than this (absolute) below the previous report
    max_quality_drop: float = setting(0.05, "ARTSIM_MAX_QUALITY_DROP", _float, "runtime", bounds=(0.0, 1.0))
    #: NGA snapshots kept under ``raw/<version>/`` (the newest, the one loaded always among them); older pruned
    raw_keep: int = setting(3, "ARTSIM_RAW_KEEP", _int, "runtime", bounds=(1, None))
    # refit the fusion + IVF when this share of paintings is new since the last fit ...
    refit_share: float = setting(0.25, "ARTSIM_REFIT_SHARE", _float, "runtime", bounds=(0.0, 1.0))
    # ... or when new vectors' PCA residual exceeds this multiple of the fit's
    refit_drift: float = setting(1.5, "ARTSIM_REFIT_DRIFT", _float, "runtime", bounds=(1.0, None))
    # re-ranking with the collection's neighbourhoods (core/rerank.py): none | qe | dba | dba_qe; the default
    # won on the held-out artist splits and on all queries (eval_study's reranking block)
    rerank: str = setting("dba_qe", "ARTSIM_RERANK", str, "output", shapes=("eval_report", "eval_study"),
                          choices=RERANK_METHODS)
    # neighbours merged into each indexed vector (database-side augmentation, stored with the index)
    rerank_dba_top: int = setting(8, "ARTSIM_RERANK_DBA_TOP", _int, "output",
                                  shapes=("faiss_index", "eval_report", "eval_study"), bounds=(1, 100))
    # best results merged into the query (alpha-query expansion)
    rerank_qe_top: int = setting(3, "ARTSIM_RERANK_QE_TOP", _int, "output", shapes=("eval_report", "eval_study"),
                                 bounds=(1, 100))
    # neighbour weight max(similarity, 0) ** alpha, in both
    rerank_alpha: float = setting(3.0, "ARTSIM_RERANK_ALPHA", _float, "output",
                                  shapes=("faiss_index", "eval_report", "eval_study"), bounds=(0.0, 100.0))
    image_hosts: tuple[str, ...] = setting(DEFAULT_IMAGE_HOSTS, "ARTSIM_IMAGE_HOSTS", _hosts, "output",
                                           shapes=("image_cache",))
    executor: str = setting("in_process", "ARTSIM_EXECUTOR", str, "deployment", choices=EXECUTORS)

    def __post_init__(self) -> None:
        _check_source(self.nga_source)
        object.__setattr__(self, "data_lake", _check_lake(self.data_lake))
        for f in fields(self):
            var, value = f.metadata["var"], getattr(self, f.name)
            if f.metadata["bounds"] is not None:
                _check_range(var, value, *f.metadata["bounds"])
            if f.metadata["choices"] is not None and value not in f.metadata["choices"]:
                raise ConfigError(f"{var} must be one of {', '.join(f.metadata['choices'])}, got {value!r}")
        _check_hosts("ARTSIM_IMAGE_HOSTS", self.image_hosts)
        if not self.models:
            raise ConfigError("ARTSIM_MODELS must name at least one model")
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
    def rerank_options(self) -> RerankOptions:
        """The re-ranking the search and the evaluation apply (``ARTSIM_RERANK*``)."""
        return RerankOptions(self.rerank, self.rerank_dba_top, self.rerank_qe_top, self.rerank_alpha)

    @property
    def is_local_source(self) -> bool:
        """True when ``nga_source`` is a directory rather than a URL."""
        return not self.nga_source.startswith(("http://", "https://"))


_NO_BLANK = frozenset({"ARTSIM_DATA_LAKE", "ARTSIM_WORK_DIR"})  # a blank path would silently mean the default


def _valid_cron(text: str) -> bool:
    """Whether Dagster accepts ``text`` as a schedule's cron string (the check the refresh schedule itself gets)."""
    if text == Settings.refresh_cron:  # the default is valid: every command reads the settings, few need Dagster
        return True
    from dagster import AssetSelection, DagsterInvalidDefinitionError, ScheduleDefinition

    try:
        ScheduleDefinition(name="artsim_cron_probe", cron_schedule=text, target=AssetSelection.all())
    except DagsterInvalidDefinitionError:
        return False
    return True


#: ``ARTSIM_*`` variable -> (field, parser), derived from the declarations.
ENV_VARS: dict[str, tuple[str, Any]] = {f.metadata["var"]: (f.name, f.metadata["parse"]) for f in fields(Settings)}


def names_with_role(role: str) -> tuple[str, ...]:
    """The settings of one role (:data:`ROLES`), in declaration order."""
    return tuple(f.name for f in fields(Settings) if f.metadata["role"] == role)


def settings_shaping(asset: str) -> tuple[str, ...]:
    """The output settings that shape ``asset`` (its code-version inputs)."""
    return tuple(f.name for f in fields(Settings) if asset in f.metadata["shapes"])



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
