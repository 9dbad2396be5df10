"""Does `torch.compile` pay for a training step of the planned hippocampus U-Net on this CPU?

Same network (medseg's U-Net with the plan's widths, strides and kernels for MSD Hippocampus:
16-128 channels, batch 2 x 40x56x40, channels-last 3D), loss (Dice+CE) and optimiser (AdamW),
in one process: eager vs `torch.compile(model)` (inductor, default mode). Reported: the time of
the first compiled step (compilation included), the steady step times of both (alternating
blocks, median), and the break-even: how many steps the compile time needs to be repaid, and
how many steps each gets in a 20-minute training budget.

    flock /work/scratch/cpu.lock nice -n 19 .venv/bin/python benchmarks/compile_step.py [--steps 10]

Writes benchmarks/results/compile_step.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conv_peak import machine_info  # noqa: E402

from medseg.losses import make_loss  # noqa: E402
from medseg.nets import build_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# The plan medseg makes for MSD Hippocampus with the 20-minute CPU budget (BENCHMARKS.md, H3).
PATCH, BATCH, FEATURES = (40, 56, 40), 2, (16, 32, 64, 128)


def make_step(compiled: bool):
    """A training step closure over its own model/optimiser (same initial weights for both)."""
    torch.manual_seed(0)
    model = build_model("unet", 1, 3, 3, features=FEATURES, norm="instance").to(memory_format=torch.channels_last_3d)
    net = torch.compile(model) if compiled else model
    opt = torch.optim.AdamW(model.parameters(), 2e-3, weight_decay=1e-5)
    loss_fn = make_loss("dice+ce", 3)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, 1, *PATCH, generator=gen).contiguous(memory_format=torch.channels_last_3d)
    y = torch.randint(0, 3, (BATCH, *PATCH), generator=gen)

    def step() -> float:
        start = time.perf_counter()
        loss = loss_fn(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - start

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per block")
    parser.add_argument("--blocks", type=int, default=2, help="alternating blocks per variant")
    parser.add_argument("--budget-minutes", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "compile_step.json")
    args = parser.parse_args()
    eager, compiled = make_step(False), make_step(True)
    eager_first = eager()
    compile_first = compiled()          # compiles the forward graph and, on backward, the backward graph
    compile_second = compiled()         # a recompile would show here
    print(f"first step: eager {eager_first:.2f} s, compiled {compile_first:.1f} s (second {compile_second:.2f} s)",
          flush=True)
    times = {"eager": [], "compiled": []}
    for _ in range(args.blocks):
        for name, step in (("eager", eager), ("compiled", compiled)):
            times[name] += [step() for _ in range(args.steps)]
            print(f"{name}: median so far {sorted(times[name])[len(times[name]) // 2] * 1e3:.0f} ms", flush=True)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    saving = med["eager"] - med["compiled"]
    compile_s = compile_first - med["compiled"]
    budget = args.budget_minutes * 60
    steps_eager = budget / med["eager"]
    steps_compiled = max(0.0, budget - compile_s) / med["compiled"]
    result = {
        "network": {"features": list(FEATURES), "batch": BATCH, "patch": list(PATCH), "memory_format": "channels_last_3d"},
        "eager_ms": round(med["eager"] * 1e3, 1), "compiled_ms": round(med["compiled"] * 1e3, 1),
        "step_speedup": round(med["eager"] / med["compiled"], 3),
        "compile_seconds": round(compile_s, 1), "first_compiled_step_s": round(compile_first, 1),
        "break_even_steps": round(compile_s / saving) if saving > 0 else None,
        "steps_in_budget": {"minutes": args.budget_minutes, "eager": int(steps_eager), "compiled": int(steps_compiled)},
        "pays_within_budget": steps_compiled > steps_eager,
        "settings": {"steps_per_block": args.steps, "blocks": args.blocks, "mode": "default (inductor)"},
        "machine": machine_info(), "torch": torch.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\n{'':<10}{'ms/step':>9}")
    print(f"{'eager':<10}{result['eager_ms']:>9.0f}\n{'compiled':<10}{result['compiled_ms']:>9.0f}")
    print(f"compiled / eager speed-up {result['step_speedup']:.2f}x; compile {compile_s:.0f} s; "
          f"break-even after {result['break_even_steps']} steps; in {args.budget_minutes:g} min: "
          f"{int(steps_eager)} eager vs {int(steps_compiled)} compiled steps -> "
          f"{'pays' if result['pays_within_budget'] else 'does not pay'}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
