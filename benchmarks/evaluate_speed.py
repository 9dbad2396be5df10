"""Speed and agreement of `medseg evaluate` on all 260 MSD Hippocampus cases, against MONAI.

Predictions: each reference label is perturbed the way a real model errs, deterministically per
case: shifted by one voxel along a random axis, each class dilated or eroded by one voxel, a few
flipped voxels; every 13th case loses its posterior class (missed) and every 17th gains a small
spurious blob of it, so the empty-mask conventions are exercised too. They are written as NIfTI
with the references' geometry into WORK/pred (nothing is written into the dataset).

Measured, in the same run on the same machine:
1. `medseg.evaluate.evaluate(pred, labelsTr)` with every metric, end to end (reading 520 NIfTI
   files, mapping, metrics, CSV and JSON) -- the number the issue's 30 s target is about;
2. metric computation alone on masks already in memory: medseg's `case_metrics` (Dice, Jaccard,
   accuracy, sensitivity, specificity, precision, volumes, HD95, ASSD, NSD at 1 mm, lesion F1)
   vs MONAI's compute_dice + compute_hausdorff_distance(95) + compute_average_surface_distance
   (symmetric) + compute_surface_dice(1 mm) on one-hot tensors (fewer metrics for MONAI);
3. agreement: largest |medseg - MONAI| over every case and class where MONAI is defined, and the
   number of rows where MONAI returns NaN/inf (missed or spurious classes).

    python benchmarks/evaluate_speed.py [--work DIR] [--cases N]

Writes benchmarks/results/evaluate_speed.json and prints it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from medseg.evaluate import evaluate
from medseg.metrics import case_metrics

DATA = Path(os.environ.get("MEDSEG_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
RESULT = Path(__file__).resolve().parent / "results" / "evaluate_speed.json"
K = 3


def perturb(label: np.ndarray, index: int) -> np.ndarray:
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
        pred[pred == 2] = 0  # missed class
    if index % 17 == 0:
        z, y, x = (int(s) // 4 for s in label.shape)
        pred[z:z + 2, y:y + 2, x:x + 2] = 2  # spurious blob far from the structure
    return pred.astype(np.uint8)


def make_predictions(labels: list[Path], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(labels):
        ref = sitk.ReadImage(str(path))
        pred = sitk.GetImageFromArray(perturb(sitk.GetArrayFromImage(ref), i))
        pred.CopyInformation(ref)
        sitk.WriteImage(pred, str(out / path.name), True)


def monai_metrics(pred: np.ndarray, ref: np.ndarray, spacing: list[float]) -> dict[str, np.ndarray]:
    from monai.metrics import (compute_average_surface_distance, compute_dice, compute_hausdorff_distance,
                               compute_surface_dice)

    def onehot(a):
        return torch.nn.functional.one_hot(torch.from_numpy(a.astype(np.int64)), K).movedim(-1, 0)[None].float()

    p, r = onehot(pred), onehot(ref)
    return {
        "dice": compute_dice(p, r, include_background=False, ignore_empty=False)[0].numpy(),
        "hd95": compute_hausdorff_distance(p, r, percentile=95, spacing=spacing)[0].numpy(),
        "assd": compute_average_surface_distance(p, r, symmetric=True, spacing=spacing)[0].numpy(),
        "nsd": compute_surface_dice(p, r, class_thresholds=[1.0] * (K - 1), spacing=spacing)[0].numpy(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, help="folder for the predictions (default: a temporary one)")
    parser.add_argument("--cases", type=int, help="only the first N cases (default: all 260)")
    args = parser.parse_args()
    labels_dir = DATA / "msd-hippocampus" / "labelsTr"
    labels = sorted(p for p in labels_dir.glob("*.nii.gz") if not p.name.startswith("."))[: args.cases]
    work = args.work or Path(tempfile.mkdtemp(prefix="medseg_eval_speed_"))
    pred_dir = work / "pred"
    shutil.rmtree(pred_dir, ignore_errors=True)
    make_predictions(labels, pred_dir)

    # 1. end to end, as `medseg evaluate` runs it
    start = time.perf_counter()
    result = evaluate(pred_dir, labels_dir, cases=[p.name[:-len(".nii.gz")] for p in labels],
                      csv_path=work / "metrics.csv", json_path=work / "summary.json")
    end_to_end = time.perf_counter() - start

    # 2. metric computation only, masks in memory, medseg vs MONAI
    masks = []
    for path in labels:
        ref_img = sitk.ReadImage(str(path))
        masks.append((sitk.GetArrayFromImage(sitk.ReadImage(str(pred_dir / path.name))).astype(np.int64),
                      sitk.GetArrayFromImage(ref_img).astype(np.int64), list(reversed(ref_img.GetSpacing()))))
    start = time.perf_counter()
    ours = [case_metrics(p, r, K, s) for p, r, s in masks]
    ours_s = time.perf_counter() - start
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        theirs = [monai_metrics(p, r, s) for p, r, s in masks]
        monai_s = time.perf_counter() - start

    # 3. agreement where MONAI is defined; MONAI's NaN/inf rows are where medseg's conventions apply
    worst = {m: 0.0 for m in ("dice", "hd95", "assd", "nsd")}
    undefined = 0
    for o, t in zip(ours, theirs):
        for k in (1, 2):
            for m in worst:
                value = float(t[m][k - 1])
                if not np.isfinite(value):
                    undefined += 1 if m == "hd95" else 0
                    continue
                worst[m] = max(worst[m], abs(o[k][m] - value))
    statuses = {k: result.summary[k]["cases"] for k in (1, 2)}
    report = {
        "cases": len(labels),
        "evaluate_end_to_end_s": round(end_to_end, 2),
        "metrics_in_memory_s": {"medseg": round(ours_s, 3), "monai": round(monai_s, 3),
                                "monai_over_medseg": round(monai_s / ours_s, 2)},
        "metrics": {"medseg": list(result.metric_names),
                    "monai": ["dice", "hd95", "assd", "nsd"]},
        "max_abs_difference_vs_monai": {m: float(f"{v:.3g}") for m, v in worst.items()},
        "class_rows_where_monai_is_nan_or_inf": undefined,
        "case_status_per_class": {result.summary[k]["class_name"]: v for k, v in statuses.items()},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "load_average_1min_at_end": round(os.getloadavg()[0], 2)},
        "monai": __import__("monai").__version__,
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(report, indent=2) + "\n")
    print(result.table())
    print(json.dumps(report, indent=2))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
