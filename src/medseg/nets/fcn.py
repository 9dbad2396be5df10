"""FCN (Long, Shelhamer & Darrell 2015), FCN-8s style, for 2D and 3D.

A fully convolutional encoder (conv blocks, max-pool between levels, as VGG) classifies every
location of its three coarsest levels with a 1x1 "score" convolution. The coarsest scores are
upsampled x2 by a learned transposed convolution and summed with the next level's scores, twice
(the "skip-fused" upsampling), and the fused map, at 1/2^(levels-3) resolution, is brought to full
size by fixed bilinear/trilinear interpolation (the paper's final 8x deconvolution is initialised
bilinear). Unlike a U-Net there is no decoder of convolutions: fine detail comes only from the
score sums, which is why FCN boundaries are coarser, and why it is cheap.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .unet import _CONV, _CONV_T, _POOL, ConvBlock


class FCN(nn.Module):
    """FCN for `spatial_dims` 2 or 3.

    features: channels per encoder level, shallowest first; len(features)-1 poolings.
    fused:    how many of the coarsest levels feed the score sum (3 = FCN-8s, 2 = FCN-16s, 1 = FCN-32s).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        spatial_dims: int = 2,
        features: Sequence[int] = (16, 32, 64, 128, 256),
        norm: str | None = "instance",
        act: str = "leakyrelu",
        fused: int = 3,
    ):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        self.spatial_dims = spatial_dims
        self.features = tuple(int(f) for f in features)
        if not 1 <= fused <= len(self.features):
            raise ValueError(f"fused must be 1..{len(self.features)} (the number of levels), got {fused}")
        self.encoder = nn.ModuleList()
        cin = in_channels
        for level, width in enumerate(self.features):
            block = ConvBlock(spatial_dims, cin, width, norm, act)
            self.encoder.append(block if level == 0 else nn.Sequential(_POOL[spatial_dims](2), block))
            cin = width
        fused_widths = self.features[-fused:]
        self.scores = nn.ModuleList(_CONV[spatial_dims](w, num_classes, 1) for w in reversed(fused_widths))
        self.upsample = nn.ModuleList(_CONV_T[spatial_dims](num_classes, num_classes, 4, stride=2, padding=1, bias=False)
                                      for _ in range(fused - 1))
        for up in self.upsample:
            _init_bilinear(up.weight)
        self.fused = fused

    @property
    def divisor(self) -> int:
        """Input sizes must be multiples of this so the score maps of all levels line up."""
        return 2 ** (len(self.features) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        levels = []
        for block in self.encoder:
            x = block(x)
            levels.append(x)
        coarse_first = levels[::-1][: self.fused]
        score = self.scores[0](coarse_first[0])
        for up, head, features in zip(self.upsample, self.scores[1:], coarse_first[1:]):
            score = up(score) + head(features)
        if score.shape[2:] != size:
            score = F.interpolate(score, size=size, mode="bilinear" if self.spatial_dims == 2 else "trilinear",
                                  align_corners=False)
        return score


def _init_bilinear(weight: torch.Tensor) -> None:
    """Set a (K, K, 4, ...) stride-2 transposed convolution to per-class linear x2 upsampling (FCN's init)."""
    taps = torch.tensor([0.25, 0.75, 0.75, 0.25])
    kernel = taps
    for _ in range(weight.ndim - 3):
        kernel = kernel[..., None] * taps
    with torch.no_grad():
        weight.zero_()
        for k in range(weight.shape[0]):
            weight[k, k] = kernel
