"""Deep supervision: a loss applied to the logits of every decoder scale, each against the label
map resized to it, weighted 1, 1/2, 1/4, ... (normalised)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class DeepSupervisionLoss(nn.Module):
    """A loss over the multi-scale logits of a deeply supervised network (full resolution first).

    Scale i (0 = full) gets weight 2^-i, the weights normalised to sum 1, so the full-resolution
    term dominates and coarse heads only guide the early layers. The target is brought to each
    scale by nearest-neighbour subsampling (voxel i*s of each axis, which is the centre of a
    stride-s convolution's window), not by max-pooling: losses take one class index per voxel,
    and max-pooling integer labels would promote the largest class id (and an ignore value such
    as 255) over every other label in its window. A plain tensor (a network in eval mode, or
    without deep supervision) goes straight to the wrapped loss, so wrapping is always safe.
    """

    def __init__(self, loss: nn.Module, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.loss = loss
        self.weights = None if weights is None else [float(w) for w in weights]

    def scale_weights(self, count: int) -> list[float]:
        raw = self.weights if self.weights is not None else [0.5 ** i for i in range(count)]
        if len(raw) != count:
            raise ValueError(f"{len(raw)} deep-supervision weights for {count} outputs")
        total = sum(raw)
        if total <= 0 or min(raw) < 0:
            raise ValueError(f"deep-supervision weights must be >= 0 and not all 0, got {raw}")
        return [w / total for w in raw]

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self.loss(outputs, target)
        total = 0.0
        for weight, logits in zip(self.scale_weights(len(outputs)), outputs):
            if weight == 0:
                continue
            scaled = target
            if tuple(logits.shape[2:]) != tuple(target.shape[1:]):
                # exact for label values < 2^24 (float32 holds them), which covers any ignore value in use
                scaled = F.interpolate(target.unsqueeze(1).float(), size=logits.shape[2:], mode="nearest")
                scaled = scaled.squeeze(1).to(target.dtype)
            total = total + weight * self.loss(logits, scaled)
        return total
