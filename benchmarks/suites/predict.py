"""Whole-volume prediction: medseg's Predictor against MONAI's and nnU-Net's sliding windows.

One process, one trained network object (a run given with `--run`, or one trained here for
`--train-minutes` on the set's training part), the held-out volumes of the set read once:

  medseg        `Predictor.segment(case)`: crop to the box of non-background voxels, z-score inside
                it, sliding window (`windows_per_call` windows per call, Gaussian sigma = patch/8),
                restore onto the file's grid, argmax. Postprocessing off.
  MONAI         the whole volume on the working grid, z-scored with medseg's statistics (the values
                the network trained on), `sliding_window_inference` (same patch, overlap, Gaussian,
                windows per call), softmax, back onto the file's grid, argmax.
  medseg whole  medseg's `sliding_window` over that same whole volume: the kernel without the crop.
  nnU-Net       nnU-Net v2's sliding window over the whole volume, where nnunetv2 is installed.

Timed: an in-memory case (files decoded, untimed) to the mask on the file's grid; the peers'
order rotated from repeat to repeat and case to case. Also: windows each ran (a forward hook),
Dice per class against the reference (numpy), and each class's mean Dice minus medseg's, on the
whole mask and with the peer's mask cut to medseg's crop box (outside it medseg predicts
background by construction).
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.harness import fmt, rotated

TITLE = "Whole-volume prediction against MONAI and nnU-Net"
COMMAND = "python -m benchmarks run predict --dataset brats --train-minutes 30"
TRAIN_MINUTES = {"brats": 30.0, "hippocampus": 10.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=("brats", "hippocampus"), default=None,
                        help="held-out volumes to predict (default brats; --quick: hippocampus)")
    parser.add_argument("--run", type=Path, help="a trained medseg run (default: train one here)")
    parser.add_argument("--train-minutes", type=float, help="budget of the run trained here (brats 30, hippocampus 10)")
    parser.add_argument("--train-option", action="append", default=[], metavar="KEY=VALUE",
                        help="medseg.train option of that run, e.g. --train-option 'patch_size=[24,32,24]'")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--cases", type=int, default=0, help="only the first N held-out cases (0: all)")
    parser.add_argument("--no-whole", action="store_true", help="leave out medseg's kernel on the whole volume")
    parser.add_argument("--row", help="row name (default: the dataset)")


def box_statistics(predictor, case) -> list:
    """Per channel, the (mean, std) medseg z-scores with inside its crop box (None: CT channel)."""
    from medseg.data.preprocess import _zscore_stats

    pre = predictor.members[0].pre
    schemes = pre.normalization or [{"scheme": "zscore"}] * case.channels
    boxed = pre.resample(case, with_label=False).image
    return [None if (schemes[c] if c < len(schemes) else {}).get("scheme") == "ct"
            else tuple(t[0] for t in _zscore_stats(boxed[c:c + 1])) for c in range(boxed.shape[0])]


def whole_volume(predictor, case, stats: list, infer):
    """Whole volume on the working grid, z-scored with medseg's crop-box statistics (computed
    beforehand, untimed), `infer`, back onto the file's grid, argmax."""
    import torch

    from medseg.data.preprocess import Preprocessor
    from medseg.inference import argmax_mask

    pre = predictor.members[0].pre
    whole = Preprocessor.from_dict({**pre.to_dict(), "crop_nonzero": False})
    image = whole.resample(case, with_label=False).image
    out = torch.empty(image.shape, dtype=torch.float32)
    for c, ms in enumerate(stats):
        if ms is None:   # CT: dataset statistics, the same whatever the crop
            out[c:c + 1] = Preprocessor(normalization=[pre.normalization[c]]).normalise(image[c:c + 1])
        else:
            torch.sub(image[c].float(), ms[0], out=out[c])
            out[c].div_(ms[1] + 1e-6)
    del image
    return argmax_mask(whole.restore(infer(out), case.spatial_shape, None))


def run(args: argparse.Namespace) -> tuple[dict, dict]:
    import medseg
    import numpy as np
    import torch

    from benchmarks.datasets import CLASSES, dice, make_split, read_mask
    from benchmarks.peers import WindowCounter, monai_inferer, nnunet_available, nnunet_inferer
    from benchmarks.suites.accuracy import parse_options
    from medseg.inference import Predictor, read_input_case, sliding_window
    from medseg.io.layout import prediction_inputs

    dataset = args.dataset or ("hippocampus" if args.quick else "brats")
    work = Path(tempfile.mkdtemp(prefix="medseg-bench-predict-"))
    try:
        split = make_split(dataset, args.data, work / "split", **({"train_limit": 16, "test_limit": 3} if args.quick else {}))
        run_dir = args.run
        if run_dir is None:
            budget = {"epochs": 1, "iterations_per_epoch": 3} if args.quick else \
                {"minutes": args.train_minutes or TRAIN_MINUTES[dataset]}
            run_dir = medseg.train(split.train, work / "run", device="cpu", **budget, **parse_options(args.train_option))
        predictor = Predictor(run_dir, device="cpu", overlap=args.overlap, postprocess=False)
        member = predictor.members[0]
        model, patch, k = member.model, tuple(member.patch_size), predictor.num_classes
        items = prediction_inputs(split.test_images, predictor.in_channels, predictor.dataset.channel_names)
        items = items[: args.cases] if args.cases else items
        cases = {it.case_id: read_input_case(it, predictor.in_channels) for it in items}
        # nibabel indexes (x, y, z), medseg's cases (z, y, x): the same voxels, axes reversed
        labels = {cid: np.ascontiguousarray(read_mask(dataset, split.references[cid], True).T) for cid in cases}
        stats = {cid: box_statistics(predictor, case) for cid, case in cases.items()}
        inferers = {"monai": monai_inferer(model, patch, args.overlap, predictor.batch_size)}
        if not args.no_whole:
            inferers["medseg_whole"] = lambda x: sliding_window(model, x, patch, overlap=args.overlap,
                                                                divisor=member.divisor, batch_size=predictor.batch_size)
        if nnunet_available():
            inferers["nnunet"] = nnunet_inferer(model, patch, args.overlap, k,
                                                predictor.dataset.channel_names or ["image"])
        peers = {"medseg": lambda cid: predictor.segment(cases[cid])}
        for name, infer in inferers.items():
            peers[name] = lambda cid, infer=infer: whole_volume(predictor, cases[cid], stats[cid], infer)
        with torch.inference_mode():  # first calls pick kernels and allocate: no peer pays for it
            model(torch.zeros(predictor.batch_size, predictor.in_channels, *patch))
        counter = WindowCounter(model)
        rows = {}
        for index, (cid, case) in enumerate(cases.items()):
            inside = np.zeros(case.spatial_shape, bool)
            inside[member.pre.box(case)] = True
            times, windows, masks = {p: [] for p in peers}, {}, {}
            for rep in range(args.repeats):
                for name in rotated(list(peers), rep + index):
                    counter.windows = 0
                    start = time.perf_counter()
                    mask = peers[name](cid)
                    times[name].append(time.perf_counter() - start)
                    windows[name] = counter.windows
                    masks.setdefault(name, mask)
                    print(f"  {cid} {name:<13}{times[name][-1]:8.2f} s  {counter.windows} windows", flush=True)
            rows[cid] = {"crop_fraction": round(float(inside.mean()), 4)}
            for name in peers:
                m = masks[name]
                rows[cid][name] = {
                    "median_s": round(statistics.median(times[name]), 3), "seconds": [round(t, 3) for t in times[name]],
                    "windows": windows[name],
                    "dice": {c: round(dice(m == v, labels[cid] == v), 5) for c, v in CLASSES[dataset].items()},
                    "dice_inside_box": {c: round(dice(np.where(inside, m, 0) == v, labels[cid] == v), 5)
                                        for c, v in CLASSES[dataset].items()},
                    "voxels_differing_from_medseg": int((m != masks["medseg"]).sum()),
                    "foreground_outside_box": int(((m > 0) & ~inside).sum())}
        settings = {"dataset": dataset, "run": "given (--run)" if args.run else "trained here",
                    "train_option": args.train_option, "overlap": args.overlap, "repeats": args.repeats,
                    "patch": list(patch), "windows_per_call": predictor.batch_size, "peers": list(peers),
                    "nnunet": "installed" if nnunet_available() else "not installed: column left out"}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    key = args.row or dataset
    return settings, {"rows": {key: {"dataset": dataset, "summary": summarise(rows, list(peers)), "cases": rows,
                                     "settings": settings, "train_minutes": None if args.run else
                                     (args.train_minutes or TRAIN_MINUTES[dataset])}}}


def summarise(cases: dict, peers: list[str]) -> dict:
    """Totals over cases: seconds, windows, speed-ups, mean Dice per class and its difference to medseg's."""
    import numpy as np

    rows = list(cases.values())
    classes = list(rows[0]["medseg"]["dice"])
    total = {p: round(sum(r[p]["median_s"] for r in rows), 2) for p in peers}
    mean = {p: {c: round(float(np.mean([r[p]["dice"][c] for r in rows])), 5) for c in classes} for p in peers}
    box = {p: {c: float(np.mean([r[p]["dice_inside_box"][c] for r in rows])) for c in classes} for p in peers}
    return {"seconds": total, "windows": {p: sum(r[p]["windows"] for r in rows) for p in peers},
            "speedup": {p: round(total[p] / total["medseg"], 3) for p in peers}, "mean_dice": mean,
            "largest_mean_dice_difference": {p: round(max(abs(mean[p][c] - mean["medseg"][c]) for c in classes), 5)
                                             for p in peers},
            "largest_mean_dice_difference_inside_box": {
                p: round(max(abs(box[p][c] - mean["medseg"][c]) for c in classes), 5) for p in peers}}


def table(env: dict) -> list[str]:
    lines = ["| row | volumes | medseg | MONAI | medseg whole volume | nnU-Net | windows medseg / MONAI | "
             "MONAI / medseg | nnU-Net / medseg | medseg mean Dice | largest mean-Dice gap inside the box "
             "(MONAI / nnU-Net) | measured | command |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|---|---|---|---|"]
    for key, row in env["results"]["rows"].items():
        s = row["summary"]
        sec, sp, gap = s["seconds"], s["speedup"], s["largest_mean_dice_difference_inside_box"]
        dice = ", ".join(f"{c} {v:.3f}" for c, v in s["mean_dice"]["medseg"].items())
        measured = (row.get("measured") or {}).get("date", env["date"])
        lines.append(
            f"| {key} | {len(row['cases'])} | **{sec['medseg']:.1f} s** | {fmt(sec.get('monai'), 1, ' s')} | "
            f"{fmt(sec.get('medseg_whole'), 1, ' s')} | {fmt(sec.get('nnunet'), 1, ' s')} | "
            f"{s['windows']['medseg']} / {s['windows'].get('monai', '–')} | **{fmt(sp.get('monai'), 2, '×')}** | "
            f"**{fmt(sp.get('nnunet'), 2, '×')}** | {dice} | {fmt(gap.get('monai'), 4)} / {fmt(gap.get('nnunet'), 4)} "
            f"| {measured} | `{command_for(key, row)}` |")
    lines += ["", "Ratios are the peer's seconds over medseg's (> 1: medseg faster); the gap is the largest "
              "difference of a class's mean Dice, the peer's mask cut to medseg's crop box. nnU-Net's column is "
              "empty where nnunetv2 was not installed."]
    return lines


def command_for(key: str, row: dict) -> str:
    s = row.get("settings") or {}
    parts = [f"python -m benchmarks run predict --dataset {row['dataset']}"]
    if row.get("train_minutes"):
        parts.append(f"--train-minutes {row['train_minutes']:g}")
    parts += [f"--train-option '{o}'" for o in s.get("train_option", [])]
    if s.get("repeats", 1) != 1:
        parts.append(f"--repeats {s['repeats']}")
    if key != row["dataset"]:
        parts.append(f"--row {key}")
    return " ".join(parts)
