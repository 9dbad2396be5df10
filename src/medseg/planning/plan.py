"""Fingerprint -> plan: every setting a user would otherwise guess, decided from the data and a
compute budget by the rules of `medseg.planning.rules`, each with a one-line reason; the plan file
(JSON) is read, checked, edited by overrides and turned into training settings here.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..atomic import write_text
from ..errors import MedsegInputError
from ..nets import select_options
from .card import card_batch_reason
from .fingerprint import Fingerprint, compute_fingerprint
from .rules import (AUTO_IMAGE_SIZE, BASE_WIDTH, DATASET_MEMORY_SHARE, DEFAULT_CPU_MINUTES, GPU_EPOCHS, GPU_ITERATIONS, LOWRES_RATIO,
                    MAX_PATCH, MAX_POOLINGS, MAX_WIDTH, MIN_FEATURE_SIZE, MIN_PATCH_SIDE, MIN_STEPS, MIN_THIN_VOXELS,
                    NATIVE_MAX_SIDE, Budget, cost_estimate, cpu_batch_size, dataset_memory_gb, divisors, features_for, fit_patch,
                    lowres_spacing, median_target_spacing, pooling_plan, round_list,
                    working_image_size)

PLAN_FORMAT = "medseg-plan-1"

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
    plan["budget"] = budget.to_dict()

    if dims == 3:
        spacing, why = median_target_spacing(fp)
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
        fitted = fit_patch(start, spacing, fp, batch_for, budget, model)
        factor = 1.0
        if budget.device == "cpu" and budget.minutes is not None:
            coarse, factor = lowres_spacing(fp, spacing, float(np.prod(fitted[0])))
            if factor > 1.0:
                spacing = coarse
                start = list(fp.median_shape(cropped=True, spacing=tuple(spacing)))
                fitted = fit_patch(start, spacing, fp, batch_for, budget, model)
                why += (f"; coarsened x{factor:.2f} so the median image is at most {LOWRES_RATIO:g} patches "
                        f"(a {budget.minutes:g}-minute CPU budget cannot afford its full resolution)")
        plan["target_spacing"] = round_list(spacing, 5)
        reasons["target_spacing"] = why
        reasons["image_size"] = "3D cases are resampled by spacing instead"
    else:
        spacing = [1.0, 1.0]
        longest = max(max(c.shape) for c in fp.cases)
        chosen = image_size
        if isinstance(chosen, str) and chosen == "native":
            chosen = None
        if isinstance(chosen, str) and chosen == "auto":
            thin = fp.thinnest_mm()
            thin_px = None if thin is None else thin / min(fp.median_spacing())
            image_size = working_image_size(longest, thin_px)
            thin_text = "" if thin_px is None else f"the thinnest labelled parts are ~{thin_px:.0f} px across"
            if longest <= NATIVE_MAX_SIDE:
                reasons["image_size"] = f"the largest image side is {longest} px <= {NATIVE_MAX_SIDE}: native grid"
            elif image_size is None:
                reasons["image_size"] = (f"{thin_text}: a smaller grid would leave them under {MIN_THIN_VOXELS:g} px, "
                                         "so images keep their native grid and train in patches")
            else:
                reasons["image_size"] = (f"images up to {longest} px are resized to a longer side of {image_size} px: "
                                         + (f"{thin_text} and keep >= {MIN_THIN_VOXELS:g} px; " if thin_text else "")
                                         + f"{AUTO_IMAGE_SIZE} px is the coarsest grid for large objects "
                                         "(docs/decisions.md)")
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
        batch_for = cpu_batch_size  # on a card the card's rule decides (rules.fit_patch)
        fitted = fit_patch(start, spacing, fp, batch_for, budget, model)

    patch, features, strides, kernels, batch, estimate = fitted
    plan["patch_size"] = patch
    reasons["patch_size"] = (f"median working shape {[round(s) for s in start]} rounded up to a multiple of "
                             f"{divisors(strides, dims)}, at most {MAX_PATCH[budget.device][dims]} per axis"
                             + (f"; {estimate['step_seconds']:.2f} s/step leaves ~{estimate['steps_in_budget']} steps "
                                f"in the budget (at least {MIN_STEPS} wanted; larger patches are shrunk)"
                                if estimate["steps_in_budget"] else ""))
    plan["batch_size"] = batch
    reasons["batch_size"] = (card_batch_reason(estimate["card_batch"], plan["budget"]["card"], MIN_STEPS)
                             if "card_batch" in estimate else
                             "2 volumes per step: larger 3D batches cost time without better Dice" if dims == 3 else
                             "about 256k pixels per step (measured fastest on a CPU)")
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

    supervisable = "deep_supervision" in select_options(model, deep_supervision=True)
    deep_enough = len(plan["features"]) >= 3  # coarser decoder outputs to supervise: 3 levels or more
    plan["deep_supervision"] = bool(supervisable and dims == 2 and deep_enough)
    reasons["deep_supervision"] = (
        "2D: losses at every decoder scale learned faster (Kvasir-SEG, 7 CPU minutes: polyp Dice 0.725 vs "
        "0.669 without; BENCHMARKS.md)" if plan["deep_supervision"] else
        f"{model} has no decoder heads to supervise" if not supervisable else
        f"the images are small: {len(plan['features'])} level(s), too few coarser outputs to supervise"
        if dims == 2 else
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
                 workers: int = 2, progress: bool = True, label_suffix: str | None = None) -> dict:
    """Fingerprint DATA and plan it (the `medseg plan` entry point, without writing anything)."""
    fp, _, _ = compute_fingerprint(data, workers=workers, progress=progress, label_suffix=label_suffix)
    return make_plan(fp, budget or Budget(), model=model)


def format_plan(plan: dict) -> str:
    """The plan as the lines `medseg plan` prints: key = value, then why."""
    fp = plan.get("fingerprint", {})
    lines = [f"plan for {plan.get('dataset')}: {fp.get('cases')} cases, {len(fp.get('channels', []))} channel(s) "
             f"{fp.get('channels')}, classes {fp.get('classes')}",
             f"  median shape {fp.get('median_shape')}, spacing {fp.get('median_spacing')} mm, "
             f"anisotropy {fp.get('anisotropy')}; fingerprint took {fp.get('seconds')} s",
             f"  budget: { {k: v for k, v in plan['budget'].items() if k != 'card'} }"]
    if fp.get("grouping"):
        lines.insert(-1, f"  {fp['grouping']}")
    if plan["budget"].get("card"):
        card = plan["budget"]["card"]
        lines.append(f"  card: {card['assumed']}; {card['step_overhead_s']:g} s fixed a step")
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
    return write_text(path, json.dumps(plan, indent=2))


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
    for given, other in (("minutes", "epochs"), ("epochs", "minutes")):  # one budget: the other one goes
        if overrides.get(given) is not None:
            plan[other] = None
            plan["reasons"][other] = f"none: the user set {given}"
    check_plan(plan)
    if any(key in overrides for key in NETWORK_KEYS):
        _estimate_again(plan)
    return plan


# the settings that change what a training step costs: the estimate is made again when one is overridden
NETWORK_KEYS = ("patch_size", "batch_size", "model", "features", "strides", "kernels")


def _estimate_again(plan: dict) -> None:
    """The estimate for the network that trains, after overrides changed it, so that it agrees
    with the model a run reports (the planned network's figures would not). A plan without the
    dataset's channels and classes (no fingerprint) keeps the old figures, marked as such."""
    fp, budget = plan.get("fingerprint") or {}, plan.get("budget") or {}
    old = dict(plan.get("estimate") or {})
    try:
        new = cost_estimate(len(fp["channels"]), len(fp["classes"]), plan["patch_size"], plan["features"],
                            plan["strides"], plan["kernels"], int(plan["batch_size"]), Budget.from_dict(budget),
                            plan.get("model", "unet"))
    except (KeyError, TypeError, ValueError, RuntimeError):  # no fingerprint, or a network the counter cannot build
        if old:
            old["network"] = "the planned network, before the user's overrides"
        plan["estimate"] = old
        return
    if "dataset_memory_gb" in old:
        new["dataset_memory_gb"] = old["dataset_memory_gb"]
    new["network"] = "the network with the user's overrides"
    plan["estimate"] = new
    note, reason = "; step time and steps for the planned network (the estimate is for this one)", \
        plan["reasons"].get("patch_size", "")
    if "s/step" in reason and not reason.endswith(note):  # the planner's figures, not yet marked
        plan["reasons"]["patch_size"] = reason + note


def expected_steps(plan: dict | None, minutes: float | None) -> int | None:
    """Training steps the plan's estimate expects in `minutes` on the machine it was planned for:
    its steps in the budget, scaled when the run's minutes differ from the budget's. None without
    a time budget or an estimate (epochs runs, runs without a plan)."""
    estimate, budget = (plan or {}).get("estimate") or {}, (plan or {}).get("budget") or {}
    steps, planned = estimate.get("steps_in_budget"), budget.get("minutes")
    if not minutes or not steps:
        return None
    return int(round(steps * minutes / planned)) if planned else int(steps)


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


__all__ = ["Budget", "PLAN_KEYS", "apply_overrides", "check_plan", "expected_steps", "format_plan", "make_plan",
           "plan_dataset", "read_plan", "train_settings", "write_plan"]
