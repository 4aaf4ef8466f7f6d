"""Model steps share the machine's cores among the runs in progress (assets.common.share_cores)."""

import uuid

import pytest
import torch
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, build_asset_context

from artsim_pipeline.assets.common import share_cores
from artsim_pipeline.core.faces import available_cpus


@pytest.fixture
def torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _started_runs(instance: DagsterInstance, n: int) -> None:
    for _ in range(n):
        instance.add_run(DagsterRun(job_name="artsim_batch", run_id=str(uuid.uuid4()), status=DagsterRunStatus.STARTED))


@pytest.mark.parametrize("runs", [0, 1, 2, 4, 9])
def test_the_cores_are_divided_among_the_runs_in_progress(torch_threads, runs):
    with DagsterInstance.ephemeral() as instance:
        _started_runs(instance, runs)
        _ = instance.add_run(DagsterRun(job_name="done", run_id=str(uuid.uuid4()), status=DagsterRunStatus.SUCCESS))
        threads = share_cores(build_asset_context(instance=instance), "in_process")
    assert threads == max(1, available_cpus() // max(1, runs))
    assert torch.get_num_threads() == threads


@pytest.mark.skipif(available_cpus() < 2, reason="one core: every rule gives one thread")
def test_steps_that_run_elsewhere_keep_torchs_threads(torch_threads):
    torch.set_num_threads(1)  # alone on this machine, a local step would take every core
    with DagsterInstance.ephemeral() as instance:
        _started_runs(instance, 1)
        assert share_cores(build_asset_context(instance=instance), "celery") == 1
    assert torch.get_num_threads() == 1
