"""`medseg report RUN`: one self-contained HTML page about a training run.

The page is built only from what the run folder holds: ``run.json`` (settings, model, dataset,
split, time, and the plan when there is one), ``log.csv`` (learning curves),
``checkpoints/best.pt`` (model size and FLOPs) and ``validation/`` (per-case metrics and the
predicted masks, made by `ensure_validation` when an older run lacks them). Overlays re-read the
validation images and labels from the dataset folder recorded in ``run.json``.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from medseg.errors import MedsegInputError

__all__ = ["ensure_validation", "read_run_info", "VALIDATION_DIR"]

VALIDATION_DIR = "validation"
METRICS_CSV = "metrics.csv"
SUMMARY_JSON = "summary.json"
VALIDATION_INFO = "validation.json"


def read_run_info(run_dir: str | os.PathLike) -> dict:
    """run.json of a run folder, with a clear error when it is not one."""
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise MedsegInputError(Path(run_dir), "is not a medseg run folder (no run.json)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise MedsegInputError(path, f"is not valid JSON ({exc})") from exc


def ensure_validation(run_dir: str | os.PathLike, *, device: str = "auto", checkpoint: str = "best",
                      overwrite: bool = False) -> Path:
    """RUN/validation with one predicted mask per validation case, metrics.csv and summary.json.

    Returns at once when metrics.csv and summary.json are already there (unless `overwrite`).
    Otherwise predicts the run's validation split (run.json ``split.val``) from the dataset folder
    recorded in run.json with the `checkpoint` weights, writes each mask as
    ``<case id><suffix>`` in the input's format and geometry (`medseg.predict.output_suffix`),
    and evaluates them with every metric (`medseg.evaluate.evaluate`, the run's label mapping and
    class names). ``validation.json`` records the checkpoint and the seconds spent. A run without
    validation cases gets the folder with only validation.json in it.
    """
    run = Path(run_dir)
    info = read_run_info(run)
    out = run / VALIDATION_DIR
    if not overwrite and (out / METRICS_CSV).is_file() and (out / SUMMARY_JSON).is_file():
        return out
    val_ids = [str(c) for c in (info.get("split") or {}).get("val", [])]
    out.mkdir(parents=True, exist_ok=True)
    record: dict = {"cases": len(val_ids), "checkpoint": checkpoint}
    if not val_ids:
        _write_json(out / VALIDATION_INFO, {**record, "note": "this run has no validation cases"})
        return out

    from medseg.evaluate import evaluate
    from medseg.io import describe_dataset, write_mask
    from medseg.io.layout import InputCase
    from medseg.io.registry import case_stem
    from medseg.predict import Predictor, output_suffix, read_input_case

    data = Path(info["data"])
    pairs, _ = describe_dataset(data)
    by_id = {p.case_id: p for p in pairs}
    gone = [c for c in val_ids if c not in by_id or by_id[c].label is None]
    if gone:
        raise MedsegInputError(data, f"{len(gone)} validation case(s) of {run} are not in this dataset "
                                     f"(or have no label): {', '.join(gone[:10])}")
    val_pairs = [by_id[c] for c in val_ids]
    label_dirs = {p.label.parent for p in val_pairs}
    renamed = [p.label for p in val_pairs if case_stem(p.label) != p.case_id]
    if len(label_dirs) != 1 or renamed:
        raise MedsegInputError(data, "validation labels must sit in one folder named by case id "
                                     f"(found {len(label_dirs)} folder(s); e.g. {renamed[:1]})")

    start = time.perf_counter()
    predictor = Predictor(run, checkpoint=checkpoint, device=device)
    for stale in out.iterdir():  # masks of an earlier, interrupted attempt
        if stale.is_file() and stale.name not in (VALIDATION_INFO,):
            stale.unlink()
    for pair in val_pairs:
        item = InputCase(pair.case_id, pair.image_files)
        case = read_input_case(item, predictor.in_channels)
        write_mask(out / f"{pair.case_id}{output_suffix(item, None)}", predictor.segment(case), case.meta)
    record["predict_s"] = round(time.perf_counter() - start, 2)

    start = time.perf_counter()
    tmp_csv, tmp_json = out / (METRICS_CSV + ".tmp"), out / (SUMMARY_JSON + ".tmp")
    evaluate(out, label_dirs.pop(), cases=val_ids, mapping=info.get("label_mapping"),
             class_names=info.get("class_names"), csv_path=tmp_csv, json_path=tmp_json)
    os.replace(tmp_csv, out / METRICS_CSV)  # written last: their presence means "complete"
    os.replace(tmp_json, out / SUMMARY_JSON)
    record["evaluate_s"] = round(time.perf_counter() - start, 2)
    _write_json(out / VALIDATION_INFO, record)
    return out


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n")
