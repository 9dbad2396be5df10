"""A U-Net whose dimensionality is a parameter: the same code builds 2D and 3D networks.

The encoder halves resolution per stage and doubles width; the decoder upsamples, concatenates
the encoder's skip features and refines them. `UNet.classic()` reproduces the original paper's
2D network exactly (64..1024 filters, no normalisation, max-pool down, transposed conv up), which
the tests pin to the reference Keras model's parameter count.

The network returns logits; softmax is applied by the loss and the predictor, where it is
numerically safer. With ``deep_supervision=True`` a network in training mode returns a list of
logits, full resolution first, then one per coarser decoder level (for
`medseg.training.deep_supervision.DeepSupervisionLoss`); in eval mode it returns full-resolution logits only, so
inference code never sees the difference.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .conv import Conv2d, Conv3d

_CONV = {2: Conv2d, 3: Conv3d}
_CONV_T = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}


class InstanceNorm(nn.Module):
    """Affine instance normalisation written with reductions and element-wise ops.

    Same arithmetic and parameters (``weight``, ``bias``) as `nn.InstanceNorm3d(affine=True)`,
    but it keeps channels-last tensors channels-last: PyTorch's CPU kernel reshapes into a
    batch-norm call and copies the activations twice per layer, a large share of a 3D U-Net's
    training step (docs/decisions.md, "Channels-last 3D and medseg's InstanceNorm").
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(2, x.ndim))
        if torch.is_grad_enabled():
            var, mean = torch.var_mean(x, dim=dims, keepdim=True, correction=0)
        else:
            # without autograd, two vectorised passes (mean, then the mean square about it): on a
            # CPU they beat var_mean's one-pass loop (docs/decisions.md). Training keeps var_mean,
            # whose backward saves no extra activation; E[x²] - E[x]² would be faster still but
            # loses all precision when a channel's mean dwarfs its spread.
            mean = x.mean(dims, keepdim=True)
            var = (x - mean).square_().mean(dims, keepdim=True)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        scale = self.weight.view(shape) * torch.rsqrt(var + self.eps)
        return torch.addcmul(self.bias.view(shape) - mean * scale, x, scale)


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
    if kind == "prelu":
        return nn.PReLU()
    raise ValueError(f"unknown activation {kind!r}: use relu, leakyrelu or prelu")


class ConvBlock(nn.Sequential):
    """Two 3x3(x3) convolutions, each followed by normalisation and activation.

    `kernel` and `stride` may be per axis: a kernel of 1 along a coarse axis (e.g. 5 mm slices)
    keeps the block from mixing slices that are too far apart to share local structure.
    """

    def __init__(self, dims: int, cin: int, cout: int, norm: str | None, act: str,
                 stride: int | Sequence[int] = 1, kernel: int | Sequence[int] = 3):
        bias = norm in (None, "none")
        padding = tuple(k // 2 for k in kernel) if isinstance(kernel, Sequence) else kernel // 2
        super().__init__(
            _CONV[dims](cin, cout, kernel, stride=stride, padding=padding, bias=bias), _norm(norm, dims, cout), _act(act),
            _CONV[dims](cout, cout, kernel, padding=padding, bias=bias), _norm(norm, dims, cout), _act(act),
        )


def _per_level(values: Sequence | None, levels: int, dims: int, default: int, name: str) -> list[tuple[int, ...]]:
    """Expand per-level settings (an int or a per-axis tuple each) into per-axis tuples."""
    if values is None:
        return [(default,) * dims] * levels
    values = list(values)
    if len(values) != levels:
        raise ValueError(f"{name}: {levels} entries needed (one per level), got {len(values)}")
    out = []
    for v in values:
        v = (int(v),) * dims if isinstance(v, int) else tuple(int(a) for a in v)
        if len(v) != dims or min(v) < 1:
            raise ValueError(f"{name}: each entry needs {dims} positive sizes, got {v}")
        out.append(v)
    return out


class UNet(nn.Module):
    """Encoder-decoder with skip connections, for `spatial_dims` 2 or 3.

    features: channels per resolution level, shallowest first; len(features)-1 downsamplings.
    down:     "maxpool" (classic) or "stride" (a strided first convolution: cheaper, nnU-Net style).
    strides:  per downsampling, its factor per axis (default 2 everywhere); 1 along an axis leaves
              it alone, so anisotropic scans pool their fine axes first (the plan decides).
    kernels:  per level, the convolution size per axis (default 3 everywhere).
    deep_supervision: add a 1x1 head on every decoder level; in training mode `forward` returns
              [full, next coarser, ...] logits (len(features)-1 of them), in eval mode full only.
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
        strides: Sequence[int | Sequence[int]] | None = None,
        kernels: Sequence[int | Sequence[int]] | None = None,
        deep_supervision: bool = False,
    ):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if down not in ("maxpool", "stride"):
            raise ValueError(f"down must be 'maxpool' or 'stride', got {down!r}")
        self.spatial_dims = spatial_dims
        self.features = tuple(int(f) for f in features)
        self.strides = _per_level(strides, len(self.features) - 1, spatial_dims, 2, "strides")
        self.kernels = _per_level(kernels, len(self.features), spatial_dims, 3, "kernels")
        self.encoder = nn.ModuleList()
        cin = in_channels
        for level, width in enumerate(self.features):
            stride = self.strides[level - 1] if level else 1
            self.encoder.append(self._encoder_block(cin, width, norm, act, down, stride, self.kernels[level]))
            cin = width
        self.upsample = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in reversed(range(len(self.features) - 1)):
            width, stride = self.features[level], self.strides[level]
            self.upsample.append(_CONV_T[spatial_dims](cin, width, stride, stride=stride))
            self.decoder.append(ConvBlock(spatial_dims, 2 * width, width, norm, act, kernel=self.kernels[level]))
            cin = width
        self.head = _CONV[spatial_dims](cin, num_classes, 1)
        self.deep_supervision = bool(deep_supervision)
        if self.deep_supervision:
            if len(self.features) < 3:
                raise ValueError("deep_supervision needs at least 3 levels (2 decoder outputs)")
            # heads for the coarser decoder outputs, finest first (the full one is `head`)
            self.ds_heads = nn.ModuleList(_CONV[spatial_dims](w, num_classes, 1) for w in self.features[1:-1])

    def _encoder_block(self, cin: int, width: int, norm: str | None, act: str, down: str,
                       stride: int | tuple[int, ...], kernel: tuple[int, ...]) -> nn.Module:
        """One encoder stage (`stride` 1 at the first level); subclasses swap the block type."""
        dims = self.spatial_dims
        if stride == 1:
            return ConvBlock(dims, cin, width, norm, act, kernel=kernel)
        if down == "maxpool":
            return nn.Sequential(_POOL[dims](stride), ConvBlock(dims, cin, width, norm, act, kernel=kernel))
        return ConvBlock(dims, cin, width, norm, act, stride=stride, kernel=kernel)

    @property
    def divisor(self) -> int | tuple[int, ...]:
        """Input sizes must be multiples of this so every skip connection lines up: one number
        when every axis is pooled alike, else one per axis (see `medseg.nets.axis_divisors`)."""
        per_axis = tuple(math.prod(s[a] for s in self.strides) for a in range(self.spatial_dims))
        return per_axis[0] if len(set(per_axis)) == 1 else per_axis

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        skips.pop()
        decoded = []
        for up, block in zip(self.upsample, self.decoder):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
            decoded.append(x)
        if not (self.deep_supervision and self.training):
            return self.head(x)
        coarser = decoded[:-1][::-1]  # finest first, skipping the full-resolution output
        return [self.head(x)] + [head(d) for head, d in zip(self.ds_heads, coarser)]

    @classmethod
    def classic(cls, in_channels: int = 1, num_classes: int = 2, spatial_dims: int = 2) -> "UNet":
        """The original U-Net: 64-128-256-512-1024, conv+ReLU pairs, max-pool, transposed conv."""
        return cls(in_channels, num_classes, spatial_dims, (64, 128, 256, 512, 1024),
                   norm=None, act="relu", down="maxpool")
