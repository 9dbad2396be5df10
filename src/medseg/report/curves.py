"""Learning curves from the trainer's per-epoch CSV log: are we still learning, or overfitting?

The log has columns epoch, iteration, elapsed_s, lr, train_loss, val_loss, val_dice_mean and one
val_dice_<classname> per foreground class; val columns are empty when there was no validation.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # a bare Figure renders with Agg: no screen, no pyplot state

from medseg.atomic import atomic_path
from medseg.report.overlay import class_colour

INTEGER_COLUMNS = ("epoch", "iteration")
DICE_PREFIX = "val_dice_"


def read_log(log_csv: Path) -> list[dict]:
    """Rows of the log as dicts: epoch/iteration as int, other numbers as float, empty cells as None.

    If an epoch appears twice (a resumed run re-logging it), the later row wins.
    """
    by_epoch: dict[object, dict] = {}
    with open(log_csv, newline="") as f:
        for i, raw in enumerate(csv.DictReader(f)):
            row = {key.strip(): _parse(key.strip(), value) for key, value in raw.items() if key is not None}
            by_epoch[row.get("epoch", i)] = row
    return list(by_epoch.values())


def plot_learning_curves(log_csv: Path, out_png: Path) -> Path:
    """Two panels, losses and validation Dice against epoch, with elapsed time on the top axis."""
    rows = read_log(log_csv)
    if not rows:
        raise ValueError(f"{log_csv}: no epochs logged yet")
    epochs = [row.get("epoch", i) for i, row in enumerate(rows)]
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    loss_ax, dice_ax = fig.subplots(1, 2, sharex=True)  # shared epochs, even for an empty panel

    plotted = False
    for column, label, style in (("train_loss", "train", "-"), ("val_loss", "validation", "--")):
        plotted |= _plot_column(loss_ax, rows, epochs, column, label, linestyle=style)
    loss_ax.set(xlabel="epoch", ylabel="loss", title="Loss")
    if plotted:
        loss_ax.legend(frameon=False)
    else:
        _note(loss_ax, "no losses logged")

    class_columns = [c for c in rows[0] if c.startswith(DICE_PREFIX) and c != DICE_PREFIX + "mean"]
    plotted = _plot_column(dice_ax, rows, epochs, DICE_PREFIX + "mean", "mean", color="black", linewidth=2.6)
    # the log has one column per class in class order, background (class 0) first
    for index, column in enumerate(class_columns):
        if index == 0:
            style = {"color": "grey", "linewidth": 1.0, "linestyle": ":"}
        else:  # same colour as the class in overlays
            style = {"color": tuple(c / 255 for c in class_colour(index)), "linewidth": 1.2}
        plotted |= _plot_column(dice_ax, rows, epochs, column, column[len(DICE_PREFIX):], **style)
    dice_ax.set(xlabel="epoch", ylabel="Dice", title="Validation Dice", ylim=(0.0, 1.02))
    if plotted:
        dice_ax.legend(frameon=False, loc="lower right")
    else:
        _note(dice_ax, "no validation in this run")

    for ax in (loss_ax, dice_ax):
        ax.grid(alpha=0.3)
        if len(epochs) == 1:
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
        ax.xaxis.get_major_locator().set_params(integer=True)
        _time_axis(ax, rows, epochs)

    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return out_png


def _parse(column: str, value: str | None) -> int | float | str | None:
    value = (value or "").strip()
    if value == "":
        return None
    try:
        return int(float(value)) if column in INTEGER_COLUMNS else float(value)
    except ValueError:
        return value


def _plot_column(ax, rows: list[dict], epochs: list, column: str, label: str, **style) -> bool:
    """Plot the rows that have a number in `column`; say whether anything was drawn."""
    points = [(e, row[column]) for e, row in zip(epochs, rows) if isinstance(row.get(column), float)]
    if not points:
        return False
    xs, ys = zip(*points)
    ax.plot(xs, ys, label=label, marker="o" if len(points) < 30 else None, markersize=3, **style)
    return True


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="grey")


def _time_axis(ax, rows: list[dict], epochs: list) -> None:
    """Label a few epochs on the top axis with the wall-clock time they finished at."""
    timed = [(e, row["elapsed_s"]) for e, row in zip(epochs, rows) if isinstance(row.get("elapsed_s"), float)]
    if not timed:
        return
    picks = sorted({round(i) for i in np.linspace(0, len(timed) - 1, min(len(timed), 6))})
    shown = [timed[i] for i in picks]
    scale, unit, digits = _time_unit(timed[-1][1])
    top = ax.twiny()
    top.set_xlim(ax.get_xlim())
    top.set_xticks([e for e, _ in shown], [f"{s / scale:.{digits}f}" for _, s in shown], fontsize=8)
    top.set_xlabel(f"elapsed {unit}", fontsize=8)


def _time_unit(total_s: float) -> tuple[float, str, int]:
    """(seconds per unit, unit name, decimals) that keep a few time labels readable and distinct."""
    if total_s < 120:
        return 1.0, "seconds", 0
    if total_s < 3 * 3600:
        return 60.0, "minutes", 1 if total_s < 1200 else 0
    return 3600.0, "hours", 1
