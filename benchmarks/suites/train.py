"""Training throughput: medseg's Trainer against a plain MONAI training loop, same network and weights.

Both train medseg's planned U-Net for MSD Hippocampus (the plan `medseg plan` makes for 20 CPU
minutes; the MONAI loop gets a copy of the trainer's initial weights) with Dice+CE, AdamW at the
same learning rate and weight decay, the same batch and patch, fp32. Only the machinery differs:

  medseg  `medseg.training.Trainer` as `medseg train` runs it: cases preprocessed once, patches cut
          and augmented in a background thread, channels-last, medseg's InstanceNorm, compiled
          training steps (the default of a CPU run of 5 minutes or more; `--eager` turns it off).
  MONAI   the loop of MONAI's 3D tutorials: LoadImaged, EnsureChannelFirstd, CropForegroundd,
          NormalizeIntensityd, SpatialPadd in a CacheDataset; RandCropByPosNegLabeld (pos 1 : neg 2,
          medseg's third of foreground patches), RandAffined, RandFlipd (left-right), intensity
          scale/shift/contrast/noise; DataLoader(num_workers=--monai-workers); DiceCELoss.

They alternate in one process: one medseg epoch of --steps steps, then one MONAI round of --steps
steps (run in the trainer's validation slot, outside medseg's epoch timer), --rounds times after
one warm-up round each. medseg's rate is its own log.csv (`images_per_s`); the MONAI round is timed
the same way, waiting for batches included. FLOPs per step come from `FlopCounterMode`; the fp32
conv peak is measured in this process before and after the loops (`benchmarks.flops`).
"""
from __future__ import annotations

import argparse
import copy
import csv
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.harness import ab_summary, fmt

TITLE = "Training throughput against MONAI"
COMMAND = "python -m benchmarks run train --steps 20 --rounds 4 --monai-workers 1"
TARGET_SPEEDUP = 1.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=20, help="training steps per round (each loop)")
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds after one warm-up round")
    parser.add_argument("--minutes", type=float, default=20.0, help="the plan's CPU budget")
    parser.add_argument("--monai-workers", type=int, default=1, help="DataLoader workers of the MONAI loop")
    parser.add_argument("--eager", action="store_true", help="medseg without torch.compile")
    parser.add_argument("--no-peak", action="store_true", help="skip measuring the conv peak")


def monai_batches(data: Path, patch_zyx: tuple[int, ...], batch: int, workers: int, flip_axis: int):
    """A MONAI tutorial-style pipeline over the MSD folder; an endless iterator of batches."""
    import json

    import torch
    from monai.data import CacheDataset, DataLoader
    from monai.transforms import (Compose, CropForegroundd, EnsureChannelFirstd, EnsureTyped, LoadImaged,
                                  NormalizeIntensityd, RandAdjustContrastd, RandAffined, RandCropByPosNegLabeld,
                                  RandFlipd, RandGaussianNoised, RandScaleIntensityd, RandShiftIntensityd,
                                  SpatialPadd)

    spec = json.loads((data / "dataset.json").read_text())
    files = [{"image": str(data / t["image"]), "label": str(data / t["label"])} for t in spec["training"]]
    patch = tuple(reversed(patch_zyx))  # nibabel arrays are (x, y, z); medseg's are (z, y, x)
    keys = ["image", "label"]
    transforms = Compose([
        LoadImaged(keys, image_only=True), EnsureChannelFirstd(keys), EnsureTyped(keys, dtype=torch.float32),
        CropForegroundd(keys, source_key="image"), NormalizeIntensityd("image", channel_wise=True),
        SpatialPadd(keys, spatial_size=patch),
        RandCropByPosNegLabeld(keys, label_key="label", spatial_size=patch, pos=1, neg=2, num_samples=1,
                               image_key="image", image_threshold=0),
        RandAffined(keys, prob=0.2, scale_range=(0.15, 0.15, 0.15), mode=("bilinear", "nearest"),
                    padding_mode="reflection"),
        RandFlipd(keys, prob=0.5, spatial_axis=flip_axis),
        RandScaleIntensityd("image", factors=0.25, prob=0.15), RandShiftIntensityd("image", offsets=0.1, prob=0.15),
        RandAdjustContrastd("image", prob=0.3, gamma=(0.7, 1.5)), RandGaussianNoised("image", prob=0.1, std=0.1),
    ])
    dataset = CacheDataset(files, transforms, cache_rate=1.0, num_workers=2, progress=False)
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0, drop_last=True)
    while True:
        yield from loader


class MonaiLoop:
    """zero_grad, forward, DiceCELoss, backward, step; each round timed, data waits included."""

    def __init__(self, model, batches, lr: float, weight_decay: float):
        import torch
        from monai.losses import DiceCELoss

        self.model, self.batches = model, batches
        self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
        self.optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.rounds: list[dict] = []

    def run(self, steps: int) -> None:
        self.model.train()
        waited, patches = 0.0, 0
        start = time.perf_counter()
        for _ in range(steps):
            t = time.perf_counter()
            batch = next(self.batches)
            waited += time.perf_counter() - t
            self.optimiser.zero_grad()
            self.loss_fn(self.model(batch["image"]), batch["label"]).backward()
            self.optimiser.step()
            patches += len(batch["image"])
        seconds = time.perf_counter() - start
        self.rounds.append({"seconds": round(seconds, 3), "data_wait_s": round(waited, 3), "patches": patches})


def alternating_trainer(peer_round):
    """medseg's Trainer, unchanged except that its validation slot runs the peer's round every epoch."""
    from medseg.training import Trainer

    class AlternatingTrainer(Trainer):
        def validation_due(self, final: bool) -> bool:
            return True

        def validate(self) -> dict[str, float]:
            peer_round()
            return {}

    return AlternatingTrainer


def run(args: argparse.Namespace) -> tuple[dict, dict]:
    import torch

    from benchmarks.datasets import make_split
    from benchmarks.flops import measure_conv_peak, training_step_flops
    from medseg.nets import build_model
    from medseg.planning import Budget, plan_dataset
    from medseg.training import TrainConfig
    from medseg.training.loss_registry import make_loss

    steps, rounds = (2, 1) if args.quick else (args.steps, args.rounds)
    measure_peak = not (args.no_peak or args.quick)
    tmp = Path(tempfile.mkdtemp(prefix="medseg-bench-train-"))
    try:
        data = make_split("hippocampus", args.data, tmp / "split", train_limit=16, test_limit=0).train \
            if args.quick else args.data / "msd-hippocampus"
        peak_before = measure_conv_peak(3) if measure_peak else None
        plan = plan_dataset(data, Budget(device="cpu", minutes=args.minutes), progress=False)
        config = TrainConfig(epochs=rounds + 1, iterations_per_epoch=steps, val_fraction=0.0, device="cpu")
        config.apply_plan(plan)
        config.epochs, config.minutes, config.iterations_per_epoch = rounds + 1, None, steps
        config.compile = not (args.eager or args.quick)
        loop_box: list[MonaiLoop] = []
        trainer = alternating_trainer(lambda: loop_box[0].run(steps))(data, tmp / "run", config, plan=plan)
        patch, batch = tuple(config.patch_size), int(config.batch_size)
        peer = build_model(config.model, trainer.in_channels, trainer.num_classes, 3, **trainer.model_options())
        peer.load_state_dict(copy.deepcopy(trainer.model.state_dict()))  # the same initial weights
        flip = config.augment.flip_axes
        batches = monai_batches(data, patch, batch, args.monai_workers, 2 - int(flip[0]) if flip else 0)
        loop_box.append(MonaiLoop(peer, batches, config.lr, config.weight_decay))
        trainer.fit()
        with (tmp / "run" / "log.csv").open() as f:
            log = list(csv.DictReader(f))
        x = torch.randn(batch, trainer.in_channels, *patch).contiguous(memory_format=torch.channels_last_3d)
        y = torch.randint(0, trainer.num_classes, (batch, *patch))
        flops = training_step_flops(trainer.model, make_loss("dice+ce", trainer.num_classes), x, y)
        peak_after = measure_conv_peak(3) if measure_peak else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    medseg_s = [batch * steps / float(r["images_per_s"]) for r in log][1:]
    monai_s = [r["seconds"] for r in loop_box[0].rounds][1:]
    ab = ab_summary({"monai": monai_s, "medseg": medseg_s}, reference="medseg")
    peak = max(peak_before, peak_after) if measure_peak else None
    loops = {}
    for name, secs, waits in (("medseg", medseg_s, [float(r["data_wait_s"]) for r in log][1:]),
                              ("monai", monai_s, [r["data_wait_s"] for r in loop_box[0].rounds][1:])):
        rate = batch * steps * len(secs) / sum(secs)
        gflops = flops * rate / batch / 1e9
        loops[name] = {"patches_per_s": round(rate, 3), "data_wait_fraction": round(sum(waits) / sum(secs), 4),
                       "gflops_per_s": round(gflops, 1), "of_conv_peak": round(gflops / peak, 4) if peak else None}
    results = {**loops, "speedup": round(loops["medseg"]["patches_per_s"] / loops["monai"]["patches_per_s"], 3),
               "speedup_per_round": [round(m / s, 3) for m, s in zip(monai_s, medseg_s)], "rounds": ab,
               "flops_per_step": flops, "conv_peak_gflops": {"fp32": peak, "before": peak_before, "after": peak_after},
               "target_speedup": TARGET_SPEEDUP}
    settings = {"dataset": "msd-hippocampus" + (" (16 cases, --quick)" if args.quick else ""), "steps": steps,
                "rounds": rounds, "plan_minutes": args.minutes, "monai_workers": args.monai_workers,
                "medseg_compile": config.compile, "batch": batch, "patch_zyx": list(patch),
                "network": {"model": config.model, "parameters": sum(p.numel() for p in trainer.model.parameters()),
                            "features": list(config.features or [])}}
    return settings, results


def table(env: dict) -> list[str]:
    r, s = env["results"], env["settings"]
    peak = (r.get("conv_peak_gflops") or {}).get("fp32")
    flags = (" --eager" if not s.get("medseg_compile", True) else "")
    lines = [f"Hippocampus plan: {s.get('network', {}).get('model', 'unet')} "
             f"{s.get('network', {}).get('parameters', '?')} parameters, batch {s.get('batch')} × "
             f"{'×'.join(map(str, s.get('patch_zyx', [])))}; {s.get('rounds')} timed rounds of {s.get('steps')} steps; "
             f"medseg {'compiled' if s.get('medseg_compile') else 'eager'}; "
             f"{r['flops_per_step'] / 1e9:.1f} GFLOP per step.", "",
             f"| loop | patches/s | waiting for data | GFLOP/s | of the fp32 conv peak ({fmt(peak, 1)}) |",
             "|---|---:|---:|---:|---:|"]
    for name in ("medseg", "monai"):
        loop = r[name]
        share = f"{100 * loop['of_conv_peak']:.1f} %" if loop.get("of_conv_peak") else "–"
        lines.append(f"| {name} | {loop['patches_per_s']:.2f} | {100 * loop['data_wait_fraction']:.1f} % | "
                     f"{loop['gflops_per_s']:.1f} | {share} |")
    per_round = ", ".join(f"{v:.2f}" for v in r.get("speedup_per_round", []))
    lines += [f"| **medseg / MONAI** | **{r['speedup']:.2f}×** (rounds {per_round}; target ≥ {r['target_speedup']}×) "
              "| | | |", "",
              f"Command: `python -m benchmarks run train --steps {s.get('steps')} --rounds {s.get('rounds')} "
              f"--monai-workers {s.get('monai_workers')}{flags}`"]
    return lines
