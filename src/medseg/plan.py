"""Fingerprint -> plan: every setting a user would otherwise guess, decided from the data and a
compute budget, each with a one-line reason.

The rules (also in the README, "How the plan decides"):

* **Dimensions**: the files' own (2D pictures train in 2D, volumes in 3D).
* **Target spacing** (3D): the median voxel size. For strongly anisotropic data (largest / smallest
  median spacing > 3) the coarse axis takes the 10th percentile of its spacings instead, so thin-
  slice cases are not blurred to the thick-slice majority. On a CPU with a time budget, when the
  median image would be more than `LOWRES_RATIO` patches in size, the spacing is coarsened until it
  is not, as long as the median structure of the smallest class keeps at least
  `MIN_STRUCTURE_VOXELS` voxels (large organs get context, small targets keep their detail).
* **Pooling and kernels per axis** (nnU-Net's rule): at each level an axis is halved when its
  current spacing is at most twice the finest one and its feature map stays >= `MIN_FEATURE_SIZE`;
  kernels are 3 along axes within twice the finest spacing and 1 along coarser ones.
* **Patch**: the median (cropped, resampled) shape, rounded up to the pooling's multiple, capped per
  axis; then shrunk along its largest axis until one training step fits the budget: on a CPU the
  estimated step time must leave at least `MIN_STEPS` steps in the minutes given, on a GPU the
  estimated training memory must fit `memory_gb`.
* **Width**: 16 channels at full resolution on a CPU (measured: wider nets buy less Dice per
  minute here), 32 on a GPU; doubling per level, capped at 256 / 320.
* **Batch**: 2 volumes in 3D (nnU-Net's choice; larger batches cost time a CPU does not have); in
  2D about 256k pixels per batch on a CPU (2-8 images, measured fastest here), 12 on a GPU.
* **Normalisation per modality**: CT channels clip to the foreground's 0.5-99.5 percentiles and use
  the dataset's foreground mean and std; everything else is z-scored per case.
* **Loss**: Dice + cross-entropy.
* **Schedule**: the minutes given (CPU default 20), or 1000 epochs of 250 steps on a GPU without
  minutes (nnU-Net's schedule).

Cost estimates come from the network's FLOPs per patch (counted on PyTorch's meta device, so no
memory is touched) and a measured training throughput of this class of machine.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data.fingerprint import Fingerprint, compute_fingerprint
from .errors import MedsegInputError

PLAN_FORMAT = "medseg-plan-1"
# Effective training arithmetic (forward + backward) per CPU thread. Measured on the 2-core
# development machine: the hippocampus U-Net (9.6 GFLOP forward per 40x56x40 patch) trains
# ~3 patches/s, i.e. ~87 GFLOP/s over 2 threads; the 2D U-Net at 256x256 ~73 GFLOP/s.
CPU_TRAIN_GFLOPS_PER_THREAD = 40.0
CUDA_TRAIN_GFLOPS = 20000.0       # a conservative figure for mixed-precision 3D U-Net training
TRAIN_FLOPS_FACTOR = 3.0          # backward costs about twice the forward pass
STEP_OVERHEAD_S = 0.05            # optimiser, data hand-over, Python per step
MIN_STEPS = 1000                  # fewer steps than this and a CPU run does not converge usefully
DEFAULT_CPU_MINUTES = 20.0
GPU_EPOCHS, GPU_ITERATIONS = 1000, 250
LOWRES_RATIO = 8.0                # median image at most this many patches (CPU with a budget)
MIN_STRUCTURE_VOXELS = 1000       # coarsening stops before the smallest class's median structure falls below this
ANISOTROPY_THRESHOLD = 3.0
MIN_FEATURE_SIZE = {2: 8, 3: 4}   # smallest feature map side at the bottom of the U
MAX_POOLINGS = {"cpu": {2: 4, 3: 4}, "cuda": {2: 6, 3: 5}}
MAX_PATCH = {"cpu": {2: 256, 3: 128}, "cuda": {2: 512, 3: 192}}
MIN_PATCH_SIDE = {2: 64, 3: 16}
MIN_BASE_WIDTH = 8
BASE_WIDTH = {"cpu": 16, "cuda": 32}
MAX_WIDTH = {"cpu": 256, "cuda": 320}
NATIVE_MAX_SIDE = 512             # 2D images up to this size keep their grid
AUTO_IMAGE_SIZE = 112             # larger 2D images are resized to this longer side (BENCHMARKS.md, Kvasir: 0.821 vs 0.810 at 128)
DATASET_MEMORY_SHARE = 0.5        # resampled cases are kept in RAM: at most this share of the memory budget
ACTIVATIONS_PER_LEVEL = 15        # stored activation tensors per level and feature in a training step (estimate)

# Documentation of every plan key; unknown keys in an edited plan are refused with this list.
PLAN_KEYS: dict[str, str] = {
    "spatial_dims": "2 or 3: whether the network convolves in 2D or 3D",
    "target_spacing": "3D: voxel size (mm, array axis order) every case is resampled to; null keeps each case's grid",
    "image_size": "2D: longer side of the working grid in pixels; null keeps the native size",
    "crop_nonzero": "crop each case to the box of its non-background voxels (corner value, else 0) before resampling",
    "patch_size": "training patch and sliding window, in voxels per axis",
    "batch_size": "patches per training step",
    "model": "network name (see `medseg models`)",
    "features": "channels per level of the U-Net, full resolution first (base width = first entry)",
    "strides": "per downsampling, its factor per axis (1 = that axis is not pooled at that level)",
    "kernels": "per level, the convolution size per axis",
    "poolings_per_axis": "how many times each axis is halved (derived from strides; informative)",
    "normalization": "per input channel: {scheme: zscore} or {scheme: ct, lower, upper, mean, std}",
    "loss": "training loss (see README, Losses)",
    "deep_supervision": "U-Net / ResU-Net: also train on the logits of every coarser decoder level",
    "minutes": "wall-clock training budget in minutes (null: use epochs)",
    "epochs": "number of epochs when there is no minutes budget",
    "iterations_per_epoch": "training steps between validations and checkpoints",
}
TRAIN_KEYS = ("target_spacing", "image_size", "crop_nonzero", "patch_size", "batch_size", "model", "features",
              "strides", "kernels", "normalization", "loss", "deep_supervision", "minutes", "epochs",
              "iterations_per_epoch")


@dataclass
class Budget:
    """What the user can spend: device kind, memory (GB) and wall-clock minutes."""

    device: str = "cpu"
    memory_gb: float | None = None
    minutes: float | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"budget device must be cpu or cuda, got {self.device!r}")
        if self.memory_gb is None:
            self.memory_gb = default_memory_gb(self.device)
        if self.threads is None:
            self.threads = torch.get_num_threads()
        if self.minutes is not None and self.minutes <= 0:
            raise ValueError(f"minutes must be positive, got {self.minutes}")

    def train_gflops(self) -> float:
        return CUDA_TRAIN_GFLOPS if self.device == "cuda" else CPU_TRAIN_GFLOPS_PER_THREAD * self.threads


def default_memory_gb(device: str) -> float:
    """Half the machine's RAM on a CPU; the GPU's memory (8 GB when no GPU is visible) on CUDA."""
    if device == "cuda":
        if torch.cuda.is_available():
            return torch.cuda.get_device_properties(0).total_memory / 2**30
        return 8.0
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 / 2
    except (ValueError, OSError, AttributeError):
        return 8.0


# ------------------------------------------------------------------------------ architecture
def pooling_plan(patch: list[float], spacing: list[float], max_poolings: int, min_feature: int
                 ) -> tuple[list[list[int]], list[list[int]]]:
    """Strides per downsampling and kernels per level for a patch at a spacing (nnU-Net's rule)."""
    dims = len(patch)
    size, sp = [float(p) for p in patch], [float(s) for s in spacing]
    strides, kernels = [], []
    for _ in range(max_poolings + 1):
        finest = min(sp)
        kernels.append([3 if s <= 2 * finest else 1 for s in sp])
        if len(strides) == max_poolings:
            break
        pool = [1 if (s > 2 * finest or n / 2 < min_feature) else 2 for s, n in zip(sp, size)]
        if all(p == 1 for p in pool):
            break
        strides.append(pool)
        size = [n / p for n, p in zip(size, pool)]
        sp = [s * p for s, p in zip(sp, pool)]
    if all(k == 1 for k in kernels[0]) or not kernels:
        kernels[0] = [3] * dims
    return strides, kernels


def divisors(strides: list[list[int]], dims: int) -> list[int]:
    return [int(np.prod([s[a] for s in strides])) if strides else 1 for a in range(dims)]


def features_for(levels: int, device: str, base: int | None = None) -> list[int]:
    base = base or BASE_WIDTH[device]
    return [min(base * 2**i, MAX_WIDTH[device]) for i in range(levels)]


def model_options(model: str, features: list[int], strides: list[list[int]], kernels: list[list[int]],
                  patch: list[int]) -> dict:
    """The planned settings a model takes (`medseg.nets.select_options` drops the rest)."""
    from .nets import select_options

    return select_options(model, features=tuple(features), strides=strides, kernels=kernels, img_size=list(patch))


def network_for_patch(patch: list[float], spacing: list[float], device: str, dims: int, model: str = "unet",
                      base: int | None = None) -> tuple[list[int], list[int], list[list[int]], list[list[int]]]:
    """Patch rounded to its network's multiple, and that network (features, strides, kernels).
    Models other than the U-Net pool their own way: the patch is also a multiple of theirs."""
    strides, kernels = pooling_plan(patch, spacing, MAX_POOLINGS[device][dims], MIN_FEATURE_SIZE[dims])
    features = features_for(len(strides) + 1, device, base)
    div = divisors(strides, dims)
    if model != "unet":
        from .nets import axis_divisors, model_divisor

        options = model_options(model, features, strides, kernels, [int(p) for p in patch])
        options.pop("img_size", None)
        own = axis_divisors(model_divisor(model, dims, **options), dims)
        div = [math.lcm(a, b) for a, b in zip(div, own)]
    rounded = [int(max(d, math.ceil(p / d) * d)) for p, d in zip(patch, div)]
    return rounded, features, strides, kernels


def forward_gflops(in_channels: int, num_classes: int, patch: list[int], features: list[int],
                   strides: list[list[int]], kernels: list[list[int]], model: str = "unet") -> float:
    """Forward-pass GFLOPs of one patch, counted on the meta device (no memory, no compute)."""
    from torch.utils.flop_counter import FlopCounterMode

    from .nets import build_on_meta

    net = build_on_meta(model, in_channels, num_classes, len(patch),
                        **model_options(model, features, strides, kernels, patch))
    x = torch.zeros((1, in_channels, *patch), device="meta")
    counter = FlopCounterMode(display=False)
    with counter:
        net(x)
    return counter.get_total_flops() / 1e9


def parameter_count(in_channels: int, num_classes: int, dims: int, features: list[int],
                    strides: list[list[int]], kernels: list[list[int]], model: str = "unet",
                    patch: list[int] | None = None) -> int:
    from .nets import build_on_meta

    net = build_on_meta(model, in_channels, num_classes, dims,
                        **model_options(model, features, strides, kernels, patch or [64] * dims))
    return sum(p.numel() for p in net.parameters())


def training_memory_gb(patch: list[int], batch: int, features: list[int], strides: list[list[int]],
                       parameters: int) -> float:
    """Rough peak memory of a training step: stored activations per level plus weights,
    gradients and Adam's two moments (fp32)."""
    voxels, total = float(np.prod(patch)), 0.0
    for level, width in enumerate(features):
        total += voxels * width
        if level < len(strides):
            voxels /= float(np.prod(strides[level]))
    return (batch * total * ACTIVATIONS_PER_LEVEL * 4 + parameters * 16) / 2**30


# ------------------------------------------------------------------------------ the plan
def _round_list(values, digits: int = 4) -> list:
    return [round(float(v), digits) for v in values]


def _target_spacing(fp: Fingerprint) -> tuple[list[float], str]:
    spacing = list(fp.median_spacing())
    if fp.anisotropy() > ANISOTROPY_THRESHOLD:
        axis = int(np.argmax(spacing))
        p10 = float(np.percentile(fp.spacings()[:, axis], 10))
        spacing[axis] = p10
        return spacing, (f"median voxel size, but the coarse axis {axis} takes its 10th percentile ({p10:.3g} mm): "
                         f"anisotropy {fp.anisotropy():.1f} > {ANISOTROPY_THRESHOLD:g}")
    return spacing, f"median voxel size of the {len(fp.cases)} cases"


def dataset_memory_gb(fp: Fingerprint, spacing: list[float]) -> float:
    """RAM the resampled, cropped cases take while training (float32 channels + uint8 label)."""
    shapes = fp.shapes(cropped=True) * fp.spacings() / np.asarray(spacing, dtype=float)
    return float(np.prod(shapes, axis=1).sum() * (4 * len(fp.channel_names) + 1) / 2**30)


def _step_seconds(gflops_forward: float, batch: int, budget: Budget) -> float:
    return batch * gflops_forward * TRAIN_FLOPS_FACTOR / budget.train_gflops() + STEP_OVERHEAD_S


def _fit_patch(start: list[float], spacing: list[float], fp: Fingerprint, batch_for, budget: Budget,
               model: str = "unet") -> tuple[list[int], list[int], list[list[int]], list[list[int]], int, dict]:
    """Shrink the network until a step fits the budget: the U-Net shrinks its patch along the
    largest physical axis (its width was measured best at 16 here); other models first halve
    their widths (down to MIN_BASE_WIDTH), keeping the patch's context, then shrink the patch."""
    dims = len(start)
    cap = MAX_PATCH[budget.device][dims]
    patch = [min(float(cap), max(float(s), 1.0)) for s in start]
    in_ch, k = len(fp.channel_names), fp.num_classes
    minutes = budget.minutes
    base = BASE_WIDTH[budget.device]
    takes_widths = "features" in model_options(model, [base], [], [], [16] * dims)
    while True:
        rounded, features, strides, kernels = network_for_patch(patch, spacing, budget.device, dims, model, base)
        batch = batch_for(rounded)
        gflops = forward_gflops(in_ch, k, rounded, features, strides, kernels, model)
        params = parameter_count(in_ch, k, dims, features, strides, kernels, model, rounded)
        step = _step_seconds(gflops, batch, budget)
        memory = training_memory_gb(rounded, batch, features, strides, params)
        steps = (minutes * 60 * 0.9 / step) if minutes else None
        too_slow = budget.device == "cpu" and steps is not None and steps < MIN_STEPS
        too_big = memory > budget.memory_gb
        shrinkable = [a for a in range(dims) if patch[a] > MIN_PATCH_SIDE[dims]]
        narrowable = base > MIN_BASE_WIDTH and takes_widths
        if not (too_slow or too_big) or not (shrinkable or narrowable):
            estimate = {"forward_gflops_per_patch": round(gflops, 2), "parameters": params,
                        "step_seconds": round(step, 3), "steps_in_budget": int(steps) if steps else None,
                        "memory_gb": round(memory, 2)}
            if dims == 3:
                estimate["dataset_memory_gb"] = round(dataset_memory_gb(fp, spacing), 2)
            return rounded, features, strides, kernels, batch, estimate
        if narrowable and (model != "unet" or not shrinkable):
            base //= 2
            continue
        physical = [patch[a] * spacing[a] for a in shrinkable]
        axis = shrinkable[int(np.argmax(physical))]
        patch[axis] = max(float(MIN_PATCH_SIDE[dims]), patch[axis] * 0.85)


def _lowres_spacing(fp: Fingerprint, spacing: list[float], patch_voxels: float) -> tuple[list[float], float]:
    """Coarser spacing for images many patches large (CPU budget), limited by small structures."""
    image_voxels = float(np.prod(fp.median_shape(cropped=True, spacing=tuple(spacing))))
    ratio = image_voxels / max(patch_voxels, 1.0)
    if ratio <= LOWRES_RATIO:
        return spacing, 1.0
    needed = (ratio / LOWRES_RATIO) ** (1 / 3)
    stats = [c for c in fp.class_summary() if c["median_component_voxels"] > 0]
    # the smallest class's median structure, in voxels at the planned (not original) spacing
    scale = float(np.prod(np.asarray(fp.median_spacing()) / np.asarray(spacing)))
    smallest = min((c["median_component_voxels"] * scale for c in stats), default=0.0)
    allowed = (smallest / MIN_STRUCTURE_VOXELS) ** (1 / 3) if smallest > 0 else 1.0
    factor = float(min(needed, max(1.0, allowed)))
    if factor <= 1.05:
        return spacing, 1.0
    return [s * factor for s in spacing], factor


def make_plan(fp: Fingerprint, budget: Budget, model: str = "unet", image_size: int | str | None = "auto") -> dict:
    """The plan for a fingerprinted dataset under a budget (for `model`): settings plus one
    reason each. `image_size` (2D): "auto" follows the rule; a user's choice (pixels, or None for
    the native grid) is planned for, so the patch and network fit that working grid."""
    dims = fp.spatial_dims
    reasons: dict[str, str] = {}
    plan: dict = {"format": PLAN_FORMAT, "dataset": fp.dataset, "spatial_dims": dims}
    reasons["spatial_dims"] = f"the files are {dims}D"
    if budget.device == "cpu" and budget.minutes is None:
        budget = Budget(budget.device, budget.memory_gb, DEFAULT_CPU_MINUTES, budget.threads)
    plan["budget"] = {"device": budget.device, "memory_gb": round(float(budget.memory_gb), 1),
                      "minutes": budget.minutes, "threads": budget.threads,
                      "train_gflops": round(budget.train_gflops(), 1)}

    if dims == 3:
        spacing, why = _target_spacing(fp)
        held = dataset_memory_gb(fp, spacing)
        if held > DATASET_MEMORY_SHARE * budget.memory_gb:
            factor = (held / (DATASET_MEMORY_SHARE * budget.memory_gb)) ** (1 / 3)
            spacing = [s * factor for s in spacing]
            why += (f"; coarsened x{factor:.2f} so the resampled cases ({held:.1f} GB at full resolution) fit in "
                    f"{DATASET_MEMORY_SHARE:.0%} of the {budget.memory_gb:.0f} GB memory budget")
        plan["crop_nonzero"] = True
        reasons["crop_nonzero"] = (f"the box of non-background voxels holds {fp.crop_fraction():.0%} of a median case; "
                                   "cropping costs nothing and skips empty space")
        plan["image_size"] = None
        start = list(fp.median_shape(cropped=True, spacing=tuple(spacing)))
        batch_for = lambda patch: 2  # noqa: E731
        fitted = _fit_patch(start, spacing, fp, batch_for, budget, model)
        factor = 1.0
        if budget.device == "cpu" and budget.minutes is not None:
            coarse, factor = _lowres_spacing(fp, spacing, float(np.prod(fitted[0])))
            if factor > 1.0:
                spacing = coarse
                start = list(fp.median_shape(cropped=True, spacing=tuple(spacing)))
                fitted = _fit_patch(start, spacing, fp, batch_for, budget, model)
                why += (f"; coarsened x{factor:.2f} so the median image is at most {LOWRES_RATIO:g} patches "
                        f"(a {budget.minutes:g}-minute CPU budget cannot afford its full resolution)")
        plan["target_spacing"] = _round_list(spacing, 5)
        reasons["target_spacing"] = why
        reasons["image_size"] = "3D cases are resampled by spacing instead"
    else:
        spacing = [1.0, 1.0]
        longest = max(max(c.shape) for c in fp.cases)
        chosen = image_size
        if isinstance(chosen, str) and chosen == "native":
            chosen = None
        if isinstance(chosen, str) and chosen == "auto":
            image_size = None if longest <= NATIVE_MAX_SIDE else AUTO_IMAGE_SIZE
            reasons["image_size"] = (f"the largest image side is {longest} px <= {NATIVE_MAX_SIDE}: native grid"
                                     if image_size is None else
                                     f"images up to {longest} px are resized to a longer side of {AUTO_IMAGE_SIZE} px "
                                     "(measured best Dice per CPU minute on Kvasir, BENCHMARKS.md)")
        else:
            image_size = None if chosen is None else int(chosen)
            if image_size is not None and image_size < MIN_PATCH_SIDE[2]:
                raise ValueError(f"image_size {image_size} is below the smallest 2D patch side {MIN_PATCH_SIDE[2]}")
            reasons["image_size"] = "set by the user; the patch and network are planned for it"
        plan["image_size"] = image_size
        plan["target_spacing"] = None
        reasons["target_spacing"] = "2D pictures have no physical spacing to resample to"
        plan["crop_nonzero"] = False
        reasons["crop_nonzero"] = "2D pictures fill their frame"
        shapes = fp.shapes(cropped=False)
        if image_size is not None:
            shapes = shapes * (image_size / shapes.max(axis=1, keepdims=True)).clip(max=1.0)
        start = list(np.median(shapes, axis=0))
        if budget.device == "cpu":
            batch_for = lambda patch: int(max(2, min(8, 2**18 // int(np.prod(patch)))))  # noqa: E731
        else:
            batch_for = lambda patch: 12  # noqa: E731
        fitted = _fit_patch(start, spacing, fp, batch_for, budget, model)

    patch, features, strides, kernels, batch, estimate = fitted
    plan["patch_size"] = patch
    reasons["patch_size"] = (f"median working shape {[round(s) for s in start]} rounded up to a multiple of "
                             f"{divisors(strides, dims)}, at most {MAX_PATCH[budget.device][dims]} per axis"
                             + (f"; {estimate['step_seconds']:.2f} s/step leaves ~{estimate['steps_in_budget']} steps "
                                f"in the budget (at least {MIN_STEPS} wanted; larger patches are shrunk)"
                                if estimate["steps_in_budget"] else ""))
    plan["batch_size"] = batch
    reasons["batch_size"] = ("2 volumes per step: larger 3D batches cost time without better Dice" if dims == 3 else
                             "about 256k pixels per step (measured fastest on a CPU)" if budget.device == "cpu"
                             else "12 images per step on a GPU")
    plan["model"] = model
    reasons["model"] = ("U-Net with instance norm and strided convolutions: the field's reliable baseline"
                        if model == "unet" else "chosen by the user; patch and widths are sized for it")
    plan["features"] = features
    narrowed = features[0] < BASE_WIDTH[budget.device]
    reasons["features"] = (f"base width {features[0]} ({budget.device}"
                           + (f", narrowed from {BASE_WIDTH[budget.device]} so a {model} step fits the budget"
                              if narrowed else "")
                           + f"), doubling per level up to {MAX_WIDTH[budget.device]}: "
                           f"{estimate['parameters'] / 1e6:.1f} M parameters")
    plan["strides"] = strides
    plan["kernels"] = kernels
    per_axis = [sum(1 for s in strides if s[a] > 1) for a in range(dims)]
    plan["poolings_per_axis"] = per_axis
    reasons["strides"] = (f"{len(strides)} downsamplings: an axis is halved while its spacing is within 2x the "
                          f"finest and its feature map stays >= {MIN_FEATURE_SIZE[dims]}; per axis {per_axis}")
    reasons["kernels"] = ("3 along axes within 2x the finest spacing, 1 along coarser ones"
                          if any(1 in k for k in kernels) else "3 along every axis (near-isotropic grid)")

    plan["normalization"] = []
    for c, name in enumerate(fp.channel_names):
        stats = fp.intensity[c] if c < len(fp.intensity) else {}
        if (name or "").upper() == "CT":
            plan["normalization"].append({"scheme": "ct", "lower": stats["percentile_00_5"],
                                          "upper": stats["percentile_99_5"], "mean": stats["mean"],
                                          "std": stats["std"]})
        else:
            plan["normalization"].append({"scheme": "zscore"})
    schemes = [f"{n}: {s['scheme']}" for n, s in zip(fp.channel_names, plan["normalization"])]
    reasons["normalization"] = ("; ".join(schemes) + " (CT: clip to the foreground's 0.5-99.5 percentiles, "
                                "dataset mean/std; others: per-case z-score)")
    small = [c for c in fp.class_summary() if c["median_fraction"] < 0.01]
    plan["loss"] = "dice+ce"
    reasons["loss"] = ("Dice for class imbalance plus cross-entropy for stable gradients"
                       + (f"; {len(small)} class(es) under 1% of a case's voxels, where Dice alone is unstable"
                          if small else ""))
    from .nets import select_options

    supervisable = "deep_supervision" in select_options(model, deep_supervision=True)
    plan["deep_supervision"] = bool(supervisable and dims == 2)
    reasons["deep_supervision"] = (
        "2D: losses at every decoder scale learned faster (Kvasir-SEG, 7 CPU minutes: polyp Dice 0.725 vs "
        "0.669 without; BENCHMARKS.md)" if plan["deep_supervision"] else
        f"{model} has no decoder heads to supervise" if not supervisable else
        "3D: not measured here yet; the measured 3D results were trained without it")
    if budget.minutes is not None:
        plan["minutes"], plan["epochs"] = float(budget.minutes), None
        plan["iterations_per_epoch"] = 100
        reasons["minutes"] = (f"the budget: {budget.minutes:g} min, about {estimate['steps_in_budget']} steps at "
                              f"{estimate['step_seconds']:.2f} s/step (estimate)")
    else:
        plan["minutes"], plan["epochs"], plan["iterations_per_epoch"] = None, GPU_EPOCHS, GPU_ITERATIONS
        reasons["minutes"] = f"no time budget on a GPU: {GPU_EPOCHS} epochs of {GPU_ITERATIONS} steps (nnU-Net's schedule)"
    reasons["epochs"] = reasons["minutes"]
    reasons["iterations_per_epoch"] = "steps between validations and checkpoints"
    plan["estimate"] = estimate
    plan["reasons"] = reasons
    plan["fingerprint"] = fp.summary()
    return plan


# ------------------------------------------------------------------------------ files and overrides
def plan_dataset(data: str | os.PathLike, budget: Budget | None = None, *, model: str = "unet",
                 workers: int = 2, progress: bool = True) -> dict:
    """Fingerprint DATA and plan it (the `medseg plan` entry point, without writing anything)."""
    fp, _, _ = compute_fingerprint(data, workers=workers, progress=progress)
    return make_plan(fp, budget or Budget(), model=model)


def format_plan(plan: dict) -> str:
    """The plan as the lines `medseg plan` prints: key = value, then why."""
    fp = plan.get("fingerprint", {})
    lines = [f"plan for {plan.get('dataset')}: {fp.get('cases')} cases, {len(fp.get('channels', []))} channel(s) "
             f"{fp.get('channels')}, classes {fp.get('classes')}",
             f"  median shape {fp.get('median_shape')}, spacing {fp.get('median_spacing')} mm, "
             f"anisotropy {fp.get('anisotropy')}; fingerprint took {fp.get('seconds')} s",
             f"  budget: {plan['budget']}"]
    for key in ("spatial_dims", "target_spacing", "image_size", "crop_nonzero", "patch_size", "batch_size",
                "model", "features", "strides", "kernels", "normalization", "loss", "deep_supervision", "minutes",
                "epochs"):
        value = plan.get(key)
        if key == "epochs" and value is None:
            continue
        if key == "minutes" and value is None:
            continue
        text = json.dumps(value) if not isinstance(value, (int, float, str)) or isinstance(value, bool) else str(value)
        if len(text) > 70:
            text = text[:67] + "..."
        lines.append(f"{key:>16} = {text}")
        lines.append(f"{'':>16}   {plan['reasons'].get(key, '')}")
    est = plan.get("estimate", {})
    lines.append(f"estimate: {est.get('forward_gflops_per_patch')} GFLOP per patch forward, "
                 f"{est.get('step_seconds')} s/step, memory ~{est.get('memory_gb')} GB")
    return "\n".join(lines)


def write_plan(plan: dict, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a plan as JSON; an existing file (perhaps edited by hand) is never silently replaced."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: a plan is already there (perhaps edited); use --force to replace it "
                              "or choose another --out")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(plan, indent=2))
    os.replace(tmp, path)
    return path


def read_plan(path: str | os.PathLike) -> dict:
    """Read a plan JSON, refusing unknown settings and malformed values with the file named."""
    path = Path(path)
    try:
        plan = json.loads(path.read_text())
    except FileNotFoundError:
        raise MedsegInputError(path, "plan file not found") from None
    except json.JSONDecodeError as e:
        raise MedsegInputError(path, f"is not valid JSON: {e}") from e
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
        raise MedsegInputError(path, f"is not a medseg plan (expected \"format\": \"{PLAN_FORMAT}\")")
    check_plan(plan, path)
    return plan


def check_plan(plan: dict, source: str | os.PathLike = "plan") -> None:
    """Types and shapes of the plan's settings; raises MedsegInputError naming the key."""
    known = set(PLAN_KEYS) | {"format", "dataset", "budget", "estimate", "reasons", "fingerprint"}
    unknown = sorted(set(plan) - known)
    if unknown:
        raise MedsegInputError(source, f"unknown plan key(s) {unknown}; known: {sorted(PLAN_KEYS)}")
    dims = plan.get("spatial_dims")
    if dims not in (2, 3):
        raise MedsegInputError(source, f"spatial_dims must be 2 or 3, got {dims!r}")
    patch = plan.get("patch_size")
    if not (isinstance(patch, list) and len(patch) == dims and all(isinstance(p, int) and p > 0 for p in patch)):
        raise MedsegInputError(source, f"patch_size must be {dims} positive integers, got {patch!r}")
    strides = plan.get("strides") or []
    if any(len(s) != dims for s in strides):
        raise MedsegInputError(source, f"strides must hold {dims} factors per level, got {strides!r}")
    div = divisors(strides, dims)
    if plan.get("model", "unet") == "unet" and any(p % d for p, d in zip(patch, div)):
        raise MedsegInputError(source, f"patch_size {patch} must be a multiple of {div} (the product of the strides)")
    if plan.get("features") is not None and len(plan["features"]) != len(strides) + 1:
        raise MedsegInputError(source, f"features needs {len(strides) + 1} entries (one per level), "
                               f"got {plan['features']}")
    if plan.get("batch_size") is not None and (not isinstance(plan["batch_size"], int) or plan["batch_size"] < 1):
        raise MedsegInputError(source, f"batch_size must be a positive integer, got {plan['batch_size']!r}")


def apply_overrides(plan: dict, overrides: dict) -> dict:
    """A copy of the plan with settings replaced (`--set key=value` or explicit train options).

    Changing the patch keeps the pooling consistent: strides, kernels and features are derived
    again for the new patch unless they are overridden too.
    """
    plan = json.loads(json.dumps(plan))
    unknown = sorted(set(overrides) - set(PLAN_KEYS))
    if unknown:
        raise ValueError(f"unknown plan key(s) {unknown}; known: {sorted(PLAN_KEYS)}")
    for key, value in overrides.items():
        plan[key] = list(value) if isinstance(value, tuple) else value
        plan.setdefault("reasons", {})[key] = "set by the user"
    if "patch_size" in overrides and "strides" not in overrides and plan.get("model", "unet") == "unet":
        dims = plan["spatial_dims"]
        spacing = plan.get("target_spacing") or [1.0] * dims
        device = (plan.get("budget") or {}).get("device", "cpu")
        strides, kernels = pooling_plan(plan["patch_size"], spacing, MAX_POOLINGS[device][dims], MIN_FEATURE_SIZE[dims])
        div = divisors(strides, dims)
        if any(p % d for p, d in zip(plan["patch_size"], div)):
            # keep the user's patch: pool less rather than change it
            while strides and any(p % d for p, d in zip(plan["patch_size"], divisors(strides, dims))):
                strides.pop()
                kernels.pop()
        plan["strides"], plan["kernels"] = strides, kernels
        plan["poolings_per_axis"] = [sum(1 for s in strides if s[a] > 1) for a in range(dims)]
        if "features" not in overrides:
            plan["features"] = features_for(len(strides) + 1, device)
    if "features" in overrides and "strides" not in overrides and len(plan["features"]) != len(plan.get("strides", [])) + 1:
        dims = plan["spatial_dims"]
        levels = len(plan["features"]) - 1
        strides = list(plan.get("strides", []))[:levels]
        while len(strides) < levels:
            strides.append([2] * dims)
        plan["strides"] = strides
        plan["kernels"] = (list(plan.get("kernels", [])) + [[3] * dims] * (levels + 1))[: levels + 1]
    if "minutes" in overrides and overrides["minutes"] is not None:
        plan["epochs"] = None
    if "epochs" in overrides and overrides["epochs"] is not None:
        plan["minutes"] = None
    check_plan(plan)
    return plan


def train_settings(plan: dict) -> dict:
    """The plan's settings as `TrainConfig` fields."""
    out = {key: plan.get(key) for key in TRAIN_KEYS}
    for key in ("patch_size", "features", "target_spacing"):
        if out.get(key) is not None:
            out[key] = tuple(out[key])
    if out.get("target_spacing") is None:
        out["target_spacing"] = None
    out["deep_supervision"] = bool(out.get("deep_supervision"))  # plans written before the key: off
    return out


__all__ = ["Budget", "PLAN_KEYS", "apply_overrides", "check_plan", "format_plan", "make_plan",
           "plan_dataset", "read_plan", "train_settings", "write_plan"]
