"""Residual U-Net: the configurable U-Net with residual encoder stages.

Each encoder stage is a pre-addition residual block (conv-norm-act-conv-norm, plus a projected
shortcut when the shape changes, then the activation), as in ResNet and nnU-Net's ResEnc
variants: the identity path lets gradients reach early layers directly, which helps deeper or
wider encoders train in short budgets. The decoder, skips, heads and deep supervision are the
U-Net's (`UNet`), so every option of `unet` applies here too.
"""
from __future__ import annotations

import torch
from torch import nn

from .unet import _CONV, UNet, _act, _norm


class ResidualBlock(nn.Module):
    """Two convolutions with an identity (or 1x1 strided projection) shortcut."""

    def __init__(self, dims: int, cin: int, cout: int, norm: str | None, act: str,
                 stride: int | tuple[int, ...] = 1, kernel: int | tuple[int, ...] = 3):
        super().__init__()
        bias = norm in (None, "none")
        padding = tuple(k // 2 for k in kernel) if isinstance(kernel, tuple) else kernel // 2
        conv = _CONV[dims]
        self.body = nn.Sequential(
            conv(cin, cout, kernel, stride=stride, padding=padding, bias=bias), _norm(norm, dims, cout), _act(act),
            conv(cout, cout, kernel, padding=padding, bias=bias), _norm(norm, dims, cout),
        )
        strided = stride != 1 and any(s != 1 for s in (stride if isinstance(stride, tuple) else (stride,)))
        if cin != cout or strided:
            self.shortcut: nn.Module = nn.Sequential(conv(cin, cout, 1, stride=stride, bias=bias), _norm(norm, dims, cout))
        else:
            self.shortcut = nn.Identity()
        self.act = _act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class ResUNet(UNet):
    """`UNet` whose encoder stages are `ResidualBlock`s (strided downsampling inside the block)."""

    def _encoder_block(self, cin: int, width: int, norm: str | None, act: str, down: str,
                       stride: int | tuple[int, ...], kernel: tuple[int, ...]) -> nn.Module:
        return ResidualBlock(self.spatial_dims, cin, width, norm, act, stride=stride, kernel=kernel)
