"""Training throughput: medseg's trainer against a plain MONAI training loop, same run.

Both train the SAME network (medseg's planned U-Net from `build_model`, the MONAI loop gets a
copy of the trainer's initial weights), with Dice+CE, AdamW (same learning rate and weight
decay), the same batch and patch, on the same real data (MSD Hippocampus, the plan medseg makes
for it with a 20-minute CPU budget). Only the machinery around the network differs:

  medseg  `medseg.train.Trainer` as `medseg train` runs it: cases preprocessed once (cached),
          patches cut and augmented in one background thread, channels-last 3D, medseg's
          InstanceNorm, its loss, gradient clipping, lr schedule.
  MONAI   the loop MONAI's 3D tutorials teach: LoadImaged, EnsureChannelFirstd, CropForegroundd,
          NormalizeIntensityd, SpatialPadd in a CacheDataset (cache_rate=1); RandCropByPosNegLabeld
          (pos 1 : neg 2, medseg's one third foreground), RandAffined (scaling, p 0.2), RandFlipd
          (left-right), RandScaleIntensityd, RandShiftIntensityd, RandAdjustContrastd,
          RandGaussianNoised; DataLoader(batch, shuffle, num_workers=--monai-workers, persistent);
          fp32, `DiceCELoss(to_onehot_y=True, softmax=True)`, zero_grad / forward / backward / step.

They alternate in one process: medseg trains one epoch of --steps steps, then the MONAI loop
runs --steps steps, and so on; the first round of each is warm-up and not counted. medseg's
figure is its own log.csv (`images_per_s`, `data_wait_s` per epoch; the MONAI round runs in the
trainer's validation slot, outside the trainer's epoch timer). The MONAI loop is timed the same
way (wall time of its steps, including the time it waits for batches).

Also reported: FLOPs of one training step (forward + loss + backward, `FlopCounterMode`) and
the fraction of the CPU's measured fp32 conv peak each loop reaches: the peak is measured in
this process before and after the loops and the higher figure is used (the host's speed
drifts); the bf16 peak comes from benchmarks/results/conv_peak.json (slow to measure here).

    flock /work/scratch/cpu.lock nice -n 19 .venv/bin/python benchmarks/train_throughput.py \
        [--steps 20] [--rounds 4] [--monai-workers 1]

Writes benchmarks/results/train_throughput.json.
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conv_peak import DEFAULT_JSON as PEAK_JSON, machine_info, measure_conv_peak  # noqa: E402

from medseg.losses import make_loss  # noqa: E402
from medseg.nets import build_model  # noqa: E402
from medseg.plan import Budget, plan_dataset  # noqa: E402
from medseg.train import Trainer, TrainConfig  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "msd-hippocampus"


# ------------------------------------------------------------------ the MONAI loop
def monai_data(data: Path, patch_zyx: tuple[int, ...], batch: int, workers: int, flip_axis: int,
               plain_tensors: bool):
    """A MONAI tutorial-style pipeline; returns an endless batch iterator and its DataLoader."""
    from monai.data import CacheDataset, DataLoader
    from monai.transforms import (Compose, CropForegroundd, EnsureChannelFirstd, EnsureTyped, LoadImaged,
                                  NormalizeIntensityd, RandAdjustContrastd, RandAffined,
                                  RandCropByPosNegLabeld, RandFlipd, RandGaussianNoised,
                                  RandScaleIntensityd, RandShiftIntensityd, SpatialPadd)

    spec = json.loads((data / "dataset.json").read_text())
    files = [{"image": str(data / t["image"]), "label": str(data / t["label"])} for t in spec["training"]]
    patch = tuple(reversed(patch_zyx))  # nibabel arrays are (x, y, z); medseg's are SimpleITK's (z, y, x)
    keys = ["image", "label"]
    transforms = Compose([
        LoadImaged(keys, image_only=True),
        EnsureChannelFirstd(keys),
        EnsureTyped(keys, dtype=torch.float32, track_meta=not plain_tensors),
        CropForegroundd(keys, source_key="image"),
        NormalizeIntensityd("image", channel_wise=True),
        SpatialPadd(keys, spatial_size=patch),
        RandCropByPosNegLabeld(keys, label_key="label", spatial_size=patch, pos=1, neg=2, num_samples=1,
                               image_key="image", image_threshold=0),
        RandAffined(keys, prob=0.2, scale_range=(0.15, 0.15, 0.15), mode=("bilinear", "nearest"),
                    padding_mode="reflection"),
        RandFlipd(keys, prob=0.5, spatial_axis=flip_axis),
        RandScaleIntensityd("image", factors=0.25, prob=0.15),
        RandShiftIntensityd("image", offsets=0.1, prob=0.15),
        RandAdjustContrastd("image", prob=0.3, gamma=(0.7, 1.5)),
        RandGaussianNoised("image", prob=0.1, std=0.1),
    ])
    ds = CacheDataset(files, transforms, cache_rate=1.0, num_workers=2, progress=False)
    loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0, drop_last=True)

    def endless():
        while True:
            yield from loader

    return endless(), patch


class MonaiLoop:
    """The standard loop: zero_grad, forward, DiceCELoss, backward, step; times each round."""

    def __init__(self, model: torch.nn.Module, batches, lr: float, weight_decay: float):
        from monai.losses import DiceCELoss

        self.model, self.batches = model, batches
        self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
        self.optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.rounds: list[dict] = []

    def run(self, steps: int) -> dict:
        self.model.train()
        waited, patches, losses = 0.0, 0, []
        start = time.perf_counter()
        for _ in range(steps):
            t = time.perf_counter()
            batch = next(self.batches)
            waited += time.perf_counter() - t
            x, y = batch["image"], batch["label"]
            self.optimiser.zero_grad()
            loss = self.loss_fn(self.model(x), y)
            loss.backward()
            self.optimiser.step()
            patches += len(x)
            losses.append(float(loss.detach()))
        seconds = time.perf_counter() - start
        row = {"patches_per_s": round(patches / seconds, 3), "data_wait_s": round(waited, 2),
               "seconds": round(seconds, 2), "steps": steps, "loss": round(sum(losses) / len(losses), 4)}
        self.rounds.append(row)
        return row


# ------------------------------------------------------------------ medseg's trainer
class AlternatingTrainer(Trainer):
    """medseg's Trainer, unchanged, except that its per-epoch validation slot runs the peer's
    round instead: both loops then alternate in one process, and medseg's own epoch timer
    (log.csv images_per_s) never includes the peer's time."""

    peer_round = None  # callable run after each medseg epoch

    def validation_due(self, final: bool) -> bool:
        return True   # the slot runs every epoch, whatever share of the clock it takes

    def validate(self) -> dict[str, float]:
        if self.peer_round is not None:
            self.peer_round()
        return {}


def step_flops(model: torch.nn.Module, batch: int, in_channels: int, num_classes: int,
               patch: tuple[int, ...]) -> int:
    """FLOPs of one training step (forward, Dice+CE, backward) as PyTorch counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    model = copy.deepcopy(model).train()
    x = torch.randn(batch, in_channels, *patch).contiguous(memory_format=torch.channels_last_3d)
    y = torch.randint(0, num_classes, (batch, *patch))
    loss_fn = make_loss("dice+ce", num_classes)
    with FlopCounterMode(display=False) as counter:
        loss_fn(model(x), y).backward()
    return int(counter.get_total_flops())


def read_log(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--steps", type=int, default=20, help="training steps per round (each loop)")
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds after one warm-up round")
    parser.add_argument("--minutes", type=float, default=20.0, help="the plan's budget (medseg's CPU default)")
    parser.add_argument("--monai-workers", type=int, default=1,
                        help="DataLoader workers of the MONAI loop (2 cores: 1 worker beside the training step)")
    parser.add_argument("--monai-plain-tensors", action="store_true",
                        help="MONAI loop on plain tensors instead of MetaTensors (track_meta=False)")
    parser.add_argument("--medseg-compile", action="store_true",
                        help="medseg with `--compile` (torch.compile; compiles during its warm-up epoch)")
    parser.add_argument("--out", type=Path, default=RESULTS / "train_throughput.json")
    args = parser.parse_args()

    peak_before = measure_conv_peak(3, torch.float32)
    t0 = time.perf_counter()
    plan = plan_dataset(args.data, Budget(device="cpu", minutes=args.minutes), progress=False)
    plan_s = time.perf_counter() - t0
    config = TrainConfig(epochs=args.rounds + 1, iterations_per_epoch=args.steps, val_fraction=0.0,
                         device="cpu")
    config.apply_plan(plan)
    config.epochs, config.minutes, config.iterations_per_epoch = args.rounds + 1, None, args.steps
    config.compile = args.medseg_compile
    with tempfile.TemporaryDirectory(prefix="medseg_throughput_") as tmp:
        trainer = AlternatingTrainer(args.data, Path(tmp) / "run", config, plan=plan)
        patch, batch = tuple(config.patch_size), int(config.batch_size)
        in_ch, k = trainer.in_channels, trainer.num_classes
        peer_model = build_model(config.model, in_ch, k, 3, **trainer.model_options())
        peer_model.load_state_dict(copy.deepcopy(trainer.model.state_dict()))  # same initial weights
        flip = config.augment.flip_axes
        flip_xyz = 2 - int(flip[0]) if flip else 0  # medseg's (z, y, x) axis -> nibabel's (x, y, z)
        t0 = time.perf_counter()
        batches, monai_patch = monai_data(args.data, patch, batch, args.monai_workers, flip_xyz,
                                          args.monai_plain_tensors)
        monai_cache_s = time.perf_counter() - t0
        loop = MonaiLoop(peer_model, batches, config.lr, config.weight_decay)
        trainer.peer_round = lambda: print("MONAI round", loop.run(args.steps), flush=True)
        trainer.fit()
        log = read_log(Path(tmp) / "run" / "log.csv")
    medseg_rounds = [{"patches_per_s": float(r["images_per_s"]), "data_wait_s": float(r["data_wait_s"]),
                      "seconds": round(batch * args.steps / float(r["images_per_s"]), 2)} for r in log]
    timed_m, timed_p = medseg_rounds[1:], loop.rounds[1:]

    def mean(rows: list[dict], key: str) -> float:
        return sum(r[key] for r in rows) / len(rows)

    medseg_rate = batch * args.steps * len(timed_m) / sum(r["seconds"] for r in timed_m)
    monai_rate = batch * args.steps * len(timed_p) / sum(r["seconds"] for r in timed_p)
    per_round = [round(m["patches_per_s"] / p["patches_per_s"], 3) for m, p in zip(timed_m, timed_p)]
    flops = step_flops(trainer.model, batch, in_ch, k, patch)
    peaks = json.loads(PEAK_JSON.read_text()) if PEAK_JSON.exists() else None
    peak_after = measure_conv_peak(3, torch.float32)
    fp32_peak = max(peak_before, peak_after)
    bf16_peak = peaks["bf16"]["gflops"] if peaks else None

    def gflops(rate: float) -> float:
        return flops * rate / batch / 1e9

    result = {
        "dataset": args.data.name, "plan_seconds": round(plan_s, 1), "monai_cache_seconds": round(monai_cache_s, 1),
        "network": {"model": config.model, **{k_: (list(v) if isinstance(v, tuple) else v)
                                              for k_, v in trainer.model_options().items()},
                    "parameters": sum(p.numel() for p in trainer.model.parameters())},
        "batch": batch, "patch_zyx": list(patch), "patch_monai_xyz": list(monai_patch),
        "steps_per_round": args.steps, "timed_rounds": args.rounds,
        "monai_workers": args.monai_workers, "monai_meta_tensors": not args.monai_plain_tensors,
        "medseg_compile": args.medseg_compile,
        "medseg": {"patches_per_s": round(medseg_rate, 3), "rounds": medseg_rounds,
                   "data_wait_fraction": round(sum(r["data_wait_s"] for r in timed_m)
                                               / sum(r["seconds"] for r in timed_m), 4)},
        "monai": {"patches_per_s": round(monai_rate, 3), "rounds": loop.rounds,
                  "data_wait_fraction": round(sum(r["data_wait_s"] for r in timed_p)
                                              / sum(r["seconds"] for r in timed_p), 4)},
        "speedup_medseg_over_monai": round(medseg_rate / monai_rate, 3),
        # each medseg round against the MONAI round right after it: a burst of load from other
        # jobs on this shared machine shows up as one odd pair, and the median ignores it
        "speedup_per_round": per_round,
        "speedup_median_of_rounds": round(sorted(per_round)[len(per_round) // 2], 3),
        "target_speedup": 1.5,
        "flops_per_step": flops,
        "gflops_per_s": {"medseg": round(gflops(medseg_rate), 1), "monai": round(gflops(monai_rate), 1)},
        "conv_peak_gflops": {"fp32": fp32_peak, "fp32_before": peak_before, "fp32_after": peak_after,
                             "fp32_source": "measured in this process before and after the loops",
                             "bf16": bf16_peak,
                             "bf16_source": str(PEAK_JSON.relative_to(PEAK_JSON.parents[2])) if peaks else None},
        "fraction_of_fp32_peak": {"medseg": round(gflops(medseg_rate) / fp32_peak, 3),
                                  "monai": round(gflops(monai_rate) / fp32_peak, 3)},
        "fraction_of_bf16_peak": ({"medseg": round(gflops(medseg_rate) / bf16_peak, 3),
                                   "monai": round(gflops(monai_rate) / bf16_peak, 3)} if bf16_peak else None),
        "machine": machine_info(), "torch": torch.__version__,
    }
    try:
        import monai
        result["monai_version"] = monai.__version__
    except ImportError:
        pass
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print()
    print(f"{'loop':<8}{'patches/s':>11}{'data wait':>11}{'GFLOP/s':>9}{'of fp32 peak':>14}")
    for name in ("medseg", "monai"):
        r = result[name]
        print(f"{name:<8}{r['patches_per_s']:>11.2f}{r['data_wait_fraction']:>10.1%}"
              f"{result['gflops_per_s'][name]:>9.1f}{result['fraction_of_fp32_peak'][name]:>13.1%}")
    print(f"medseg / MONAI per round: {per_round}  (median {result['speedup_median_of_rounds']:.2f}x)")
    print(f"medseg / MONAI: {result['speedup_medseg_over_monai']:.2f}x (target 1.5x);  "
          f"{flops / 1e9:.1f} GFLOP per step; fp32 conv peak {fp32_peak} GFLOP/s")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
