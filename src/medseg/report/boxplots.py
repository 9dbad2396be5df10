"""Per-case box plots: one panel per metric, one box per foreground class, every case a dot.

A mean hides its failures; a box with its dots shows the spread, the outliers and the cases that
scored the worst-case value (a missed structure sits at Dice 0 and at the image diagonal).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from medseg.atomic import atomic_path
from medseg.report.overlay import class_colour

# (metric, axis label, fixed y range or None)
DEFAULT_METRICS = (("dice", "Dice", (0.0, 1.02)), ("nsd", "NSD", (0.0, 1.02)),
                   ("hd95", "HD95 (mm)", None), ("assd", "ASSD (mm)", None))


def plot_case_boxes(rows: Sequence[dict], class_names: Sequence[str], out_png: Path,
                    metrics: Sequence[tuple[str, str, tuple[float, float] | None]] = DEFAULT_METRICS,
                    tolerance: float | None = None, unit: str = "mm") -> Path | None:
    """Draw the box plots into out_png; None when no foreground class has any of the metrics.

    rows: `EvaluationResult.rows` (or the metrics.csv rows with numbers parsed); class_names
    index by class; unit: of the distances (mm, or px for pictures without spacing).
    """
    fig = case_box_figure(rows, class_names, metrics, tolerance, unit)
    if fig is None:
        return None
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return out_png


def case_box_figure(rows: Sequence[dict], class_names: Sequence[str],
                    metrics: Sequence[tuple[str, str, tuple[float, float] | None]] = DEFAULT_METRICS,
                    tolerance: float | None = None, unit: str = "mm") -> Figure | None:
    """The box plots' figure (see `plot_case_boxes`). Distance panels start at 0 (a distance is
    never negative) and use a symmetric log scale when values span more than two decades."""
    classes = sorted({int(r["class"]) for r in rows if int(r["class"]) > 0})
    panels = [(m, label, lim) for m, label, lim in metrics
              if any(isinstance(r.get(m), float) for r in rows if int(r["class"]) > 0)]
    if not classes or not panels:
        return None
    fig = Figure(figsize=(3.1 * len(panels) + 0.6, 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    rng = np.random.default_rng(0)  # the same jitter every time: reports are reproducible
    for ax, (metric, label, lim) in zip(axes, panels):
        data = [[float(r[metric]) for r in rows if int(r["class"]) == k and isinstance(r.get(metric), float)]
                for k in classes]
        box = ax.boxplot(data, widths=0.55, showfliers=False, patch_artist=True, medianprops={"color": "black"})
        for k, patch, values in zip(classes, box["boxes"], data):
            colour = tuple(c / 255 for c in class_colour(k))
            patch.set(facecolor=colour + (0.25,), edgecolor=colour)
            x = classes.index(k) + 1 + rng.uniform(-0.16, 0.16, len(values))
            ax.scatter(x, values, s=9, color=colour, alpha=0.8, linewidths=0, zorder=3)
        ax.set_xticks(range(1, len(classes) + 1), [class_names[k] for k in classes],
                      rotation=20 if len(classes) > 3 else 0)
        label = label.replace("(mm)", f"({unit})")
        title = f"{label} at {tolerance:g} {unit}" if metric == "nsd" and tolerance is not None else label
        ax.set_title(title, fontsize=10)
        positive = [v for d in data for v in d if v > 0]
        if lim is not None:
            ax.set_ylim(*lim)
        else:
            if positive and max(positive) / max(min(positive), 1e-9) > 100:
                ax.set_yscale("symlog", linthresh=max(min(positive), 0.1))
            # autoscaling padded below 0 (symlog: down to -10^0); all zeros: an axis up to 1
            ax.set_ylim(0, None if positive else 1)
        ax.grid(axis="y", alpha=0.3)
    return fig
