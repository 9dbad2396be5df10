"""The labelling loop, simulated: does `medseg suggest` pick better cases to label than chance?

Per set (MSD Hippocampus, Kvasir-SEG; held-out part as `benchmarks.datasets` splits it) and per
seed: a candidate pool is drawn from the training part, a few of its cases start labelled, and each
round adds `k` cases chosen by (a) random, (b) foreground-aware random (cases whose predicted mask
holds any foreground first, in random order, as nnActive's strongest baseline), (c) the ranking of
`medseg suggest` (`medseg.inference.suggest.suggest`, the function the command calls: highest case
score first). Every training, of every strategy and round, starts from scratch with the same fixed
number of steps (not minutes: the load of a shared CPU then cannot favour one strategy) and the
seed of its row; the held-out Dice (mean over foreground classes, `benchmarks.datasets.score`)
is measured after each. Nothing is tuned per strategy; the figures are what they are.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import RESULTS, fmt

TITLE = "Labelling loop: suggest against random and foreground-aware random"
COMMAND = "python -m benchmarks run labelling --sets hippocampus --seeds 3 --rounds 2 --k 5 --initial 5 --steps 40"
STRATEGIES = ("random", "foreground-random", "suggest")
SETS = ("hippocampus", "kvasir")
TRAIN = {"hippocampus": dict(features=(8, 16, 32), patch_size=(32, 48, 32), batch_size=2),
         "kvasir": dict(features=(8, 16, 32, 64), patch_size=(128, 128), batch_size=4, image_size=128)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sets", default="hippocampus", help=f"comma-separated, of {', '.join(SETS)}")
    parser.add_argument("--seeds", type=int, default=3, help="seeds (default 3)")
    parser.add_argument("--initial", type=int, default=5, help="labelled cases at the start (default 5)")
    parser.add_argument("--k", type=int, default=5, help="cases added per round (default 5)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of adding cases (default 2)")
    parser.add_argument("--steps", type=int, default=40, help="training steps per round, every strategy (default 40)")
    parser.add_argument("--candidates", type=int, default=30, help="unlabelled candidate pool per seed (default 30)")
    parser.add_argument("--test-limit", type=int, default=20, help="held-out cases scored (default 20)")
    parser.add_argument("--work", type=Path, help="folder for runs and predictions (default: temporary)")


def training_cases(split) -> dict[str, tuple[Path, Path]]:
    """case id -> (image, label) of a split's training part (an MSD folder or images/ + labels/)."""
    train = Path(split.train)
    if (train / "dataset.json").is_file():
        desc = json.loads((train / "dataset.json").read_text())
        return {Path(e["image"]).name.split(".")[0]: ((train / e["image"]).resolve(), (train / e["label"]).resolve())
                for e in desc["training"]}
    labels = {p.name.split(".")[0]: p for p in (train / "labels").iterdir()}
    return {p.name.split(".")[0]: (p.resolve(), labels[p.name.split(".")[0]].resolve())
            for p in sorted((train / "images").iterdir())}


def link_cases(folder: Path, cases: dict[str, tuple[Path, Path]], ids: list[str], labels: bool) -> Path:
    """images/ (+ labels/) symlinks of `ids` in a fresh folder."""
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "images").mkdir(parents=True)
    for case in ids:
        image, label = cases[case]
        (folder / "images" / image.name).symlink_to(image)
        if labels:
            (folder / "labels").mkdir(exist_ok=True)
            (folder / "labels" / f"{case}{''.join(label.suffixes)}").symlink_to(label)
    return folder


def choose(strategy: str, run: Path, unlabelled: Path, remaining: list[str], k: int, rng: np.random.Generator,
           work: Path) -> list[str]:
    """The k cases `strategy` labels next."""
    from medseg.inference import Predictor, read_input_case
    from medseg.inference.suggest import suggest
    from medseg.io.layout import prediction_inputs

    if strategy == "random":
        return [remaining[i] for i in rng.permutation(len(remaining))[:k]]
    predictor = Predictor(run, device="cpu")
    if strategy == "suggest":
        _, ranked = suggest(predictor, unlabelled, work / "suggestions.csv", n=None, overwrite=True)
        return [s.case for s in ranked[:k]]
    with_fg, without = [], []
    for item in prediction_inputs(unlabelled, predictor.in_channels):
        mask = predictor.segment(read_input_case(item, predictor.in_channels))
        (with_fg if (mask > 0).any() else without).append(item.case_id)
    order = [with_fg[i] for i in rng.permutation(len(with_fg))] + [without[i] for i in rng.permutation(len(without))]
    return order[:k]


def train_and_score(name: str, split, labelled: Path, out: Path, steps: int, seed: int) -> tuple[float, Path]:
    """Train from scratch for `steps` on the labelled folder; (held-out Dice, run)."""
    import medseg

    from benchmarks.datasets import score

    shutil.rmtree(out, ignore_errors=True)
    run = medseg.train(labelled, out / "run", epochs=1, iterations_per_epoch=steps, plan=False, finish=False,
                       val_fraction=0, seed=seed, device="cpu", **TRAIN[name])
    medseg.predict(run, split.test_images, out / "pred", overlays=False)
    dice = score(split, out / "pred")["dice"]
    return round(float(np.mean(list(dice.values()))), 5), run


def simulate(name: str, args: argparse.Namespace, base: Path) -> dict:
    from benchmarks.datasets import make_split

    shutil.rmtree(base, ignore_errors=True)  # a fresh split (--work may hold an old one)
    split = make_split(name, args.data, base / "split", test_limit=args.test_limit)
    cases = training_cases(split)
    ids = sorted(cases)
    curves = {s: [] for s in STRATEGIES}
    seconds = {s: [] for s in STRATEGIES}
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        pool = [ids[i] for i in rng.permutation(len(ids))[:args.initial + args.candidates]]
        start_ids = pool[:args.initial]
        work = base / f"seed{seed}"
        first, first_run = train_and_score(name, split, link_cases(work / "start", cases, start_ids, True),
                                           work / "start_run", args.steps, seed)
        print(f"   {name} seed {seed}: {len(start_ids)} labelled, Dice {first:.3f}", flush=True)
        for strategy in STRATEGIES:
            labelled, run, dice = list(start_ids), first_run, [first]
            pick_rng = np.random.default_rng(1000 + seed)
            for r in range(args.rounds):
                remaining = [c for c in pool if c not in labelled]
                unlabelled = link_cases(work / strategy / f"unlabelled{r}", cases, remaining, False)
                t = time.perf_counter()
                labelled += choose(strategy, run, unlabelled, remaining, args.k, pick_rng, work / strategy)
                seconds[strategy].append(time.perf_counter() - t)
                folder = link_cases(work / strategy / f"labelled{r}", cases, labelled, True)
                d, run = train_and_score(name, split, folder, work / strategy / f"round{r}", args.steps, seed)
                dice.append(d)
                print(f"   {name} seed {seed} {strategy}: {len(labelled)} labelled, Dice {d:.3f}", flush=True)
            curves[strategy].append(dice)
    labelled_counts = [args.initial + r * args.k for r in range(args.rounds + 1)]
    row = {"set": name, "labelled": labelled_counts, "test_cases": len(split.references),
           "dice_per_seed": curves, "choose_seconds_median": {s: round(float(np.median(v)), 2) if v else None
                                                                for s, v in seconds.items()}}
    row["dice_mean"] = {s: [round(float(np.mean([c[i] for c in v])), 4) for i in range(len(labelled_counts))]
                        for s, v in curves.items()}
    row["dice_std"] = {s: [round(float(np.std([c[i] for c in v])), 4) for i in range(len(labelled_counts))]
                       for s, v in curves.items()}
    return row


def plot(row: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=110)
    for s in STRATEGIES:
        mean, std = np.array(row["dice_mean"][s]), np.array(row["dice_std"][s])
        ax.errorbar(row["labelled"], mean, yerr=std, marker="o", capsize=3, label=s)
    ax.set_xlabel("labelled cases")
    ax.set_ylabel("held-out Dice (mean of classes)")
    ax.set_title(f"{row['set']}: {len(next(iter(row['dice_per_seed'].values())))} seeds, mean ± sd")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def run(args: argparse.Namespace) -> tuple[dict, dict]:
    sets = args.sets.split(",")
    if args.quick:
        args.seeds, args.rounds, args.steps, args.candidates, args.test_limit = 1, 1, 2, 4, 2
        args.initial, args.k = min(args.initial, 3), min(args.k, 2)
    base = args.work or Path(tempfile.mkdtemp(prefix="medseg-bench-labelling-"))
    rows = {}
    try:
        for name in sets:
            print(f"== labelling {name}", flush=True)
            row = simulate(name, args, base / name)
            figure = (Path(tempfile.gettempdir()) if args.quick else RESULTS) / f"labelling_{name}.png"
            row["figure"] = plot(row, figure).name
            row.update(steps=args.steps, seeds=args.seeds, k=args.k, initial=args.initial, rounds=args.rounds,
                       candidates=args.candidates, test_limit=args.test_limit, train=dict(TRAIN[name]))
            rows[name] = row
    finally:
        if args.work is None:
            shutil.rmtree(base, ignore_errors=True)
    settings = {"sets": sets, "strategies": list(STRATEGIES), "seeds": args.seeds, "initial": args.initial,
                "k": args.k, "rounds": args.rounds, "steps_per_training": args.steps,
                "candidates": args.candidates, "test_limit": args.test_limit,
                "training": "from scratch every round, fixed steps, val_fraction 0, plan off, finish off (no "
                            "calibration: suggest ranks by uncalibrated entropy)"}
    return settings, {"rows": rows}


def table(env: dict) -> list[str]:
    lines = ["| set | labelled | " + " | ".join(STRATEGIES) + " | setting | command |",
             "|---|---|" + "---:|" * len(STRATEGIES) + "---|---|"]
    for name, row in env["results"]["rows"].items():
        # per row: rows merged from earlier runs keep their own limit (older rows: the envelope's)
        test_limit = row.get("test_limit", (env.get("settings") or {}).get("test_limit"))
        cmd = (f"`python -m benchmarks run labelling --sets {name} --seeds {row['seeds']} --rounds {row['rounds']} "
               f"--k {row['k']} --initial {row['initial']} --steps {row['steps']} --candidates {row['candidates']} "
               f"--test-limit {test_limit}`")
        for i, n in enumerate(row["labelled"]):
            cells = " | ".join(f"{fmt(row['dice_mean'][s][i])} ± {fmt(row['dice_std'][s][i])}" for s in STRATEGIES)
            setting = (f"{row['seeds']} seeds, {row['steps']} steps from scratch per round, {row['candidates']} "
                       f"candidates, {row['test_cases']} held-out") if i == 0 else ""
            lines.append(f"| {name} | {n} | {cells} | {setting} | {cmd if i == 0 else ''} |")
    figures = [row.get("figure") for row in env["results"]["rows"].values() if row.get("figure")]
    lines += [""] + [f"![labelling curve](benchmarks/results/{f})" for f in figures]
    lines.append("- Held-out Dice: mean over foreground classes and cases, `benchmarks/datasets.py` (numpy). Goal "
                 "(issue): suggest above both baselines at equal labelled count.")
    return lines
