"""Each setting is declared once (config.py) with its role; the env map, the run-time resource and the
code-version inputs are derived from the declarations. What the roles promise is checked on the real code
location: changing an output setting changes the code version of exactly the assets it shapes (and a
run-time or deployment setting none), a launchpad value of every run-time knob reaches the run's settings,
and a launchpad change of the retries reaches the download that uses them."""

from dataclasses import fields
from pathlib import Path

import pytest
from dagster import materialize
from pydantic import ValidationError

from artsim_pipeline.code_versions import CODE_VERSIONS
from artsim_pipeline.config import ENV_VARS, ROLES, Settings, names_with_role
from artsim_pipeline.definitions import build_assets, build_definitions
from artsim_pipeline.resources import RUNTIME_FIELDS, ArtsimRuntimeResource, NgaSourceResource, build_resources
from artsim_pipeline_tests.http_server import LocalServer
from artsim_pipeline_tests.nga_fixtures import Painting, nga_csvs


def test_every_setting_has_one_declaration_and_a_role():
    declared = fields(Settings)
    assert {f.metadata["role"] for f in declared} <= set(ROLES)
    assert sorted(name for name, _ in ENV_VARS.values()) == sorted(f.name for f in declared)
    assert len(ENV_VARS) == len(declared)  # one variable per field
    for f in declared:
        if f.metadata["role"] == "output":
            assert f.metadata["shapes"] and set(f.metadata["shapes"]) <= set(CODE_VERSIONS), f.name


#: A valid value other than the base one (:func:`_base`), for every setting (a new setting needs one here).
OTHER_VALUES = {
    "nga_source": "other-mirror", "data_lake": Path("other_lake"), "work_dir": Path("other_work"), "limit": 0,
    "min_side": 128, "batch_size": 64, "image_size": 800, "download_workers": 2, "requests_per_second": 3.0,
    "http_timeout_s": 5.0, "http_retries": 1, "max_failure_share": 0.5, "face_threshold": 0.8, "face_margin": 0.2,
    "face_max_side": 512, "models": ("efficientnet_lite0",), "weights": "random", "embed_batch_size": 8,
    "precision": "bf16", "device": "cpu", "pca_dim": 64, "taps": "none", "epochs": 3, "refresh_cron": "0 5 * * *",
    "max_shrink": 1.0, "min_recall": 0.9, "max_quality_drop": 0.1, "raw_keep": 5, "refit_share": 0.5, "refit_drift": 2.0, "rerank": "qe", "rerank_dba_top": 5,
    "rerank_qe_top": 5, "rerank_alpha": 1.0, "image_hosts": ("api.nga.gov",), "executor": "multiprocess",
}


#: Settings an asset's code version reads besides its declared ones (``code_version(..., extra)``), with why.
ALSO_SHAPES = {
    "epochs": {"faiss_index": "whether there is a learned head (0 or not): the index is built on its output"},
}


def _base() -> Settings:
    return Settings(nga_source="mirror", models=("efficientnet_lite0", "mobilenet_v2"))


def _code_versions(settings: Settings) -> dict[str, str | None]:
    """Asset name -> code version, as the code location built for ``settings`` declares them."""
    graph = build_definitions(settings).resolve_asset_graph()
    return {key.to_user_string(): graph.get(key).code_version for key in graph.get_all_asset_keys()}


def _asset_kind(name: str) -> str:
    """The name ``shapes`` uses: ``embeddings`` for every ``embeddings_<model>``."""
    return "embeddings" if name.startswith("embeddings_") else name


@pytest.fixture(scope="module")
def base_versions() -> dict[str, str | None]:
    return _code_versions(_base())


def test_every_setting_has_another_value_to_try():
    assert set(OTHER_VALUES) == {f.name for f in fields(Settings)}
    base = _base()
    assert all(getattr(base, name) != value for name, value in OTHER_VALUES.items())


@pytest.mark.parametrize("name", sorted(OTHER_VALUES))
def test_a_setting_changes_the_code_version_of_exactly_the_assets_it_shapes(name, base_versions):
    """On the code location Dagster loads: an ``output`` setting makes exactly its ``shapes`` stale, any
    other setting nothing (assets that only one side has, e.g. ``similarity_head`` with epochs, are left out)."""
    role = next(f.metadata for f in fields(Settings) if f.name == name)
    changed_versions = _code_versions(_base().with_overrides(**{name: OTHER_VALUES[name]}))
    changed = {asset for asset in base_versions.keys() & changed_versions.keys()
               if base_versions[asset] != changed_versions[asset]}
    shaped = {asset for asset in base_versions.keys() & changed_versions.keys()
              if _asset_kind(asset) in {*role["shapes"], *ALSO_SHAPES.get(name, ())}}
    assert changed == shaped, f"{role['var']} ({role['role']}) changed {sorted(changed)}, shapes {sorted(shaped)}"
    assert shaped or role["role"] != "output", f"{role['var']} shapes no asset of the code location"


def test_a_launchpad_value_of_every_runtime_knob_reaches_the_run():
    base = _base()
    for name in names_with_role("runtime"):
        resource = ArtsimRuntimeResource.from_settings(base).model_copy(update={name: OTHER_VALUES[name]})
        run = resource.apply(base)
        assert getattr(run, name) == OTHER_VALUES[name], name
        assert run.with_overrides(**{name: getattr(base, name)}) == base, name  # and nothing else changed


def test_the_runtime_resource_validates_each_knob_as_a_launchpad_value_and_defaults_to_the_settings():
    """Built as the launchpad builds it (the resource's own validation, not ``model_copy``): every run-time
    knob takes its other value, a value of the wrong type is refused, and no value leaves the settings as they are."""
    base = _base()
    assert ArtsimRuntimeResource().apply(base) == base
    for name in RUNTIME_FIELDS:
        assert getattr(ArtsimRuntimeResource(**{name: OTHER_VALUES[name]}).apply(base), name) == OTHER_VALUES[name]
    with pytest.raises(ValidationError, match="download_workers"):
        ArtsimRuntimeResource(download_workers="many")
    changed = ArtsimRuntimeResource(download_workers=3, refit_share=0.5).apply(Settings())
    assert (changed.download_workers, changed.refit_share) == (3, 0.5)


def test_env_round_trip():
    settings = Settings.from_env({"ARTSIM_REFIT_DRIFT": "2.5", "ARTSIM_TAPS": "none", "ARTSIM_MODELS": "a,b"})
    assert (settings.refit_drift, settings.taps, settings.models) == (2.5, "none", ("a", "b"))
    assert Settings.from_env(settings.as_env()) == settings


def test_launchpad_retries_reach_the_nga_download(tmp_path, instance):
    """http_retries set on the ``artsim`` resource (as the launchpad does) is what raw_objects' download uses."""
    with LocalServer() as server:
        for name, body in nga_csvs([Painting(i) for i in range(1, 4)]).items():
            server.routes[f"/data/{name}.csv"] = body
        settings = Settings(nga_source=server.url, data_lake=tmp_path / "lake", limit=0, http_retries=5)
        resources = build_resources(settings)
        resources["nga_source"] = NgaSourceResource(location=server.url, backoff_base_s=0.01)

        server.faults["/data/objects.csv"] = [500]
        no_retry = resources | {"artsim": ArtsimRuntimeResource(**(resources["artsim"].model_dump() | {"http_retries": 0}))}
        failed = materialize(build_assets(settings), selection=["raw_objects"], resources=no_retry,
                             instance=instance, raise_on_error=False)
        assert not failed.success  # the one 500 was not retried: the launchpad's 0 reached the download

        server.faults["/data/objects.csv"] = [500]
        retried = materialize(build_assets(settings), selection=["raw_objects"], resources=resources, instance=instance)
        assert retried.success
