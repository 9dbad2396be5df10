"""Convolutions that keep single-window inference on oneDNN.

PyTorch picks its CPU convolution kernel with a rule written for 2D batches: a float32 input of
batch 1 with a 3x3 kernel goes to the unvectorised reference kernel (`slow_conv3d_forward`)
whenever batch x channels x the first two spatial sizes is at most 20480. In a 3D U-Net that is
the first layer (2-4 channels at 56 voxels), the 64-channel layers at 14³ and the bottleneck,
which then dominate a window's time (docs/decisions.md, "Batch-1 convolutions on oneDNN"); a case
that fits in one window (MSD Hippocampus) is always batch 1. These classes route exactly that
situation (CPU, float32, batch 1, no autograd, no autocast, not being traced, exported or
compiled) to oneDNN, which gives the same result within float rounding; everything else is
`nn.ConvNd`'s own path. Parameters and state-dict keys are those of `nn.Conv2d` / `nn.Conv3d`.
The direct oneDNN call gets a FLOP formula, so `torch.utils.flop_counter` counts these layers as
before.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import conv_flop_count, register_flop_formula


@register_flop_formula(torch.ops.aten.mkldnn_convolution)
def _onednn_conv_flop(x_shape, w_shape, _bias, _padding, _stride, _dilation, _groups, *args,
                      out_shape=None, **kwargs) -> int:
    """FLOPs of a direct oneDNN convolution: the same count as for `aten.convolution`."""
    return conv_flop_count(x_shape, w_shape, out_shape, transposed=False)


def single_window_on_onednn(conv: nn.modules.conv._ConvNd, x: torch.Tensor) -> bool:
    """Whether to call oneDNN directly for this input instead of PyTorch's kernel choice."""
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling() \
            or torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export():
        return False
    return (x.shape[0] == 1 and x.device.type == "cpu" and x.dtype == torch.float32
            and conv.weight.dtype == torch.float32 and not torch.is_grad_enabled()
            and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
            and any(k > 1 for k in conv.kernel_size)
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
            and not torch.is_autocast_enabled("cpu"))


class _SingleWindowOnOneDNN:
    """Mixin for `nn.ConvNd` subclasses: batch-1 inference goes to oneDNN (module docstring)."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if single_window_on_onednn(self, input):
            return torch.mkldnn_convolution(input, weight, bias, self.padding, self.stride, self.dilation, self.groups)
        return super()._conv_forward(input, weight, bias)


class Conv2d(_SingleWindowOnOneDNN, nn.Conv2d):
    """`nn.Conv2d`, with batch-1 CPU inference on oneDNN."""


class Conv3d(_SingleWindowOnOneDNN, nn.Conv3d):
    """`nn.Conv3d`, with batch-1 CPU inference on oneDNN."""
