"""The network registry: one constructor call per model, chosen by name (`--model NAME`).

Every factory has the signature ``(in_channels, num_classes, spatial_dims, **options)`` and
returns an `nn.Module` with a ``divisor``: the multiple every input side must be (one int, or
one per axis for an anisotropic U-Net). `ModelSpec` adds what a trainer or a table needs to know
before building: which dimensionalities the model supports and whether it must be told its input
size (``img_size``: UNETR's position embeddings fix it). MONAI is imported only when a
transformer model is built (`transformer.py`).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .fcn import FCN
from .resunet import ResUNet
from .transformer import swinunetr, unetr
from .unet import UNet
from .vnet import VNet

ModelFactory = Callable[..., nn.Module]

# Default widths of the U-Net family when a run sets none (the plan sets its own from the patch).
FEATURES_2D = (16, 32, 64, 128, 256)   # 4 poolings: 256-pixel patches end at 16x16
FEATURES_3D = (16, 32, 64, 128)        # 3 poolings: 3D patches on a CPU are ~40-128 voxels a side
_POSITIONAL = ("self", "in_channels", "num_classes", "spatial_dims")


def _classic(in_channels: int, num_classes: int, spatial_dims: int = 2) -> UNet:
    """The seed's original U-Net preset (no options)."""
    return UNet.classic(in_channels, num_classes, spatial_dims)


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its factory and what callers must know before building it."""

    factory: ModelFactory
    summary: str
    dims: tuple[int, ...] = (2, 3)
    needs_img_size: bool = False

    def __call__(self, *args, **kwargs) -> nn.Module:
        return self.factory(*args, **kwargs)

    def options(self) -> tuple[str, ...]:
        """The model's own keyword options (everything after in_channels, num_classes, spatial_dims)."""
        return tuple(p for p in inspect.signature(self.factory).parameters if p not in _POSITIONAL)


MODELS: dict[str, ModelSpec] = {
    "unet": ModelSpec(UNet, "configurable U-Net: strided conv down, instance norm, LeakyReLU (default)"),
    "unet-classic": ModelSpec(_classic, "the original U-Net (Ronneberger 2015): 64-1024 channels, max-pool, ReLU"),
    "resunet": ModelSpec(ResUNet, "U-Net with residual encoder stages"),
    "vnet": ModelSpec(VNet, "V-Net (Milletari 2016): residual stages, 5x5x5 convs, strided-conv down"),
    "fcn": ModelSpec(FCN, "FCN-8s style: conv encoder, score maps of 3 levels fused while upsampling"),
    "unetr": ModelSpec(unetr, "UNETR (MONAI): ViT encoder on 16-voxel patches, conv decoder; fixed img_size",
                       needs_img_size=True),
    "swinunetr": ModelSpec(swinunetr, "Swin UNETR (MONAI): shifted-window transformer encoder, conv decoder"),
}
MODELS["classic"] = MODELS["unet-classic"]
ALIASES = {"classic": "unet-classic"}


def model_spec(name: str) -> ModelSpec:
    """The registered `ModelSpec`; unknown names list the available ones."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}") from None


def build_model(name: str, in_channels: int, num_classes: int, spatial_dims: int = 2, **options) -> nn.Module:
    """Build a registered network; `options` are the model's own keyword arguments."""
    spec = model_spec(name)
    if spatial_dims not in spec.dims:
        raise ValueError(f"model {name!r} supports {' and '.join(f'{d}D' for d in spec.dims)}, not {spatial_dims}D")
    unknown = sorted(set(options) - set(spec.options()))
    if unknown:
        raise ValueError(f"model {name!r} has no option {', '.join(unknown)}; "
                         f"its options: {', '.join(spec.options()) or 'none'}")
    return spec(in_channels=in_channels, num_classes=num_classes, spatial_dims=spatial_dims, **options)


def select_options(name: str, **candidates) -> dict:
    """The subset of `candidates` (e.g. a trainer's features, norm, deep_supervision, img_size)
    that model `name` takes, leaving out None values: one call maps generic settings to any model."""
    accepted = set(model_spec(name).options())
    return {k: v for k, v in candidates.items() if k in accepted and v is not None}


def model_divisor(name: str, spatial_dims: int, in_channels: int = 1, **options) -> int | tuple[int, ...]:
    """The model's `divisor` before it exists (to choose a patch size first): built on the meta
    device, so it costs no memory and no initialisation time. `img_size` may be left out."""
    spec = model_spec(name)
    if spec.needs_img_size and options.get("img_size") is None:
        options = {**options, "img_size": 256}  # any valid size: the divisor does not depend on it
    return build_on_meta(name, in_channels, 2, spatial_dims, **options).divisor


def build_on_meta(name: str, in_channels: int, num_classes: int, spatial_dims: int, **options) -> nn.Module:
    """`build_model` on the meta device (shapes only: no memory, no initialisation). Models whose
    constructor reads tensor values (MONAI's SwinUNETR) are built on the CPU and moved there."""
    try:
        with torch.device("meta"):
            return build_model(name, in_channels, num_classes, spatial_dims, **options)
    except (RuntimeError, NotImplementedError):
        return build_model(name, in_channels, num_classes, spatial_dims, **options).to("meta")


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
