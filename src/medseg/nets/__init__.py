"""Network registry: one constructor call per model, chosen by name (`--model NAME`)."""
from __future__ import annotations

from collections.abc import Callable, Sequence

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


def axis_divisors(model_or_divisor: nn.Module | int | Sequence[int], spatial_dims: int) -> tuple[int, ...]:
    """The multiple each input axis must be for a model (its `divisor`: one int or one per axis)."""
    divisor = getattr(model_or_divisor, "divisor", 16) if isinstance(model_or_divisor, nn.Module) else model_or_divisor
    if isinstance(divisor, int):
        return (int(divisor),) * spatial_dims
    divisor = tuple(int(d) for d in divisor)
    if len(divisor) != spatial_dims:
        raise ValueError(f"divisor {divisor} does not match {spatial_dims} spatial axes")
    return divisor


__all__ = ["MODELS", "UNet", "axis_divisors", "build_model", "count_parameters"]
