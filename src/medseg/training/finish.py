"""What happens after training: the validation cases are predicted at full resolution and
evaluated (RUN/validation), postprocessing is chosen on them (RUN/postprocessing.json), and the
report is written. For a cross-validation folder the same is done on the pooled out-of-fold
predictions of every finished fold.

The validation masks and metrics the report shows are the ones `medseg predict` would give:
after the postprocessing chosen on them. The choice needs the masks before it, so the masks it
changed are kept as they were in RUN/validation/before_postprocessing/ (a cross-validation
folder pools those), and validation.json records which classes were postprocessed.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ..atomic import write_text
from ..errors import MedsegInputError
from ..evaluation import evaluate
from ..inference import Predictor, argmax_mask, output_suffix, read_input_case
from ..inference.postprocess import apply_postprocessing, choose_postprocessing, describe, write_postprocessing
from ..io import write_mask
from ..io.dataset import read_case
from ..io.labels import LabelMapping
from ..io.layout import InputCase, describe_dataset
from ..io.registry import case_stem, is_mask_file, match_suffix, read_mask
from ..report.run_report import (METRICS_CSV, SUMMARY_JSON, VALIDATION_DIR, VALIDATION_INFO, write_json,
                                 write_run_report)
from ..runs import fold_runs, read_run_info, run_label_suffix
from .calibrate import calibrate_run


RAW_DIR = "before_postprocessing"  # RUN/validation/<this>: the masks postprocessing changed, as predicted


def _record(out: Path) -> dict:
    path = out / VALIDATION_INFO
    return json.loads(path.read_text()) if path.is_file() else {}


def ensure_validation(run_dir: str | os.PathLike, *, device: str = "auto", checkpoint: str = "best",
                      overwrite: bool = False, postprocess: bool = True,
                      keep_probabilities: Path | None = None) -> Path:
    """RUN/validation with one predicted mask per validation case, metrics.csv and summary.json.

    Returns at once when metrics.csv and summary.json are already there (unless `overwrite`).
    When only they are missing but every mask is there, the masks are evaluated again without
    predicting. Otherwise predicts the run's validation split (run.json ``split.val``) from the dataset folder
    recorded in run.json with the `checkpoint` weights, writes each mask as
    ``<case id><suffix>`` in the input's format and geometry (`medseg.inference.output_suffix`),
    and evaluates them with every metric (`medseg.evaluation.evaluate`, the run's label mapping and
    class names). ``validation.json`` records the checkpoint, the seconds spent and the classes
    whose postprocessing (the run's, as `medseg predict` applies it) the masks went through;
    `postprocess=False` predicts them without it (and replaces postprocessed ones). A run without
    validation cases gets the folder with only validation.json in it. `keep_probabilities`: a
    folder that receives each predicted case's float16 class probabilities as ``<case id>.npy``,
    for the calibration to use instead of predicting the cases again (`calibrate_run`).
    """
    run = Path(run_dir)
    info = read_run_info(run)
    out = run / VALIDATION_DIR
    complete = (out / METRICS_CSV).is_file() and (out / SUMMARY_JSON).is_file()
    record = _record(out)
    # postprocessed masks serve a caller who asks for them as predicted only when RAW_DIR holds the changed ones
    if not overwrite and complete and (postprocess or not record.get("postprocessing") or record.get("raw_kept")):
        return out
    overwrite = overwrite or complete  # postprocessed by the predictor, and masks as predicted are asked for
    val_ids = [str(c) for c in (info.get("split") or {}).get("val", [])]
    out.mkdir(parents=True, exist_ok=True)
    previous, record = record, {"cases": len(val_ids), "checkpoint": checkpoint}
    if not val_ids:
        write_json(out / VALIDATION_INFO, {**record, "note": "this run has no validation cases"})
        return out

    data = Path(info["data"])
    pairs, _ = describe_dataset(data, label_suffix=run_label_suffix(info))
    by_id = {p.case_id: p for p in pairs}
    gone = [c for c in val_ids if c not in by_id or by_id[c].label is None]
    if gone:
        raise MedsegInputError(data, f"{len(gone)} validation case(s) of {run} are not in this dataset "
                                     f"(or have no label): {', '.join(gone[:10])}")
    val_pairs = [by_id[c] for c in val_ids]

    start = time.perf_counter()
    targets = {p.case_id: out / f"{p.case_id}{output_suffix(InputCase(p.case_id, p.image_files), None)}"
               for p in val_pairs}
    if overwrite or not all(t.is_file() for t in targets.values()):
        predictor = Predictor(run, checkpoint=checkpoint, device=device, postprocess=postprocess)
        for stale in out.iterdir():  # masks of an earlier, interrupted attempt
            if stale.is_file() and stale.name not in (VALIDATION_INFO,):
                stale.unlink()
        shutil.rmtree(out / RAW_DIR, ignore_errors=True)
        for pair in val_pairs:
            item = InputCase(pair.case_id, pair.image_files)
            case = read_input_case(item, predictor.in_channels)
            probs = predictor.probabilities(case, dtype=torch.float16)  # `segment`, keeping its probabilities
            if keep_probabilities is not None:
                np.save(keep_probabilities / f"{pair.case_id}.npy", probs.numpy())
            mask = apply_postprocessing(argmax_mask(probs), predictor.postprocessing)
            del probs
            write_mask(targets[pair.case_id], mask, case.meta)
        record["predict_s"] = round(time.perf_counter() - start, 2)
        record["postprocessing"] = list((predictor.postprocessing or {}).get("largest_component_classes", []))
    else:  # every mask is there (e.g. only the metrics were deleted): evaluate them again
        record.update({k: previous[k] for k in ("predict_s", "postprocessing", "raw_kept") if k in previous})
    _score(out, info, val_pairs, record)
    return out


def _score(out: Path, info: dict, val_pairs: list, record: dict) -> None:
    """Evaluate RUN/validation's masks against the references (metrics.csv, summary.json, written
    last: their presence means "complete") and write validation.json."""
    start = time.perf_counter()
    tmp_csv, tmp_json = out / f".{METRICS_CSV}.tmp", out / f".{SUMMARY_JSON}.tmp"  # hidden: the run's own
    for leftover in (tmp_csv, tmp_json):  # of an interrupted evaluation
        leftover.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="medseg-references-") as links:
        # the masks were predicted here, never copied: a perfect model may write them as the references are
        evaluate(out, reference_folder(val_pairs, Path(links)), cases=[p.case_id for p in val_pairs],
                 mapping=info.get("label_mapping"), class_names=info.get("class_names"), csv_path=tmp_csv,
                 json_path=tmp_json, accept_identical=True)
    os.replace(tmp_csv, out / METRICS_CSV)
    os.replace(tmp_json, out / SUMMARY_JSON)
    record["evaluate_s"] = round(time.perf_counter() - start, 2)
    write_json(out / VALIDATION_INFO, record)


def postprocess_validation(run: Path, spec: dict) -> None:
    """Make RUN/validation what `medseg predict` gives: the chosen postprocessing applied to the
    masks as predicted (those it changes are kept in RAW_DIR), then scored again."""
    info, out = read_run_info(run), run / VALIDATION_DIR
    record = _record(out)
    chosen = list(spec.get("largest_component_classes", []))
    if record.get("postprocessing", []) == chosen and (record.get("raw_kept") or not chosen):
        return  # applied already, or nothing was nor is
    pairs, _ = describe_dataset(Path(info["data"]), label_suffix=run_label_suffix(info))
    by_id = {p.case_id: p for p in pairs}
    raw_dir = out / RAW_DIR
    for mask_path in sorted(p for p in out.iterdir() if p.is_file() and is_mask_file(p) and case_stem(p) in by_id):
        kept = raw_dir / mask_path.name
        raw = np.asarray(read_mask(kept if kept.is_file() else mask_path))
        done = apply_postprocessing(raw, spec)
        if np.array_equal(done, raw):
            if kept.is_file():  # an earlier choice changed it, this one does not
                os.replace(kept, mask_path)
            continue
        if not kept.is_file():
            raw_dir.mkdir(exist_ok=True)
            shutil.copy2(mask_path, kept)
        pair = by_id[case_stem(mask_path)]
        meta = read_input_case(InputCase(pair.case_id, pair.image_files)).meta  # the input's geometry
        write_mask(mask_path, done, meta)
    record.update(postprocessing=chosen, raw_kept=True)
    _score(out, info, [by_id[c] for c in (info.get("split") or {}).get("val", []) if c in by_id], record)


def reference_folder(pairs: list, links: Path) -> Path:
    """A folder holding the cases' reference masks named by case id, as `evaluate` matches them:
    their own folder when it is one and already named so (images/ + labels/ layouts), else
    `links` filled with links to them (masks beside their images, named with a suffix, or in
    per-patient folders). The user's files are only read."""
    folders = {p.label.parent for p in pairs}
    if len(folders) == 1 and all(case_stem(p.label) == p.case_id for p in pairs):
        return folders.pop()
    for pair in pairs:
        target = links / f"{pair.case_id}{match_suffix(pair.label)}"
        try:
            target.symlink_to(pair.label.resolve())
        except OSError:  # no symlinks here (some filesystems): a copy, in the temporary folder only
            shutil.copyfile(pair.label, target)
    return links


def _validation_cases(run: Path, keep_probabilities: Path | None = None):
    """(predicted mask, reference label) per validation case of a finished run, read lazily: the
    masks as predicted, before any postprocessing (what a choice of postprocessing is made on)."""
    info = read_run_info(run)
    val_dir = ensure_validation(run, postprocess=False, keep_probabilities=keep_probabilities)
    masks = {case_stem(p): p for p in val_dir.iterdir() if p.is_file() and not p.name.endswith((".csv", ".json"))}
    masks.update({case_stem(p): p for p in (val_dir / RAW_DIR).glob("*") if p.is_file()})
    val_ids = [str(c) for c in (info.get("split") or {}).get("val", [])]
    if not val_ids:
        return info, []
    pairs, dataset = describe_dataset(Path(info["data"]), label_suffix=run_label_suffix(info))
    by_id = {p.case_id: p for p in pairs}
    mapping = LabelMapping.from_dict(info["label_mapping"])

    def load(case_id: str) -> tuple[np.ndarray, np.ndarray]:
        ref = read_case(by_id[case_id], mapping, dataset.channels).label
        return np.asarray(read_mask(masks[case_id])).astype(np.int64), np.asarray(ref).astype(np.int64)

    return info, [(c, load) for c in val_ids if c in masks]


def finish_run(run: str | os.PathLike, report: bool = True) -> dict:
    """Validation predictions, postprocessing choice and report for one run folder."""
    run = Path(run)
    with tempfile.TemporaryDirectory(prefix="medseg-validation-probabilities-") as kept:
        info, cases = _validation_cases(run, Path(kept))  # the calibration reuses these probabilities
        spec = choose_postprocessing((load(c) for c, load in cases), int(len(info["class_names"])),
                                     info.get("class_names"))
        spec["chosen_on"] = f"validation split of {run.name} ({len(cases)} cases)"
        write_postprocessing(run, spec)
        print(describe(spec))
        postprocess_validation(run, spec)
        _calibrate(run, Path(kept))
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
    write_text(root / "crossval.json", json.dumps({"folds": folds, "postprocessing": spec}, indent=2))
    print(describe(spec))
    return spec


def _calibrate(run: Path, probabilities: Path | None = None) -> None:
    """RUN/calibration.json fitted afresh on the validation cases (`medseg.training.calibrate`),
    from the validation's kept `probabilities` where there are some; a failure warns and never
    costs the trained model (predictions then go uncalibrated)."""
    try:
        record = calibrate_run(run, overwrite=True, probabilities=probabilities)
    except Exception as exc:  # noqa: BLE001 - the run is saved; `medseg report` fits it again
        warnings.warn(f"{run}: the calibration could not be fitted ({exc}); run `medseg report {run}` to retry")
        return
    if record:
        print(f"calibration: temperature {record['temperature']}, ECE {record.get('ece_before', float('nan')):.4f} "
              f"-> {record.get('ece_after', float('nan')):.4f}, flag threshold {record['flag_threshold']} "
              f"({record.get('temperature_choice', '')})")


def _write_report(run: Path) -> None:
    """The HTML report; a failure here warns and never costs the trained model."""
    try:
        write_run_report(run)
    except Exception as exc:  # noqa: BLE001 - the run is saved; the report can be made again
        warnings.warn(f"{run}: the report could not be written ({exc}); run `medseg report {run}` to retry")
