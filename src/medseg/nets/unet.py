"""A U-Net whose dimensionality is a parameter: the same code builds 2D and 3D networks.

The encoder halves resolution per stage and doubles width; the decoder upsamples, concatenates
the encoder's skip features and refines them. `UNet.classic()` reproduces the original paper's
2D network exactly (64..1024 filters, no normalisation, max-pool down, transposed conv up), which
the tests pin to the reference Keras model's parameter count.

The network returns logits; softmax is applied by the loss and the predictor, where it is
numerically safer.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}


class InstanceNorm(nn.Module):
    """Affine instance normalisation written with reductions and element-wise ops.

    Same arithmetic and parameters (``weight``, ``bias``) as `nn.InstanceNorm3d(affine=True)`,
    but it keeps channels-last tensors channels-last: PyTorch's CPU kernel reshapes into a
    batch-norm call and copies the activations twice per layer, which cost a 3D U-Net about a
    quarter of its training step here (BENCHMARKS.md).
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=tuple(range(2, x.ndim)), keepdim=True, correction=0)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        scale = self.weight.view(shape) * torch.rsqrt(var + self.eps)
        return x * scale + (self.bias.view(shape) - mean * scale)


def _norm(kind: str | None, dims: int, channels: int) -> nn.Module:
    if kind is None or kind == "none":
        return nn.Identity()
    if kind == "batch":
        return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d)(channels)
    if kind == "instance":
        return InstanceNorm(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    raise ValueError(f"unknown normalisation {kind!r}: use batch, instance, group or none")


def _act(kind: str) -> nn.Module:
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "leakyrelu":
        return nn.LeakyReLU(0.01, inplace=True)
    raise ValueError(f"unknown activation {kind!r}: use relu or leakyrelu")


class ConvBlock(nn.Sequential):
    """Two 3x3(x3) convolutions, each followed by normalisation and activation."""

    def __init__(self, dims: int, cin: int, cout: int, norm: str | None, act: str, stride: int = 1):
        bias = norm in (None, "none")
        super().__init__(
            _CONV[dims](cin, cout, 3, stride=stride, padding=1, bias=bias), _norm(norm, dims, cout), _act(act),
            _CONV[dims](cout, cout, 3, padding=1, bias=bias), _norm(norm, dims, cout), _act(act),
        )


class UNet(nn.Module):
    """Encoder-decoder with skip connections, for `spatial_dims` 2 or 3.

    features: channels per resolution level, shallowest first; len(features)-1 downsamplings.
    down:     "maxpool" (classic) or "stride" (a strided first convolution: cheaper, nnU-Net style).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        spatial_dims: int = 2,
        features: Sequence[int] = (16, 32, 64, 128, 256),
        norm: str | None = "instance",
        act: str = "leakyrelu",
        down: str = "stride",
    ):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if down not in ("maxpool", "stride"):
            raise ValueError(f"down must be 'maxpool' or 'stride', got {down!r}")
        self.spatial_dims = spatial_dims
        self.features = tuple(int(f) for f in features)
        self.encoder = nn.ModuleList()
        cin = in_channels
        for level, width in enumerate(self.features):
            if level == 0:
                block: nn.Module = ConvBlock(spatial_dims, cin, width, norm, act)
            elif down == "maxpool":
                block = nn.Sequential(_POOL[spatial_dims](2), ConvBlock(spatial_dims, cin, width, norm, act))
            else:
                block = ConvBlock(spatial_dims, cin, width, norm, act, stride=2)
            self.encoder.append(block)
            cin = width
        self.upsample = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for width in reversed(self.features[:-1]):
            self.upsample.append(_CONV_T[spatial_dims](cin, width, 2, stride=2))
            self.decoder.append(ConvBlock(spatial_dims, 2 * width, width, norm, act))
            cin = width
        self.head = _CONV[spatial_dims](cin, num_classes, 1)

    @property
    def divisor(self) -> int:
        """Input sizes must be multiples of this so every skip connection lines up."""
        return 2 ** (len(self.features) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        skips.pop()
        for up, block in zip(self.upsample, self.decoder):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)

    @classmethod
    def classic(cls, in_channels: int = 1, num_classes: int = 2, spatial_dims: int = 2) -> "UNet":
        """The original U-Net: 64-128-256-512-1024, conv+ReLU pairs, max-pool, transposed conv."""
        return cls(in_channels, num_classes, spatial_dims, (64, 128, 256, 512, 1024),
                   norm=None, act="relu", down="maxpool")
