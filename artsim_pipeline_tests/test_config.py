import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from artsim_pipeline.config import ENV_VARS, ConfigError, Settings
from artsim_pipeline.resources import ArtsimRuntimeResource
from artsim_pipeline_tests.support import REPO


def readme_defaults() -> dict[str, str]:
    """``ARTSIM_*`` variable -> its default as README "Configuration" writes it (the last code span of the
    default cell: ``NGA open data on GitHub (`https://...`)`` is the URL)."""
    table = README_TABLE.search((REPO / "README.md").read_text())
    assert table, "README.md has no Configuration table"
    rows = {}
    for line in table[0].splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows[cells[0].strip("`")] = re.findall(r"`([^`]*)`", cells[1])[-1]
    return rows


README_TABLE = re.compile(r"^\| variable \| default \| meaning \|\n(?:\|.*\n)+", re.M)


def test_the_readme_documents_every_setting_with_its_real_default():
    """Each documented default, read by the setting's own parser, is the default ``Settings`` has (and every
    variable is documented, none that does not exist)."""
    documented = readme_defaults()
    assert set(documented) == set(ENV_VARS)
    defaults = Settings.from_env({})
    for var, (name, parse) in ENV_VARS.items():
        assert parse(documented[var]) == getattr(defaults, name), f"{var}: README says {documented[var]!r}"


@pytest.mark.parametrize("field", [f for f in fields(Settings) if f.metadata["bounds"] or f.metadata["choices"]],
                         ids=lambda f: f.metadata["var"])
def test_a_value_outside_a_declared_range_or_choice_names_its_variable(field):
    """From the declarations: every bounded or enumerated setting refuses a value outside them, by name."""
    var, bounds, choices = field.metadata["var"], field.metadata["bounds"], field.metadata["choices"]
    bad = "not-a-choice" if choices else str(bounds[0] - 1 if isinstance(field.default, int) else bounds[0] - 0.5)
    with pytest.raises(ConfigError, match=re.escape(var)):
        Settings.from_env({var: bad})


def test_environment_values_are_parsed():
    s = Settings.from_env({"ARTSIM_LIMIT": "0", "ARTSIM_MODELS": "efficientnet_lite0, mobilenet_v2,", "ARTSIM_DATA_LAKE": "/x"})
    assert s.limit == 0 and s.models == ("efficientnet_lite0", "mobilenet_v2") and s.data_lake == Path("/x")


@pytest.mark.parametrize(
    "env, variable",
    [
        ({"ARTSIM_LIMIT": "many"}, "ARTSIM_LIMIT"),
        ({"ARTSIM_LIMIT": "-1"}, "ARTSIM_LIMIT"),
        ({"ARTSIM_MIN_SIDE": "0"}, "ARTSIM_MIN_SIDE"),
        ({"ARTSIM_BATCH_SIZE": "1.5"}, "ARTSIM_BATCH_SIZE"),
        ({"ARTSIM_NGA_SOURCE": "http://example.com/x"}, "ARTSIM_NGA_SOURCE"),
        ({"ARTSIM_NGA_SOURCE": "ftp://x"}, "ARTSIM_NGA_SOURCE"),
        ({"ARTSIM_MODELS": ","}, "ARTSIM_MODELS"),
        ({"ARTSIM_PRECISION": "fp8"}, "ARTSIM_PRECISION"),
        ({"ARTSIM_MAX_FAILURE_SHARE": "2"}, "ARTSIM_MAX_FAILURE_SHARE"),
        ({"ARTSIM_FACE_MAX_SIDE": "8"}, "ARTSIM_FACE_MAX_SIDE"),
    ],
)
def test_bad_values_name_the_variable(env, variable):
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(env)


def test_local_http_source_is_accepted():
    assert Settings.from_env({"ARTSIM_NGA_SOURCE": "http://127.0.0.1:8000"}).nga_source == "http://127.0.0.1:8000"


def test_runtime_resource_carries_only_knobs_that_change_no_output():
    s = Settings.from_env({"ARTSIM_DOWNLOAD_WORKERS": "3", "ARTSIM_MODELS": "mobilenet_v2", "ARTSIM_DATA_LAKE": "/tmp/lake"})
    resource = ArtsimRuntimeResource.from_settings(s)
    assert resource.download_workers == 3
    # what shapes outputs (models, sizes, the lake) is fixed at load: the launchpad cannot change it
    assert not {"models", "data_lake", "min_side", "limit", "pca_dim", "weights"} & set(ArtsimRuntimeResource.model_fields)
    assert set(ArtsimRuntimeResource.model_fields) <= set(Settings.__dataclass_fields__)
    launched = resource.model_copy(update={"embed_batch_size": 4}).apply(s)
    assert launched.embed_batch_size == 4 and launched.models == ("mobilenet_v2",)
    with pytest.raises(ConfigError, match="ARTSIM_EMBED_BATCH_SIZE"):
        resource.model_copy(update={"embed_batch_size": 0}).apply(s)


# -- fault probe regressions --------------------------------------------------------------------------

@pytest.mark.parametrize(
    "source",
    [
        "http://127.0.0.1:80@example.com/",  # host is example.com, not 127.0.0.1
        "http://localhost@example.com/",
        "http://127.0.0.1:x@example.com:8000/",
        "https://user:secret@raw.githubusercontent.com/NationalGalleryOfArt/opendata/main",
        "https://token@raw.githubusercontent.com/x",
        "http://localhost\\@example.com/",
        "http://127.0.0.1:99999/",  # bad port
        "https:///no-host",
    ],
)
def test_source_url_userinfo_and_fake_loopback_host_are_rejected(source):
    with pytest.raises(ConfigError, match="ARTSIM_NGA_SOURCE"):
        Settings.from_env({"ARTSIM_NGA_SOURCE": source})


def test_source_url_host_is_parsed_like_a_client_does():
    for source in ("http://127.0.0.1:8000/base", "http://localhost/", "http://[::1]:8080", "https://example.org/x"):
        assert Settings(nga_source=source).nga_source == source


@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-inf", "Infinity"])
@pytest.mark.parametrize(
    "variable",
    ["ARTSIM_REQUESTS_PER_SECOND", "ARTSIM_HTTP_TIMEOUT", "ARTSIM_MAX_FAILURE_SHARE", "ARTSIM_FACE_THRESHOLD",
     "ARTSIM_FACE_MARGIN", "ARTSIM_MAX_SHRINK"],
)
def test_nan_and_inf_float_settings_are_rejected(variable, raw):
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: raw})


def test_nan_float_setting_is_rejected_when_set_directly():
    with pytest.raises(ConfigError, match="ARTSIM_MAX_FAILURE_SHARE"):
        Settings(max_failure_share=float("nan"))
    with pytest.raises(ConfigError, match="ARTSIM_HTTP_TIMEOUT"):
        Settings().with_overrides(http_timeout_s=float("inf"))


def test_limit_beyond_int64_is_rejected():
    assert Settings.from_env({"ARTSIM_LIMIT": str(2**63 - 1)}).limit == 2**63 - 1
    for raw in (str(2**63), "99999999999999999999999", "1" + "0" * 400):
        with pytest.raises(ConfigError, match="ARTSIM_LIMIT.*64-bit"):
            Settings.from_env({"ARTSIM_LIMIT": raw})
    with pytest.raises(ConfigError, match="ARTSIM_BATCH_SIZE"):
        Settings(batch_size=2**64)


def test_max_shrink_setting():
    assert Settings().max_shrink == 0.2
    assert Settings.from_env({"ARTSIM_MAX_SHRINK": "1.0"}).max_shrink == 1.0
    for raw in ("-0.1", "1.5", "lots"):
        with pytest.raises(ConfigError, match="ARTSIM_MAX_SHRINK"):
            Settings.from_env({"ARTSIM_MAX_SHRINK": raw})


def test_image_hosts_setting():
    assert Settings().image_hosts == ("api.nga.gov", "127.0.0.1", "localhost")
    s = Settings.from_env({"ARTSIM_IMAGE_HOSTS": " API.nga.gov , images.example.org,"})
    assert s.image_hosts == ("api.nga.gov", "images.example.org")
    assert Settings.from_env(s.as_env()).image_hosts == s.image_hosts
    for raw in ("https://api.nga.gov", "api.nga.gov:443", "user@api.nga.gov", "api.nga.gov/iiif", ",", "*.nga.gov"):
        with pytest.raises(ConfigError, match="ARTSIM_IMAGE_HOSTS"):
            Settings.from_env({"ARTSIM_IMAGE_HOSTS": raw})


# fault matrix (issue 19 #10, #13): a cron string with out-of-range fields, a blank lake path
@pytest.mark.parametrize("cron", ["99 99 99 99 99", "0 25 * * *", "* * 32 * *", "a b c d e"])
def test_refresh_cron_is_checked_by_the_schedule_parser(cron):
    with pytest.raises(ConfigError, match="ARTSIM_REFRESH_CRON"):
        Settings.from_env({"ARTSIM_REFRESH_CRON": cron})


def test_refresh_cron_valid_strings_pass():
    assert Settings.from_env({"ARTSIM_REFRESH_CRON": "*/15 2-4 * * 1-5"}).refresh_cron == "*/15 2-4 * * 1-5"


@pytest.mark.parametrize("variable", ["ARTSIM_DATA_LAKE", "ARTSIM_WORK_DIR"])
def test_blank_path_setting_names_the_variable(variable):
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: "  "})
    assert Settings.from_env({variable: ""}) == Settings()  # empty = unset


@pytest.mark.slow  # a fresh interpreter: this session has Dagster loaded already
def test_settings_import_dagster_only_to_check_a_cron_other_than_the_default():
    """What the module docstring promises: reading settings loads no Dagster; a non-default cron does (the
    control: the module list is read back)."""
    probe = ("import sys; from artsim_pipeline.config import Settings; Settings.from_env({}); a = 'dagster' in sys.modules; "
             "Settings.from_env({'ARTSIM_REFRESH_CRON': '0 5 * * *'}); print(a, 'dagster' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env=os.environ | {"PYTHONPATH": str(REPO)})
    assert out.stdout.split() == ["False", "True"], out.stderr
