"""Which loss for a small target? Every loss medseg offers, same plan, seeds and steps, held-out scores.

Tasks
* synthetic: 2D phantoms with small lesions (`write_phantom_dataset(..., lesions="small")`: 2-6
  lesions of 20-50 pixels per 128x128 image); 60 training and 40 held-out cases; the U-Net pinned
  to 16-128 channels so the figures do not move when the planner's widths do.
* brats: BraTS 2013 enhancing tumour (label 4) as a binary task, FLAIR + T1c; the 4 train/validation
  cases train, the 2 test cases are held out; a 2 mm grid and a 32x48x48 patch (the short-budget
  plan would pick a 1 mm grid whose validation needs ~10,000 windows).

Each loss trains with `medseg.train(..., loss=NAME, seed=S, plan=PLAN, epochs=E, iterations_per_epoch=I)`:
PLAN is made once per task for a budget of M CPU minutes, so every loss trains the same network on
the same patches for the same number of steps (a step budget: on a shared machine the step rate
varies too much for equal minutes to be equal training). Scored on the held-out cases with
`medseg.evaluate` for the small class: Dice, lesion-wise F1, HD95 (an empty prediction scores the
image diagonal); over several seeds, mean and SD. A run with `--resume` skips (task, loss, seed)
triples already in benchmarks/results/losses.json with the same budget and plan.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.harness import read_result

TITLE = "Loss study on small targets"
COMMAND = "python -m benchmarks run losses --tasks synthetic,brats --seeds 0"
ENHANCING = 4
OVERRIDES = {"synthetic": {"features": [16, 32, 64, 128]},
             "brats": {"target_spacing": [2.0, 2.0, 2.0], "patch_size": [32, 48, 48]}}
PLAN_SHOWN = ("patch_size", "batch_size", "target_spacing", "features")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", default="synthetic,brats")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds (mean ± SD over them)")
    parser.add_argument("--losses", default="", help="comma-separated (default: every loss medseg has)")
    parser.add_argument("--synthetic-steps", default="2x100", help="epochs x steps per epoch")
    parser.add_argument("--brats-steps", default="2x60", help="epochs x steps per epoch")
    parser.add_argument("--synthetic-minutes", type=float, default=1.5, help="budget the shared plan is made for")
    parser.add_argument("--brats-minutes", type=float, default=2.0)
    parser.add_argument("--resume", action="store_true", help="keep finished runs of the recorded result")


def synthetic_task(work: Path, quick: bool) -> dict:
    from medseg.data.synthetic import write_phantom_dataset

    train, test = work / "synthetic" / "train", work / "synthetic" / "test"
    write_phantom_dataset(train, 12 if quick else 60, (128, 128), seed=7, lesions="small")
    write_phantom_dataset(test, 4 if quick else 40, (128, 128), seed=7, lesions="small", first_case=1000)
    return {"data": train, "images": test / "images", "labels": test / "labels", "class": 2,
            "class_name": "lesion", "unit": "px"}


def brats_task(work: Path, source: Path) -> dict:
    """Enhancing tumour against everything else (nnU-Net layout); held out: the converter's imagesTs."""
    import numpy as np
    import SimpleITK as sitk

    from medseg.io.convert import convert_brats

    converted = convert_brats(source, work / "brats-converted")
    data, test_labels = work / "brats-enhancing", work / "brats-enhancing-test"
    (data / "labelsTr").mkdir(parents=True)
    test_labels.mkdir(parents=True)
    (data / "imagesTr").symlink_to((converted / "imagesTr").resolve())
    for folder, out in (("labelsTr", data / "labelsTr"), ("labelsTs", test_labels)):
        for label in sorted((converted / folder).glob("*.nii.gz")):
            image = sitk.ReadImage(str(label))
            binary = sitk.GetImageFromArray((sitk.GetArrayFromImage(image) == ENHANCING).astype(np.uint8))
            binary.CopyInformation(image)
            sitk.WriteImage(binary, str(out / label.name))
    desc = json.loads((converted / "dataset.json").read_text())
    desc["labels"] = {"background": 0, "enhancing": 1}
    (data / "dataset.json").write_text(json.dumps(desc, indent=2))
    return {"data": data, "images": converted / "imagesTs", "labels": test_labels, "class": 1,
            "class_name": "enhancing", "unit": "mm"}


def run_one(task: dict, loss: str, steps: tuple[int, int], work: Path, plan: dict, seed: int) -> dict:
    """Train one loss with one seed, predict the held-out images, evaluate the small class."""
    import medseg

    run, pred = work / f"{loss}-seed{seed}", work / f"pred-{loss}-seed{seed}"
    start = time.perf_counter()
    medseg.train(task["data"], run, epochs=steps[0], iterations_per_epoch=steps[1], loss=loss, seed=seed,
                 device="cpu", finish=False, plan=plan)
    trained = time.perf_counter() - start
    medseg.predict(run, task["images"], pred, device="cpu", overlays=False)
    result = medseg.evaluate(pred, task["labels"], json_path=pred / "evaluation.json", csv_path=pred / "evaluation.csv")
    summary = result.summary[task["class"]]
    info = json.loads((run / "run.json").read_text())
    return {"dice": round(summary["dice"]["mean"], 4), "lesion_f1": round(summary["lesion_f1"]["mean"], 4),
            "hd95": round(summary["hd95"]["mean"], 2), "missed": summary["cases"]["missed"],
            "dice_per_case": [round(r["dice"], 4) for r in result.rows if r["class"] == task["class"]],
            "steps": info["iterations_done"], "train_s": round(trained, 1)}


def summarise(per_seed: dict) -> dict:
    import numpy as np

    out: dict = {}
    for key in ("dice", "lesion_f1", "hd95"):
        values = np.array([r[key] for r in per_seed.values()], dtype=float)
        out[key], out[f"{key}_sd"] = round(float(values.mean()), 4), round(float(values.std()), 4)
    out["missed"] = [r["missed"] for r in per_seed.values()]
    out["per_seed"] = per_seed
    return out


def run(args: argparse.Namespace) -> tuple[dict, dict]:
    from medseg.planning import Budget, apply_overrides, plan_dataset
    from medseg.training.loss_registry import LOSSES

    losses = args.losses.split(",") if args.losses else (["dice", "ce"] if args.quick else list(LOSSES))
    tasks = ["synthetic"] if args.quick and args.tasks == "synthetic,brats" else args.tasks.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    old = (read_result("losses") or {}).get("results", {}).get("rows", {}) if args.resume and not args.quick else {}
    work = Path(tempfile.mkdtemp(prefix="medseg-bench-losses-"))
    rows = {}
    try:
        for name in tasks:
            steps = (1, 5) if args.quick else tuple(int(v) for v in getattr(args, f"{name}_steps").split("x"))
            minutes = getattr(args, f"{name}_minutes")
            task = synthetic_task(work, args.quick) if name == "synthetic" else brats_task(work, args.data / "brats2013-6")
            plan = apply_overrides(plan_dataset(task["data"], Budget(device="cpu", minutes=minutes), progress=False),
                                   OVERRIDES[name])
            shown = json.loads(json.dumps({k: plan.get(k) for k in PLAN_SHOWN}))
            row = {"class_name": task["class_name"], "unit": task["unit"], "steps": steps[0] * steps[1],
                   "plan_minutes": minutes, "plan": shown, "overrides": OVERRIDES[name],
                   "test_cases": len(list(Path(task["labels"]).iterdir())), "losses": {}}
            previous = old.get(name, {})
            same = previous.get("steps") == row["steps"] and previous.get("plan") == shown
            for loss in losses:
                per_seed = dict(previous["losses"].get(loss, {}).get("per_seed", {})) if same else {}
                for seed in seeds:
                    if str(seed) not in per_seed:
                        print(f"== {name}: {loss}, seed {seed}, {steps[0]}x{steps[1]} steps", flush=True)
                        per_seed[str(seed)] = run_one(task, loss, steps, work / name, plan, seed)
                row["losses"][loss] = summarise(per_seed)
            rows[name] = row
    finally:
        shutil.rmtree(work, ignore_errors=True)
    settings = {"tasks": tasks, "losses": losses, "seeds": seeds, "resume": args.resume}
    return settings, {"rows": rows}


def table(env: dict) -> list[str]:
    lines = []
    for name, row in env["results"]["rows"].items():
        seeds = sorted({s for r in row["losses"].values() for s in r["per_seed"]})
        measured = (row.get("measured") or {}).get("date", env["date"])
        lines += [f"**{name}** ({row['class_name']}; {row['steps']} steps per loss and seed; seeds "
                  f"{', '.join(seeds)}; {row['test_cases']} held-out cases; measured {measured}; "
                  f"`python -m benchmarks run losses --tasks {name} --seeds {','.join(seeds)}`)", "",
                  f"| loss | Dice | lesion F1 | HD95 ({row['unit']}) | cases with every lesion missed (per seed) |",
                  "|---|---:|---:|---:|---|"]
        for loss, r in sorted(row["losses"].items(), key=lambda kv: -kv[1]["dice"]):
            sd = (lambda k, d: f" ± {r[k + '_sd']:.{d}f}") if len(r["per_seed"]) > 1 else (lambda k, d: "")
            lines.append(f"| `{loss}` | {r['dice']:.3f}{sd('dice', 3)} | {r['lesion_f1']:.3f}{sd('lesion_f1', 3)} | "
                         f"{r['hd95']:.1f}{sd('hd95', 1)} | {', '.join(map(str, r['missed']))} |")
        lines.append("")
    return lines
