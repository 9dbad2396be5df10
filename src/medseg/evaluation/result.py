"""The result of an evaluation: per-case rows, a per-class summary, and the settings that produced
them; printed as a table, written as CSV (rows) and JSON (summary and settings)."""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import write_text

STATS = ("mean", "std", "median", "min", "max", "n")
# (metric, column title, decimals) of the printed table
_TABLE_METRICS = (("dice", "Dice", 3), ("jaccard", "Jaccard", 3), ("precision", "Precision", 3),
                  ("sensitivity", "Sensitivity", 3), ("specificity", "Specificity", 3),
                  ("hd95", "HD95 mm", 2), ("assd", "ASSD mm", 2), ("nsd", "NSD", 3), ("rvd", "RVD", 3),
                  ("lesion_f1", "Lesion F1", 3))
# status of a class in one case: in both masks, only the reference, only the prediction, neither
STATUSES = ("found", "missed", "spurious", "absent")


def case_status(ref_pixels: int, pred_pixels: int) -> str:
    """found (in both), missed (reference only), spurious (prediction only) or absent (neither)."""
    if ref_pixels and pred_pixels:
        return "found"
    if ref_pixels:
        return "missed"
    return "spurious" if pred_pixels else "absent"


def default_class_names(num_classes: int) -> list[str]:
    """``["background", "class1", "class2", ...]``."""
    return ["background"] + [f"class{k}" for k in range(1, num_classes)]


@dataclass
class EvaluationResult:
    """Per-case rows, per-class summary and the settings that produced them.

    rows:     one dict per case per class: case, class (index), class_name, status (`case_status`),
              every metric computed for that class, ref_pixels and pred_pixels (voxels of the
              class in reference and prediction). Background rows have no distance or lesion keys.
    summary:  {class index: {"class_name": str, "cases": {status: count},
               metric: {"mean", "std", "median", "min", "max", "n"}}}.
    settings: folders, number of classes, class names, mappings, cases, ignored predictions,
              spacing source, NSD tolerance, units and the empty-mask conventions.
    """

    rows: list[dict]
    summary: dict[int, dict]
    settings: dict = field(default_factory=dict)
    metric_names: tuple[str, ...] = ("dice", "jaccard", "accuracy", "sensitivity", "specificity")

    def table(self) -> str:
        """Per-class table of mean ± std over cases, and how many cases missed or invented a class."""
        unit = self.settings.get("distance_unit", "mm")
        metrics = [(k, title.replace("mm", unit), d) for k, title, d in _TABLE_METRICS
                   if k in self.metric_names and any(k in s for s in self.summary.values())]
        header = ["class", "n"] + [title for _, title, _ in metrics] + ["missed", "spurious"]
        lines = []
        for k in sorted(self.summary):
            s = self.summary[k]
            n = s[metrics[0][0]]["n"] if metrics else 0
            cases = s.get("cases", {})
            lines.append([f"{k} {s['class_name']}", str(n)]
                         + [f"{s[m]['mean']:.{d}f} ± {s[m]['std']:.{d}f}" if m in s else "-" for m, _, d in metrics]
                         + [str(cases.get("missed", 0)), str(cases.get("spurious", 0))])
        widths = [max(len(r[i]) for r in [header] + lines) for i in range(len(header))]
        fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        out = [fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in lines]
        tol = self.settings.get("nsd_tolerance_mm")
        if tol is not None and any(m == "nsd" for m, _, _ in metrics):
            unit = self.settings.get("distance_unit", "mm")
            out.append(f"NSD at {tol:g} {unit}; HD95/ASSD in {unit} (spacing: {self.settings.get('spacing_source', '')}); "
                       "missed/spurious: cases with the class in only the reference/prediction "
                       "(scored Dice 0, distance = image diagonal)")
        return "\n".join(out)

    def to_csv(self, path: str | os.PathLike) -> Path:
        """One row per case per class (cells of metrics not computed for a class stay empty)."""
        path = Path(path)
        columns = ["case", "class", "class_name", "status", *self.metric_names, "ref_pixels", "pred_pixels"]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore", lineterminator="\r\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: (f"{v:.10g}" if isinstance(v, float) else v) for k, v in row.items()})
        return write_text(path, text.getvalue())

    def to_json(self, path: str | os.PathLike) -> Path:
        """Summary and settings."""
        path = Path(path)
        payload = {"summary": {str(k): v for k, v in self.summary.items()}, "settings": self.settings}
        return write_text(path, json.dumps(payload, indent=2, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
