"""Whole-volume 3D prediction: medseg's sliding window vs MONAI's and nnU-Net v2's, same weights.

Issue 6 asks whether medseg predicts a whole volume at least 2x faster than
`monai.inferers.sliding_window_inference` and than nnU-Net v2's `nnUNetPredictor` at the same
overlap and test-time-augmentation setting, with Dice equal within 0.002. This script puts the
three in one process, on the same preprocessed tensor and the same network object (the run's
trained U-Net, loaded once), alternating their order every repeat, and reports per case:

* time, scope "normalised (C, *working) tensor in -> (K, *working) class probabilities out":
  medseg `medseg.inference.sliding_window` called exactly as `medseg.predict.Predictor` calls it
  (its defaults: window batch 4, Gaussian weights, channels-last input);
  MONAI `sliding_window_inference(roi = the run's patch, overlap, mode="gaussian",
  sw_batch_size=4)` then softmax; nnU-Net `predict_sliding_window_return_logits`
  (tile_step_size = 1 - overlap, use_gaussian=True) then softmax. Median of `--repeats`.
* Dice per foreground class of each one's argmax (resized back to the file's grid exactly as
  medseg does it, untimed) against the reference label; the largest |Dice difference| to medseg.
* the FLOPs of the windows each one runs (FlopCounterMode on one window x windows x mirror
  passes; medseg skips windows of pure background), the GFLOP/s each reaches and its fraction
  of the fp32 3D conv peak measured in the same run by benchmarks/conv_peak.py's
  `measure_conv_peak(3)` (the stored benchmarks/results/conv_peak.json is recorded beside it).
* medseg end to end, files in -> mask files out (`medseg.predict`, no overlays), once.

Mirroring TTA (`--tta-cases N`, on the first N cases): all three average the same flips,
`--tta-axes all` (8 passes in 3D, nnU-Net's default) or `trained` (medseg's `--mirror`: the
axes the run was trained to flip). MONAI has no built-in mirroring; its predictor is wrapped to
average the flipped logits as nnU-Net does.

The peers are not medseg dependencies: run this from a separate venv that has them
(BENCHMARKS.md, "Whole-volume prediction against MONAI and nnU-Net"):

    python3 -m venv /work/scratch/s4/nnunet-venv
    /work/scratch/s4/nnunet-venv/bin/pip install torch==2.13.0 nnunetv2 monai
    /work/scratch/s4/nnunet-venv/bin/pip install -e .
    flock /work/scratch/cpu.lock nice -n 19 /work/scratch/s4/nnunet-venv/bin/python \\
        benchmarks/predict_speed.py --run /work/scratch/brats_run --data /work/scratch/brats \\
        --repeats 3 --tta-cases 1 --tta-axes all

Writes benchmarks/results/predict_speed.json (`--out` to change) and prints a ratio table.
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import medseg
from medseg.inference import count_windows, sliding_window
from medseg.io.layout import prediction_inputs
from medseg.io.volume import read_volume_mask
from medseg.metrics import confusion, dice_from_confusion
from medseg.predict import Predictor, read_input_case

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results"

Infer = Callable[[torch.Tensor], torch.Tensor]   # (C, *spatial) normalised -> (K, *spatial) probs


# ----------------------------------------------------------------------------- the three inferers
def medseg_inferer(predictor: Predictor, overlap: float, mirror_axes: Sequence[int]) -> Infer:
    """medseg's sliding window with the arguments `Predictor.probabilities` passes."""
    member = predictor.members[0]
    options = medseg_window_options(predictor)

    def run(image: torch.Tensor) -> torch.Tensor:
        return sliding_window(member.model, image, member.patch_size, overlap=overlap,
                              mirror_axes=tuple(mirror_axes), divisor=member.divisor,
                              device=predictor.device, autocast_dtype=member.autocast, **options)
    return run


def medseg_window_options(predictor: Predictor) -> dict:
    """The Predictor's own sliding-window settings (window batch, skipping of empty windows),
    where this version of medseg has them; float32 probabilities out, like the peers."""
    options = {}
    for name in ("batch_size", "skip_empty"):
        if hasattr(predictor, name):
            options[name] = getattr(predictor, name)
    return options


def empty_windows(image: torch.Tensor, patch: Sequence[int], overlap: float) -> int:
    """Windows medseg skips as pure background (0 where this medseg has no such option)."""
    try:
        from medseg.inference import empty_value, is_empty, window_starts
    except ImportError:
        return 0
    if all(s <= p for s, p in zip(image.shape[1:], patch)):
        return 0
    background = empty_value(image)
    starts = itertools.product(*[window_starts(s, p, overlap) for s, p in zip(image.shape[1:], patch)])
    return sum(is_empty(image[(slice(None),) + tuple(slice(a, a + p) for a, p in zip(st, patch))], background)
               for st in starts)


class MirroredLogits(nn.Module):
    """Averages a network's logits over flips of the given spatial axes (MONAI has no mirroring
    TTA of its own; this is the nnU-Net recipe, so the two peers do the same arithmetic)."""

    def __init__(self, network: nn.Module, axes: Sequence[int]):
        super().__init__()
        self.network = network
        self.flips = [c for r in range(len(axes) + 1) for c in itertools.combinations([a + 2 for a in axes], r)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self.network(x)
        for dims in self.flips[1:]:
            total = total + self.network(x.flip(dims)).flip(dims)
        return total / len(self.flips)


def monai_inferer(model: nn.Module, patch: Sequence[int], overlap: float, mirror_axes: Sequence[int],
                  sw_batch_size: int) -> Infer:
    from monai.inferers import sliding_window_inference

    network = MirroredLogits(model, mirror_axes) if mirror_axes else model

    @torch.inference_mode()
    def run(image: torch.Tensor) -> torch.Tensor:
        logits = sliding_window_inference(image[None], roi_size=tuple(patch), sw_batch_size=sw_batch_size,
                                          predictor=network, overlap=overlap, mode="gaussian",
                                          sigma_scale=0.125, progress=False)
        return torch.softmax(logits[0].float(), dim=0)
    return run


def nnunet_predictor(model: nn.Module, patch: Sequence[int], overlap: float, mirror_axes: Sequence[int],
                     num_classes: int, channel_names: Sequence[str]):
    """An nnUNetPredictor around the given network object: the minimal plans/configuration its
    sliding window reads (patch size, label set), no trained-model folder."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = {
        "dataset_name": "medseg_benchmark", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0] * len(patch),
        "original_median_shape_after_transp": [int(p) for p in patch],
        "image_reader_writer": "SimpleITKIO", "transpose_forward": list(range(len(patch))),
        "transpose_backward": list(range(len(patch))),
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": [int(p) for p in patch], "spacing": [1.0] * len(patch),
            "median_image_size_in_voxels": [int(p) for p in patch],
            "normalization_schemes": ["ZScoreNormalization"] * len(channel_names),
            "use_mask_for_norm": [False] * len(channel_names),
            "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                   "force_separate_z": None},
            "architecture": {"network_class_name": "medseg.nets.unet.UNet", "arch_kwargs": {},
                             "_kw_requires_import": []},
            "batch_dice": False}},
        "experiment_planner_used": "none", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {},
    }
    dataset_json = {"channel_names": {str(i): n for i, n in enumerate(channel_names)},
                    "labels": {"background": 0, **{f"class{k}": k for k in range(1, num_classes)}},
                    "numTraining": 0, "file_ending": ".nii.gz"}
    plans_manager = PlansManager(plans)
    predictor = nnUNetPredictor(tile_step_size=1 - overlap, use_gaussian=True, use_mirroring=bool(mirror_axes),
                                perform_everything_on_device=False, device=torch.device("cpu"),
                                verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    predictor.manual_initialization(model, plans_manager, plans_manager.get_configuration("3d_fullres"),
                                    None, dataset_json, "medseg", tuple(mirror_axes) if mirror_axes else None)
    return predictor


def nnunet_inferer(predictor) -> Infer:
    def run(image: torch.Tensor) -> torch.Tensor:
        logits = predictor.predict_sliding_window_return_logits(image)
        return torch.softmax(logits.float(), dim=0)
    return run


# ----------------------------------------------------------------------------- measurements
def window_flops(model: nn.Module, channels: int, patch: Sequence[int]) -> int:
    """FLOPs of one network pass over one window (2 per multiply-add, as FlopCounterMode counts)."""
    x = torch.randn(1, channels, *patch).contiguous(memory_format=torch.channels_last_3d)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def dice_per_class(pred: np.ndarray, ref: np.ndarray, num_classes: int) -> list[float]:
    return [float(d) for d in dice_from_confusion(confusion(pred, ref, num_classes))[1:]]


def conv_peak(measure: bool) -> tuple[float, str, dict]:
    """fp32 3D conv peak in GFLOP/s, where it came from, and the stored figures for reference.

    Measured in this process by default (`conv_peak.measure_conv_peak(3)`), so the peak and the
    prediction times see the same machine load; the stored benchmarks/results/conv_peak.json
    (3D fp32 and overall best) is recorded beside it."""
    stored: dict = {}
    path = RESULTS / "conv_peak.json"
    if path.exists():
        data = json.loads(path.read_text())
        per_3d = (data.get("per_spatial_dims") or {}).get("3d") or {}
        stored = {"file": str(path.relative_to(HERE.parent)), "fp32_best_any": data.get("fp32", {}).get("gflops"),
                  "fp32_3d": max((v for k, v in per_3d.items() if k.startswith("fp32")), default=None),
                  "load_when_measured": (data.get("machine") or {}).get("load_average_1_5_15min")}
    if measure or not stored.get("fp32_3d"):
        from conv_peak import measure_conv_peak
        return float(measure_conv_peak(3, torch.float32)), "measured in this run (conv_peak.measure_conv_peak(3))", stored
    return float(stored["fp32_3d"]), f"{stored['file']} (3D fp32)", stored


def machine() -> dict:
    try:
        from conv_peak import machine_info
        info = machine_info()
    except ImportError:
        info = {}
    versions = {}
    for name in ("torch", "monai", "nnunetv2", "onnxruntime"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return {**info, "versions": versions, "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "load_before": os.getloadavg()}


def timed(fn: Infer, image: torch.Tensor) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = fn(image)
    return time.perf_counter() - start, out


def measure_case(name: str, inferers: dict[str, Infer], image: torch.Tensor, restore: Callable,
                 label: np.ndarray, num_classes: int, repeats: int, flops: dict[str, float],
                 rotation: int = 0) -> dict:
    """Time every inferer `repeats` times (order rotated each repeat, and by `rotation`, so
    with one repeat per case each one still goes first on some case) and score its mask."""
    times: dict[str, list[float]] = {k: [] for k in inferers}
    masks: dict[str, np.ndarray] = {}
    names = list(inferers)
    for rep in range(repeats):
        shift = (rep + rotation) % len(names)
        order = names[shift:] + names[:shift]
        for key in order:
            seconds, probs = timed(inferers[key], image)
            times[key].append(seconds)
            if key not in masks:
                masks[key] = restore(probs).argmax(0).numpy().astype(np.uint8)
            del probs
            print(f"  {name} repeat {rep + 1}/{repeats} {key:<7} {seconds:7.2f} s", flush=True)
    out: dict = {}
    for key in names:
        med = statistics.median(times[key])
        dice = dice_per_class(masks[key], label, num_classes)
        out[key] = {"seconds": [round(t, 3) for t in times[key]], "median_s": round(med, 3),
                    "best_s": round(min(times[key]), 3), "dice": [round(d, 5) for d in dice],
                    "gflops_per_s": round(flops[key] / med / 1e9, 2)}
    for key in names[1:]:
        out[key]["speedup_of_medseg"] = round(out[key]["median_s"] / out["medseg"]["median_s"], 3)
        out[key]["max_abs_dice_difference_to_medseg"] = round(
            max(abs(a - b) for a, b in zip(out[key]["dice"], out["medseg"]["dice"])), 5)
        out[key]["voxels_differing_from_medseg"] = int((masks[key] != masks["medseg"]).sum())
    return out


def end_to_end(run: str, items: list, overlap: float) -> float:
    """Seconds for `medseg.predict` on these cases' files (symlinked into a temporary folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "in"
        inputs.mkdir()
        for f in (f for item in items for f in item.files):
            (inputs / f.name).symlink_to(f.resolve())
        start = time.perf_counter()
        medseg.predict(run, inputs, Path(tmp) / "out", device="cpu", overlap=overlap, overlays=False)
        return time.perf_counter() - start


def write(results: dict, out: str) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(results, indent=2))


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def central_crop(image: torch.Tensor, label: np.ndarray, box: tuple[slice, ...],
                 size: Sequence[int]) -> tuple[torch.Tensor, np.ndarray]:
    """The central `size` voxels of a working-grid image and the matching label voxels
    (needs the working grid to be the crop box itself, as for 1 mm BraTS)."""
    assert tuple(image.shape[1:]) == tuple(b.stop - b.start for b in box), "crop needs an unresampled grid"
    cut = tuple(slice(max(0, (s - c) // 2), max(0, (s - c) // 2) + c) for s, c in zip(image.shape[1:], size))
    return image[(slice(None),) + cut].contiguous(), label[box][cut]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="trained medseg 3D run folder")
    parser.add_argument("--data", required=True, help="nnU-Net-style folder with imagesTs/ and labelsTs/")
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", type=int, default=0, help="use only the first N held-out cases (0: all)")
    parser.add_argument("--tta-cases", type=int, default=1, help="mirroring TTA on the first N cases (0: none)")
    parser.add_argument("--tta-repeats", type=int, default=1)
    parser.add_argument("--tta-axes", choices=("all", "trained"), default="all")
    parser.add_argument("--sw-batch-size", type=int, default=4, help="MONAI's windows per network call")
    parser.add_argument("--end-to-end-cases", type=int, default=1,
                        help="time medseg.predict files-in/files-out on the first N cases (0: skip)")
    parser.add_argument("--stored-peak", action="store_true",
                        help="take the conv peak from results/conv_peak.json instead of measuring it in this run")
    parser.add_argument("--crop", type=_shape, default=None,
                        help="D,H,W: time a central crop instead of the whole volume (smoke tests)")
    parser.add_argument("--tta-crop", type=_shape, default=None,
                        help="D,H,W: run the TTA comparison on a central crop (8 passes per window cost 8x)")
    parser.add_argument("--out", default=str(RESULTS / "predict_speed.json"))
    args = parser.parse_args()

    predictor = Predictor(args.run, device="cpu", overlap=args.overlap, postprocess=False)
    member = predictor.members[0]
    model, patch, K = member.model, tuple(member.patch_size), predictor.num_classes
    trained_axes = tuple((member.state.get("config") or {}).get("augment", {}).get("flip_axes") or (0, 1, 2))
    tta_axes = (0, 1, 2) if args.tta_axes == "all" else trained_axes
    data = Path(args.data)
    items = prediction_inputs(data / "imagesTs", predictor.in_channels, predictor.dataset.channel_names)
    if args.cases:
        items = items[: args.cases]
    flops_window = window_flops(model, predictor.in_channels, patch)
    peak, peak_source, stored_peak = conv_peak(not args.stored_peak)
    print(f"network: {member.state['model_name']}, patch {patch}, {flops_window / 1e9:.2f} GFLOP per window; "
          f"fp32 conv peak {peak:.1f} GFLOP/s ({peak_source})", flush=True)

    settings = {"run": str(Path(args.run).resolve()), "data": str(data.resolve()), "overlap": args.overlap,
                "gaussian": True, "patch": list(patch), "repeats": args.repeats, "tta_axes": list(tta_axes),
                "tta_repeats": args.tta_repeats, "monai_sw_batch_size": args.sw_batch_size,
                "medseg_window_batch": "sliding_window default",
                "timed_scope": "normalised (C,*working) float32 tensor in -> (K,*working) class probabilities out",
                "dice": "argmax of each one's probabilities, resized back to the file grid as medseg does, "
                        "vs the reference label (foreground classes)",
                "flops_per_window": flops_window, "conv_peak_gflops": peak, "conv_peak_source": peak_source,
                "conv_peak_stored": stored_peak}
    results: dict = {"benchmark": "predict_speed", "machine": machine(), "settings": settings, "cases": {},
                     "tta": {}}
    for index, item in enumerate(items):
        case = read_input_case(item, predictor.in_channels)
        resampled = member.pre.resample(case, with_label=False)
        whole = member.pre.normalise(resampled.image)
        label = read_volume_mask(data / "labelsTs" / f"{item.case_id}.nii.gz").astype(np.int64)
        runs = [("plain", (), args.crop)] + ([("tta", tta_axes, args.tta_crop)] if index < args.tta_cases else [])
        for mode, axes, crop in runs:
            image, ref, restore = whole, label, (lambda p, c=case, r=resampled:  # noqa: E731
                                                 member.pre.restore(p, c.spatial_shape, r.box))
            if crop:
                image, ref = central_crop(whole, label, resampled.box, crop)
                restore = lambda p: p  # noqa: E731
            windows = count_windows(tuple(image.shape[1:]), patch, args.overlap)
            skipped = empty_windows(image, patch, args.overlap) if medseg_window_options(predictor).get("skip_empty") \
                else 0
            mirrors = 2 ** len(axes)
            flops = {"medseg": float(flops_window) * (windows - skipped) * mirrors,
                     "monai": float(flops_window) * windows * mirrors, "nnunet": float(flops_window) * windows * mirrors}
            inferers = {"medseg": medseg_inferer(predictor, args.overlap, axes),
                        "monai": monai_inferer(model, patch, args.overlap, axes, args.sw_batch_size),
                        "nnunet": nnunet_inferer(nnunet_predictor(model, patch, args.overlap, axes, K,
                                                                  predictor.dataset.channel_names))}
            print(f"{item.case_id} [{mode}]: grid {tuple(image.shape[1:])}{' (central crop)' if crop else ''}, "
                  f"{windows} windows ({skipped} all-background, skipped by medseg) x {mirrors} mirror pass(es), "
                  f"{flops['monai'] / 1e12:.2f} TFLOP", flush=True)
            row = measure_case(item.case_id, inferers, image, restore, ref, K,
                               args.repeats if mode == "plain" else args.tta_repeats, flops, rotation=index)
            for key in inferers:
                row[key]["fraction_of_conv_peak"] = round(row[key]["gflops_per_s"] / peak, 3)
            row["_case"] = {"grid": list(image.shape[1:]), "central_crop": bool(crop), "windows": windows,
                            "windows_skipped_by_medseg": skipped, "mirror_passes": mirrors,
                            "tflop_all_windows": round(flops["monai"] / 1e12, 3),
                            "tflop_medseg_ran": round(flops["medseg"] / 1e12, 3)}
            results["cases" if mode == "plain" else "tta"][item.case_id] = row

    if args.end_to_end_cases:
        write(results, args.out)  # the comparison is kept even if this last part fails
        chosen = items[: args.end_to_end_cases]
        total = end_to_end(args.run, chosen, args.overlap)
        window = sum(results["cases"][item.case_id]["medseg"]["median_s"] for item in chosen
                     if item.case_id in results["cases"])
        results["medseg_end_to_end"] = {"scope": "medseg.predict: read files, preprocess, sliding window, restore, "
                                                 "argmax, write masks (no overlays); includes loading the checkpoint",
                                        "cases": [item.case_id for item in chosen], "seconds": round(total, 2),
                                        "sliding_window_share": round(window / total, 3)}
    results["machine"]["load_after"] = os.getloadavg()
    results["summary"] = summarise(results)
    write(results, args.out)
    print_table(results)
    print(f"wrote {args.out}")


def summarise(results: dict) -> dict:
    """Totals over cases per setting: time ratios, worst Dice difference, fraction of peak."""
    summary = {}
    for mode in ("cases", "tta"):
        rows = results[mode]
        if not rows:
            continue
        total = {k: sum(r[k]["median_s"] for r in rows.values()) for k in ("medseg", "monai", "nnunet")}
        ran = {k: sum(r["_case"]["tflop_medseg_ran" if k == "medseg" else "tflop_all_windows"] for r in rows.values())
               * 1e12 for k in total}
        peak = results["settings"]["conv_peak_gflops"]
        summary["plain" if mode == "cases" else "tta"] = {
            "seconds": {k: round(v, 2) for k, v in total.items()},
            "medseg_speedup_vs_monai": round(total["monai"] / total["medseg"], 3),
            "medseg_speedup_vs_nnunet": round(total["nnunet"] / total["medseg"], 3),
            "max_abs_dice_difference_vs_monai": max(r["monai"]["max_abs_dice_difference_to_medseg"] for r in rows.values()),
            "max_abs_dice_difference_vs_nnunet": max(r["nnunet"]["max_abs_dice_difference_to_medseg"] for r in rows.values()),
            "fraction_of_conv_peak": {k: round(ran[k] / v / 1e9 / peak, 3) for k, v in total.items()},
            "fraction_basis": "FLOPs of the windows each one ran (medseg skips all-background windows) / time / peak",
        }
    return summary


def print_table(results: dict) -> None:
    print(f"\n{'case':<24}{'setting':<7}{'medseg s':>10}{'MONAI s':>10}{'nnU-Net s':>11}"
          f"{'MONAI/medseg':>14}{'nnU-Net/medseg':>16}{'max|dDice|':>12}{'medseg % peak':>15}")
    for mode in ("cases", "tta"):
        for case_id, r in results[mode].items():
            worst = max(r[k]["max_abs_dice_difference_to_medseg"] for k in ("monai", "nnunet"))
            print(f"{case_id:<24}{'plain' if mode == 'cases' else 'TTA':<7}{r['medseg']['median_s']:>10.2f}"
                  f"{r['monai']['median_s']:>10.2f}{r['nnunet']['median_s']:>11.2f}"
                  f"{r['monai']['speedup_of_medseg']:>13.2f}x{r['nnunet']['speedup_of_medseg']:>15.2f}x"
                  f"{worst:>12.4f}{100 * r['medseg']['fraction_of_conv_peak']:>14.1f}%")
    for mode, s in results["summary"].items():
        print(f"total [{mode}]: medseg {s['seconds']['medseg']} s, MONAI {s['seconds']['monai']} s, "
              f"nnU-Net {s['seconds']['nnunet']} s -> medseg {s['medseg_speedup_vs_monai']}x vs MONAI, "
              f"{s['medseg_speedup_vs_nnunet']}x vs nnU-Net (target >= 2x); max |Dice diff| "
              f"{max(s['max_abs_dice_difference_vs_monai'], s['max_abs_dice_difference_vs_nnunet']):.4f} "
              f"(target <= 0.002); fraction of conv peak {s['fraction_of_conv_peak']}")
    if "medseg_end_to_end" in results:
        e = results["medseg_end_to_end"]
        print(f"medseg end to end (files in -> masks out): {e['seconds']} s for {len(e['cases'])} case(s); "
              f"sliding window {100 * e['sliding_window_share']:.0f} % of it")


if __name__ == "__main__":
    main()
