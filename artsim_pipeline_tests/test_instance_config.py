"""The instance artsim configures (issues 33.3, 32.2): ``dagster.yaml`` in a new ``DAGSTER_HOME`` with run
monitoring, run retries, the run queue and retention; a user's file is never overwritten, and no ``artsim``
command prints Dagster's "No dagster instance configuration file" warning on a fresh lake."""

from __future__ import annotations

import pytest
from dagster import DagsterInstance

from artsim_pipeline.instance import INSTANCE_YAML, MAX_RUN_RETRIES, ensure_instance_config
from artsim_pipeline_tests.nga_fixtures import Painting, write_mirror
from artsim_pipeline_tests.support import artsim

WARNING = "No dagster instance configuration file"


def test_a_new_home_gets_a_configured_instance_and_a_users_file_is_kept(tmp_path):
    home = tmp_path / "new" / "dagster_home"
    assert ensure_instance_config(home) is True
    assert (home / "dagster.yaml").read_text() == INSTANCE_YAML
    with DagsterInstance.from_config(str(home)) as instance:  # Dagster accepts it, with what artsim needs
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_start_timeout_seconds == 180
        assert instance.run_monitoring_cancel_timeout_seconds == 180
        assert instance.run_retries_enabled and instance.run_retries_max_retries == MAX_RUN_RETRIES
        assert not instance.run_retries_retry_on_asset_or_op_failure
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.get_settings("telemetry") == {"enabled": False}
    assert ensure_instance_config(home) is False  # written once

    users = tmp_path / "users_home"
    users.mkdir()
    (users / "dagster.yaml").write_text("telemetry:\n  enabled: true\n")
    assert ensure_instance_config(users) is False
    assert (users / "dagster.yaml").read_text() == "telemetry:\n  enabled: true\n"
    assert [p.name for p in users.iterdir()] == ["dagster.yaml"]  # no temporary file left behind


@pytest.mark.slow  # starts `artsim` processes
def test_no_command_prints_the_dagster_yaml_warning_on_a_fresh_lake(tmp_path):
    mirror = write_mirror(tmp_path / "mirror", [Painting(i, width=96, height=80) for i in range(1, 5)])
    env = {"ARTSIM_NGA_SOURCE": str(mirror), "ARTSIM_LIMIT": "0", "ARTSIM_MIN_SIDE": "64",
           "ARTSIM_MODELS": "efficientnet_lite0", "ARTSIM_WEIGHTS": "random", "ARTSIM_DEVICE": "cpu",
           "ARTSIM_PCA_DIM": "4"}
    status = artsim(["status"], tmp_path, **env)  # the default home: <lake>/dagster_home
    assert WARNING not in status.stdout + status.stderr
    assert (tmp_path / "lake" / "dagster_home" / "dagster.yaml").read_text() == INSTANCE_YAML

    home = tmp_path / "empty_home"  # DAGSTER_HOME set to a new, empty folder
    home.mkdir()
    for command in (["run"], ["status"], ["search", "1", "-k", "2"]):
        done = artsim(command, tmp_path, DAGSTER_HOME=str(home), **env)
        assert done.returncode == 0, (command, done.stderr[-2000:])
        assert WARNING not in done.stdout + done.stderr, command
    assert "run_monitoring" in (home / "dagster.yaml").read_text()
