"""Speed of `medseg evaluate` on all 260 MSD Hippocampus cases, and its agreement with MONAI's metrics.

Predictions are the reference labels perturbed the way a model errs, deterministically per case:
shifted by one voxel along a random axis, each class dilated or eroded by one voxel, 0.2 % of the
voxels flipped; every 13th case loses its posterior class (missed) and every 17th gains a small
spurious blob of it. They are written as NIfTI with the references' geometry into a temporary
folder (nothing is written into the dataset). Measured in one process:

1. `medseg.evaluation.evaluate` end to end, every metric (reading 520 files, metrics, CSV + JSON);
2. metrics alone on masks in memory: medseg's `case_metrics` (16 values per class) against MONAI's
   compute_dice + compute_hausdorff_distance(95) + compute_average_surface_distance +
   compute_surface_dice(1 mm) on one-hot tensors (fewer metrics for MONAI);
3. agreement: the largest |medseg - MONAI| over every case and class where MONAI is defined.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import warnings
from pathlib import Path

TITLE = "Evaluation speed and agreement with MONAI"
COMMAND = "python -m benchmarks run evaluate"
K = 3
TARGET_S = 30.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cases", type=int, help="only the first N cases (default: all 260; --quick: 8)")


def perturb(label, index: int):
    import numpy as np
    from scipy import ndimage

    rng = np.random.default_rng(index)
    pred = np.roll(label, int(rng.choice([-1, 1])), axis=int(rng.integers(0, 3)))
    for k in (1, 2):
        mask = pred == k
        if rng.random() < 0.5:
            pred[ndimage.binary_dilation(mask) & (pred == 0)] = k
        else:
            pred[mask & ~ndimage.binary_erosion(mask)] = 0
    flips = rng.random(label.shape) < 0.002
    pred[flips] = rng.integers(0, K, int(flips.sum()))
    if index % 13 == 0:
        pred[pred == 2] = 0                       # a missed class
    if index % 17 == 0:
        z, y, x = (int(s) // 4 for s in label.shape)
        pred[z:z + 2, y:y + 2, x:x + 2] = 2       # a spurious blob far from the structure
    return pred.astype(np.uint8)


def monai_metrics(pred, ref, spacing: list[float]) -> dict:
    import numpy as np
    import torch
    from monai.metrics import (compute_average_surface_distance, compute_dice, compute_hausdorff_distance,
                               compute_surface_dice)

    def onehot(a):
        return torch.nn.functional.one_hot(torch.from_numpy(a.astype(np.int64)), K).movedim(-1, 0)[None].float()

    p, r = onehot(pred), onehot(ref)
    return {"dice": compute_dice(p, r, include_background=False, ignore_empty=False)[0].numpy(),
            "hd95": compute_hausdorff_distance(p, r, percentile=95, spacing=spacing)[0].numpy(),
            "assd": compute_average_surface_distance(p, r, symmetric=True, spacing=spacing)[0].numpy(),
            "nsd": compute_surface_dice(p, r, class_thresholds=[1.0] * (K - 1), spacing=spacing)[0].numpy()}


def run(args: argparse.Namespace) -> tuple[dict, dict]:
    import numpy as np
    import SimpleITK as sitk

    from medseg.evaluation import evaluate
    from medseg.evaluation.metrics import case_metrics

    labels_dir = args.data / "msd-hippocampus" / "labelsTr"
    limit = args.cases or (8 if args.quick else None)
    labels = sorted(p for p in labels_dir.glob("*.nii.gz") if not p.name.startswith("."))[:limit]
    work = Path(tempfile.mkdtemp(prefix="medseg-bench-evaluate-"))
    try:
        pred_dir = work / "pred"
        pred_dir.mkdir()
        masks = []
        for i, path in enumerate(labels):
            ref = sitk.ReadImage(str(path))
            ref_array = sitk.GetArrayFromImage(ref)
            pred = sitk.GetImageFromArray(perturb(ref_array, i))
            pred.CopyInformation(ref)
            sitk.WriteImage(pred, str(pred_dir / path.name), True)
            masks.append((sitk.GetArrayFromImage(pred).astype(np.int64), ref_array.astype(np.int64),
                          list(reversed(ref.GetSpacing()))))
        start = time.perf_counter()
        result = evaluate(pred_dir, labels_dir, cases=[p.name[:-len(".nii.gz")] for p in labels],
                          csv_path=work / "metrics.csv", json_path=work / "summary.json")
        end_to_end = time.perf_counter() - start
    finally:
        shutil.rmtree(work, ignore_errors=True)
    start = time.perf_counter()
    ours = [case_metrics(p, r, K, s) for p, r, s in masks]
    ours_s = time.perf_counter() - start
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        theirs = [monai_metrics(p, r, s) for p, r, s in masks]
        monai_s = time.perf_counter() - start
    worst = {m: 0.0 for m in ("dice", "hd95", "assd", "nsd")}
    undefined = 0
    for o, t in zip(ours, theirs):
        for k in (1, 2):
            for m in worst:
                value = float(t[m][k - 1])
                if not np.isfinite(value):
                    undefined += int(m == "hd95")
                    continue
                worst[m] = max(worst[m], abs(o[k][m] - value))
    results = {"cases": len(labels), "evaluate_end_to_end_s": round(end_to_end, 2), "target_s": TARGET_S,
               "metrics_in_memory_s": {"medseg": round(ours_s, 3), "monai": round(monai_s, 3)},
               "monai_over_medseg": round(monai_s / ours_s, 2), "medseg_metrics": len(result.metric_names),
               "max_abs_difference_vs_monai": {m: float(f"{v:.3g}") for m, v in worst.items()},
               "class_rows_where_monai_is_undefined": undefined}
    return {"cases": len(labels), "dataset": "msd-hippocampus labelsTr, perturbed copies as predictions"}, results


def table(env: dict) -> list[str]:
    r = env["results"]
    diff = ", ".join(f"{m} {v:.1g}" for m, v in r["max_abs_difference_vs_monai"].items())
    return [f"{r['cases']} cases.", "",
            "| what | time |", "|---|---:|",
            f"| `medseg evaluate` end to end, every metric (target < {r['target_s']:g} s) | "
            f"**{r['evaluate_end_to_end_s']:.1f} s** |",
            f"| metrics only, masks in memory: medseg `case_metrics` ({r['medseg_metrics']} values per class) | "
            f"{r['metrics_in_memory_s']['medseg']:.1f} s |",
            f"| the same masks: MONAI Dice + HD95 + ASSD + NSD | {r['metrics_in_memory_s']['monai']:.1f} s |",
            f"| MONAI / medseg | **{r['monai_over_medseg']:.0f}×** |", "",
            f"Largest difference to MONAI where MONAI is defined: {diff}; MONAI returns inf/NaN in "
            f"{r['class_rows_where_monai_is_undefined']} class rows (a missed class), where medseg scores Dice 0 "
            "and the image diagonal.", "", f"Command: `{COMMAND}`"]
