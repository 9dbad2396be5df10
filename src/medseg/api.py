"""The functions behind the `medseg` command, for notebooks and scripts: each wraps one stage
(`training`, `inference`, `evaluation`, `report`, `planning`) and adds nothing of its own."""
from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path

from . import distributed
from .demo import demo
from .evaluation import evaluate
from .inference import Predictor, predict
from .inference.onnx_backend import export_onnx
from .inference.package import export_package
from .inference.suggest import suggest
from .io.convert import convert_brats
from .locks import output_lock
from .nets import models_table
from .planning import Budget, format_plan, plan_dataset, write_plan
from .report.run_report import write_run_report
from .runs import CHECKPOINTS
from .training import ensure_validation, train_folds, train_single
from .training.calibrate import calibrate_run

__all__ = ["train", "predict", "Predictor", "evaluate", "demo", "export_onnx", "export_package", "report", "plan_dataset",
           "format_plan", "write_plan", "Budget", "convert_brats", "models_table", "suggest"]


def train(data: str | os.PathLike, out: str | os.PathLike, *, resume: bool = False,
          plan: str | os.PathLike | dict | bool | None = None, memory_gb: float | None = None,
          fold: int | None = None, folds: str | list[int] | None = None, split: dict | None = None,
          finish: bool = True, **options) -> Path:
    """Train a model on DATA into the run folder OUT; returns OUT.

    Options are `TrainConfig` fields, e.g. `train("data", "run", minutes=10, model="classic")`.
    plan:  None (default) fingerprints DATA and plans it for this budget (`medseg.planning`); a plan
           dict or JSON file is used as given; False keeps TrainConfig's fixed rules. Explicit
           options always win over the plan.
    fold / folds: cross-validation (`medseg.training.folds`): OUT becomes the cross-validation folder
           and fold K trains into OUT/fold_K; `folds="all"` trains every fold in turn, and the
           minutes budget is then shared between them.
    finish: after training, predict the validation cases, choose postprocessing on them and
           write the report.
    """
    data, out = Path(data), Path(out)
    if (fold is not None or folds is not None) and distributed.world_size() > 1:
        raise ValueError("cross-validation (--fold/--folds) runs in one process for now; under torchrun "
                         "train a fold's split as a single run, or drop torchrun")
    # one process at a time writes a run folder (under torchrun: rank 0 holds it for the group)
    with output_lock(out, "run folder (--out)") if distributed.is_main() else nullcontext():
        if fold is not None or folds is not None:
            return train_folds(data, out, folds=folds if folds is not None else [fold], resume=resume, plan=plan,
                               memory_gb=memory_gb, finish=finish, **options)
        return train_single(data, out, options, resume=resume, plan=plan, memory_gb=memory_gb, split=split,
                            finish=finish)


def report(run: str | os.PathLike, out: str | os.PathLike | None = None, *, device: str = "auto") -> Path:
    """Write a run's HTML report (default RUN/report.html), predicting and scoring its validation
    cases first when RUN/validation is missing (`medseg.training.ensure_validation`), and fitting
    its calibration when RUN/calibration.json is missing (`medseg.training.calibrate`).

    The run folder is held (`medseg.locks`) while this writes into it, so a report never reads a
    run that a training or another report is writing; a run folder this process may not write
    (shared read-only) is only read, which needs its validation there already."""
    run = Path(run)
    writable = run.is_dir() and os.access(run, os.W_OK)
    with output_lock(run, "run folder") if writable else nullcontext():
        ensure_validation(run, device=device)
        if writable and (run / CHECKPOINTS).is_dir():  # a run trained before calibration: fit it now
            calibrate_run(run, device=device)
        return write_run_report(run, out)
