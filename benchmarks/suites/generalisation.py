"""Defaults only, one fixed CPU budget per set, on every labelled set in ../shared/data.

Does medseg's default recipe carry over to data it was not tuned on? Every set is split as
`benchmarks.datasets` says (a fixed held-out part), trained with `medseg.train(..., minutes=M)`
and nothing else (no option, no plan override), its held-out originals predicted with
`medseg.predict` defaults, and the written masks scored with numpy (`benchmarks.datasets.score`,
independent of `medseg.evaluation`): Dice per class; for LGG the Dice of each patient's stacked
slices and the share of empty slices given any predicted pixel; for CHASE_DB1 also the second
observer's Dice against the first, the human ceiling. images/s is the median of the run's
log.csv. Each row stands against the published reference for that set (../shared/data/README.md),
which comes from GPU training with far more compute: the gap is the honest distance, not a bug.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from benchmarks.datasets import PROTOCOLS, SETS
from benchmarks.harness import fmt

TITLE = "Generalisation: defaults only, every labelled set"
COMMAND = "python -m benchmarks run generalisation --minutes 15"
# The published figure each set is held against, and where it comes from.
REFERENCES = {
    "isbi": ("–", "no published Dice on this split (the challenge scored Rand and warping error); "
                  "the project's own target is membrane 0.82"),
    "kvasir": ("polyp 0.80–0.82", "U-Nets on Kvasir-SEG (../shared/data README; Jha et al. 2020)"),
    "hippocampus": ("anterior 0.90, posterior 0.89", "nnU-Net, 5-fold CV on the 260 cases (Isensee et al. 2021)"),
    "brats": ("–", "left empty: published BraTS 2013 figures score whole tumour / core / enhancing regions on "
                   "the full challenge set, not these four labels on two test cases"),
    "chase": ("vessel 0.78–0.80", "U-Nets, first 20 train / last 8 test (../shared/data README)"),
    "lgg": ("0.82 per patient", "Buda et al. 2019, mean Dice per patient over all 110 patients"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sets", default=None, help=f"comma-separated, of {', '.join(SETS)} "
                                                      "(default: all; --quick: chase,lgg)")
    parser.add_argument("--minutes", type=float, default=15.0, help="CPU training budget per set (default 15)")
    parser.add_argument("--work", type=Path, help="folder for splits, runs and masks (default: temporary)")
    parser.add_argument("--renamed-layout", action="store_true",
                        help="train CHASE_DB1 and LGG from images/ + labels/ links named by case id instead of "
                             "their layout as published (benchmarks/datasets.py)")


def run(args: argparse.Namespace) -> tuple[dict, dict]:
    from benchmarks.suites.accuracy import train_predict_score

    sets = (args.sets or ("chase,lgg" if args.quick else ",".join(SETS))).split(",")
    unknown = [s for s in sets if s not in SETS]
    if unknown:
        raise SystemExit(f"--sets: unknown {unknown}; known: {', '.join(SETS)}")
    base = args.work or Path(tempfile.mkdtemp(prefix="medseg-bench-generalisation-"))
    rows = {}
    try:
        for name in sets:
            print(f"== generalisation {name}: {args.minutes:g} CPU minutes, defaults", flush=True)
            row, _ = train_predict_score(name, args.data, base / name, {"minutes": args.minutes, "device": "cpu"},
                                         quick=args.quick, mirror_3d=False, published=not args.renamed_layout)
            row.update(set=name, minutes=args.minutes, reference=REFERENCES[name][0],
                       reference_source=REFERENCES[name][1])
            rows[name] = row
            print(f"   {headline(row)}", flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(base, ignore_errors=True)
    settings = {"sets": sets, "minutes": args.minutes, "device": "cpu", "options": "none (defaults only)",
                "published_layout": not args.renamed_layout,
                "data": "../shared/data (--data)", "protocols": {s: PROTOCOLS[s] for s in sets}}
    return settings, {"rows": rows}


def headline(row: dict) -> str:
    """The figure the reference is about, first; the set's extra measures after it."""
    parts = [", ".join(f"{c} **{v:.3f}**" for c, v in row["dice"].items())]
    if row.get("dice_patient_mean") is not None:
        parts = [f"per patient **{row['dice_patient_mean']:.3f}** (per slice {parts[0].replace('**', '')})"]
        share = row.get("empty_slices_with_prediction")
        if share is not None:
            parts.append(f"{100 * share:.0f} % of {row['empty_slices']} empty slices given a prediction")
    if row.get("second_observer_dice") is not None:
        parts.append(f"second observer vs first: {row['second_observer_dice']:.3f}")
    return "; ".join(parts)


def table(env: dict) -> list[str]:
    lines = ["| set | held-out split | budget | images/s | steps × batch | held-out Dice (numpy) | published reference "
             "| measured | command |", "|---|---|---|---:|---|---|---|---|---|"]
    for name, row in env["results"]["rows"].items():
        ref, source = REFERENCES.get(name, (row.get("reference"), row.get("reference_source")))
        measured = (row.get("measured") or {}).get("date", env["date"])
        lines.append(f"| {name} | {PROTOCOLS[name]} | {row['minutes']:g} min | {fmt(row.get('images_per_s'), 1)} | "
                     f"{row.get('iterations')} × {row.get('batch_size')} | {headline(row)} | {ref} ({source}) | "
                     f"{measured} | `python -m benchmarks run generalisation --sets {name} --minutes {row['minutes']:g}` |")
    notes = sorted({n for row in env["results"]["rows"].values() for n in row.get("notes", [])})
    lines += [""] + [f"- {n}." for n in notes]
    lines.append("- Published figures come from GPU training over many epochs; these rows train on the CPU for "
                 "the minutes shown, with medseg's defaults and nothing tuned per set.")
    return lines
