import numpy as np
import pytest

from artsim_pipeline.core.blas import blas_controller, one_blas_thread

threadpoolctl = pytest.importorskip("threadpoolctl")


def blas_threads() -> list[int]:
    return [info["num_threads"] for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"]


@pytest.mark.parametrize("kept", [True, False], ids=["a kept controller", "found on the spot"])
def test_one_blas_thread_limits_blas_within_the_block_and_gives_the_threads_back(kept):
    np.ones((4, 4)) @ np.ones((4, 4))  # numpy's BLAS is loaded
    before = blas_threads()
    if not before or max(before) < 2:
        pytest.skip("this machine's BLAS runs one thread already")
    with one_blas_thread(blas_controller() if kept else None):
        assert blas_threads() == [1] * len(before)
    assert blas_threads() == before
