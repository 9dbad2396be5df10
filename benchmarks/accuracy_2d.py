"""Held-out accuracy of `medseg train` + `medseg predict` on the real 2D datasets.

Protocols (the ones the project is judged by):
  isbi   ISBI 2012 membranes: train on slices 0..23, hold out 24..29, 10-minute budget;
         Dice of membrane (mask value 0) and cell (value 255) on the held-out slices.
  kvasir Kvasir-SEG polyps: sorted names, every 5th held out (index % 5 == 0), 15-minute budget;
         polyp Dice (mask >= 128) scored at each image's original resolution.

The split folders hold symlinks to ../shared/data (nothing is copied). Training and prediction go
through the public `medseg.train` / `medseg.predict` with default settings (plus the budget);
Dice is computed here, independently of medseg's own metrics, straight from the files.
Writes RESULT_DIR/<dataset>.json and prints it.

    python benchmarks/accuracy_2d.py isbi   [--minutes 10] [--out benchmarks/results]
    python benchmarks/accuracy_2d.py kvasir [--minutes 15]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image

DATA = Path(os.environ.get("MEDSEG_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

PROTOCOLS = {
    "isbi": {"folder": "isbi2012-membrane", "labels": "labels", "minutes": 10.0,
             "held_out": lambda i, stem: int(stem) >= 24, "classes": {"membrane": False, "cell": True}},
    "kvasir": {"folder": "kvasir-seg", "labels": "masks", "minutes": 15.0,
               "held_out": lambda i, stem: i % 5 == 0, "classes": {"polyp": True}},
}


def make_split(name: str, work: Path) -> tuple[Path, Path]:
    """train/ and test/ folders of symlinks following the protocol's held-out rule."""
    proto = PROTOCOLS[name]
    src = DATA / proto["folder"]
    images = sorted((src / "images").iterdir())  # plain sorted names, as the protocols say
    train, test = work / "train", work / "test"
    for folder in (train, test):
        (folder / "images").mkdir(parents=True)
        (folder / "labels").mkdir(parents=True)
    for i, image in enumerate(images):
        dest = test if proto["held_out"](i, image.stem) else train
        label = next((src / proto["labels"]).glob(image.stem + ".*"))
        (dest / "images" / image.name).symlink_to(image)
        (dest / "labels" / label.name).symlink_to(label)
    return train, test


def dice_scores(pred_dir: Path, test: Path, classes: dict[str, bool]) -> dict[str, float]:
    """Mean over cases of the Dice of each class; the reference mask is thresholded at 128."""
    scores: dict[str, list[float]] = {c: [] for c in classes}
    for label in sorted((test / "labels").iterdir()):
        ref = np.array(Image.open(label).convert("L")) >= 128
        pred = np.array(Image.open(pred_dir / f"{label.stem}.png"))
        if pred.shape != ref.shape:
            raise SystemExit(f"{label.stem}: prediction {pred.shape} vs reference {ref.shape}")
        pred = pred >= 1  # class-index masks: 1 = the class stored as 255 / >= 128
        for cls, value in classes.items():
            a, b = pred == value, ref == value
            denominator = a.sum() + b.sum()
            scores[cls].append(1.0 if denominator == 0 else 2 * (a & b).sum() / denominator)
    return {c: float(np.mean(v)) for c, v in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(PROTOCOLS))
    parser.add_argument("--minutes", type=float, help="training budget (default: the protocol's)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--work", type=Path, help="scratch folder (default: OUT/work-<dataset>, replaced)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="extra medseg.train option (Python literal), e.g. --option batch_size=8")
    args = parser.parse_args()

    import ast

    import medseg

    proto = PROTOCOLS[args.dataset]
    minutes = args.minutes or proto["minutes"]
    work = args.work or args.out / f"work-{args.dataset}"
    if work.exists():
        shutil.rmtree(work)
    train, test = make_split(args.dataset, work)
    options = {k: ast.literal_eval(v) for k, v in (o.split("=", 1) for o in args.option)}

    start = time.perf_counter()
    run = medseg.train(train, work / "run", minutes=minutes, **options)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    medseg.predict(run, test / "images", work / "pred", overlays=False)
    predict_s = time.perf_counter() - start
    info = json.loads((run / "run.json").read_text())
    result = {
        "dataset": args.dataset,
        "protocol": {"minutes": minutes, "train_cases": info["cases"]["train"] + info["cases"]["val"],
                     "test_cases": len(list((test / "images").iterdir()))},
        "dice": dice_scores(work / "pred", test, proto["classes"]),
        "train_wall_s": round(train_s, 1),
        "predict_wall_s": round(predict_s, 1),
        "iterations": info["iterations_done"],
        "epochs": info["epochs_done"],
        "model": info["model"],
        "config": {k: info["config"][k] for k in ("batch_size", "patch_size", "lr", "loss", "features")},
        "image_size": info["preprocessor"]["image_size"],
        "precision": info["precision"],
        "options": options,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.dataset}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
