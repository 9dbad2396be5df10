"""Is medseg's uncertainty worth looking at? Error detection, calibration, failure flags and cost, held out.

Per set (split as `benchmarks.datasets` says): `medseg.train` with a CPU budget and its defaults,
which end by fitting the run's temperature and flag threshold on its validation cases
(RUN/calibration.json). Then on the held-out cases, with the definitions of
`medseg.inference.uncertainty` and `medseg.evaluation.calibration` (no second implementation):

* Voxel AUROC of the (calibrated) entropy for "this voxel is wrong" (argmax != reference), pooled
  over the held-out voxels of the foreground-relevant region with the reference's foreground
  added (`relevant_region(raw probabilities, reference)`: predicted or possible foreground, or
  reference foreground, dilated 3 voxels; the uncalibrated probabilities, as the calibration's
  fit takes them, so every temperature is judged on the same voxels). Goal >= 0.85.
* Case level: Spearman's rho between the case score and the case's mean foreground Dice. Goal
  |rho| >= 0.5 where Dice varies (Kvasir, BraTS).
* ECE (15 equal-width bins, same voxels) with T = 1 and with the run's temperature: the
  confidence is the (calibrated) probability of the mask's class, the class whose correctness is
  scored, as `medseg.training.temperature` judges it. (The most probable calibrated class is not
  that class wherever a per-class T moves it off the mask's.) Goal: after <= half of before.
* Flags: "bad" = Dice below the held-out set's 20th percentile; precision and recall of the
  run's stored threshold (`score >= flag_threshold`).
* Cost: `medseg.predict` with and without `uncertainty=True`, same run and cases, interleaved
  rounds (`benchmarks.harness.interleave`); the ratio of medians.
"""
from __future__ import annotations

import argparse
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.datasets import PROTOCOLS
from benchmarks.harness import fmt, interleave

TITLE = "Uncertainty: error detection, calibration, failure flags and cost"
COMMAND = "python -m benchmarks run uncertainty --sets hippocampus,kvasir,isbi,brats --minutes 5"
SETS = ("hippocampus", "kvasir", "isbi", "brats")
GOALS = {"voxel_auroc": 0.85, "abs_rho": 0.5, "ece_ratio": 0.5}
VOXELS_PER_CASE = 200_000   # drawn at random (seeded) from a case's region when it holds more


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sets", default=None, help=f"comma-separated, of {', '.join(SETS)} (default: all; "
                                                      "--quick: hippocampus)")
    parser.add_argument("--minutes", type=float, default=5.0, help="CPU training budget per set (default 5)")
    parser.add_argument("--test-limit", type=int, help="held-out cases used (default: all of the protocol)")
    parser.add_argument("--timing-cases", type=int, default=5, help="held-out cases timed (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds (default 3)")
    parser.add_argument("--work", type=Path, help="folder for splits and runs (default: temporary)")


def measure(name: str, split, run: Path, rng: np.random.Generator) -> dict:
    """The held-out figures of one trained run (module docstring)."""
    import torch

    from benchmarks.datasets import read_mask
    from medseg.evaluation.calibration import (auroc, expected_calibration_error, flag_precision_recall,
                                               spearman)
    from medseg.inference import Predictor, read_input_case
    from medseg.inference.uncertainty import apply_temperature, case_score, predictive_entropy, relevant_region
    from medseg.io.layout import prediction_inputs
    from medseg.runs import read_calibration, read_run_info
    from medseg.training.calibrate import mean_dice

    calibration = read_calibration(run) or {}
    temperature = calibration.get("temperature")
    predictor = Predictor(run, device="cpu", calibrate=False)
    entropy_all, wrong_all, conf_raw, conf_cal, correct_all = [], [], [], [], []
    scores, dice = [], []
    for item in prediction_inputs(split.test_images, predictor.in_channels, predictor.dataset.channel_names):
        if item.case_id not in split.references:
            continue
        case = read_input_case(item, predictor.in_channels)
        result = predictor.predict_uncertain(case)       # raw probabilities: calibrate=False
        reference = read_mask(name, split.references[item.case_id], True)
        if reference.ndim == 3:  # nibabel reads (i, j, k); medseg's arrays are (k, j, i), as SimpleITK's
            reference = np.ascontiguousarray(reference.transpose(2, 1, 0))
        if reference.shape != result.mask.shape:
            raise ValueError(f"{split.references[item.case_id]}: reference {reference.shape} vs prediction "
                             f"{result.mask.shape}")
        raw = result.probabilities
        calibrated = apply_temperature(raw, temperature).float()
        entropy = predictive_entropy(calibrated)
        region = relevant_region(raw, torch.from_numpy(reference)).numpy()
        index = np.flatnonzero(region.ravel())
        if index.size > VOXELS_PER_CASE:
            index = rng.choice(index, VOXELS_PER_CASE, replace=False)
        mask_class = raw.argmax(0)
        argmax = mask_class.numpy().ravel()[index]
        ref = reference.ravel()[index]
        entropy_all.append(entropy.numpy().ravel()[index])
        wrong_all.append(argmax != ref)
        correct_all.append(argmax == ref)
        conf_raw.append(raw.amax(0).numpy().ravel()[index])
        conf_cal.append(calibrated.gather(0, mask_class[None])[0].numpy().ravel()[index])  # the mask's class
        scores.append(case_score(calibrated, entropy))
        dice.append(mean_dice(result.mask, reference, predictor.num_classes))
    correct = np.concatenate(correct_all)
    ece_before = expected_calibration_error(np.concatenate(conf_raw), correct)
    ece_after = expected_calibration_error(np.concatenate(conf_cal), correct)
    scores_a, dice_a = np.array(scores), np.array(dice)
    bad = dice_a < np.percentile(dice_a, 20)
    threshold = calibration.get("flag_threshold")
    flags = flag_precision_recall(scores_a, bad, threshold) if threshold is not None else None
    return {"voxel_auroc": auroc(np.concatenate(entropy_all), np.concatenate(wrong_all)),
            "voxels": int(correct.size), "wrong_share": round(float(1 - correct.mean()), 5),
            "spearman_score_dice": spearman(scores_a, dice_a), "dice_mean": round(float(dice_a.mean()), 4),
            "dice_range": [round(float(dice_a.min()), 4), round(float(dice_a.max()), 4)],
            "ece_before": ece_before, "ece_after": ece_after,
            "ece_ratio": ece_after / ece_before if ece_before else None, "temperature": temperature,
            "flag_threshold": threshold, "flags": flags, "held_out_cases": len(scores),
            "validation_ece": {k: calibration.get(k) for k in ("ece_before", "ece_after") if k in calibration},
            "temperature_choice": calibration.get("temperature_choice"),
            "calibration_s": calibration.get("seconds"), "training": _training(read_run_info(run))}


def _training(info: dict) -> dict:
    """How much the run trained: steps done against the plan's, and whether it starved."""
    return {k: info.get(k) for k in ("iterations_done", "steps_expected", "starved", "best_val_dice_mean")}


def timing(run: Path, split, work: Path, cases: int, rounds: int) -> dict:
    """predict with and without uncertainty, interleaved, on the first `cases` held-out inputs."""
    import medseg

    inputs = work / "timing_inputs"
    shutil.rmtree(inputs, ignore_errors=True)
    inputs.mkdir(parents=True)
    by_case: dict[str, list[Path]] = {}
    for f in sorted(Path(split.test_images).iterdir()):  # BraTS: one file per channel, CASE_0000, CASE_0001
        by_case.setdefault(re.sub(r"_\d{4}$", "", f.name.split(".")[0]), []).append(f)
    for files in list(by_case.values())[:cases]:
        for f in files:
            (inputs / f.name).symlink_to(f.resolve())
    folders = {"plain": work / "t_plain", "uncertainty": work / "t_uncertainty"}

    def variant(key: str):
        def go():
            shutil.rmtree(folders[key], ignore_errors=True)
            medseg.predict(run, inputs, folders[key], overlays=False, device="cpu", uncertainty=key == "uncertainty")
        return go

    summary = interleave({k: variant(k) for k in folders}, rounds, warmup=1, reference="plain")
    return {"cases": min(cases, len(by_case)),
            "ratio": summary["time_ratio"]["uncertainty"], "paired_ratio": summary["paired_time_ratio"]["uncertainty"],
            "median_s": summary["median_s"]}


def run(args: argparse.Namespace) -> tuple[dict, dict]:
    import medseg

    from benchmarks.datasets import make_split

    sets = (args.sets or ("hippocampus" if args.quick else ",".join(SETS))).split(",")
    unknown = [s for s in sets if s not in SETS]
    if unknown:
        raise SystemExit(f"--sets: unknown {unknown}; known: {', '.join(SETS)}")
    base = args.work or Path(tempfile.mkdtemp(prefix="medseg-bench-uncertainty-"))
    rows = {}
    try:
        for name in sets:
            limits = {"train_limit": 12, "test_limit": 4} if args.quick else {"test_limit": args.test_limit}
            budget = {"epochs": 1, "iterations_per_epoch": 3} if args.quick else {"minutes": args.minutes}
            print(f"== uncertainty {name}: {budget}", flush=True)
            shutil.rmtree(base / name, ignore_errors=True)  # a fresh split and run (--work may hold an old one)
            split = make_split(name, args.data, base / name / "split", **limits)
            trained = medseg.train(split.train, base / name / "run", device="cpu", **budget)
            row = measure(name, split, trained, np.random.default_rng(0))
            row["timing"] = timing(trained, split, base / name, 2 if args.quick else args.timing_cases,
                                   1 if args.quick else args.rounds)
            row.update(set=name, budget=budget, test_limit=args.test_limit)
            rows[name] = row
            print(f"   {headline(row)}", flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(base, ignore_errors=True)
    settings = {"sets": sets, "minutes": args.minutes, "test_limit": args.test_limit, "device": "cpu",
                "region": "relevant_region(uncalibrated probabilities, reference): predicted or possible (p > 0.1) "
                          "foreground or reference foreground, dilated 3 voxels",
                "ece_bins": "15 equal-width bins of the calibrated probability of the mask's class",
                "voxels_per_case": VOXELS_PER_CASE, "protocols": {s: PROTOCOLS[s] for s in sets}}
    return settings, {"rows": rows}


def headline(row: dict) -> str:
    flags = row.get("flags") or {}
    return (f"AUROC {fmt(row['voxel_auroc'])}, rho {fmt(row['spearman_score_dice'])}, ECE {fmt(row['ece_before'], 4)} "
            f"-> {fmt(row['ece_after'], 4)}, flags P {fmt(flags.get('precision'), 2)} R {fmt(flags.get('recall'), 2)}, "
            f"time x{fmt(row['timing']['ratio'], 2)}")


def table(env: dict) -> list[str]:
    lines = ["| set | budget | held-out | Dice mean (range) | voxel AUROC (goal ≥ 0.85) | Spearman score–Dice (goal abs ρ ≥ 0.5) "
             "| ECE before → after (goal ≤ ½) | T | flags: precision / recall (flagged/bad) | predict --uncertainty "
             "time | measured | command |", "|---|---|---:|---|---:|---:|---|---|---|---|---|---|"]
    for name, row in env["results"]["rows"].items():
        # per row: rows merged from earlier runs keep their own limit (older rows: the envelope's)
        test_limit = row.get("test_limit", (env.get("settings") or {}).get("test_limit"))
        limit = f" --test-limit {test_limit}" if test_limit else ""
        budget = row.get("budget") or {}
        spent = f"{budget['minutes']:g} min" if "minutes" in budget else f"{budget.get('iterations_per_epoch')} steps"
        trained = row.get("training") or {}
        if "minutes" in budget and trained.get("iterations_done") is not None:
            spent += f" ({trained['iterations_done']} steps{', starved' if trained.get('starved') else ''})"
        flags = row.get("flags") or {}
        flag_cell = (f"{fmt(flags.get('precision'), 2)} / {fmt(flags.get('recall'), 2)} ({flags.get('flagged')}/"
                     f"{flags.get('bad')})") if flags else "no threshold"
        t = row.get("temperature")
        t_cell = fmt(t, 2) if isinstance(t, float) else ", ".join(fmt(float(v), 2) for v in t) if t else "–"
        measured = (row.get("measured") or {}).get("date", env["date"])
        lines.append(f"| {name} | {spent} | {row['held_out_cases']} | {fmt(row['dice_mean'])} ({fmt(row['dice_range'][0])}–"
                     f"{fmt(row['dice_range'][1])}) | {fmt(row['voxel_auroc'])} | {fmt(row['spearman_score_dice'])} | "
                     f"{fmt(row['ece_before'], 4)} → {fmt(row['ece_after'], 4)} | {t_cell} | {flag_cell} | "
                     f"×{fmt(row['timing']['ratio'], 2)} ({row['timing']['cases']} cases) | {measured} | "
                     f"`python -m benchmarks run uncertainty --sets {name} --minutes {budget.get('minutes', 5):g}"
                     f"{limit}` |")
    lines.append("")
    lines.append("- Region: the reference's foreground added to the predicted or possible foreground (uncalibrated "
                 "probabilities), dilated 3 voxels; at most 200k voxels drawn per case. ECE: 15 equal-width bins of "
                 "the calibrated probability of the mask's class. T: the temperature the run kept (1 = none helped "
                 "on held-out validation voxels, `temperature_choice` in the result says why). Time: ratio of "
                 "medians of `medseg.predict` with and without `uncertainty=True`, interleaved rounds, same run "
                 "and cases.")
    return lines
