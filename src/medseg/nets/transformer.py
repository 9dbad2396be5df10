"""Transformer encoders from MONAI, wrapped to speak medseg's model interface.

* `unetr` — UNETR (Hatamizadeh et al. 2022): a ViT over 16-voxel patches feeding a convolutional
  decoder. Its position embeddings fix the input size, so it takes ``img_size`` (the training
  patch, every side a multiple of 16). Smaller inputs (a whole small image at prediction time)
  are zero-padded up to ``img_size`` and the output cropped back; larger ones are refused.
* `swinunetr` — Swin UNETR (Hatamizadeh et al. 2021): shifted-window attention over a 5-stage
  hierarchy; any input whose sides are multiples of 32 works, so it needs no ``img_size``.
  Training patches should be at least 64 a side: at 32 the deepest stage is 1 voxel and its
  instance normalisation has nothing to normalise.

MONAI is imported here, inside the factories, so `import medseg` stays light for the other models.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

_NORM_NAMES = {"instance": "instance", "batch": "batch", "group": ("group", {"num_groups": 8})}


def _monai_norm(norm: str | None) -> str | tuple:
    if norm not in _NORM_NAMES:
        raise ValueError(f"transformer models support norm {', '.join(_NORM_NAMES)}, got {norm!r}")
    return _NORM_NAMES[norm]


class MonaiNet(nn.Module):
    """A MONAI network with a `divisor` and, for fixed-size models, padding to `img_size`."""

    def __init__(self, net: nn.Module, divisor: int, img_size: tuple[int, ...] | None = None):
        super().__init__()
        self.net = net
        self._divisor = divisor
        self.img_size = img_size

    @property
    def divisor(self) -> int:
        """Input sizes must be multiples of this (the patch embedding / patch-merging stride)."""
        return self._divisor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.img_size is None:
            return self.net(x)
        size = tuple(x.shape[2:])
        if size == self.img_size:
            return self.net(x)
        if any(s > m for s, m in zip(size, self.img_size)):
            raise ValueError(f"input {size} is larger than this model's img_size {self.img_size}: "
                             "UNETR's position embeddings fix its input size (predict with sliding windows)")
        pad = []
        for s, m in zip(reversed(size), reversed(self.img_size)):
            pad += [0, m - s]
        out = self.net(F.pad(x, pad))
        return out[(slice(None), slice(None)) + tuple(slice(0, s) for s in size)]


def _check_img_size(img_size: int | Sequence[int] | None, spatial_dims: int, divisor: int) -> tuple[int, ...]:
    if img_size is None:
        raise ValueError("unetr needs img_size (the training patch size, e.g. img_size=(64, 64, 64)): "
                         "its position embeddings fix the input size")
    size = (int(img_size),) * spatial_dims if isinstance(img_size, int) else tuple(int(s) for s in img_size)
    if len(size) != spatial_dims:
        raise ValueError(f"img_size {size} must have {spatial_dims} entries for a {spatial_dims}D model")
    if any(s % divisor or s <= 0 for s in size):
        raise ValueError(f"img_size {size} must be a positive multiple of {divisor} on every side for unetr")
    return size


def unetr(
    in_channels: int,
    num_classes: int,
    spatial_dims: int = 3,
    img_size: int | Sequence[int] | None = None,
    norm: str = "instance",
    feature_size: int = 16,
    hidden_size: int = 384,
    mlp_dim: int = 1536,
    num_heads: int = 6,
    dropout_rate: float = 0.0,
) -> MonaiNet:
    """MONAI's UNETR with a ViT-Small encoder by default (384 wide, 6 heads, 12 layers, ~30 M
    parameters), because medseg trains on CPUs; the paper's ViT-B is ``hidden_size=768,
    mlp_dim=3072, num_heads=12`` (~90 M parameters)."""
    from monai.networks.nets import UNETR

    size = _check_img_size(img_size, spatial_dims, 16)
    net = UNETR(in_channels, num_classes, img_size=size, feature_size=feature_size, hidden_size=hidden_size,
                mlp_dim=mlp_dim, num_heads=num_heads, norm_name=_monai_norm(norm), dropout_rate=dropout_rate,
                spatial_dims=spatial_dims)
    return MonaiNet(net, divisor=16, img_size=size)


def swinunetr(
    in_channels: int,
    num_classes: int,
    spatial_dims: int = 3,
    norm: str = "instance",
    feature_size: int = 24,
    depths: Sequence[int] = (2, 2, 2, 2),
    num_heads: Sequence[int] = (3, 6, 12, 24),
    use_v2: bool = False,
    dropout_rate: float = 0.0,
) -> MonaiNet:
    """MONAI's SwinUNETR (window 7, patch 2); ``feature_size`` must be a multiple of 12 (MONAI's rule)."""
    from monai.networks.nets import SwinUNETR

    if feature_size % 12:
        raise ValueError(f"swinunetr feature_size must be a multiple of 12, got {feature_size}")
    net = SwinUNETR(in_channels=in_channels, out_channels=num_classes, feature_size=feature_size,
                    depths=tuple(depths), num_heads=tuple(num_heads), norm_name=_monai_norm(norm),
                    drop_rate=dropout_rate, spatial_dims=spatial_dims, use_v2=use_v2)
    return MonaiNet(net, divisor=32)
