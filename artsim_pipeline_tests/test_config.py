from pathlib import Path

import pytest

from artsim_pipeline.config import NOTEBOOK_MODELS, ConfigError, Settings
from artsim_pipeline.resources import ArtsimRuntimeResource


def test_defaults_match_the_documented_ones():
    s = Settings.from_env({})
    assert s.nga_source.startswith("https://raw.githubusercontent.com/NationalGalleryOfArt/opendata")
    assert (s.data_lake, s.limit, s.min_side, s.batch_size, s.image_size) == (Path("data_lake"), 1000, 300, 256, 1200)
    assert s.models == NOTEBOOK_MODELS


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
