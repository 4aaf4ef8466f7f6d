"""``artsim`` as a user runs it: a subprocess with ARTSIM_* variables."""

import os
import subprocess
import sys
from pathlib import Path


ARTSIM = str(Path(sys.executable).with_name("artsim"))


def artsim(args, tmp_path, **env):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("ARTSIM_", "DAGSTER_HOME"))}
    full_env |= {"ARTSIM_DATA_LAKE": str(tmp_path / "lake")} | env
    return subprocess.run([ARTSIM, *args], cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=600)


def test_bad_setting_exits_non_zero_naming_the_variable(tmp_path):
    result = artsim(["run"], tmp_path, ARTSIM_BATCH_SIZE="zero")
    assert result.returncode == 2
    assert "ARTSIM_BATCH_SIZE" in result.stderr


def test_missing_source_directory_is_a_clear_error(tmp_path):
    result = artsim(["run"], tmp_path, ARTSIM_NGA_SOURCE=str(tmp_path / "nope"))
    assert result.returncode != 0
    assert "ARTSIM_NGA_SOURCE" in result.stderr and "Traceback" not in result.stderr
