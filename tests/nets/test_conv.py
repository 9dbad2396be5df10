"""medseg.nets.conv: batch-1 inference convolutions run on oneDNN with the same result and FLOP count;
batches, autocast, tracing and training keep PyTorch's own path."""
from __future__ import annotations

import torch


def test_single_window_convolutions_run_on_onednn_with_the_same_result(monkeypatch):
    """Batch-1 inference (where PyTorch's kernel rule picks its reference kernel) goes to oneDNN;
    training, batches, autocast and tracing keep nn.ConvNd's own path; the output is the same."""
    from torch.utils.flop_counter import FlopCounterMode

    from medseg.nets import conv
    calls = []
    real = torch.mkldnn_convolution
    monkeypatch.setattr(torch, "mkldnn_convolution", lambda *a: calls.append(a[0].shape) or real(*a))
    torch.manual_seed(0)
    for dims, layer in ((2, conv.Conv2d(64, 64, 3, padding=1)), (3, conv.Conv3d(4, 16, 3, padding=1, stride=2))):
        reference = (torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d)(layer.in_channels, layer.out_channels, 3,
                                                                        padding=1, stride=layer.stride)
        reference.load_state_dict(layer.state_dict())  # same parameters and state-dict keys
        x = torch.randn(1, layer.in_channels, *([14] * dims))
        calls.clear()
        with torch.inference_mode():
            out = layer(x)
        assert calls == [x.shape]
        with torch.no_grad():
            assert torch.allclose(out, reference(x), atol=1e-5)
            with FlopCounterMode(display=False) as ours, torch.inference_mode():
                layer(x)
            with FlopCounterMode(display=False) as theirs:
                reference(x)
            assert ours.get_total_flops() == theirs.get_total_flops() > 0
            calls.clear()
            layer(torch.cat([x, x]))                                   # a batch: PyTorch decides
            with torch.autocast("cpu", dtype=torch.bfloat16):
                layer(x)
            torch.jit.trace(layer, x, check_trace=False)              # traced/exported graphs stay portable
        layer(x).sum().backward()                                      # training
        assert calls == []
    one_by_one = conv.Conv3d(8, 2, 1)
    with torch.no_grad():
        one_by_one(torch.randn(1, 8, 6, 6, 6))
    assert calls == []                                                 # 1x1 heads: a matrix product anyway
