"""Each setting is declared once (config.py) with its role; the env map, the run-time resource and the
code-version inputs are derived from the declarations, and a launchpad change of a run-time knob reaches
every download that uses it."""

import typing
from dataclasses import fields

from dagster import materialize

from artsim_pipeline.assets.versions import CODE_VERSIONS, OUTPUT_SETTINGS
from artsim_pipeline.config import ENV_VARS, ROLES, Settings, names_with_role
from artsim_pipeline.definitions import build_assets
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
            assert all(f.name in OUTPUT_SETTINGS[asset] for asset in f.metadata["shapes"])
        else:
            assert not any(f.name in names for names in OUTPUT_SETTINGS.values()), f.name


def test_the_runtime_resource_has_exactly_the_runtime_settings_with_their_defaults():
    assert RUNTIME_FIELDS == names_with_role("runtime")
    resource_fields = ArtsimRuntimeResource.model_fields
    assert tuple(resource_fields) == RUNTIME_FIELDS
    hints, defaults = typing.get_type_hints(Settings), Settings()
    for name in RUNTIME_FIELDS:
        assert resource_fields[name].annotation == hints[name]
        assert resource_fields[name].default == getattr(defaults, name)
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
