"""An exponential moving average of a network's weights, for validation, checkpoints and prediction.

Late in a short run the weights still jump from step to step; averaging the last few hundred
steps' weights removes that noise at the cost of one extra copy of the weights. It smoothed the
validation curve but did not raise held-out Dice (docs/decisions.md, "EMA of the weights off by
default"), so `TrainConfig.ema` is off by default.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class WeightEMA:
    """`average = decay * average + (1 - decay) * weights` after every optimiser step.

    The decay ramps up as (1 + n) / (10 + n) over the first updates, so the average does not
    hold on to the random initial weights. Buffers (batch-norm statistics) are averaged too.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def _tensors(self, model: nn.Module) -> list[torch.Tensor]:
        return [t for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self._tensors(self.model), [t.detach() for t in self._tensors(model)], 1.0 - decay)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict, updates: int) -> None:
        self.model.load_state_dict(state)
        self.updates = updates
