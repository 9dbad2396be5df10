"""V-Net (Milletari, Navab & Ahmadi 2016): a volumetric encoder-decoder of residual stages.

What makes it a V-Net rather than a U-Net:
* every stage learns a residual: its input is added to the output of its 1-3 convolutions;
* large 5x5x5 kernels (5x5 in 2D) at every level;
* downsampling by a 2x2x2 convolution with stride 2 (doubling the channels), not pooling;
* the decoder upsamples by a 2x2x2 transposed convolution, concatenates the encoder's features
  and keeps the wider (concatenated) width through its residual stage, as in the paper's figure.

Stage depths follow the paper (1, 2, 3, 3, 3 convolutions from the top level down; the decoder
mirrors them). The paper used PReLU and no normalisation; here each convolution is followed by
medseg's normalisation (instance by default; `norm="none"` for the paper's form), which trains
far more steadily with the small batches of 3D work. The 2D form swaps 5x5x5 for 5x5.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .unet import _CONV, _CONV_T, _act, _norm

PAPER_FEATURES = (16, 32, 64, 128, 256)
PAPER_DEPTHS = (1, 2, 3, 3, 3)


class ResidualStage(nn.Module):
    """`depth` same-size convolutions (conv-norm-act) whose sum with the stage input is activated."""

    def __init__(self, dims: int, channels: int, depth: int, kernel: int, norm: str | None, act: str):
        super().__init__()
        bias = norm in (None, "none")
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [_CONV[dims](channels, channels, kernel, padding=kernel // 2, bias=bias), _norm(norm, dims, channels)]
            if i < depth - 1:
                layers.append(_act(act))
        self.convs = nn.Sequential(*layers)
        self.act = _act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.convs(x) + x)


class VNet(nn.Module):
    """V-Net for `spatial_dims` 3 (the paper) or 2.

    features: channels per level, shallowest first (paper: 16..256, 4 downsamplings).
    depths:   convolutions per encoder stage (default the paper's 1, 2, 3, 3, 3, cut to the levels).
    kernel:   convolution size (paper: 5).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        spatial_dims: int = 3,
        features: Sequence[int] = PAPER_FEATURES,
        norm: str | None = "instance",
        act: str = "prelu",
        kernel: int = 5,
        depths: Sequence[int] | None = None,
    ):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"kernel must be an odd size, got {kernel}")
        self.spatial_dims = spatial_dims
        self.features = tuple(int(f) for f in features)
        levels = len(self.features)
        if levels < 2:
            raise ValueError("V-Net needs at least 2 levels")
        depths = tuple(depths) if depths is not None else (PAPER_DEPTHS + (3,) * levels)[:levels]
        if len(depths) != levels or min(depths) < 1:
            raise ValueError(f"depths needs {levels} entries >= 1, got {depths}")
        conv, conv_t = _CONV[spatial_dims], _CONV_T[spatial_dims]
        bias = norm in (None, "none")
        width0 = self.features[0]
        # the paper repeats a 1-channel input to 16 channels for the first residual sum
        self.input_proj = nn.Identity() if width0 % in_channels == 0 else conv(in_channels, width0, 1)
        self.input_repeat = width0 // in_channels if width0 % in_channels == 0 else 1
        self.input_conv = nn.Sequential(conv(in_channels, width0, kernel, padding=kernel // 2, bias=bias),
                                        _norm(norm, spatial_dims, width0))
        self.input_rest = ResidualStage(spatial_dims, width0, depths[0] - 1, kernel, norm, act) if depths[0] > 1 else None
        self.input_act = _act(act)
        self.down = nn.ModuleList()
        self.encoder = nn.ModuleList()
        for level in range(1, levels):
            cin, cout = self.features[level - 1], self.features[level]
            self.down.append(nn.Sequential(conv(cin, cout, 2, stride=2, bias=bias), _norm(norm, spatial_dims, cout), _act(act)))
            self.encoder.append(ResidualStage(spatial_dims, cout, depths[level], kernel, norm, act))
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        cin = self.features[-1]
        for level in reversed(range(levels - 1)):
            skip = self.features[level]  # the up-convolution matches the skip's width; the stage is twice that
            self.up.append(nn.Sequential(conv_t(cin, skip, 2, stride=2, bias=bias), _norm(norm, spatial_dims, skip), _act(act)))
            width = 2 * skip
            self.decoder.append(ResidualStage(spatial_dims, width, depths[level], kernel, norm, act))
            cin = width
        self.head = conv(cin, num_classes, 1)

    @property
    def divisor(self) -> int:
        """Input sizes must be multiples of this: one halving per level below the first."""
        return 2 ** (len(self.features) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.input_proj(x)
        if self.input_repeat > 1:
            shortcut = shortcut.repeat_interleave(self.input_repeat, dim=1)
        x = self.input_act(self.input_conv(x) + shortcut)
        if self.input_rest is not None:
            x = self.input_rest(x)
        skips = [x]
        for down, stage in zip(self.down, self.encoder):
            x = stage(down(x))
            skips.append(x)
        skips.pop()
        for up, stage in zip(self.up, self.decoder):
            x = stage(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)
