"""What a registry model is (:class:`ModelSpec`), apart from the registry itself (:mod:`.models`, which needs
torch to build the networks): :mod:`.preprocessing` and :mod:`.model_weights` read a spec without importing
the registry that imports them (no circle, type-only ones included)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from PIL import Image

if TYPE_CHECKING:  # annotations only: a spec is plain data, torch is imported where a network is built
    import torch
    from torch import nn

#: The statistics pooled from each tap's output, per channel, over space (CNN) or tokens (ViT).
TAP_STATS = ("mean", "std")

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


@dataclass(frozen=True)
class ModelSpec:
    """What a registry model is and how its inputs must be prepared.

    ``builder`` returns the architecture with its classification head already replaced by
    ``nn.Identity`` (randomly initialised). ``pretrained`` returns ``(state_dict, weights_id)``
    for that headless architecture, or raises :class:`~artsim_pipeline.core.models.WeightsUnavailableError`.
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
