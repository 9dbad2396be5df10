"""Training on a lent GPU from prepared cases: patches/s and GPU utilisation against batch size
(batched sampler on the card vs the per-patch sampler), `torch.compile` on and off, and a timed
MSD Hippocampus run scored on held-out cases. Runs where SimpleITK and nibabel are missing (they
are only stubbed: nothing here reads a medical file; the cases come as .npz from
`python -m benchmarks run gpu --export DIR`). benchmarks/device_check.sh runs it; docs/scaling.md
says how.

    python -m benchmarks.device_train --cases DIR --out FILE [--util-log util.csv] [--minutes 3]
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import sys
import time
import types
from pathlib import Path

for _missing in ("SimpleITK", "nibabel"):  # medseg.io imports them; nothing here reads a medical file
    if importlib.util.find_spec(_missing) is None:
        sys.modules[_missing] = types.ModuleType(_missing)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.legacy_sampler import LegacyPatchSampler  # noqa: E402
from medseg.data.augment import AugmentConfig  # noqa: E402
from medseg.data.sampler import PatchSampler  # noqa: E402
from medseg.evaluation.metrics import confusion, dice_from_confusion  # noqa: E402
from medseg.inference.sliding_window import argmax_mask, sliding_window  # noqa: E402
from medseg.nets import axis_divisors, build_model  # noqa: E402
from medseg.planning.rules import network_for_patch  # noqa: E402
from medseg.training.loss_registry import make_loss  # noqa: E402


def load(path: Path) -> tuple[list, list, list[int]]:
    with np.load(path) as z:
        n = int(z["count"])
        return ([torch.from_numpy(z[f"image{i}"].astype(np.float32)) for i in range(n)],
                [torch.from_numpy(z[f"label{i}"]) for i in range(n)], [int(p) for p in z["patch"]])


def gpu_utilisation(log: Path | None, start: float, end: float) -> float | None:
    """Mean utilisation (%) in the nvidia-smi log lines between two wall-clock times."""
    if log is None or not log.is_file():
        return None
    values = []
    for line in log.read_text().splitlines():
        try:
            stamp, util = [p.strip() for p in line.split(",")[:2]]
            t = dt.datetime.strptime(stamp, "%Y/%m/%d %H:%M:%S.%f").timestamp()
            if start <= t <= end:
                values.append(float(util.split()[0]))
        except ValueError:
            continue
    return round(float(np.mean(values)), 1) if values else None


class Run:
    """A hippocampus-plan U-Net (the CUDA plan's widths), Dice+CE, AdamW, bf16 autocast."""

    def __init__(self, patch: list[int], device: torch.device, compiled: bool = False):
        features, strides, kernels = network_for_patch(patch, [1.0] * 3, "cuda", 3)[1:]
        self.model = build_model("unet", 1, 3, 3, features=tuple(features), strides=strides,
                                 kernels=kernels).to(device, memory_format=torch.channels_last_3d)
        self.net = torch.compile(self.model) if compiled else self.model
        self.loss_fn = make_loss("dice+ce", 3)
        self.optimiser = torch.optim.AdamW(self.model.parameters(), lr=2e-3, weight_decay=1e-5)
        self.device = device

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last_3d)
        y = y.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            loss = self.loss_fn(self.net(x), y)
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()

    def dice(self, images, labels, patch) -> list[float]:
        self.model.eval()
        conf = 0
        for image, label in zip(images, labels):
            probs = sliding_window(self.model, image, patch, overlap=0.5, divisor=axis_divisors(self.model, 3),
                                   device=self.device,
                                   autocast_dtype=torch.bfloat16 if self.device.type == "cuda" else None)
            conf = conf + confusion(argmax_mask(probs), label.numpy(), 3)
        self.model.train()
        return [round(float(d), 4) for d in dice_from_confusion(conf)[1:]]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(run: Run, draw, batch: int, seconds: float, device: torch.device) -> tuple[float, float, float]:
    """Patches/s over `seconds` of training steps (after 3 warm-up steps), with the wall-clock span."""
    for _ in range(3):
        run.step(*draw())
    sync(device)
    start, steps = time.time(), 0
    while time.time() - start < seconds:
        run.step(*draw())
        steps += 1
    sync(device)
    end = time.time()
    return round(steps * batch / (end - start), 1), start, end


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--util-log", type=Path)
    parser.add_argument("--batches", type=int, nargs="+", default=[2, 8, 32])
    parser.add_argument("--seconds", type=float, default=15.0, help="per throughput measurement")
    parser.add_argument("--minutes", type=float, default=3.0, help="the timed training run")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurement")
    parser.add_argument("--dice-batch", type=int, help="batch of the timed run and the compile measurement "
                        "(default: the fastest measured; device_check.sh passes the plan's)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    images, labels, patch = load(args.cases / "hippocampus.npz")
    held = set(range(0, len(images), 5))  # every 5th case held out
    train = [i for i in range(len(images)) if i not in held]
    tr_x, tr_y = [images[i] for i in train], [labels[i] for i in train]
    augment = AugmentConfig(flip_axes=(2,))
    record: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "torch": torch.__version__, "patch": patch,
                    "train_cases": len(train), "held_out": len(held), "throughput": [], "compile": None}
    gen = torch.Generator().manual_seed(0)
    for batch in args.batches:
        for name in ("per-patch", "batched"):
            run = Run(patch, device)
            if name == "batched":
                sampler = PatchSampler(tr_x, tr_y, patch, batch, augment, seed=0, device=device)
            else:
                sampler = LegacyPatchSampler(tr_x, tr_y, patch, batch, augment, seed=0)
            rate, start, end = throughput(run, lambda: sampler.batch(gen), batch, args.seconds, device)
            row = {"sampler": name, "batch": batch, "patches_per_s": rate,
                   "gpu_util_percent": gpu_utilisation(args.util_log, start, end)}
            record["throughput"].append(row)
            print(json.dumps(row), flush=True)
    eager = {r["batch"]: r["patches_per_s"] for r in record["throughput"] if r["sampler"] == "batched"}
    batch = args.dice_batch or max(eager, key=eager.get)
    sampler = PatchSampler(tr_x, tr_y, patch, batch, augment, seed=0, device=device)
    record["residence"] = sampler.residence.to_dict()
    try:
        if args.no_compile:
            raise RuntimeError("skipped (--no-compile)")
        compile_start = time.time()
        run = Run(patch, device, compiled=True)
        run.step(*sampler.batch(gen))
        compile_s = round(time.time() - compile_start, 1)
        rate, start, end = throughput(run, lambda: sampler.batch(gen), batch, args.seconds, device)
        record["compile"] = {"batch": batch, "compile_s": compile_s, "patches_per_s": rate,
                             "eager_patches_per_s": eager.get(batch),
                             "gpu_util_percent": gpu_utilisation(args.util_log, start, end)}
    except Exception as exc:  # a compiler failure is a finding, not the end of the check
        record["compile"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    print(json.dumps({"compile": record["compile"]}), flush=True)
    run, steps, curve = Run(patch, device), 0, []
    start = time.time()
    budget = args.minutes * 60
    while (elapsed := time.time() - start) < budget:
        for group in run.optimiser.param_groups:
            group["lr"] = 2e-3 * (1 - elapsed / budget) ** 0.9
        run.step(*sampler.batch(gen))
        steps += 1
        if steps % 500 == 0:
            curve.append({"s": round(elapsed, 1), "steps": steps})
    train_s = time.time() - start
    dice = run.dice([images[i] for i in sorted(held)], [labels[i] for i in sorted(held)], patch)
    record["time_to_dice"] = {"minutes": args.minutes, "batch": batch, "steps": steps,
                              "patches_per_s": round(steps * batch / train_s, 1),
                              "gpu_util_percent": gpu_utilisation(args.util_log, start, start + train_s),
                              "dice_anterior_posterior": dice, "curve": curve}
    print(json.dumps({"time_to_dice": record["time_to_dice"]}), flush=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
