"""The planning rules: each setting of a plan decided from the fingerprint and the budget, with
the constants behind them (docs/plan.md states each rule and its reason; `medseg.planning.plan`
assembles them into a plan file).

The rules (docs/plan.md states each with its reason):

* **Dimensions**: the files' own (2D pictures train in 2D, volumes in 3D).
* **Working grid** (2D): images up to `NATIVE_MAX_SIDE` keep their grid; larger ones shrink as far
  as their thinnest labelled parts stay `MIN_THIN_VOXELS` wide (the fingerprint's thickness), not
  below `AUTO_IMAGE_SIZE`: thin vessels train at native resolution with patches, large blobs small.
* **Target spacing** (3D): the median voxel size. For strongly anisotropic data (largest / smallest
  median spacing > 3) the coarse axis takes the 10th percentile of its spacings instead, so thin-
  slice cases are not blurred to the thick-slice majority. On a CPU with a time budget, when the
  median image would be more than `LOWRES_RATIO` patches in size, the spacing is coarsened until it
  is not, as long as the median structure of the smallest class keeps at least
  `MIN_STRUCTURE_VOXELS` voxels and the thinnest labelled parts stay `MIN_THIN_VOXELS` wide
  (large organs get context, small and thin targets keep their detail).
* **Pooling and kernels per axis** (nnU-Net's rule): at each level an axis is halved when its
  current spacing is at most twice the finest one and its feature map stays >= `MIN_FEATURE_SIZE`;
  kernels are 3 along axes within twice the finest spacing and 1 along coarser ones.
* **Patch**: the median (cropped, resampled) shape, rounded up to the pooling's multiple, capped per
  axis; then shrunk along its largest axis until one training step fits the budget: the estimated
  step time must leave at least `MIN_STEPS` steps in the minutes given (on a GPU only while its
  fixed step time leaves room for them) and the estimated training memory must fit `memory_gb`.
* **Width**: 16 channels at full resolution on a CPU (wider nets buy less Dice per CPU minute),
  32 on a GPU; doubling per level, capped at 256 / 320.
* **Batch**: on a CPU 2 volumes in 3D (nnU-Net's choice; larger batches cost time a CPU does not
  have) and about 256k pixels in 2D (2-8 images, the most images per second). On a GPU the card's
  rule (`medseg.planning.card.choose_card_batch`): the batch that amortises the fixed per-step time
  over enough arithmetic, within the card's memory, nnU-Net's 5 % of the dataset and the steps the
  time budget must leave.
* **Normalisation per modality**: CT channels clip to the foreground's 0.5-99.5 percentiles and use
  the dataset's foreground mean and std; everything else is z-scored per case.
* **Loss**: Dice + cross-entropy.
* **Schedule**: the minutes given (CPU default 20), or 1000 epochs of 250 steps on a GPU without
  minutes (nnU-Net's schedule).

Cost estimates come from the network's FLOPs per patch (counted on PyTorch's meta device, so no
memory is touched) and a training throughput: measured on CPUs, assumed from the card's datasheet
on GPUs (`medseg.planning.card`). The
measurements behind the rules are in docs/decisions.md.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ..nets import axis_divisors, build_on_meta, model_divisor, select_options
from .card import (CUDA_STEP_OVERHEAD_S, Card, card_record, card_throughput, choose_card_batch,
                   visible_card)
from .fingerprint import Fingerprint

# Effective training arithmetic (forward + backward) per CPU thread, a little under what the
# planned U-Nets reach (docs/decisions.md, "The CPU throughput the plan assumes").
CPU_TRAIN_GFLOPS_PER_THREAD = 40.0
TRAIN_FLOPS_FACTOR = 3.0          # backward costs about twice the forward pass
STEP_OVERHEAD_S = 0.05            # optimiser, data hand-over, Python per step (a CPU; a card: card.py)
MIN_STEPS = 1000                  # fewer steps than this and a run does not converge usefully (measured on a CPU)
TRAIN_SHARE = 0.9                 # share of a time budget spent on training steps
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
AUTO_IMAGE_SIZE = 112             # the coarsest 2D grid for large images of large objects (docs/decisions.md)
MIN_THIN_VOXELS = 4.0             # the thinnest labelled parts keep at least this many voxels across on the working
                                  # grid: an interior voxel and an edge each side survive nearest-neighbour resampling
DATASET_MEMORY_SHARE = 0.5        # resampled cases are kept in RAM: at most this share of the memory budget
ACTIVATIONS_PER_LEVEL = 15        # stored activation tensors per level and feature in a training step (estimate)


@dataclass
class Budget:
    """What the user can spend: device kind, memory (GB) and wall-clock minutes; on CUDA the card
    (the one torch sees unless given: tests plan for made-up cards)."""

    device: str = "cpu"
    memory_gb: float | None = None
    minutes: float | None = None
    threads: int | None = None
    card: Card | None = None

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"budget device must be cpu or cuda, got {self.device!r}")
        if self.device == "cuda" and self.card is None:
            self.card = visible_card()
        if self.memory_gb is None:
            self.memory_gb = self.card.memory_gb if self.card else default_memory_gb(self.device)
        if self.threads is None:
            self.threads = torch.get_num_threads()
        if self.minutes is not None and self.minutes <= 0:
            raise ValueError(f"minutes must be positive, got {self.minutes}")

    def train_gflops(self) -> float:
        if self.device == "cuda":
            return card_throughput(self.card)["train_gflops"]
        return CPU_TRAIN_GFLOPS_PER_THREAD * self.threads

    def step_overhead_s(self) -> float:
        return CUDA_STEP_OVERHEAD_S if self.device == "cuda" else STEP_OVERHEAD_S

    def train_seconds(self) -> float | None:
        return self.minutes * 60 * TRAIN_SHARE if self.minutes else None

    def to_dict(self) -> dict:
        """The budget as a plan records it; on CUDA with the card's figures and what was assumed."""
        out = {"device": self.device, "memory_gb": round(float(self.memory_gb), 1), "minutes": self.minutes,
               "threads": self.threads, "train_gflops": round(self.train_gflops(), 1)}
        if self.device == "cuda":
            out["card"] = card_record(self.card)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Budget":
        return cls(d["device"], d.get("memory_gb"), d.get("minutes"), d.get("threads"), Card.from_dict(d.get("card")))


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
    return select_options(model, features=tuple(features), strides=strides, kernels=kernels, img_size=list(patch))


def network_for_patch(patch: list[float], spacing: list[float], device: str, dims: int, model: str = "unet",
                      base: int | None = None) -> tuple[list[int], list[int], list[list[int]], list[list[int]]]:
    """Patch rounded to its network's multiple, and that network (features, strides, kernels).
    Models other than the U-Net pool their own way: the patch is also a multiple of theirs."""
    strides, kernels = pooling_plan(patch, spacing, MAX_POOLINGS[device][dims], MIN_FEATURE_SIZE[dims])
    features = features_for(len(strides) + 1, device, base)
    div = divisors(strides, dims)
    if model != "unet":
        options = model_options(model, features, strides, kernels, [int(p) for p in patch])
        options.pop("img_size", None)
        own = axis_divisors(model_divisor(model, dims, **options), dims)
        div = [math.lcm(a, b) for a, b in zip(div, own)]
    rounded = [int(max(d, math.ceil(p / d) * d)) for p, d in zip(patch, div)]
    return rounded, features, strides, kernels


def forward_gflops(in_channels: int, num_classes: int, patch: list[int], features: list[int],
                   strides: list[list[int]], kernels: list[list[int]], model: str = "unet") -> float:
    """Forward-pass GFLOPs of one patch, counted on the meta device (no memory, no compute)."""
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


def training_step_gb(patch, batch: int, features, strides=None, parameters: int = 0) -> float:
    """`training_memory_gb` for a run's network (strides: halving every axis per level when not
    given): what a GPU keeps free for the step when it decides where the cases live."""
    dims = len(patch)
    strides = strides if strides is not None else [[2] * dims] * (len(features) - 1)
    return training_memory_gb(list(patch), batch, list(features), [list(s) for s in strides], parameters)


# ------------------------------------------------------------------------------ working grid and batch
def working_image_size(longest_side: int, thin_px: float | None = None) -> int | None:
    """2D: the longer side images are resized to (None: native grid). Images up to
    NATIVE_MAX_SIDE keep their grid. Larger ones shrink as far as their thinnest labelled parts
    allow (`thin_px` wide at native resolution must stay MIN_THIN_VOXELS wide), but not below
    AUTO_IMAGE_SIZE: thin vessels keep the native grid, large polyps train at 112 px (docs/plan.md).
    Without a measured thickness (no fingerprint), large images go to AUTO_IMAGE_SIZE."""
    if longest_side <= NATIVE_MAX_SIDE:
        return None
    if thin_px is None:
        return AUTO_IMAGE_SIZE
    side = max(AUTO_IMAGE_SIZE, math.ceil(longest_side * MIN_THIN_VOXELS / max(thin_px, 1e-6)))
    return None if side >= longest_side else int(side)


def cpu_batch_size(patch: list[int] | tuple[int, ...]) -> int:
    """About 256k pixels per batch on a CPU, 2 to 8 patches: larger batches outgrow the CPU
    caches and train fewer images per second (docs/decisions.md)."""
    return int(max(2, min(8, 2**18 // int(np.prod(patch)))))


# ------------------------------------------------------------------------------ spacing and patch
def round_list(values, digits: int = 4) -> list:
    return [round(float(v), digits) for v in values]


def median_target_spacing(fp: Fingerprint) -> tuple[list[float], str]:
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


def step_seconds(gflops_forward: float, batch: int, budget: Budget) -> float:
    return batch * gflops_forward * TRAIN_FLOPS_FACTOR / budget.train_gflops() + budget.step_overhead_s()


def cost_estimate(in_channels: int, num_classes: int, patch: list[int], features: list[int],
                  strides: list[list[int]], kernels: list[list[int]], batch: int, budget: Budget,
                  model: str = "unet") -> dict:
    """The planner's cost figures for one network (FLOPs, parameters, step time, steps in the
    budget's minutes, memory): what `fit_patch` records, for a network given whole (a plan's
    network after a user's overrides)."""
    gflops = forward_gflops(in_channels, num_classes, patch, features, strides, kernels, model)
    params = parameter_count(in_channels, num_classes, len(patch), features, strides, kernels, model, patch)
    step = step_seconds(gflops, batch, budget)
    steps = (budget.train_seconds() / step) if budget.minutes else None
    return {"forward_gflops_per_patch": round(gflops, 2), "parameters": params, "step_seconds": round(step, 3),
            "steps_in_budget": int(steps) if steps else None,
            "memory_gb": round(training_memory_gb(patch, batch, features, strides, params), 2)}


def fit_patch(start: list[float], spacing: list[float], fp: Fingerprint, batch_for, budget: Budget,
               model: str = "unet") -> tuple[list[int], list[int], list[list[int]], list[list[int]], int, dict]:
    """Shrink the network until a step fits the budget: the U-Net shrinks its patch along the
    largest physical axis (its CPU width, 16, is already the best per minute); other models
    first halve their widths (down to MIN_BASE_WIDTH), keeping the patch's context, then shrink
    the patch (docs/decisions.md, "Other models halve their widths first"). On a card the batch
    comes from the card's rule (`card_batch`) instead of `batch_for`."""
    dims = len(start)
    dataset_voxels = len(fp.cases) * float(np.prod(start))  # nnU-Net's measure: cases x median working shape
    cap = MAX_PATCH[budget.device][dims]
    patch = [min(float(cap), max(float(s), 1.0)) for s in start]
    in_ch, k = len(fp.channel_names), fp.num_classes
    minutes = budget.minutes
    base = BASE_WIDTH[budget.device]
    takes_widths = "features" in model_options(model, [base], [], [], [16] * dims)
    # on a card a smaller patch buys steps only while the fixed step time leaves room for MIN_STEPS
    overhead_leaves_room = bool(minutes) and budget.train_seconds() / MIN_STEPS > budget.step_overhead_s()
    while True:
        rounded, features, strides, kernels = network_for_patch(patch, spacing, budget.device, dims, model, base)
        batch = batch_for(rounded)
        gflops = forward_gflops(in_ch, k, rounded, features, strides, kernels, model)
        params = parameter_count(in_ch, k, dims, features, strides, kernels, model, rounded)
        chosen = card_batch(gflops, rounded, features, strides, params, dataset_voxels, budget) \
            if budget.device == "cuda" else None
        batch = chosen.batch if chosen else batch
        step = step_seconds(gflops, batch, budget)
        memory = training_memory_gb(rounded, batch, features, strides, params)
        steps = (minutes * 60 * 0.9 / step) if minutes else None
        too_slow = steps is not None and steps < MIN_STEPS and (budget.device == "cpu" or overhead_leaves_room)
        too_big = memory > budget.memory_gb
        shrinkable = [a for a in range(dims) if patch[a] > MIN_PATCH_SIDE[dims]]
        narrowable = base > MIN_BASE_WIDTH and takes_widths
        if not (too_slow or too_big) or not (shrinkable or narrowable):
            estimate = {"forward_gflops_per_patch": round(gflops, 2), "parameters": params,
                        "step_seconds": round(step, 3), "steps_in_budget": int(steps) if steps else None,
                        "memory_gb": round(memory, 2)}
            if dims == 3:
                estimate["dataset_memory_gb"] = round(dataset_memory_gb(fp, spacing), 2)
            if chosen:
                estimate["card_batch"] = chosen.to_dict()
            return rounded, features, strides, kernels, batch, estimate
        if narrowable and (model != "unet" or not shrinkable):
            base //= 2
            continue
        physical = [patch[a] * spacing[a] for a in shrinkable]
        axis = shrinkable[int(np.argmax(physical))]
        patch[axis] = max(float(MIN_PATCH_SIDE[dims]), patch[axis] * 0.85)


def card_batch(gflops: float, patch: list[int], features: list[int], strides: list[list[int]], params: int,
               dataset_voxels: float, budget: Budget):
    """`card.choose_card_batch` for one network under a CUDA budget."""
    return choose_card_batch(gflops * TRAIN_FLOPS_FACTOR, budget.train_gflops(),
                             patch_gb=training_memory_gb(patch, 1, features, strides, 0),
                             fixed_gb=training_memory_gb(patch, 0, features, strides, params),
                             memory_gb=float(budget.memory_gb), patch_voxels=float(np.prod(patch)),
                             dataset_voxels=dataset_voxels, train_seconds=budget.train_seconds(),
                             min_steps=MIN_STEPS, overhead_s=budget.step_overhead_s())


def lowres_spacing(fp: Fingerprint, spacing: list[float], patch_voxels: float) -> tuple[list[float], float]:
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
    thin = fp.thinnest_mm()
    if thin is not None:  # the thinnest labelled parts keep MIN_THIN_VOXELS across
        allowed = min(allowed, thin / (MIN_THIN_VOXELS * min(spacing)))
    factor = float(min(needed, max(1.0, allowed)))
    if factor <= 1.05:
        return spacing, 1.0
    return [s * factor for s in spacing], factor
