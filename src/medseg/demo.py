"""`medseg demo`: the whole system in one command, on synthetic phantoms made on the spot.

Generates a training and a test set of organ-with-lesion phantoms, trains a small U-Net for a
couple of minutes, predicts the test images, evaluates them and writes a report folder
(HTML with the learning curve, the metrics table and overlays of the best, median and worst
cases). Nothing is downloaded.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .data.synthetic import CLASS_NAMES, write_phantom_dataset
from .evaluate import evaluate
from .io import discover_pairs, read_case, read_mask, validate_dataset
from .predict import predict
from .report.html import write_report
from .report.overlay import save_overlay
from .train import train


def _summary_rows(result, class_names: list[str]) -> list[dict]:
    rows = []
    for k, entry in sorted(result.summary.items()):
        if int(k) == 0:
            continue
        row = {"class": class_names[int(k)]}
        for metric in ("dice", "jaccard", "sensitivity", "specificity", "accuracy"):
            s = entry[metric]
            row[metric] = f"{s['mean']:.3f} ± {s['std']:.3f}"
        rows.append(row)
    return rows


def demo(out: str | os.PathLike = "demo_run", *, minutes: float = 2.0, train_cases: int = 60,
         test_cases: int = 16, size: int = 128, seed: int = 0, device: str = "auto") -> Path:
    """Run the synthetic end-to-end demo into OUT; returns the report's index.html."""
    out = Path(out)
    if (out / "run").exists():
        raise FileExistsError(f"{out}: already holds a demo run; remove it or choose another --out")
    train_dir = write_phantom_dataset(out / "data" / "train", train_cases, (size, size), seed=seed)
    test_dir = write_phantom_dataset(out / "data" / "test", test_cases, (size, size), seed=seed + 1)
    run = train(train_dir, out / "run", minutes=minutes, features=(16, 32, 64, 128), batch_size=8,
                iterations_per_epoch=40, seed=seed, device=device, class_names=CLASS_NAMES)
    predictions = out / "predictions"
    predict(run, test_dir / "images", predictions, device=device)
    class_names = list(CLASS_NAMES)
    result = evaluate(predictions, test_dir, class_names=class_names,
                      csv_path=out / "evaluation.csv", json_path=out / "evaluation.json")
    print(result.table())

    # overlays of the best, median and worst test cases by mean foreground Dice
    per_case: dict[str, list[float]] = {}
    for row in result.rows:
        if int(row["class"]) > 0:
            per_case.setdefault(row["case"], []).append(row["dice"])
    ranked = sorted(per_case, key=lambda c: np.mean(per_case[c]))
    picks = {"worst": ranked[0], "median": ranked[len(ranked) // 2], "best": ranked[-1]}
    pairs = {p.case_id: p for p in discover_pairs(test_dir)}
    mapping = validate_dataset(list(pairs.values()))
    overlays = []
    for tag, case_id in picks.items():
        case = read_case(pairs[case_id], mapping)
        pred = read_mask(predictions / f"{case_id}.png")
        path = save_overlay(out / "report" / f"{tag}_{case_id}.png", case.image, pred, case.label)
        overlays.append((f"{tag}: {case_id} — mean foreground Dice {np.mean(per_case[case_id]):.3f}", path))
    info = json.loads((run / "run.json").read_text())
    facts = {
        "dataset": f"synthetic phantoms, {train_cases} training / {test_cases} test images, {size}x{size}",
        "model": f"{info['model']['name']} {info['model']['options'].get('features', '')}, "
                 f"{info['model']['parameters']:,} parameters",
        "training": f"{info['epochs_done']} epochs, {info['iterations_done']} iterations, "
                    f"{info['elapsed_s'] / 60:.1f} min on {info['device']} ({info['precision']})",
        "label rule": info["label_rule"],
        "run folder": str(run),
    }
    return write_report(out / "report", title="medseg demo: synthetic organ and lesion segmentation",
                        summary_table=_summary_rows(result, class_names), curve_png=run / "learning_curves.png",
                        overlays=overlays, facts=facts, class_names=class_names)
