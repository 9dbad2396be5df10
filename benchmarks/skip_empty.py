"""Skipping all-background sliding windows on real data: how many, how much time, and whether masks change.

    flock /work/scratch/cpu.lock nice -n 19 .venv/bin/python benchmarks/skip_empty.py \\
        --brats-run /work/scratch/brats_run --brats-images /work/scratch/brats/imagesTs \\
        --brats-labels /work/scratch/brats/labelsTs \\
        --hippo-run /work/scratch/h4/work/run --hippo-images /work/scratch/h4/work/test/imagesTs \\
        [--ct-run /work/scratch/s4/helperC/pm/run --ct-volume /work/scratch/s4/helperC/pm/ct_volume.nii.gz]

For every held-out case, two `medseg.Predictor`s segment the same case, alternating which goes
first: "all" runs every window and keeps float32 maps (the behaviour before issue 6: the same
float32 sums, so the same probabilities); "skip" is the default after it: float16 maps and no
network pass on windows whose every voxel equals its channel's minimum after normalisation
(`sliding_window(skip_empty=True)`: air after CT clipping, the zeros around a skull-stripped
brain after z-scoring). Reported per dataset: windows run / total, time of each and the ratio,
voxels whose class differs, the largest per-class Dice difference between the two masks, the
largest probability difference, and (with labels) the Dice of each against the reference. Writes benchmarks/results/skip_empty.json.
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

from medseg.io.layout import prediction_inputs
from medseg.io.volume import read_volume_mask
from medseg.postprocess import apply_postprocessing
from medseg.predict import Predictor, argmax_mask, read_input_case

ROOT = Path(__file__).resolve().parents[1]


class CountingModel(torch.nn.Module):
    """Counts the windows a network is run on (the Predictor's model, wrapped)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.windows = model, 0

    def forward(self, x):
        self.windows += x.shape[0]
        return self.model(x)


def dice(a: np.ndarray, b: np.ndarray, k: int) -> float:
    x, y = a == k, b == k
    s = int(x.sum()) + int(y.sum())
    return 1.0 if s == 0 else 2.0 * int((x & y).sum()) / s


def compare(run: Path, images: Path, labels: Path | None, limit: int | None) -> dict:
    """Both predictors on every case of `images`; per-case and pooled figures."""
    predictors = {flag: Predictor(run, device="cpu", skip_empty=flag) for flag in (False, True)}
    for p in predictors.values():
        for m in p.members:
            m.model = CountingModel(m.model)
    items = prediction_inputs(images, predictors[False].in_channels, predictors[False].dataset.channel_names)
    items = items[:limit] if limit else items
    k = predictors[False].num_classes
    cases, totals = [], {"windows_all": 0, "windows_skip": 0, "s_all": 0.0, "s_skip": 0.0}
    for i, item in enumerate(items):
        case = read_input_case(item, predictors[False].in_channels)
        masks, secs, windows, probs = {}, {}, {}, {}
        for flag in ((False, True) if i % 2 == 0 else (True, False)):
            predictor = predictors[flag]
            model = predictor.members[0].model
            model.windows = 0
            t0 = time.perf_counter()
            # before: float32 maps, every window; after (the default): float16 maps, empty windows skipped
            probs[flag] = predictor.probabilities(case, dtype=torch.float16 if flag else torch.float32)
            masks[flag] = apply_postprocessing(argmax_mask(probs[flag]), predictor.postprocessing)
            secs[flag] = time.perf_counter() - t0
            windows[flag] = model.windows
        max_abs = max(float((probs[True][:, z:z + 8].float() - probs[False][:, z:z + 8]).abs().max())
                      for z in range(0, probs[False].shape[1], 8))
        del probs
        row = {"case": item.case_id, "windows_all": windows[False], "windows_skip": windows[True],
               "s_all": secs[False], "s_skip": secs[True],
               "voxels_differing": int((masks[False] != masks[True]).sum()), "max_abs_probability_difference": max_abs,
               "dice_between": {c: dice(masks[False], masks[True], c) for c in range(1, k)}}
        if labels is not None:
            ref = read_volume_mask(labels / f"{item.case_id}.nii.gz")
            row["dice_ref_all"] = {c: dice(masks[False], ref, c) for c in range(1, k)}
            row["dice_ref_skip"] = {c: dice(masks[True], ref, c) for c in range(1, k)}
        cases.append(row)
        for key in totals:
            totals[key] += row[key]
        print(f"  {item.case_id}: windows {row['windows_skip']}/{row['windows_all']}, "
              f"{row['s_skip']:.1f} s vs {row['s_all']:.1f} s, {row['voxels_differing']} voxels differ", flush=True)
    worst = max((1 - d for r in cases for d in r["dice_between"].values()), default=0.0)
    summary = dict(totals, cases=len(cases), time_ratio_skip_over_all=totals["s_skip"] / totals["s_all"],
                   voxels_differing=sum(r["voxels_differing"] for r in cases),
                   max_dice_difference_between_masks=worst,
                   max_abs_probability_difference=max((r["max_abs_probability_difference"] for r in cases), default=0.0))
    if labels is not None:
        for key in ("dice_ref_all", "dice_ref_skip"):
            summary[key] = {c: float(np.mean([r[key][c] for r in cases])) for c in range(1, k)}
    return {"summary": summary, "cases": cases}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--brats-run", type=Path)
    ap.add_argument("--brats-images", type=Path)
    ap.add_argument("--brats-labels", type=Path)
    ap.add_argument("--hippo-run", type=Path)
    ap.add_argument("--hippo-images", type=Path)
    ap.add_argument("--hippo-limit", type=int, default=None)
    ap.add_argument("--ct-run", type=Path)
    ap.add_argument("--ct-volume", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "skip_empty.json")
    args = ap.parse_args()
    results = {}
    jobs = [("brats", args.brats_run, args.brats_images, args.brats_labels, None),
            ("hippocampus", args.hippo_run, args.hippo_images, None, args.hippo_limit),
            ("ct_phantom", args.ct_run, args.ct_volume, None, None)]
    for name, run, images, labels, limit in jobs:
        if run is None:
            continue
        print(f"{name}:", flush=True)
        results[name] = compare(run, images, labels, limit)
    print(f"\n{'dataset':<12} {'cases':>5} {'windows run':>14} {'s all':>8} {'s skip':>8} {'time ratio':>10} "
          f"{'voxels differ':>13} {'max dDice':>9} {'max |dp|':>9}")
    for name, r in results.items():
        s = r["summary"]
        print(f"{name:<12} {s['cases']:>5} {s['windows_skip']:>6}/{s['windows_all']:<7} {s['s_all']:>8.1f} "
              f"{s['s_skip']:>8.1f} {s['time_ratio_skip_over_all']:>10.2f} {s['voxels_differing']:>13} "
              f"{s['max_dice_difference_between_masks']:>9.4f} {s['max_abs_probability_difference']:>9.2e}")
    record = {"benchmark": "skip_empty",
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                          "threads": torch.get_num_threads(), "load_average_at_end": os.getloadavg()},
              "settings": {k: str(v) for k, v in vars(args).items()}, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, default=float))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
