"""2D training-step speed of the planned U-Net: medseg's layout choice vs the alternatives.

The 2D protocols are sample-limited on a CPU (BENCHMARKS.md), so every per-step saving is more
passes over the data. Same network as the plan gives Kvasir-SEG and ISBI 2012 (16-128 channels,
instance norm), loss (Dice+CE), optimiser (AdamW) and data in one process, interleaved rounds:

  medseg         contiguous tensors, medseg's InstanceNorm          (the default)
  channels-last  channels_last tensors, medseg's InstanceNorm
  compiled       torch.compile of the default (compile time reported separately)

Prints ms per step and images/s per variant and shape, writes benchmarks/results/step_2d.json.

    .venv/bin/python benchmarks/step_2d.py [--steps 10] [--compile]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from medseg.losses import make_loss
from medseg.nets import build_model

SHAPES = {"kvasir": (8, 3, (104, 112)), "isbi": (8, 1, (120, 120))}  # batch, channels, patch (the plans)
FEATURES = (16, 32, 64, 128)  # both plans: 3 poolings


def step_ms(variant: str, shape: str, steps: int) -> tuple[float, float]:
    """Median ms per step after two warm-up steps, and the first step's seconds."""
    batch, channels, patch = SHAPES[shape]
    torch.manual_seed(0)
    model = build_model("unet", channels, 2, 2, features=FEATURES, norm="instance")
    fmt = torch.channels_last if variant == "channels-last" else torch.contiguous_format
    model = model.to(memory_format=fmt)
    net = torch.compile(model) if variant == "compiled" else model
    x = torch.randn(batch, channels, *patch).contiguous(memory_format=fmt)
    y = torch.randint(0, 2, (batch, *patch))
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    loss_fn = make_loss("dice+ce", 2)
    times = []
    for _ in range(steps + 2):
        start = time.perf_counter()
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    first = times[0]
    rest = sorted(times[2:])
    return 1000 * rest[len(rest) // 2], first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (~1 min to compile)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    variants = ["medseg", "channels-last"] + (["compiled"] if args.compile else [])
    result: dict = {"threads": torch.get_num_threads(), "shapes": {k: f"{b} x {c} x {p[0]}x{p[1]}"
                                                                  for k, (b, c, p) in SHAPES.items()}}
    for shape in SHAPES:
        ms = {v: [] for v in variants}
        first = {}
        for _ in range(2):  # interleaved rounds: drift on a shared machine hits every variant alike
            for v in variants:
                t, f = step_ms(v, shape, args.steps)
                ms[v].append(t)
                first.setdefault(v, round(f, 1))
        best = {v: round(min(t), 1) for v, t in ms.items()}
        batch = SHAPES[shape][0]
        result[shape] = {"ms_per_step": best,
                         "images_per_s": {v: round(1000 * batch / t, 2) for v, t in best.items()},
                         "speedup_vs_medseg": {v: round(best["medseg"] / t, 2) for v, t in best.items()},
                         "first_step_s": first}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "step_2d.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
