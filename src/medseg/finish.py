"""What happens after training: the validation cases are predicted at full resolution and
evaluated (RUN/validation), postprocessing is chosen on them (RUN/postprocessing.json), and the
report is written. For a cross-validation folder the same is done on the pooled out-of-fold
predictions of every finished fold.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from .crossval import fold_runs
from .io.dataset import read_case
from .io.labels import LabelMapping
from .io.layout import describe_dataset
from .io.registry import case_stem, read_mask
from .postprocess import choose_postprocessing, describe, write_postprocessing


def _validation_cases(run: Path):
    """(predicted mask, reference label) per validation case of a finished run, read lazily."""
    from .report.run_report import ensure_validation, read_run_info

    info = read_run_info(run)
    val_dir = ensure_validation(run)
    masks = {case_stem(p): p for p in val_dir.iterdir() if p.is_file() and not p.name.endswith((".csv", ".json"))}
    val_ids = [str(c) for c in (info.get("split") or {}).get("val", [])]
    if not val_ids:
        return info, []
    pairs, dataset = describe_dataset(Path(info["data"]))
    by_id = {p.case_id: p for p in pairs}
    mapping = LabelMapping.from_dict(info["label_mapping"])

    def load(case_id: str) -> tuple[np.ndarray, np.ndarray]:
        ref = read_case(by_id[case_id], mapping, dataset.channels).label
        return np.asarray(read_mask(masks[case_id])).astype(np.int64), np.asarray(ref).astype(np.int64)

    return info, [(c, load) for c in val_ids if c in masks]


def finish_run(run: str | os.PathLike, report: bool = True) -> dict:
    """Validation predictions, postprocessing choice and report for one run folder."""
    run = Path(run)
    info, cases = _validation_cases(run)
    spec = choose_postprocessing((load(c) for c, load in cases), int(len(info["class_names"])),
                                 info.get("class_names"))
    spec["chosen_on"] = f"validation split of {run.name} ({len(cases)} cases)"
    write_postprocessing(run, spec)
    print(describe(spec))
    if report:
        _write_report(run)
    return spec


def finish_crossval(root: str | os.PathLike) -> dict:
    """Postprocessing for the ensemble of a cross-validation folder, chosen on the pooled
    validation predictions of its finished folds; RUN/crossval.json lists the folds."""
    root = Path(root)
    runs = fold_runs(root)
    pooled, folds, class_names = [], [], None
    for run in runs:
        info, cases = _validation_cases(run)
        class_names = info.get("class_names")
        pooled.extend(cases)
        folds.append({"fold": run.name, "val_cases": len(cases), "finished": bool(info.get("finished")),
                      "best_val_dice_mean": info.get("best_val_dice_mean")})
    if class_names is None:
        return {}
    spec = choose_postprocessing((load(c) for c, load in pooled), len(class_names), class_names)
    spec["chosen_on"] = f"pooled validation predictions of {len(runs)} fold(s) ({len(pooled)} cases)"
    write_postprocessing(root, spec)
    tmp = root / "crossval.json.tmp"
    tmp.write_text(json.dumps({"folds": folds, "postprocessing": spec}, indent=2))
    os.replace(tmp, root / "crossval.json")
    print(describe(spec))
    return spec


def _write_report(run: Path) -> None:
    """The HTML report; a failure here warns and never costs the trained model."""
    try:
        from .report import run_report
        writer = getattr(run_report, "write_run_report", None)
        if writer is not None:
            writer(run)
    except Exception as exc:  # noqa: BLE001 - the run is saved; the report can be made again
        warnings.warn(f"{run}: the report could not be written ({exc}); run `medseg report {run}` to retry")
