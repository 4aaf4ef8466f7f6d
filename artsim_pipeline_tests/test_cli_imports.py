"""Each ``artsim`` command imports what it needs: an objectid search, ``--help`` and ``search --help`` load no
model (neither torch nor Dagster), ``status`` no torch (and no Dagster while its cached plan is current), a
photo search torch (the models) but no Dagster.

Read from ``sys.modules`` at the exit of the real CLI run in a fresh process (``bench.cli.run_cold``, the one
``artsim bench cli`` times) on the small search lake. The photo search is the control: it must show torch, so
an empty or broken module list cannot pass.
"""

from __future__ import annotations

import os

import pytest

from artsim_pipeline.bench.cli import run_cold
from artsim_pipeline_tests.search_lake import astronaut, shared_search_lake

pytestmark = pytest.mark.slow  # each test starts artsim processes

MODEL_PACKAGES = {"torch", "torchvision", "timm", "facenet_pytorch"}


@pytest.fixture(scope="module")
def env():
    settings = shared_search_lake()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARTSIM_", "DAGSTER_HOME"))}
    return env | {"ARTSIM_DATA_LAKE": str(settings.data_lake), "ARTSIM_DEVICE": "cpu",
                  "ARTSIM_MODELS": ",".join(settings.models)}


def run(argv: list[str], env: dict[str, str]) -> set[str]:
    result = run_cold(argv, env)
    assert result["exit"] == 0, result["stderr"]
    assert "artsim_pipeline" in result["modules"]  # the list is read back
    return set(result["modules"])


def test_an_objectid_search_imports_neither_torch_nor_dagster(env):
    modules = run(["search", "101", "-k", "3"], env)
    assert not modules & (MODEL_PACKAGES | {"dagster"}), sorted(modules & (MODEL_PACKAGES | {"dagster"}))


@pytest.mark.parametrize("argv", [["--help"], ["search", "--help"]], ids=["help", "search-help"])
def test_help_imports_neither_torch_nor_dagster(env, argv):
    modules = run(argv, env)
    assert not modules & (MODEL_PACKAGES | {"dagster"})


def test_status_imports_no_model(env):
    assert not run(["status"], env) & MODEL_PACKAGES


def test_status_with_a_current_cached_plan_imports_no_dagster(env, tmp_path):
    env = env | {"DAGSTER_HOME": str(tmp_path / "dagster_home")}
    computed = run(["status"], env)  # a new instance: computed (its files are created), then computed once more
    run(["status"], env)
    assert "dagster" in computed  # the control: computing the plan takes Dagster
    assert "dagster" not in run(["status"], env)
    assert "dagster" in run(["status", "--fresh"], env)


def test_a_photo_search_imports_torch_and_no_dagster(env, tmp_path):
    photo = tmp_path / "photo.jpg"
    astronaut().save(photo)
    modules = run(["search", str(photo), "-k", "3"], env)
    assert "torch" in modules and "dagster" not in modules
