"""Network registry: one constructor call per model, chosen by name (`--model NAME`)."""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .unet import UNet

ModelFactory = Callable[..., nn.Module]

MODELS: dict[str, ModelFactory] = {
    "unet": UNet,
    "unet-classic": lambda in_channels, num_classes, spatial_dims=2, **_: UNet.classic(in_channels, num_classes, spatial_dims),
}
MODELS["classic"] = MODELS["unet-classic"]


def build_model(name: str, in_channels: int, num_classes: int, spatial_dims: int = 2, **options) -> nn.Module:
    """Build a registered network; `options` are the model's own keyword arguments."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}") from None
    return factory(in_channels=in_channels, num_classes=num_classes, spatial_dims=spatial_dims, **options)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["MODELS", "UNet", "build_model", "count_parameters"]
