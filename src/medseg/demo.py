"""`medseg demo`: the whole system in one command, on synthetic phantoms made on the spot.

Generates a training and a test set of organ-with-lesion phantoms, trains a small U-Net for a
couple of minutes, predicts the test images and evaluates them, and writes the run's report
(`medseg.report.run_report`: learning curves, validation metrics, box plots, best/median/worst
overlays, model and time) with the held-out test set's metrics added. Nothing is downloaded.
"""
from __future__ import annotations

import os
from html import escape
from pathlib import Path

from .data.synthetic import CLASS_NAMES, write_phantom_dataset
from .evaluation import EvaluationResult, evaluate
from .inference import predict
from .report.run_report import write_run_report
from .training import ensure_validation, train_single

TEST_METRICS = (("dice", "Dice", 3), ("jaccard", "Jaccard", 3), ("hd95", "HD95 (px)", 2),
                ("assd", "ASSD (px)", 2), ("nsd", "NSD", 3), ("lesion_f1", "Lesion F1", 3))


def _test_table(result: EvaluationResult, test_cases: int) -> str:
    """The held-out test set's summary as an HTML table (foreground classes, mean ± std)."""
    present = [(m, t, d) for m, t, d in TEST_METRICS if m in result.metric_names]
    head = "".join(f"<th>{escape(t)}</th>" for _, t, _ in present)
    body = []
    for k, entry in sorted(result.summary.items()):
        if int(k) == 0:
            continue
        cells = "".join(f'<td class="num">{entry[m]["mean"]:.{d}f} ± {entry[m]["std"]:.{d}f}</td>'
                        for m, _, d in present if m in entry)
        body.append(f"<tr><th>{escape(entry['class_name'])}</th>{cells}</tr>")
    return (f"<table><thead><tr><th>class</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            f'<p class="note">{test_cases} phantoms the model never saw (made with another seed); '
            "per-case rows in evaluation.csv beside the report folder. Phantom pixels have no physical "
            "size, so distances are in pixels.</p>")


def demo(out: str | os.PathLike = "demo_run", *, minutes: float = 2.0, train_cases: int = 60,
         test_cases: int = 16, size: int = 128, seed: int = 0, device: str = "auto") -> Path:
    """Run the synthetic end-to-end demo into OUT; returns the report's index.html."""
    out = Path(out)
    if (out / "run").exists():
        raise FileExistsError(f"{out}: already holds a demo run; remove it or choose another --out")
    train_dir = write_phantom_dataset(out / "data" / "train", train_cases, (size, size), seed=seed)
    test_dir = write_phantom_dataset(out / "data" / "test", test_cases, (size, size), seed=seed + 1)
    run = train_single(train_dir, out / "run", dict(minutes=minutes, features=(16, 32, 64, 128), batch_size=8,
                                                    iterations_per_epoch=40, seed=seed, device=device,
                                                    class_names=CLASS_NAMES))
    predictions = out / "predictions"
    predict(run, test_dir / "images", predictions, device=device)
    result = evaluate(predictions, test_dir, class_names=list(CLASS_NAMES),
                      csv_path=out / "evaluation.csv", json_path=out / "evaluation.json")
    print(result.table())
    ensure_validation(run, device=device)
    return write_run_report(
        run, out / "report" / "index.html",
        title="medseg demo: synthetic organ and lesion segmentation",
        extra_sections=[(f"Held-out test set ({test_cases} new phantoms)", _test_table(result, test_cases))])
