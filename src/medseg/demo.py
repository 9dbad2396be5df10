"""`medseg demo`: the whole system in one command, on synthetic phantoms made on the spot.

Generates a training and a test set of organ-with-lesion phantoms, trains a small U-Net for a
fixed number of steps (epochs x iterations, never a clock budget: the demo must teach the same
thing on an idle laptop and on a busy server; it says beforehand how long the plan estimates),
predicts the test images and evaluates them, and writes ONE report, OUT/report.html
(`medseg.report.run_report`: learning curves, validation metrics, box plots, best/median/worst
overlays, model and time, with the held-out test set's metrics added). Nothing is downloaded.

OUT is the demo's own: its outputs are recorded (`medseg.manifest`), so running the demo again
reuses a finished demo with the same settings, or replaces the earlier demo (only what it
wrote), and a folder holding anything else is refused.
"""
from __future__ import annotations

import json
import os
from html import escape
from pathlib import Path

from .atomic import write_text
from .data.synthetic import CLASS_NAMES, write_phantom_dataset
from .evaluation import EvaluationResult, evaluate
from .inference import predict
from .locks import output_lock
from .manifest import check_output_folder, read_outputs, record_outputs, remove_recorded
from .report.run_report import write_run_report
from .training import train_single
from .training.progress import clock
from .training.run import resolve_plan

REPORT = "report.html"
RECORD = "demo.json"   # the settings of the demo in OUT, and whether it finished
OUTPUTS = ("data/", "run/", "predictions/", "evaluation.csv", "evaluation.json", REPORT, RECORD)
WRITER = "medseg demo"

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
            "per-case rows in evaluation.csv beside this report. Phantom pixels have no physical "
            "size, so distances are in pixels.</p>")


def _previous_demo(out: Path, settings: dict) -> Path | None:
    """The report of a finished demo with these settings in OUT, or None. Refuses a folder that
    holds anything the demo did not write (`medseg.manifest`)."""
    check_output_folder(out, [], overwrite=True, what="demo outputs", tag="demo")
    try:
        record = json.loads((out / RECORD).read_text())
    except (OSError, ValueError):
        return None
    done = record.get("finished") and record.get("settings") == settings and (out / REPORT).is_file()
    return out / REPORT if done else None


def demo(out: str | os.PathLike = "demo_run", *, epochs: int = 10, iterations: int = 40, train_cases: int = 60,
         test_cases: int = 16, size: int = 128, seed: int = 0, device: str = "auto", fresh: bool = False) -> Path:
    """Run the synthetic end-to-end demo into OUT; returns the report (OUT/report.html).

    Trains `epochs` x `iterations` steps. A finished demo with the same settings already in OUT
    is reused (`fresh=True` makes it again); an earlier, different or unfinished one is replaced.
    """
    out = Path(out)
    settings = {"epochs": epochs, "iterations": iterations, "train_cases": train_cases, "test_cases": test_cases,
                "size": size, "seed": seed}
    with output_lock(out, "demo folder (--out)"):
        previous = _previous_demo(out, settings)
        if previous is not None and not fresh:
            print(f"demo: {out} already holds this demo; its report: {previous} (--fresh makes it again)")
            return previous
        if read_outputs(out):
            print(f"demo: replacing the earlier demo in {out} (only what the demo wrote there)")
            remove_recorded(out)
        record_outputs(out, OUTPUTS, WRITER)
        write_text(out / RECORD, json.dumps({"settings": settings, "finished": False}, indent=1))
        train_dir = write_phantom_dataset(out / "data" / "train", train_cases, (size, size), seed=seed)
        test_dir = write_phantom_dataset(out / "data" / "test", test_cases, (size, size), seed=seed + 1)
        options = dict(epochs=epochs, iterations_per_epoch=iterations, features=(16, 32, 64, 128), batch_size=8,
                       seed=seed, device=device, class_names=CLASS_NAMES)
        plan = resolve_plan(train_dir, None, options)
        steps, step_s = epochs * iterations, plan["estimate"]["step_seconds"]
        print(f"demo: training {steps} steps ({epochs} epochs of {iterations}); the plan estimates {step_s:.2f} s "
              f"per step on this machine, so about {clock(steps * step_s)} of training, then validation, "
              f"{test_cases} test images and the report")
        run = train_single(train_dir, out / "run", options, plan=plan, report=False)
        predictions = out / "predictions"
        predict(run, test_dir / "images", predictions, device=device)
        result = evaluate(predictions, test_dir, class_names=list(CLASS_NAMES),
                          csv_path=out / "evaluation.csv", json_path=out / "evaluation.json")
        print(result.table())
        report = write_run_report(
            run, out / REPORT, title="medseg demo: synthetic organ and lesion segmentation",
            extra_sections=[(f"Held-out test set ({test_cases} new phantoms)", _test_table(result, test_cases))])
        write_text(out / RECORD, json.dumps({"settings": settings, "finished": True}, indent=1))
    print(f"demo: the report is {report} (one self-contained page: open it in a browser)")
    return report
