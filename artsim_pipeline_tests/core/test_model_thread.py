"""``ModelThread``: every model call of a served engine runs on one thread, whichever thread asks.

torch gives each calling thread its own OpenMP team, and a second team slows every later forward pass of the
process about twice over (core/model_thread.py has the measurement), so the server's engine must never run a
model on a request's own thread."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from artsim_pipeline.core.model_thread import ModelThread, run_here
from artsim_pipeline_tests.search_lake import astronaut, shared_search_lake


def test_calls_from_many_threads_run_on_one_thread_and_nested_calls_do_not_wait():
    runner = ModelThread()
    try:
        with ThreadPoolExecutor(6) as pool:
            idents = set(pool.map(lambda _: runner(threading.get_ident), range(24)))
        assert len(idents) == 1 and threading.get_ident() not in idents
        assert runner(lambda: runner(threading.get_ident)) == next(iter(idents))  # nested: no deadlock

        def fails():
            raise ValueError("bad input")

        with pytest.raises(ValueError, match="bad input"):
            runner(fails)
    finally:
        runner.close()
    assert run_here(threading.get_ident) == threading.get_ident()


def test_a_served_engine_runs_its_models_only_on_the_model_thread(tmp_path):
    from artsim_pipeline.core.search import SearchEngine

    runner = ModelThread()
    model_ident = runner(threading.get_ident)
    seen: set[int] = set()
    engine = SearchEngine.from_settings(shared_search_lake(), preload_models=False, model_runner=runner)
    for model in engine.models:  # loaded on first use, through the runner
        model.module.register_forward_pre_hook(lambda *_: seen.add(threading.get_ident()))
    photo = tmp_path / "photo.jpg"
    astronaut().save(photo)
    try:
        with ThreadPoolExecutor(4) as pool:  # as the server's request threads
            responses = list(pool.map(lambda i: engine.search(photo, k=3, face_crop=i % 2 == 1), range(4)))
        assert [len(r) for r in responses[::2]] == [3, 3] and all(len(r) >= 1 for r in responses)
        assert responses[1].face_count  # the face detector ran (on the model thread) and found the astronaut
        assert seen == {model_ident}, "a forward pass ran on a request's thread"
    finally:
        runner.close()
