"""3D training-step speed of the default U-Net: medseg's layout choices vs the unoptimised path.

Same network (16-128 channels, 1.4 M parameters), loss (Dice+CE), optimiser (AdamW), batch
(2 x 40x56x40, the hippocampus patch) and data in one process; only the layout and the
normalisation kernel differ:

  plain          contiguous tensors, torch.nn.InstanceNorm3d        (the unoptimised path)
  channels-last  channels_last_3d tensors, torch.nn.InstanceNorm3d
  medseg         channels_last_3d tensors, medseg's InstanceNorm    (the default)

Prints ms per step and speed-ups over `plain`, and writes benchmarks/results/step_3d.json.

    .venv/bin/python benchmarks/step_3d.py [--steps 12]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from medseg.losses import make_loss
from medseg.nets import build_model
from medseg.nets.unet import InstanceNorm


def _torch_norm(model: nn.Module) -> nn.Module:
    """Swap medseg's InstanceNorm for PyTorch's (same parameters)."""
    for name, child in model.named_children():
        if isinstance(child, InstanceNorm):
            ref = nn.InstanceNorm3d(child.weight.numel(), affine=True)
            ref.load_state_dict(child.state_dict())
            setattr(model, name, ref)
        else:
            _torch_norm(child)
    return model


def step_ms(variant: str, steps: int, patch=(40, 56, 40), batch: int = 2) -> float:
    torch.manual_seed(0)
    model = build_model("unet", 1, 3, 3, features=(16, 32, 64, 128), norm="instance")
    if variant in ("plain", "channels-last"):
        _torch_norm(model)
    fmt = torch.contiguous_format if variant == "plain" else torch.channels_last_3d
    model = model.to(memory_format=fmt)
    x = torch.randn(batch, 1, *patch).contiguous(memory_format=fmt)
    y = torch.randint(0, 3, (batch, *patch))
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    loss_fn = make_loss("dice+ce", 3)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    times = sorted(times[2:])
    return 1000 * times[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    variants = ("plain", "channels-last", "medseg")
    ms = {v: [] for v in variants}
    for _ in range(2):  # interleaved rounds, so drift on a shared machine hits all variants alike
        for v in variants:
            ms[v].append(step_ms(v, args.steps))
    result = {"threads": torch.get_num_threads(), "batch": "2 x 40x56x40",
              "ms_per_step": {v: round(min(t), 1) for v, t in ms.items()}}
    result["speedup_vs_plain"] = {v: round(result["ms_per_step"]["plain"] / result["ms_per_step"][v], 2)
                                  for v in variants}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "step_3d.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
