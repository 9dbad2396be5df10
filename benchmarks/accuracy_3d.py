"""Held-out accuracy of `medseg train` + `medseg predict` on MSD Hippocampus (3D MRI).

Protocol (issue 3): sort the case names, hold out every 5th (index % 5 == 0), train on the rest
with a 20-minute budget, predict the held-out cases from their original NIfTI files (without and with mirroring
test-time augmentation), and compute
Dice of anterior (1) and posterior (2) independently (nibabel, straight from the files). Also
checks that every written mask has exactly its image's shape and affine.

The training folder is an MSD folder whose dataset.json lists the training cases only and whose
imagesTr/labelsTr are symlinks to ../shared/data (nothing is copied).
Writes RESULT_DIR/hippocampus.json and prints it.

    python benchmarks/accuracy_3d.py [--minutes 20] [--option KEY=VALUE ...]
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import time
from pathlib import Path

import nibabel as nib
import numpy as np

DATA = Path(os.environ.get("MEDSEG_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CLASSES = {"anterior": 1, "posterior": 2}


def make_split(work: Path) -> tuple[Path, Path, list[str]]:
    src = DATA / "msd-hippocampus"
    desc = json.loads((src / "dataset.json").read_text())
    names = sorted(Path(e["image"]).name for e in desc["training"])
    held = [n for i, n in enumerate(names) if i % 5 == 0]
    train, test = work / "train", work / "test"
    train.mkdir(parents=True)
    (test / "imagesTs").mkdir(parents=True)
    for sub in ("imagesTr", "labelsTr"):
        (train / sub).symlink_to(src / sub)
    desc["training"] = [e for e in desc["training"] if Path(e["image"]).name not in held]
    desc["numTraining"] = len(desc["training"])
    (train / "dataset.json").write_text(json.dumps(desc, indent=2))
    for n in held:
        (test / "imagesTs" / n).symlink_to(src / "imagesTr" / n)
    return train, test, held


def dice_scores(pred_dir: Path, held: list[str]) -> tuple[dict[str, float], int]:
    src = DATA / "msd-hippocampus"
    scores: dict[str, list[float]] = {c: [] for c in CLASSES}
    geometry_ok = 0
    for n in held:
        image = nib.load(src / "imagesTr" / n)
        ref = np.asarray(nib.load(src / "labelsTr" / n).dataobj)
        out = nib.load(pred_dir / n)
        pred = np.asarray(out.dataobj)
        geometry_ok += int(pred.shape == image.shape and np.allclose(out.affine, image.affine, atol=1e-5))
        for cls, value in CLASSES.items():
            a, b = pred == value, ref == value
            den = a.sum() + b.sum()
            scores[cls].append(1.0 if den == 0 else 2 * (a & b).sum() / den)
    return {c: float(np.mean(v)) for c, v in scores.items()}, geometry_ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--work", type=Path, help="scratch folder (default: OUT/work-hippocampus, replaced)")
    parser.add_argument("--name", default="hippocampus", help="result file name (without .json)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="extra medseg.train option (Python literal), e.g. --option batch_size=4")
    args = parser.parse_args()

    import medseg

    work = args.work or args.out / "work-hippocampus"
    if work.exists():
        shutil.rmtree(work)
    train, test, held = make_split(work)
    options = {k: ast.literal_eval(v) for k, v in (o.split("=", 1) for o in args.option)}
    start = time.perf_counter()
    run = medseg.train(train, work / "run", minutes=args.minutes, **options)
    train_s = time.perf_counter() - start  # training budget + plan + validation/postprocessing/report
    start = time.perf_counter()
    medseg.predict(run, test / "imagesTs", work / "pred", overlays=False)
    predict_s = time.perf_counter() - start
    info = json.loads((run / "run.json").read_text())
    dice, geometry_ok = dice_scores(work / "pred", held)
    start = time.perf_counter()
    medseg.predict(run, test / "imagesTs", work / "pred_mirror", overlays=False, mirror=True)
    predict_mirror_s = time.perf_counter() - start
    dice_mirror, _ = dice_scores(work / "pred_mirror", held)
    medseg.predict(run, test / "imagesTs", work / "pred_raw", overlays=False, postprocess=False)
    dice_raw, _ = dice_scores(work / "pred_raw", held)
    postprocessing = json.loads((run / "postprocessing.json").read_text()) if (run / "postprocessing.json").is_file() else None
    result = {
        "dataset": "msd-hippocampus",
        "protocol": {"minutes": args.minutes, "train_cases": info["cases"]["train"] + info["cases"]["val"],
                     "test_cases": len(held)},
        "dice": dice,
        "dice_mirror_tta": dice_mirror,
        "dice_without_postprocessing": dice_raw,
        "postprocessing": postprocessing,
        "plan": info.get("plan"),
        "geometry_identical": f"{geometry_ok}/{len(held)}",
        "train_wall_s": round(train_s, 1),
        "predict_wall_s": round(predict_s, 1),
        "predict_mirror_tta_wall_s": round(predict_mirror_s, 1),
        "iterations": info["iterations_done"],
        "epochs": info["epochs_done"],
        "best_val_dice_mean": info["best_val_dice_mean"],
        "model": info["model"],
        "config": {k: info["config"][k] for k in ("batch_size", "patch_size", "lr", "loss", "features")},
        "preprocessor": info["preprocessor"],
        "precision": info["precision"],
        "options": options,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
