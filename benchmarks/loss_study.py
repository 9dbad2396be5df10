"""Which loss for a small target? Every loss of `medseg.losses.LOSSES`, same seeds and budget, on
two small-target tasks, scored on held-out cases with `medseg.evaluate`.

Tasks
* synthetic: 2D phantoms with small lesions (`write_phantom_dataset(..., lesions="small")`:
  2-6 lesions of about 20-50 pixels per 128x128 image, inside an "organ"); 60 training cases,
  40 held-out cases (other seeds of the same generator). Scored class: lesion.
* brats: BraTS 2013 enhancing tumour (label 4) as a binary task, FLAIR + T1c channels, from
  `medseg convert brats` output: the 4 train/validation cases train (one of them validates),
  the 2 test cases (imagesTs/labelsTs) are held out. Scored class: enhancing.

Each loss trains with `medseg.train(data, run, loss=NAME, seed=S, plan=PLAN, epochs=E,
iterations_per_epoch=I)` for each seed S: PLAN is made once per task by `medseg.plan` for a budget of M CPU minutes,
so every loss trains the same network on the same patches, and every loss gets the same number of
steps (E x I; validation and the best checkpoint after each epoch). A step budget rather than a
clock: on a shared machine the step rate varied by 1.6x between losses in the same minutes.
Overrides of the plan, stated in the results: the synthetic task pins the U-Net to 16-128
channels (`SYNTHETIC_OVERRIDES`, so the figures do not move when the planner's widths do); for
BraTS the plan's short-budget CPU choice (1 mm grid, a 20x24x24 patch, so validation alone needs
~10,000 windows) is replaced by a 2 mm grid and a 32x48x48 patch (`BRATS_OVERRIDES`). Scored with
Dice, lesion-wise F1 and HD95 of the small class (mean over the held-out cases; HD95 in px for the
2D task, mm for BraTS; an empty prediction scores the image diagonal); with several seeds, the
mean and SD over seeds. Results are written after every run, so an interrupted study resumes
where it stopped; a changed budget or network discards the task's earlier figures.

    python benchmarks/loss_study.py --brats ../shared/data/brats2013-6 [--seeds 0,1,2] \
        [--synthetic-minutes 1.5 --synthetic-steps 2x100] [--brats-minutes 2 --brats-steps 2x60]
        [--tasks synthetic,brats] [--losses dice,ce]
Writes benchmarks/results/loss_study.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

import medseg
from medseg.data.synthetic import write_phantom_dataset
from medseg.io.convert import convert_brats
from medseg.losses import LOSSES

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "loss_study.json"
ENHANCING = 4
BRATS_OVERRIDES = {"target_spacing": [2.0, 2.0, 2.0], "patch_size": [32, 48, 48]}
# The planner's width for a 1.5-minute budget changed as it learned to size models (8-64 channels
# since then); the study pins 16-128 so its figures do not move when the planner does.
SYNTHETIC_OVERRIDES = {"features": [16, 32, 64, 128]}
PLAN_SHOWN = ("patch_size", "batch_size", "target_spacing", "features")


def synthetic_task(work: Path) -> dict:
    """Train and held-out phantoms with small lesions (class 2)."""
    train, test = work / "synthetic" / "train", work / "synthetic" / "test"
    if not (train / "labels").is_dir():
        write_phantom_dataset(train, 60, (128, 128), seed=7, lesions="small")
        write_phantom_dataset(test, 40, (128, 128), seed=7, lesions="small", first_case=1000)
    return {"data": train, "images": test / "images", "labels": test / "labels", "class": 2,
            "class_name": "lesion", "distance_unit": "px", "overrides": SYNTHETIC_OVERRIDES}


def _binary_label(src: Path, dst: Path, value: int) -> None:
    """dst: 1 where src == value, else 0, on src's grid."""
    image = sitk.ReadImage(str(src))
    out = sitk.GetImageFromArray((sitk.GetArrayFromImage(image) == value).astype(np.uint8))
    out.CopyInformation(image)
    sitk.WriteImage(out, str(dst))


def brats_task(work: Path, source: Path) -> dict:
    """Enhancing tumour vs everything else, nnU-Net layout; held out: the converter's imagesTs."""
    converted = source if (source / "dataset.json").is_file() else work / "brats-converted"
    if converted != source and not (converted / "dataset.json").is_file():
        convert_brats(source, converted)
    data, test_labels = work / "brats-enhancing", work / "brats-enhancing-test" / "labelsTs"
    if not (data / "dataset.json").is_file():
        (data / "labelsTr").mkdir(parents=True, exist_ok=True)
        test_labels.mkdir(parents=True, exist_ok=True)
        (data / "imagesTr").symlink_to((converted / "imagesTr").resolve())
        for label in sorted((converted / "labelsTr").glob("*.nii.gz")):
            _binary_label(label, data / "labelsTr" / label.name, ENHANCING)
        for label in sorted((converted / "labelsTs").glob("*.nii.gz")):
            _binary_label(label, test_labels / label.name, ENHANCING)
        desc = json.loads((converted / "dataset.json").read_text())
        desc["labels"] = {"background": 0, "enhancing": 1}
        desc["description"] = f"BraTS 2013 enhancing tumour (label {ENHANCING}) only, from {converted}"
        (data / "dataset.json").write_text(json.dumps(desc, indent=2))
    return {"data": data, "images": converted / "imagesTs", "labels": test_labels, "class": 1,
            "class_name": "enhancing", "distance_unit": "mm", "overrides": BRATS_OVERRIDES}


def task_plan(task: dict, minutes: float) -> dict:
    """The plan for this task and budget (with the task's overrides), shared by every loss."""
    from medseg.plan import Budget, apply_overrides, plan_dataset

    plan = plan_dataset(task["data"], Budget(device="cpu", minutes=minutes), progress=False)
    return apply_overrides(plan, task.get("overrides", {}))


def run_one(task: dict, loss: str, steps: tuple[int, int], work: Path, plan: dict, seed: int) -> dict:
    """Train one loss with one seed, predict the held-out images, evaluate the small class."""
    run, pred = work / "runs" / f"{loss}-seed{seed}", work / "pred" / f"{loss}-seed{seed}"
    for folder in (run, pred):
        if folder.exists():
            shutil.rmtree(folder)
    start = time.perf_counter()
    medseg.train(task["data"], run, epochs=steps[0], iterations_per_epoch=steps[1], loss=loss, seed=seed,
                 device="cpu", finish=False, plan=plan)
    trained = time.perf_counter() - start
    medseg.predict(run, task["images"], pred, device="cpu", overlays=False)
    result = medseg.evaluate(pred, task["labels"], json_path=pred / "evaluation.json", csv_path=pred / "evaluation.csv")
    summary = result.summary[task["class"]]
    info = json.loads((run / "run.json").read_text())
    return {
        "dice": round(summary["dice"]["mean"], 4),
        "lesion_f1": round(summary["lesion_f1"]["mean"], 4),
        "hd95": round(summary["hd95"]["mean"], 2),
        "dice_per_case": [round(r["dice"], 4) for r in result.rows if r["class"] == task["class"]],
        "cases": summary["cases"],
        "steps": info["iterations_done"],
        "train_s": round(trained, 1),
        "best_val_dice": info["best_val_dice_mean"],
    }


def summarise(per_seed: dict) -> dict:
    """Mean and spread (population SD) over seeds of Dice, lesion F1 and HD95, plus the runs."""
    out: dict = {}
    for key in ("dice", "lesion_f1", "hd95"):
        values = np.array([r[key] for r in per_seed.values()], dtype=float)
        out[key] = round(float(values.mean()), 4)
        out[f"{key}_sd"] = round(float(values.std()), 4)
    out["missed_cases"] = [r["cases"]["missed"] for r in per_seed.values()]
    out["train_s"] = round(float(np.mean([r["train_s"] for r in per_seed.values()])), 1)
    out["seeds"] = sorted(int(k) for k in per_seed)
    out["per_seed"] = per_seed
    return out


def markdown(results: dict) -> str:
    """One table per task: loss, Dice, lesion F1, HD95, steps."""
    out = []
    for task, entry in results["tasks"].items():
        unit = entry["distance_unit"]
        out += [f"**{task}** ({entry['class_name']}; {entry['steps']} steps per loss, planned for "
                f"{entry['minutes']:g} CPU min; {entry['test_cases']} held-out cases)", "",
                f"| loss | Dice | lesion F1 | HD95 ({unit}) | cases with every lesion missed | seeds |",
                "|---|---:|---:|---:|---:|---:|"]
        rows = sorted(entry["losses"].items(), key=lambda kv: -kv[1]["dice"])
        for name, r in rows:
            n = len(r["seeds"])
            sd = (lambda k: f" ± {r[k + '_sd']:.{1 if k == 'hd95' else 3}f}") if n > 1 else (lambda k: "")
            out.append(f"| `{name}` | {r['dice']:.3f}{sd('dice')} | {r['lesion_f1']:.3f}{sd('lesion_f1')} | "
                       f"{r['hd95']:.1f}{sd('hd95')} | {', '.join(map(str, r['missed_cases']))} "
                       f"/ {entry['test_cases']} | {n} |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brats", type=Path, default=ROOT.parent / "shared" / "data" / "brats2013-6",
                        help="BraTS 2013 folders, or a `medseg convert brats` output")
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "medseg-loss-study")
    parser.add_argument("--synthetic-minutes", type=float, default=1.5)
    parser.add_argument("--brats-minutes", type=float, default=2.0)
    parser.add_argument("--synthetic-steps", default="2x100", help="epochs x steps per epoch")
    parser.add_argument("--brats-steps", default="2x60", help="epochs x steps per epoch")
    parser.add_argument("--tasks", default="synthetic,brats")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds, e.g. 0,1,2 (mean ± SD reported)")
    parser.add_argument("--losses", default=",".join(LOSSES))
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--fresh", action="store_true", help="ignore earlier results in --results")
    args = parser.parse_args()

    results = json.loads(args.results.read_text()) if args.results.is_file() and not args.fresh else {}
    results.update({"protocol": __doc__.split("\n\n")[0].replace("\n", " "),
                    "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                               f"torch {torch.__version__}, {torch.get_num_threads()} threads"})
    results.setdefault("tasks", {})
    for task_name in args.tasks.split(","):
        minutes = args.synthetic_minutes if task_name == "synthetic" else args.brats_minutes
        steps = tuple(int(v) for v in (args.synthetic_steps if task_name == "synthetic" else args.brats_steps).split("x"))
        task = synthetic_task(args.work) if task_name == "synthetic" else brats_task(args.work, args.brats)
        entry = results["tasks"].setdefault(task_name, {"losses": {}})
        plan = task_plan(task, minutes)
        shown = json.loads(json.dumps({k: plan.get(k) for k in PLAN_SHOWN}))
        if (entry.get("minutes") not in (None, minutes) or entry.get("steps") not in (None, steps[0] * steps[1])
                or entry.get("plan") not in (None, shown)):
            entry["losses"] = {}  # another budget or network: earlier figures are not comparable
        entry.update({"class_name": task["class_name"], "minutes": minutes, "steps": steps[0] * steps[1],
                      "epochs_x_iterations": list(steps), "distance_unit": task["distance_unit"],
                      "test_cases": len(list(Path(task["labels"]).iterdir())),
                      "overrides": task.get("overrides", {}), "plan": shown})
        for loss in args.losses.split(","):
            known = entry["losses"].get(loss, {})
            per_seed = known.get("per_seed", {"0": known} if "dice" in known else {})  # older one-seed layout
            for seed in (int(v) for v in args.seeds.split(",")):
                if str(seed) in per_seed:
                    continue
                print(f"== {task_name}: {loss}, seed {seed} ({steps[0]}x{steps[1]} steps)", flush=True)
                per_seed[str(seed)] = run_one(task, loss, steps, args.work / task_name, plan, seed)
                print(json.dumps(per_seed[str(seed)]), flush=True)
                entry["losses"][loss] = summarise(per_seed)
                args.results.parent.mkdir(parents=True, exist_ok=True)
                args.results.write_text(json.dumps(results, indent=2))
    print(markdown(results))


if __name__ == "__main__":
    main()
