"""Does bf16 autocast change what medseg predicts? Held-out Dice of fp32 vs bf16, same weights.

Issue 6 keeps bf16 autocast as a speed lever only where it pays, and only if prediction Dice is
unchanged within 0.002. On CPUs without native bf16 (AVX2 only, like this one) autocast is
emulated and many times slower (BENCHMARKS.md "Precision"), so `--precision auto` keeps fp32;
this script still checks the accuracy half of the condition, so a machine with native bf16
can switch it on knowing what it costs. It predicts every image of a folder twice with the same
run (`Predictor(precision="fp32")` and `Predictor(precision="bf16")`, alternating per case),
scores both against the labels with `medseg.metrics`, and records the time of each.

    flock /work/scratch/cpu.lock nice -n 19 .venv/bin/python benchmarks/bf16_dice.py \\
        --run /work/scratch/h3d/work-hippocampus/run \\
        --images /work/scratch/h3d/work-hippocampus/test/imagesTs \\
        --labels ../shared/data/msd-hippocampus/labelsTr

Writes benchmarks/results/bf16_dice.json and prints per-class Dice and the differences.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from medseg.device import cpu_has_native_bf16
from medseg.io.layout import prediction_inputs
from medseg.io.volume import read_volume_mask
from medseg.metrics import confusion, dice_from_confusion
from medseg.predict import Predictor, read_input_case

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--labels", required=True)
    parser.add_argument("--cases", type=int, default=0, help="first N cases only (0: all)")
    parser.add_argument("--out", default=str(RESULTS / "bf16_dice.json"))
    args = parser.parse_args()

    predictors = {p: Predictor(args.run, device="cpu", precision=p) for p in ("fp32", "bf16")}
    first = predictors["fp32"]
    K = first.num_classes
    items = prediction_inputs(args.images, first.in_channels, first.dataset.channel_names)
    if args.cases:
        items = items[: args.cases]
    conf = {p: np.zeros((K, 4), dtype=np.int64) for p in predictors}
    per_case: dict[str, dict] = {}
    seconds = {p: 0.0 for p in predictors}
    differing = 0
    for i, item in enumerate(items):
        case = read_input_case(item, first.in_channels)
        label = read_volume_mask(Path(args.labels) / f"{item.case_id}.nii.gz").astype(np.int64)
        masks = {}
        for p in (("fp32", "bf16") if i % 2 == 0 else ("bf16", "fp32")):
            start = time.perf_counter()
            masks[p] = predictors[p].segment(case)
            seconds[p] += time.perf_counter() - start
            conf[p] += confusion(masks[p], label, K)
        differing += int((masks["fp32"] != masks["bf16"]).sum())
        per_case[item.case_id] = {p: [round(float(d), 5) for d in dice_from_confusion(confusion(m, label, K))[1:]]
                                  for p, m in masks.items()}
    dice = {p: [float(d) for d in dice_from_confusion(c)[1:]] for p, c in conf.items()}
    mean_case = {p: [float(np.mean([r[p][k] for r in per_case.values()])) for k in range(K - 1)] for p in predictors}
    diff = max(abs(a - b) for a, b in zip(mean_case["fp32"], mean_case["bf16"]))
    result = {"benchmark": "bf16_dice", "machine": platform.processor() or platform.machine(),
              "native_bf16": cpu_has_native_bf16(), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "load": os.getloadavg(), "run": str(Path(args.run).resolve()),
              "cases": len(items), "class_names": first.class_names[1:],
              "mean_case_dice": {p: [round(d, 5) for d in v] for p, v in mean_case.items()},
              "pooled_dice": {p: [round(d, 5) for d in v] for p, v in dice.items()},
              "max_abs_mean_dice_difference": round(diff, 5), "target": 0.002, "within_target": diff <= 0.002,
              "voxels_differing": differing, "seconds": {p: round(s, 2) for p, s in seconds.items()},
              "bf16_speedup": round(seconds["fp32"] / seconds["bf16"], 3), "per_case": per_case}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{'precision':<10}" + "".join(f"{n:>14}" for n in first.class_names[1:]) + f"{'seconds':>10}")
    for p in predictors:
        print(f"{p:<10}" + "".join(f"{d:>14.4f}" for d in mean_case[p]) + f"{seconds[p]:>10.1f}")
    print(f"max |mean Dice difference| {diff:.5f} (target <= 0.002); {differing} voxels differ over {len(items)} "
          f"cases; bf16 speed-up {result['bf16_speedup']}x (native bf16: {result['native_bf16']})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
