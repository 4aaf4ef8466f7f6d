"""``artsim`` as a user runs it: a subprocess with ARTSIM_* variables."""

import pytest

from artsim_pipeline_tests.support import artsim

pytestmark = pytest.mark.slow  # each test starts `artsim run`


def test_bad_setting_exits_non_zero_naming_the_variable(tmp_path):
    result = artsim(["run"], tmp_path, ARTSIM_BATCH_SIZE="zero")
    assert result.returncode == 2
    assert "ARTSIM_BATCH_SIZE" in result.stderr


def test_missing_source_directory_is_a_clear_error(tmp_path):
    result = artsim(["run"], tmp_path, ARTSIM_NGA_SOURCE=str(tmp_path / "nope"))
    assert result.returncode != 0
    assert "ARTSIM_NGA_SOURCE" in result.stderr and "Traceback" not in result.stderr


# fault matrix (issue 19 #9, #13): an unusable DAGSTER_HOME, a device the machine lacks
def test_unusable_dagster_home_is_a_one_line_error_naming_it(tmp_path):
    home = tmp_path / "dh"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    (home / "history").write_text("not a folder")  # SQLite cannot open history/runs.db (as with a read-only home)
    result = artsim(["run"], tmp_path, DAGSTER_HOME=str(home), ARTSIM_NGA_SOURCE=str(tmp_path))
    assert result.returncode == 2, result.stderr
    assert "DAGSTER_HOME" in result.stderr and str(home) in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_cuda_device_without_gpu_fails_before_anything_is_written(tmp_path):
    import torch

    if torch.cuda.is_available():
        import pytest

        pytest.skip("this machine has a GPU")
    result = artsim(["run"], tmp_path, ARTSIM_DEVICE="cuda", ARTSIM_NGA_SOURCE=str(tmp_path))
    assert result.returncode == 2
    assert "ARTSIM_DEVICE" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "lake").exists()
