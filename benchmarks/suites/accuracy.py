"""Held-out accuracy of `medseg train` + `medseg predict` on the project's judged protocols.

ISBI 2012 (10 CPU minutes), Kvasir-SEG (15) and MSD Hippocampus (20), split as
`benchmarks.datasets` says. Training is the public `medseg.train` with only the budget (and any
`--option KEY=VALUE`, a `TrainConfig` field as a Python literal: the way a variant such as
`ema=0.995` is measured beside the defaults, under its own `--row` name; `--sparse-every N` trains
the hippocampus on labels that keep one axial slice in N, the rest declared "ignore"); prediction is
`medseg.predict` on the held-out original files; Dice is computed from the written masks by
`benchmarks.datasets.score`, independently of medseg's metrics. In 3D the held-out cases are
predicted a second time with mirroring TTA, and every mask's shape and affine are checked against
its image.
"""
from __future__ import annotations

import argparse
import ast
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.datasets import PROTOCOLS
from benchmarks.harness import fmt

TITLE = "Held-out accuracy on the judged protocols"
COMMAND = "python -m benchmarks run accuracy --sets isbi,kvasir,hippocampus"
SETS = ("isbi", "kvasir", "hippocampus")
MINUTES = {"isbi": 10.0, "kvasir": 15.0, "hippocampus": 20.0}
TARGETS = {"isbi": {"membrane": 0.82, "cell": 0.95}, "kvasir": {"polyp": 0.82},
           "hippocampus": {"anterior": 0.88, "posterior": 0.87}}
QUICK_LIMITS = {"train_limit": 12, "test_limit": 2}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sets", default=None, help=f"comma-separated, of {', '.join(SETS)} (default: all; "
                                                      "--quick: isbi)")
    parser.add_argument("--minutes", type=float, help="training budget for every set (default: each protocol's)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="extra medseg.train option (Python literal), e.g. --option ema=0.995")
    parser.add_argument("--sparse-every", type=int, help="hippocampus: keep one axial label slice in N, the "
                                                          "others unlabelled (scored on the full labels)")
    parser.add_argument("--row", help="row name in the table (default: the set's name)")
    parser.add_argument("--work", type=Path, help="folder for splits, runs and masks (default: temporary)")


def parse_options(pairs: list[str]) -> dict:
    return {k: ast.literal_eval(v) for k, v in (o.split("=", 1) for o in pairs)}


def train_predict_score(name: str, data: Path, work: Path, train_options: dict, *, quick: bool,
                        mirror_3d: bool, published: bool = False, sparse_every: int | None = None) -> tuple[dict, object]:
    """Split set `name`, train, predict the held-out originals, score; returns (row, split)."""
    import json

    import medseg

    from benchmarks.datasets import make_split, run_speed, score

    if work.exists():
        shutil.rmtree(work)
    split = make_split(name, data, work, published=published, **(QUICK_LIMITS if quick else {}))
    if sparse_every:
        from medseg.data.sparse import write_sparse_msd

        cases = [Path(e["image"]).name.split(".")[0] for e in json.loads((split.train / "dataset.json").read_text())["training"]]
        split.train = write_sparse_msd(split.train, work / "sparse", cases, keep_every=sparse_every, axis=0)
        split.notes.append(f"hippocampus trained on one axial label slice in {sparse_every}, scored on the full labels")
    start = time.perf_counter()
    run = medseg.train(split.train, work / "run", **train_options)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    medseg.predict(run, split.test_images, work / "pred", overlays=False)
    predict_s = time.perf_counter() - start
    row = {**score(split, work / "pred"), "train_wall_s": round(train_s, 1), "predict_wall_s": round(predict_s, 1),
           **run_speed(run)}
    if mirror_3d and name in ("hippocampus", "brats"):
        start = time.perf_counter()
        medseg.predict(run, split.test_images, work / "pred_mirror", overlays=False, mirror=True)
        row["predict_mirror_wall_s"] = round(time.perf_counter() - start, 1)
        row["dice_mirror_tta"] = score(split, work / "pred_mirror")["dice"]
    if split.notes:
        row["notes"] = split.notes
    return row, split


def run(args: argparse.Namespace) -> tuple[dict, dict]:
    sets = (args.sets or ("isbi" if args.quick else ",".join(SETS))).split(",")
    unknown = [s for s in sets if s not in SETS]
    if unknown:
        raise SystemExit(f"--sets: unknown {unknown}; the accuracy protocols are {', '.join(SETS)} "
                         "(the other sets are in the generalisation suite)")
    if args.row and len(sets) > 1:
        raise SystemExit("--row names one row: give one set with it")
    if args.sparse_every and sets != ["hippocampus"]:
        raise SystemExit("--sparse-every applies to --sets hippocampus only")
    options = parse_options(args.option)
    base = args.work or Path(tempfile.mkdtemp(prefix="medseg-bench-accuracy-"))
    rows = {}
    try:
        for name in sets:
            budget = {"epochs": 1, "iterations_per_epoch": 3} if args.quick else \
                {"minutes": args.minutes or MINUTES[name]}
            print(f"== accuracy {name}: {budget}, options {options}", flush=True)
            row, _ = train_predict_score(name, args.data, base / name, {**budget, **options}, quick=args.quick,
                                         mirror_3d=True, sparse_every=args.sparse_every)
            row.update(budget=budget, options=options, target=TARGETS[name], sparse_every=args.sparse_every)
            default_key = f"{name}-sparse{args.sparse_every}" if args.sparse_every else name
            rows[args.row or default_key] = {"set": name, **row}
            print(f"   Dice {row['dice']}", flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(base, ignore_errors=True)
    settings = {"sets": sets, "minutes": args.minutes, "options": options, "sparse_every": args.sparse_every,
                "data": "../shared/data (--data)",
                "protocols": {s: PROTOCOLS[s] for s in sets}}
    return settings, {"rows": rows}


def command_for(key: str, row: dict) -> str:
    """The command that reproduces one row."""
    parts = [f"python -m benchmarks run accuracy --sets {row.get('set', key)}"]
    if row.get("sparse_every"):
        parts.append(f"--sparse-every {row['sparse_every']}")
    if key not in (row.get("set", key), f"{row.get('set')}-sparse{row.get('sparse_every')}"):
        parts.append(f"--row {key}")
    budget = row.get("budget") or {}
    if budget.get("minutes") not in (None, MINUTES.get(row.get("set", key))):
        parts.append(f"--minutes {budget['minutes']:g}")
    parts += [f'--option "{k}={v!r}"' for k, v in (row.get("options") or {}).items()]
    return " ".join(parts)


def table(env: dict) -> list[str]:
    rows = env["results"]["rows"]
    lines = ["| row | protocol | budget | images/s | steps × batch | held-out Dice | with mirroring TTA (3D) | "
             "target | measured | command |", "|---|---|---|---:|---|---|---|---|---|---|"]
    for key, row in rows.items():
        name = row.get("set", key)
        dice = ", ".join(f"{c} **{v:.3f}**" for c, v in row["dice"].items())
        tta = ", ".join(f"{c} {v:.3f}" for c, v in (row.get("dice_mirror_tta") or {}).items()) or "–"
        target = ", ".join(f"{c} {v}" for c, v in (row.get("target") or TARGETS.get(name, {})).items())
        budget = row.get("budget") or {}
        spent = f"{budget['minutes']:g} min" if "minutes" in budget else f"{budget.get('epochs')} × " \
            f"{budget.get('iterations_per_epoch')} steps"
        steps = f"{row.get('iterations')} × {row.get('batch_size')}"
        measured = (row.get("measured") or {}).get("date", env["date"])
        lines.append(f"| {key} | {name}: {PROTOCOLS[name]} | {spent} | {fmt(row.get('images_per_s'), 1)} | {steps} | "
                     f"{dice} | {tta} | {target} | {measured} | `{command_for(key, row)}` |")
    notes = sorted({n for row in rows.values() for n in row.get("notes", [])})
    lines += [""] + [f"- {n}." for n in notes]
    lines += ["- Dice is computed from the written mask files by `benchmarks/datasets.py` (numpy, not medseg's "
              "metrics). 2D prediction mirrors by default; the 3D column predicts again with `--mirror`."]
    return lines

