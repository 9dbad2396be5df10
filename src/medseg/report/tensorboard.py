"""TensorBoard scalars for a run: ``tensorboard --logdir RUN/tensorboard`` shows the curves live.

`log_scalars` takes the trainer's per-epoch log row as it is: every number in it becomes a
scalar at the row's epoch (losses under ``loss/``, validation Dice under ``dice/``, the rest under
``train/``). Writers stay open per run folder (one event file per process) and are flushed after
every row so a running training shows up at once.
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

_WRITERS: dict[Path, object] = {}
TENSORBOARD_DIR = "tensorboard"


def _group(name: str) -> str:
    if name.endswith("_loss"):
        return f"loss/{name[:-len('_loss')]}"
    if name.startswith("val_dice_"):
        return f"dice/{name[len('val_dice_'):]}"
    return f"train/{name}"


def _writer(run_dir: Path):
    """The run's SummaryWriter, or None (with one warning) when the tensorboard package is missing."""
    key = run_dir.resolve()
    if key not in _WRITERS:
        try:
            from torch.utils.tensorboard import SummaryWriter  # needs the `tensorboard` package
        except ImportError as exc:
            warnings.warn(f"no TensorBoard scalars for {run_dir} ({exc}); pip install tensorboard", stacklevel=3)
            _WRITERS[key] = None
        else:
            _WRITERS[key] = SummaryWriter(log_dir=str(key / TENSORBOARD_DIR))
    return _WRITERS[key]


def log_scalars(run_dir: str | os.PathLike, row: dict, step: int | None = None) -> int:
    """Write every finite number of `row` (except epoch/iteration) at `step` (default: row["epoch"]).

    Returns how many scalars were written. Strings that hold numbers (e.g. a formatted lr) count.
    """
    step = int(step if step is not None else row.get("epoch", 0))
    writer = _writer(Path(run_dir))
    if writer is None:
        return 0
    written = 0
    for name, value in row.items():
        if name in ("epoch", "iteration") or value is None or isinstance(value, bool):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            writer.add_scalar(_group(name), number, step)
            written += 1
    writer.flush()
    return written


def close(run_dir: str | os.PathLike | None = None) -> None:
    """Close the writer of one run folder (or all of them)."""
    keys = list(_WRITERS) if run_dir is None else [Path(run_dir).resolve()]
    for key in keys:
        writer = _WRITERS.pop(key, None)
        if writer is not None:
            writer.close()
