"""``run_health.worker_alive``: a run worker counts as alive only while its recorded pid is still that process.

Process ids are reused (32,768 of them on many Linux machines, shared with threads): a run whose worker died
must not stay STARTED because another process now has its id (``artsim_run_health`` would never fail it, and the
automation would wait on it for ever)."""

import os
import subprocess
import sys
import time

import pytest

from artsim_pipeline.run_health import process_start_time, worker_alive


@pytest.mark.slow  # starts a process (the suite's rule), a short one
def test_a_live_worker_is_alive_and_a_killed_one_is_not():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        recorded_at = time.time()  # the worker records its pid after it started
        assert worker_alive(child.pid, recorded_at)
    finally:
        child.kill()
        child.wait()
    assert not worker_alive(child.pid, recorded_at)


def test_a_reused_pid_is_not_the_worker():
    started = process_start_time(os.getpid())
    assert started is not None and abs(started - time.time()) < 3600
    # this process exists, but it started long after a worker that recorded the same id an hour ago
    assert not worker_alive(os.getpid(), started - 3600)
    assert worker_alive(os.getpid(), started + 1)


def test_an_unknown_pid_is_not_alive():
    assert process_start_time(2**22 + 7) is None
    assert not worker_alive(2**22 + 7, time.time())
