"""fp32 vs bf16 autocast for one U-Net training step on this machine, in the same run.

medseg's `--precision auto` keeps bf16 only where it measures faster; this script shows the
ratio behind that decision (on AVX2-only CPUs bf16 is emulated and far slower).

    python benchmarks/precision.py [--size 128] [--batch 4] [--out benchmarks/results/precision.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from medseg.device import cpu_has_native_bf16
from medseg.losses import make_loss
from medseg.nets import UNet


def step_time(dtype: torch.dtype | None, size: int, batch: int, repeats: int) -> float:
    torch.manual_seed(0)
    model = UNet(1, 2, 2, (16, 32, 64, 128, 256), norm="instance")
    optimiser = torch.optim.AdamW(model.parameters(), 1e-3)
    loss_fn = make_loss("dice+ce", 2)
    x, y = torch.randn(batch, 1, size, size), torch.randint(0, 2, (batch, size, size))

    def step() -> None:
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(x)
        loss = loss_fn(logits, y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "precision.json")
    args = parser.parse_args()
    fp32 = step_time(None, args.size, args.batch, args.repeats)
    bf16 = step_time(torch.bfloat16, args.size, args.batch, max(1, args.repeats // 3))
    result = {"native_bf16": cpu_has_native_bf16(), "threads": torch.get_num_threads(),
              "patch": [args.size, args.size], "batch": args.batch,
              "fp32_step_s": round(fp32, 4), "bf16_step_s": round(bf16, 4),
              "bf16_speedup": round(fp32 / bf16, 3)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
