"""The CPU's measured convolution peak and FLOP counts: the yardstick of every "fraction of peak".

A U-Net's training and prediction are mostly convolution arithmetic, so the honest ceiling is
what this CPU's best convolution kernel reaches, measured, not the data sheet. The peak is the
best GFLOP/s over big 3x3x3 (3D) or 3x3 (2D) layers, 32->32 .. 128->128 channels, contiguous and
channels-last, best of N forward passes without autograd. FLOPs come from PyTorch's
`FlopCounterMode` (2 per multiply-add). bf16 autocast is timed on small layers only: where it is
emulated (no AVX-512-BF16 / AMX) a big bf16 3D layer takes tens of seconds.

The host's speed drifts, so suites measure the peak in their own process, before and after their
own figures, and divide by the higher one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class ConvLayer:
    """One convolution to time: channels in = out, a cube (3D) or square (2D) input of batch 1."""

    spatial_dims: int
    channels: int
    size: int

    def describe(self) -> str:
        k = "x".join(["3"] * self.spatial_dims)
        shape = "x".join([str(self.size)] * self.spatial_dims)
        return f"{self.spatial_dims}D {k} conv {self.channels}->{self.channels} on {shape}"


# fp32: one forward pass takes ~10-200 ms on a 2-core CPU, long enough to time.
LAYERS = {3: (ConvLayer(3, 32, 48), ConvLayer(3, 64, 32), ConvLayer(3, 128, 24), ConvLayer(3, 64, 48)),
          2: (ConvLayer(2, 32, 256), ConvLayer(2, 64, 128), ConvLayer(2, 128, 96), ConvLayer(2, 64, 256))}
BF16_LAYERS = {3: (ConvLayer(3, 64, 16), ConvLayer(3, 128, 12)), 2: (ConvLayer(2, 64, 64), ConvLayer(2, 128, 48))}
FORMS = {"fp32 contiguous": ("float32", False), "fp32 channels-last": ("float32", True),
         "bf16 autocast channels-last": ("bfloat16", True)}


def count_flops(fn) -> int:
    """FLOPs PyTorch counts while `fn()` runs (forward, loss and backward alike)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def time_layer(layer: ConvLayer, form: str, repeats: int) -> dict:
    """Best-of-`repeats` forward time of one layer in one form; GFLOP/s = FLOPs / best time."""
    import torch
    from torch import nn

    dtype_name, channels_last = FORMS[form]
    dtype = getattr(torch, dtype_name)
    torch.manual_seed(0)
    conv = (nn.Conv3d if layer.spatial_dims == 3 else nn.Conv2d)(layer.channels, layer.channels, 3, padding=1)
    x = torch.randn(1, layer.channels, *[layer.size] * layer.spatial_dims)
    if channels_last:
        fmt = torch.channels_last_3d if layer.spatial_dims == 3 else torch.channels_last
        conv, x = conv.to(memory_format=fmt), x.contiguous(memory_format=fmt)

    def forward() -> None:
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            conv(x)

    with torch.no_grad():
        flops = count_flops(lambda: conv(x))
    forward()  # warm-up: oneDNN picks and builds its kernel on the first call
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        forward()
        times.append(time.perf_counter() - start)
    best = min(times)
    return {"layer": layer.describe(), "form": form, "flops": flops, "best_s": round(best, 5),
            "gflops": round(flops / best / 1e9, 2)}


def measure_conv_peak(spatial_dims: int = 3, repeats: int = 5, layers=None) -> float:
    """Best fp32 GFLOP/s of this CPU's conv kernels (both layouts), measured now in this process."""
    layers = layers or LAYERS[spatial_dims]
    return max(time_layer(layer, form, repeats)["gflops"] for layer in layers
               for form in ("fp32 contiguous", "fp32 channels-last"))


def training_step_flops(model, loss_fn, x, y) -> int:
    """FLOPs of one training step's forward, loss and backward (the optimiser step not counted)."""
    import copy

    clone = copy.deepcopy(model).train()
    return count_flops(lambda: loss_fn(clone(x), y).backward())


def forward_flops(model, x) -> int:
    """FLOPs of one forward pass without autograd."""
    import torch

    with torch.inference_mode():
        return count_flops(lambda: model(x))
