"""Calibration at the end of training: a temperature fitted on the validation cases, the
calibration error before and after, and the threshold that flags a case as likely wrong, stored
in RUN/calibration.json (`medseg.runs.read_calibration`; the Predictor applies it).

The rules, and why:

* Probabilities: the final validation's (`finish.ensure_validation` keeps each case's float16
  probabilities for this), so the cases go through the network once; a case without them (a
  run validated earlier, `medseg report RUN`) is predicted here, the same way.
* Voxels: the foreground-relevant region of each validation case
  (`medseg.inference.uncertainty.relevant_region`, the reference's foreground added), at most
  `VOXELS_PER_CASE` of them drawn at random per case (seeded; `VOXELS_IN_ALL` shared out when
  there are many cases), so fitting costs seconds on a CPU and every case weighs about the same.
* Temperature: `medseg.training.temperature.choose_temperature`: none, one per run or one per
  class, each fitted by NLL on one half of the validation cases and judged on the other (both
  ways); kept only if it lowers both the held-out ECE and the held-out NLL, then refitted on all
  of them; otherwise T = 1, with the reason under ``fit.choice``. A temperature never changes a
  mask (`Predictor.predict_uncertain`).
* ECE: `medseg.evaluation.calibration` (15 equal-width bins of the probability of the mask's
  class), on all the voxels, before (T = 1) and after (in-sample; the held-out figures the
  choice was made on are under ``fit.held_out``); the bins are stored for the report's
  reliability diagram.
* Flag threshold: "bad" cases have a mean foreground Dice below the validation cases' 20th
  percentile. With at least `MIN_CASES_FOR_F1` (10) validation cases and one bad one, the
  threshold is the case score (`case_score`, calibrated) that best separates them (largest F1
  of "score >= threshold", flagging at most twice as many cases as are bad; ties: the higher
  threshold, fewer flags); otherwise the 80th
  percentile of the scores (the top fifth is flagged).
* Maps: the entropy map and heat map of the best, median and worst validation case (by Dice)
  go to RUN/validation/uncertainty/, for the report to draw.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..atomic import write_text
from ..evaluation.calibration import ECE_BINS, auroc, ece_from_bins, reliability_bins, spearman
from ..inference import Predictor, argmax_mask, output_suffix, read_input_case
from ..inference.postprocess import apply_postprocessing
from ..inference.uncertainty import apply_temperature, case_score, max_entropy, predictive_entropy, relevant_region
from ..inference.uncertainty_outputs import map_suffix
from ..io.dataset import read_case
from ..io.float_maps import write_float_map
from ..io.labels import LabelMapping
from ..io.layout import InputCase, describe_dataset
from ..report.heatmap import save_heatmap
from ..report.run_report import VALIDATION_DIR
from ..runs import CALIBRATION_FILE, read_calibration, read_run_info, run_label_suffix
from .temperature import choose_temperature, describe_choice

VOXELS_PER_CASE = 20000
VOXELS_IN_ALL = 200000  # fewer per case when there are many cases: the fit stays a few seconds
MIN_CASES_FOR_F1 = 10
MAX_FLAGGED_PER_BAD = 2  # the threshold flags at most twice as many cases as are bad
BAD_QUANTILE = 0.2
UNCERTAINTY_MAPS = "uncertainty"  # RUN/validation/<this>/


def flag_threshold(scores: np.ndarray, dice: np.ndarray) -> tuple[float | None, str]:
    """The score at or above which a case is flagged (module docstring), and the rule used."""
    if len(scores) == 0:
        return None, "no validation cases"
    bad = dice < np.quantile(dice, BAD_QUANTILE)
    if len(scores) >= MIN_CASES_FOR_F1 and bad.any():
        best, best_f1 = None, -1.0
        for t in sorted(set(scores.tolist()), reverse=True):
            flagged = scores >= t
            if int(flagged.sum()) > MAX_FLAGGED_PER_BAD * int(bad.sum()):
                break  # an uninformative score would "win" F1 by flagging nearly everything
            hits = int((flagged & bad).sum())
            f1 = 2 * hits / (int(flagged.sum()) + int(bad.sum()))
            if f1 > best_f1 + 1e-12:
                best, best_f1 = t, f1
        return float(best), (f"largest F1 ({best_f1:.2f}) of flagging the {int(bad.sum())} cases with Dice below "
                             f"the validation {BAD_QUANTILE:.0%} quantile, at most {MAX_FLAGGED_PER_BAD}x as many flagged")
    return float(np.quantile(scores, 1 - BAD_QUANTILE)), (
        f"{1 - BAD_QUANTILE:.0%} quantile of the validation scores (fewer than {MIN_CASES_FOR_F1} cases, or none bad)")


def mean_dice(mask: np.ndarray, reference: np.ndarray, classes: int) -> float:
    """Mean Dice over the foreground classes present in either map (1 when none is)."""
    scores = []
    for k in range(1, classes):
        p, r = mask == k, reference == k
        total = int(p.sum()) + int(r.sum())
        if total:
            scores.append(2 * int((p & r).sum()) / total)
    return float(np.mean(scores)) if scores else 1.0


def _draw(log_probs: torch.Tensor, labels: torch.Tensor, region: torch.Tensor, rng: np.random.Generator,
          per_case: int = VOXELS_PER_CASE):
    """Up to `per_case` (log p (N, K), label (N,)) of the region, labelled voxels only."""
    keep = region & (labels >= 0) & (labels < log_probs.shape[0])
    index = torch.nonzero(keep.flatten()).flatten().numpy()
    if len(index) > per_case:
        index = np.sort(rng.choice(index, per_case, replace=False))
    index_t = torch.from_numpy(index)
    return log_probs.flatten(1)[:, index_t].T.contiguous(), labels.flatten()[index_t].long()


def _voxel_stats(samples, temperature) -> dict:
    """ECE before/after, reliability bins, and the entropy's AUROC for a wrong voxel, on the samples."""
    log_probs = torch.cat([s[0] for s in samples])
    labels = torch.cat([s[1] for s in samples])
    predicted = log_probs.argmax(dim=1)  # the mask's class: a temperature never changes it
    correct = (predicted == labels).numpy()
    out = {"voxels": int(len(labels))}
    for name, t in (("before", 1.0), ("after", temperature)):
        probs = torch.softmax(log_probs / torch.as_tensor(t), dim=1)
        table = reliability_bins(probs.gather(1, predicted[:, None])[:, 0].numpy(), correct, ECE_BINS)
        out[f"ece_{name}"] = ece_from_bins(table)
        out[f"reliability_{name}"] = table
        out[f"entropy_auroc_wrong_voxel_{name}"] = auroc(predictive_entropy(probs.T).numpy(), ~correct)
    return out


def calibrate_run(run: str | os.PathLike, *, device: str = "auto", overwrite: bool = False,
                  probabilities: str | os.PathLike | None = None) -> dict | None:
    """Fit and store RUN/calibration.json from the validation cases (module docstring); returns it.
    Returns the stored one unless `overwrite`; None for a run without validation cases.
    `probabilities`: a folder of ``<case id>.npy`` float16 class probabilities the final validation
    kept (`medseg.training.finish.ensure_validation`); the cases found there are not predicted again."""
    run = Path(run)
    if not overwrite and (stored := read_calibration(run)) is not None:
        return stored
    info = read_run_info(run)
    val_ids = [str(c) for c in (info.get("split") or {}).get("val", [])]
    if not val_ids:
        return None
    start = time.perf_counter()
    pairs, dataset = describe_dataset(Path(info["data"]), label_suffix=run_label_suffix(info))
    by_id = {p.case_id: p for p in pairs}
    pairs = [by_id[c] for c in val_ids if c in by_id and by_id[c].label is not None]
    mapping = LabelMapping.from_dict(info["label_mapping"])
    predictor = Predictor(run, device=device, calibrate=False)
    classes, rng = predictor.num_classes, np.random.default_rng(0)
    samples, cases, files, reused = [], [], [], 0
    per_case = max(1000, min(VOXELS_PER_CASE, VOXELS_IN_ALL // max(1, len(pairs))))
    with tempfile.TemporaryDirectory(prefix="medseg-calibration-") as scratch:
        for pair in pairs:  # one pass through the network at most; probabilities kept on disk (float16)
            reference = torch.from_numpy(np.asarray(read_case(pair, mapping, dataset.channels).label).astype(np.int64))
            kept = Path(probabilities) / f"{pair.case_id}.npy" if probabilities is not None else None
            if kept is not None and kept.is_file():
                probs16, reused = torch.from_numpy(np.load(kept)), reused + 1
            else:
                case = read_input_case(InputCase(pair.case_id, pair.image_files), predictor.in_channels)
                probs16 = predictor.probabilities(case, dtype=torch.float16)  # what `segment` argmaxes
                kept = Path(scratch) / f"{len(cases)}.npy"
                np.save(kept, probs16.numpy())
            mask = apply_postprocessing(argmax_mask(probs16), predictor.postprocessing)  # `segment`'s mask
            if tuple(reference.shape) != tuple(mask.shape) or probs16.shape[0] != classes:
                raise ValueError(f"{pair.label}: reference shape {tuple(reference.shape)} differs from the "
                                 f"prediction's {mask.shape} (or {kept} holds other classes)")
            raw = probs16.float()
            region = relevant_region(raw, reference)
            samples.append(_draw(torch.log(raw.clamp_min(1e-12)), reference, region, rng, per_case))
            files.append(kept)
            cases.append({"case": pair.case_id, "dice": mean_dice(mask, reference.numpy(), classes)})
        temperature, evidence = choose_temperature(samples) if samples and len(torch.cat([s[1] for s in samples])) \
            else ([1.0], {"choice": "T = 1: no relevant voxels in the validation cases"})
        t = temperature[0] if len(temperature) == 1 else temperature
        for index, row in enumerate(cases):
            probs = apply_temperature(torch.from_numpy(np.load(files[index])), t).float()
            row["score"] = case_score(probs, predictive_entropy(probs))
        scores = np.array([c["score"] for c in cases])
        dice = np.array([c["dice"] for c in cases])
        threshold, rule = flag_threshold(scores, dice)
        for row in cases:
            row["flagged"] = threshold is not None and row["score"] >= threshold
        shown = _write_maps(run, predictor, pairs, cases, files, t) if cases else {}
    stats = _voxel_stats(samples, t) if samples else {}
    record = {
        "temperature": t, "per_class": len(temperature) > 1, "temperature_choice": describe_choice(evidence),
        "flag_threshold": threshold, "flag_rule": rule,
        "ece_bins": ECE_BINS, "ece_binning": "equal-width bins of the probability of the mask's class on [0, 1]",
        "voxels": "foreground-relevant region (predicted or possible foreground, reference foreground, dilated), "
                  f"at most {per_case} per case", **stats, "fit": evidence,
        "case_score_spearman_dice": spearman(scores, dice), "cases": cases, "maps": shown,
        "fitted_on": f"validation split of {run.name} ({len(cases)} cases)",
        "probabilities": f"{reused} of {len(cases)} cases from the final validation, the rest predicted here",
        "seconds": round(time.perf_counter() - start, 2)}
    write_text(run / CALIBRATION_FILE, json.dumps(record, indent=2, default=_json_number))
    return record


def _json_number(value):
    return float(value) if isinstance(value, (np.floating, np.integer)) else str(value)


def _write_maps(run: Path, predictor: Predictor, pairs: list, cases: list[dict], files: list[Path], t) -> dict:
    """Entropy maps and heat maps of the best, median and worst validation cases (by Dice)."""
    order = sorted(range(len(cases)), key=lambda i: cases[i]["dice"])
    picks = {"worst": order[0], "median": order[len(order) // 2], "best": order[-1]}
    folder = run / VALIDATION_DIR / UNCERTAINTY_MAPS
    shown = {}
    for label, index in picks.items():
        pair = pairs[index]
        item = InputCase(pair.case_id, pair.image_files)
        case = read_input_case(item, predictor.in_channels)
        raw = torch.from_numpy(np.load(files[index]))
        probs = apply_temperature(raw, t).float()
        entropy = predictive_entropy(probs)
        mask = raw.float().argmax(dim=0).numpy().astype(np.uint8)  # as predicted (a temperature never changes it)
        dims = entropy.ndim
        name = f"{pair.case_id}{map_suffix(output_suffix(item, None), dims)}"
        write_float_map(folder / name, entropy.numpy(), case.meta)
        save_heatmap(folder / f"{pair.case_id}.png", case.image, entropy.numpy(), max_entropy(probs.shape[0]),
                     mask, spacing=case.spacing)
        shown[label] = {"case": pair.case_id, "map": f"{UNCERTAINTY_MAPS}/{name}", "picture":
                        f"{UNCERTAINTY_MAPS}/{pair.case_id}.png", "dice": cases[index]["dice"],
                        "score": cases[index]["score"]}
    return shown
