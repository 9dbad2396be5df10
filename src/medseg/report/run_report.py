"""`medseg report RUN`: one self-contained HTML page about a training run.

The page is built only from what the run folder holds: ``run.json`` (settings, model, dataset,
split, time, and the plan when there is one), ``log.csv`` (learning curves),
``checkpoints/best.pt`` (model size and FLOPs) and ``validation/`` (per-case metrics and the
predicted masks, made by `medseg.training.finish.ensure_validation`), ``calibration.json`` and
``validation/uncertainty/`` (`medseg.training.calibrate`). Overlays re-read the
validation images and labels from the dataset folder recorded in ``run.json``. Drawing only:
nothing here runs a prediction.
"""
from __future__ import annotations

import csv
import json
import os
import tempfile
import time
from html import escape
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ..atomic import write_text
from ..nets import build_model, count_parameters
from ..runs import LOG_CSV, find_checkpoint, load_checkpoint, read_run_info
from .boxplots import plot_case_boxes
from .calibration_section import calibration_section
from .curves import plot_learning_curves, read_log
from .html import page
from .plan_table import plan_section
from .sections import (cases_section, data_facts, facts_table, image_tag, model_facts, overlay_section,
                       pick_overlays, postprocessing_note, starvation_warning, summary_section, tensorboard_note,
                       time_facts)

__all__ = ["write_run_report", "read_metrics_csv", "rank_cases", "model_cost", "VALIDATION_DIR", "REPORT_NAME"]

REPORT_NAME = "report.html"

VALIDATION_DIR = "validation"
METRICS_CSV = "metrics.csv"
SUMMARY_JSON = "summary.json"
VALIDATION_INFO = "validation.json"
POSTPROCESSING_JSON = "postprocessing.json"  # medseg.inference.postprocess writes it; the report only reads it


# ----------------------------------------------------------------------------------- report

def read_metrics_csv(path: str | os.PathLike) -> list[dict]:
    """metrics.csv rows with numbers as floats (class as int) and empty cells left out."""
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row: dict = {}
            for key, value in raw.items():
                if value in (None, ""):
                    continue
                if key in ("case", "class_name", "status"):
                    row[key] = value
                elif key == "class":
                    row[key] = int(value)
                else:
                    try:
                        row[key] = float(value)
                    except ValueError:
                        row[key] = value
            rows.append(row)
    return rows


def rank_cases(rows: Sequence[dict]) -> list[dict]:
    """Cases worst first: by mean foreground Dice, then by the larger HD95.

    Each item: case, score (mean foreground Dice, or Dice of class 0 when there is no foreground),
    and per-class rows under "classes" ({class: row}).
    """
    by_case: dict[str, dict[int, dict]] = {}
    for row in rows:
        by_case.setdefault(str(row["case"]), {})[int(row["class"])] = row
    ranked = []
    for case, classes in by_case.items():
        fg = [r for k, r in classes.items() if k > 0] or list(classes.values())
        hd = max((r.get("hd95", 0.0) for r in fg), default=0.0)
        ranked.append({"case": case, "score": float(np.mean([r["dice"] for r in fg])), "hd95": hd,
                       "classes": classes})
    return sorted(ranked, key=lambda c: (c["score"], -c["hd95"], c["case"]))


def model_cost(run_dir: str | os.PathLike) -> dict:
    """Model name, parameters and FLOPs of one forward pass of one training patch (batch 1).

    Counted with `torch.utils.flop_counter.FlopCounterMode` on PyTorch's meta device (no weights
    or activations in memory), falling back to a real forward pass on the CPU. FLOPs are
    PyTorch's count: a multiply-add is 2 FLOPs; element-wise operations are not counted.
    """
    state = load_checkpoint(find_checkpoint(Path(run_dir), "best"))
    patch = tuple(int(p) for p in state["patch_size"])
    args = (state["model_name"], int(state["in_channels"]), int(state["num_classes"]), int(state["spatial_dims"]))
    out = {"name": state["model_name"], "options": state.get("model_options", {}), "patch": list(patch),
           "parameters": None, "flops": None}
    for where in ("meta", "cpu"):
        try:
            with torch.device(where):
                model = build_model(*args, **state.get("model_options", {})).eval()
                out["parameters"] = count_parameters(model)
                counter = FlopCounterMode(display=False)
                with counter, torch.no_grad():
                    model(torch.zeros((1, args[1]) + patch))
            out["flops"] = int(counter.get_total_flops())
            return out
        except Exception:  # noqa: BLE001 - some layers have no meta kernel; try the CPU
            continue
    return out


def write_run_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *, device: str = "auto",
                     title: str | None = None, extra_sections: Sequence[tuple[str, str]] = ()) -> Path:
    """Write the run's HTML report (default RUN/report.html) and return its path.

    Draws RUN/validation as it is (`medseg.training.finish.ensure_validation` makes it); a run
    without it gets a page that says so. `device` is accepted for compatibility and unused. extra_sections:
    (heading, HTML) pairs added after the metrics (the demo adds its test-set table).
    """
    started = time.perf_counter()
    run = Path(run_dir)
    info = read_run_info(run)
    val_dir = run / VALIDATION_DIR
    out = Path(out) if out is not None else run / REPORT_NAME
    class_names = list(info.get("class_names") or [])
    rows = read_metrics_csv(val_dir / METRICS_CSV) if (val_dir / METRICS_CSV).is_file() else []
    evaluation = json.loads((val_dir / SUMMARY_JSON).read_text()) if (val_dir / SUMMARY_JSON).is_file() else {}
    record = json.loads((val_dir / VALIDATION_INFO).read_text()) if (val_dir / VALIDATION_INFO).is_file() else {}
    spec = json.loads((run / POSTPROCESSING_JSON).read_text()) if (run / POSTPROCESSING_JSON).is_file() else None
    settings = evaluation.get("settings", {})
    if not class_names:
        class_names = list(settings.get("class_names") or [])
    ranked = rank_cases(rows)
    title = title or f"medseg run: {run.resolve().name}"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        log = run / LOG_CSV
        curves = plot_learning_curves(log, tmp / "curves.png") if log.is_file() and read_log(log) else None
        boxes = plot_case_boxes(rows, class_names, tmp / "boxes.png", tolerance=settings.get("nsd_tolerance_mm"),
                                unit=settings.get("distance_unit", "mm"))
        overlays = pick_overlays(info, val_dir, ranked, tmp) if ranked else []
        cost = _safe_model_cost(run)
        sections = [
            f"<h1>{escape(title)}</h1>",
            f'<p class="muted">{escape(str(run.resolve()))}</p>', starvation_warning(info),
            "<h2>Validation metrics</h2>", summary_section(evaluation, class_names, len(ranked)),
            postprocessing_note(spec, record) if ranked else "",
            "<h2>Per-case distribution</h2>", image_tag(boxes, "per-case box plots", "curve")
            if boxes else '<p class="muted">No per-case metrics.</p>',
            "<h2>Best, median and worst validation cases</h2>", overlay_section(overlays, class_names, info),
            "<h2>Calibration and uncertainty</h2>", calibration_section(run, tmp) if ranked else
            '<p class="muted">No validation cases, so no calibration.</p>',
            "<h2>Learning curves</h2>", image_tag(curves, "learning curves", "curve")
            if curves else '<p class="muted">No training log for this run.</p>',
            tensorboard_note(run),
        ]
        for heading, body in extra_sections:
            sections += [f"<h2>{escape(heading)}</h2>", body]
        sections += [
            "<h2>Cases, worst first</h2>", cases_section(ranked, class_names, settings.get("distance_unit", "mm")),
            "<h2>Data</h2>", facts_table(data_facts(info)),
            "<h2>Model</h2>", facts_table(model_facts(info, cost)),
            "<h2>Plan</h2>", plan_section(info.get("plan"), cost),
            "<h2>Time spent</h2>", facts_table(time_facts(info, record, time.perf_counter() - started)),
        ]
        html = page(title, sections)
    write_text(out, html)
    return out


def _safe_model_cost(run: Path) -> dict:
    try:
        return model_cost(run)
    except Exception:  # noqa: BLE001 - the report still shows what run.json says
        return {}


def write_json(path: Path, payload: dict) -> None:
    """A small JSON record, written whole or not at all."""
    write_text(path, json.dumps(payload, indent=2) + "\n")
