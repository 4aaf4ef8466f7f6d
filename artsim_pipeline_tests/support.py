"""Small helpers shared by the tests (test modules never import each other): the repository root, a
free local port, ``artsim`` run as a user runs it, an asset's materialization records, and the files this
process writes while a block runs (:func:`disk_writes`)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

from dagster import AssetKey, AssetRecordsFilter

REPO = Path(__file__).resolve().parents[1]
ARTSIM = str(Path(sys.executable).with_name("artsim"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def artsim(args, tmp_path, **env):
    """``artsim <args>`` in a subprocess from ``tmp_path`` with only the given ARTSIM_* / DAGSTER_HOME variables
    (lake: ``tmp_path/lake`` unless ``ARTSIM_DATA_LAKE`` is given)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("ARTSIM_", "DAGSTER_HOME"))}
    full_env |= {"ARTSIM_DATA_LAKE": str(tmp_path / "lake")} | env
    return subprocess.run([ARTSIM, *args], cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=600)


def materializations(instance, name: str) -> list:
    """The materialization records of asset ``name`` (newest first, at most 1000)."""
    return list(instance.fetch_materializations(AssetRecordsFilter(asset_key=AssetKey(name)), limit=1000).records)


# ----------------------------------------------------------------------------- files written by this process

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_WRITE_EVENTS = {"tempfile.mkstemp", "tempfile.mkdtemp", "os.mkdir", "os.rename", "os.replace", "os.link"}
_RECORDERS: list[list[str]] = []
_HOOKS: list = []


def _audit(event: str, args: tuple) -> None:
    if not _RECORDERS:
        return
    if event == "open":  # builtins.open and os.open: (path, mode, flags); O_TMPFILE needs O_WRONLY/O_RDWR
        path, flags = args[0], args[2]
        if not (isinstance(flags, int) and flags & _WRITE_FLAGS):
            return
    elif event in _WRITE_EVENTS:
        path = args[0]
    else:
        return
    name = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else f"fd {path}"
    if "__pycache__" in name:  # the interpreter caching bytecode of a module imported late
        return
    for seen in _RECORDERS:
        seen.append(f"{event} {name}")


@contextlib.contextmanager
def disk_writes():
    """Every file this process opens for writing, creates, renames or makes a temporary file or folder of
    (every thread, anonymous ``O_TMPFILE`` files included) while the block runs, as ``"<event> <path>"``;
    seen through the interpreter's audit hooks, so nothing is patched."""
    if _audit not in _HOOKS:
        sys.addaudithook(_audit)  # hooks cannot be removed: it stays, idle while no block records
        _HOOKS.append(_audit)
    seen: list[str] = []
    _RECORDERS.append(seen)
    try:
        yield seen
    finally:
        _RECORDERS.remove(seen)
