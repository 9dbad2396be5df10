"""Training: data in, a checkpointed model and a learning curve out.

`train()` validates the whole dataset before the first step, splits it by case, keeps the
preprocessed cases in memory, and trains with Adam and a polynomially decaying learning rate.
With `minutes`, the schedule follows the clock instead of an iteration count, so a time-bounded
run still ends with a fully decayed learning rate; the budget includes loading and validation.

A run folder holds what produced it and what it produced:
    run.json                  settings, dataset summary, label mapping, split, timings
    log.csv                   one row per epoch (losses, validation Dice per class, rate)
    learning_curves.png       the same, drawn
    checkpoints/last.pt       after every epoch (resume point)
    checkpoints/best.pt       the epoch with the highest mean foreground validation Dice
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import load_checkpoint, save_checkpoint
from .data.augment import AugmentConfig, left_right_axis
from .data.cache import CaseCache, case_key, default_cache_dir
from .data.preprocess import Preprocessor, ct_statistics
from .data.sampler import PatchSampler, Prefetcher
from . import distributed
from .device import choose_precision, compile_model, has_cpp_compiler, memory_format, resolve_device
from .ema import WeightEMA
from .errors import MedsegInputError
from .evaluate import default_class_names
from .inference import argmax_mask, count_windows, sliding_window
from .io.dataset import CasePair, natural_key, read_case, validate_dataset
from .io.layout import DatasetInfo, describe_dataset
from .io.labels import LabelMapping
from .io.registry import read_image_header
from .losses import DeepSupervisionLoss, make_loss
from .metrics import confusion, dice_from_confusion
from .nets import axis_divisors, build_model, count_parameters, model_divisor, select_options
from .report.curves import plot_learning_curves

# Working-grid defaults for 2D (README: "Resizing and padding policy"), one rule with the plan's.
from .plan import AUTO_IMAGE_SIZE, NATIVE_MAX_SIDE  # noqa: E402
MAX_PATCH_2D = 256
MAX_PATCH_3D = 128
MAX_PATCH_VOXELS_3D = 64 ** 3   # ~1.5 s per patch for a training step of the default 3D U-Net here
FEATURES_2D = (16, 32, 64, 128, 256)   # 4 poolings: 256-pixel patches end at 16x16
FEATURES_3D = (16, 32, 64, 128)        # 3 poolings: 3D patches on a CPU are ~40-128 voxels a side
MAX_VAL_CASES = 50         # validation each epoch uses at most this many cases (fixed subset)


@dataclass
class TrainConfig:
    """Every setting of a run; stored in run.json and in each checkpoint."""

    model: str = "unet"
    features: tuple[int, ...] | None = None       # None: FEATURES_2D or FEATURES_3D
    norm: str = "instance"
    loss: str = "dice+ce"
    epochs: int | None = None
    minutes: float | None = None
    iterations_per_epoch: int = 100
    batch_size: int | None = None                 # None: from the patch size (choose_batch_size)
    patch_size: tuple[int, ...] | None = None     # None: from the data (<= 256 per axis in 2D)
    image_size: int | str | None = "auto"         # 2D: longer side of the working grid; None: native
    target_spacing: tuple[float, ...] | str | None = "auto"  # 3D: voxel size to resample to; auto: median
    crop_nonzero: bool | str = "auto"             # crop to the non-zero region; auto: in 3D
    cache: bool = True                            # keep resampled cases on disk (medseg.data.cache)
    val_fraction: float | None = None             # None: 20 % of cases, at most MAX_VAL_CASES
    lr: float = 2e-3
    weight_decay: float = 1e-5
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    overlap: float = 0.5
    ema: float | None = None                      # decay of a moving average of the weights that validation,
                                                  # checkpoints and prediction use (medseg.ema); None: off
    val_share: float = 0.1                        # validation may take at most this share of the elapsed
                                                  # time (first and last epoch always validate); 1: every epoch
    workers: int = 2
    compile: bool | str = "auto"                  # torch.compile the training step's network (~30 s once);
                                                  # "auto": see `compiles` (BENCHMARKS.md)
    class_names: tuple[str, ...] | None = None    # names for classes 0..K-1 in logs and reports
    deep_supervision: bool = False                # unet/resunet: logits at every decoder scale in training
    loss_options: dict = field(default_factory=dict)  # make_loss options, e.g. {"alpha": 0.3, "beta": 0.7}
    strides: list | None = None                   # unet: per downsampling, factor per axis (plan)
    kernels: list | None = None                   # unet: per level, convolution size per axis (plan)
    normalization: list | None = None             # per channel {"scheme": ...}; None: from the data
    fold: int | None = None                       # cross-validation fold this run trains (splits.json)
    ignore_label: float | None = None             # stored mask value meaning "not annotated" (sparse labels);
                                                  # a dataset.json label named "ignore" sets it too

    def to_dict(self) -> dict:
        d = asdict(self)
        d["features"] = list(self.features) if self.features else None
        d["patch_size"] = list(self.patch_size) if self.patch_size else None
        d["class_names"] = list(self.class_names) if self.class_names else None
        if isinstance(self.target_spacing, tuple):
            d["target_spacing"] = list(self.target_spacing)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        augment = dict(d.get("augment") or {})
        for key in ("scale_range", "flip_axes", "blur_sigma"):
            if isinstance(augment.get(key), list):
                augment[key] = tuple(augment[key])
        d["augment"] = AugmentConfig(**augment)
        if d.get("features"):
            d["features"] = tuple(d["features"])
        if d.get("patch_size"):
            d["patch_size"] = tuple(d["patch_size"])
        if d.get("class_names"):
            d["class_names"] = tuple(d["class_names"])
        if isinstance(d.get("target_spacing"), list):
            d["target_spacing"] = tuple(d["target_spacing"])
        return cls(**d)

    def apply_plan(self, plan: dict) -> None:
        """Take every setting of a plan (`medseg.plan.train_settings`)."""
        from .plan import train_settings

        for key, value in train_settings(plan).items():
            setattr(self, key, value)


def split_cases(pairs: list[CasePair], val_fraction: float | None, seed: int) -> tuple[list[CasePair], list[CasePair]]:
    """Deterministic case-level split; at least one training case.

    `val_fraction=None` holds out 20 % of the cases but at most MAX_VAL_CASES: beyond that,
    validation gets no more reliable while training loses data.
    """
    if val_fraction is not None and not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(len(pairs))
    if val_fraction is None:
        n_val = min(MAX_VAL_CASES, int(round(len(pairs) * 0.2)))
        val_fraction = 0.2
    else:
        n_val = int(round(len(pairs) * val_fraction))
    if val_fraction > 0 and len(pairs) >= 2:
        n_val = max(1, n_val)
    n_val = min(n_val, len(pairs) - 1)
    val = sorted((pairs[i] for i in order[:n_val]), key=lambda p: natural_key(p.case_id))
    train = sorted((pairs[i] for i in order[n_val:]), key=lambda p: natural_key(p.case_id))
    return train, val


def pairs_of_split(pairs: list[CasePair], split: dict, data: Path) -> tuple[list[CasePair], list[CasePair]]:
    """Training and validation cases named by a split ({"train": [...], "val": [...]})."""
    by_id = {p.case_id: p for p in pairs}
    missing = [c for c in list(split.get("train", [])) + list(split.get("val", [])) if c not in by_id]
    if missing:
        raise MedsegInputError(data, f"the split names cases the dataset does not hold: {missing[:10]}")
    overlap = set(split.get("train", [])) & set(split.get("val", []))
    if overlap:
        raise MedsegInputError(data, f"the split has cases in both train and val: {sorted(overlap)[:10]}")
    if not split.get("train"):
        raise MedsegInputError(data, "the split has no training cases")
    return [by_id[c] for c in split["train"]], [by_id[c] for c in split.get("val", [])]


COMPILE_MIN_MINUTES = 5.0  # compiling takes ~30 s: "auto" compiles only budgets where that is < 10 %


def compiles(setting: bool | str, spatial_dims: int, device: torch.device, minutes: float | None) -> bool:
    """Whether training steps run through `torch.compile`.

    ``"auto"`` compiles training on a CPU with a clock budget of at least COMPILE_MIN_MINUTES
    and a C++ compiler on the PATH (inductor needs one): after ~30 s of compilation a step of
    the planned 2D U-Nets is 1.85-1.89x faster (`benchmarks/step_2d.py`) and of the 3D
    hippocampus U-Net 1.59x (`benchmarks/profile_unet.py`; BENCHMARKS.md). GPUs and
    epoch-counted runs (the tests, the demo) stay eager unless asked.
    """
    if setting == "auto":
        return (spatial_dims in (2, 3) and device.type == "cpu" and minutes is not None
                and minutes >= COMPILE_MIN_MINUTES and has_cpp_compiler())
    if isinstance(setting, bool):
        return setting
    raise ValueError(f"compile must be True, False or 'auto', got {setting!r}")


def choose_image_size(pairs: list[CasePair], requested: int | str | None) -> int | None:
    """Resolve `image_size="auto"` from image headers (README: resizing policy)."""
    if requested != "auto":
        return None if requested in (None, 0) else int(requested)
    longest = max(max(read_image_header(p.image)["size"]) for p in pairs)
    return None if longest <= NATIVE_MAX_SIDE else AUTO_IMAGE_SIZE


def choose_patch_size(shapes: list[tuple[int, ...]], divisor: int) -> tuple[int, ...]:
    """Median working shape rounded up to the network's divisor, capped per axis (256 in 2D,
    128 in 3D); in 3D the longest axis then shrinks until the patch holds at most
    MAX_PATCH_VOXELS_3D voxels, so one CPU training step stays around a second or two."""
    median = np.median(np.array(shapes), axis=0)
    cap = MAX_PATCH_2D if len(median) == 2 else MAX_PATCH_3D
    patch = [int(min(cap, math.ceil(m / divisor) * divisor)) for m in median]
    while len(patch) == 3 and int(np.prod(patch)) > MAX_PATCH_VOXELS_3D and max(patch) > divisor:
        patch[int(np.argmax(patch))] -= divisor
    return tuple(patch)


def choose_spacing(pairs: list[CasePair], requested) -> tuple[float, ...] | None:
    """Resolve `target_spacing="auto"`: the median voxel size per axis of the dataset (3D only)."""
    if requested in (None, "native"):
        return None
    if requested != "auto":
        return tuple(float(s) for s in requested)
    spacings = [read_image_header(p.image).get("spacing") for p in pairs]
    if any(s is None for s in spacings):
        return None
    return tuple(float(s) for s in np.median(np.array(spacings, dtype=float), axis=0))


def choose_flip_axes(pairs: list[CasePair], spatial_dims: int) -> tuple[int, ...] | None:
    """Flip augmentation axes: all in 2D (None); in 3D the left-right axis that most training
    scans' direction matrices agree on (all axes when the files carry no direction)."""
    if spatial_dims != 3:
        return None
    votes = Counter()
    for pair in pairs[:50]:
        geometry = read_image_header(pair.image).get("geometry")
        if geometry and len(geometry.get("direction", ())) == 9:
            votes[left_right_axis(geometry["direction"])] += 1
    return (votes.most_common(1)[0][0],) if votes else None


def choose_batch_size(patch_size: tuple[int, ...]) -> int:
    """About 256k pixels per batch, 2 to 8 patches: larger batches outgrow the CPU caches and
    train fewer images per second (measured: 4.0 img/s at batch 4 vs 2.95 at batch 8, 256x256)."""
    return int(max(2, min(8, 2**18 // int(np.prod(patch_size)))))


def load_cases(pairs: list[CasePair], mapping: LabelMapping, pre: Preprocessor, workers: int,
               desc: str, cache: CaseCache | None = None, channels: int | None = None
               ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Read, crop and resample cases (not yet normalised) in parallel threads (decoding releases
    the GIL), from the on-disk cache where an entry for the same files and settings exists."""
    cache = cache or CaseCache(None)

    def one(pair: CasePair) -> tuple[torch.Tensor, torch.Tensor]:
        key = case_key(list(pair.image_files) + [pair.label], pre, mapping.to_dict())
        resampled = cache.load(key)
        if resampled is None:
            resampled = pre.resample(read_case(pair, mapping, channels))
            cache.save(key, resampled)
        return resampled.image, resampled.label

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        loaded = list(tqdm(pool.map(one, pairs), total=len(pairs), desc=desc, unit="case",
                           leave=False, disable=len(pairs) < 20))
    return [x for x, _ in loaded], [y for _, y in loaded]


def _check_run_folder(out: Path, resume: bool) -> None:
    if resume:
        if not (out / "checkpoints" / "last.pt").is_file():
            raise FileNotFoundError(f"{out}: nothing to resume (no checkpoints/last.pt)")
        return
    if out.exists() and any(out.iterdir()):
        what = "a medseg run" if (out / "run.json").exists() else "files"
        raise FileExistsError(f"{out}: folder already holds {what}; use --resume to continue it "
                              "or choose another --out (nothing was overwritten)")


class Trainer:
    """Owns the model, optimiser and loop for one run folder."""

    def __init__(self, data: Path, out: Path, config: TrainConfig, resume: bool = False,
                 plan: dict | None = None, split: dict | None = None):
        self.start = time.perf_counter()
        self.data, self.out, self.config = Path(data), Path(out), config
        self.plan, self.split = plan, split
        _check_run_folder(self.out, resume)
        self.resume_state = load_checkpoint(self.out / "checkpoints" / "last.pt") if resume else None
        if self.resume_state is not None:
            saved = TrainConfig.from_dict(self.resume_state["config"])
            # the budget may be extended on resume; everything else stays as the run began
            saved.epochs, saved.minutes = config.epochs or saved.epochs, config.minutes or saved.minutes
            saved.device = config.device
            self.config = config = saved
        if config.epochs is None and config.minutes is None:
            raise ValueError("give a budget: epochs or minutes")
        torch.manual_seed(config.seed)
        self.device = distributed.init_from_env(resolve_device(config.device))  # cuda:LOCAL_RANK under torchrun
        self._prepare_data()
        self._prepare_model()

    # ----------------------------------------------------------------- data
    def _prepare_data(self) -> None:
        cfg = self.config
        pairs, self.info = describe_dataset(self.data)
        self.mapping = validate_dataset(pairs, self.info.label_mapping(), self.info.channels, ignore=cfg.ignore_label)
        self.ignore_index = self.mapping.ignore_index  # IGNORE_INDEX or None: left out of loss and Dice
        if self.resume_state is not None:
            split = self.resume_state["split"]
            by_id = {p.case_id: p for p in pairs}
            missing = [c for c in split["train"] + split["val"] if c not in by_id]
            if missing:
                raise MedsegInputError(self.data, f"cases of the run being resumed are gone: {missing[:10]}")
            if self.mapping.to_dict() != self.resume_state["label_mapping"]:
                raise MedsegInputError(self.data, f"labels changed since the run began: now {self.mapping.describe()}, "
                                       f"then {LabelMapping.from_dict(self.resume_state['label_mapping']).describe()}")
            self.train_pairs = [by_id[c] for c in split["train"]]
            self.val_pairs = [by_id[c] for c in split["val"]]
            self.pre = Preprocessor.from_dict(self.resume_state["preprocessor"])
            self.plan = self.resume_state.get("plan")
        else:
            if self.split is not None:
                self.train_pairs, self.val_pairs = pairs_of_split(pairs, self.split, self.data)
            else:
                self.train_pairs, self.val_pairs = split_cases(pairs, cfg.val_fraction, cfg.seed)
            self.pre = self._choose_preprocessor(pairs)
            if cfg.normalization is not None:
                self.pre.normalization = [dict(n) for n in cfg.normalization]
        self.num_classes = self.mapping.num_classes
        self.class_names = list(cfg.class_names or self.info.class_names or default_class_names(self.num_classes))
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names given but the labels hold "
                             f"{self.num_classes} classes ({self.mapping.describe()})")
        cache = CaseCache(default_cache_dir() if cfg.cache else None)
        load = dict(cache=cache, channels=self.info.channels)
        self.train_images, self.train_labels = load_cases(self.train_pairs, self.mapping, self.pre, cfg.workers,
                                                          "loading training cases", **load)
        val_subset = self.val_pairs[:MAX_VAL_CASES]
        self.val_images, self.val_labels = load_cases(val_subset, self.mapping, self.pre, cfg.workers,
                                                      "loading validation cases", **load)
        self.cache_hits = cache.hits
        if self.pre.normalization is None:
            self.pre.normalization = self._choose_normalization()
        self.train_images = [self.pre.normalise(x) for x in self.train_images]
        self.val_images = [self.pre.normalise(x) for x in self.val_images]
        self.in_channels = int(self.train_images[0].shape[0])
        for pair, image in zip(self.train_pairs + val_subset, self.train_images + self.val_images):
            if image.shape[0] != self.in_channels:
                raise MedsegInputError(pair.image, f"has {image.shape[0]} channel(s) but other images have "
                                       f"{self.in_channels}; mixing grey and colour images is not supported")
        self.spatial_dims = self.train_images[0].ndim - 1
        if cfg.augment.flip_axes == "auto":
            cfg.augment.flip_axes = choose_flip_axes(self.train_pairs, self.spatial_dims)
        self.class_voxels = torch.bincount(torch.cat([y.flatten().long() for y in self.train_labels]),
                                           minlength=self.num_classes)[: self.num_classes]  # not the ignore value

    def _choose_preprocessor(self, pairs: list[CasePair]) -> Preprocessor:
        """2D: resize large images (image_size); 3D: crop to non-zero, resample to target spacing."""
        cfg = self.config
        dims = len(read_image_header(pairs[0].image)["size"])
        crop = (dims == 3) if cfg.crop_nonzero == "auto" else bool(cfg.crop_nonzero)
        if dims == 2:
            return Preprocessor(choose_image_size(pairs, cfg.image_size), crop_nonzero=crop,
                                num_classes=self.mapping.num_classes)
        return Preprocessor(None, choose_spacing(pairs, cfg.target_spacing), crop_nonzero=crop,
                            num_classes=self.mapping.num_classes)

    def _choose_normalization(self) -> list[dict]:
        """Per channel: CT statistics from the training foreground where the channel is CT."""
        names = self.info.channel_names or [None] * int(self.train_images[0].shape[0])
        return [ct_statistics(self.train_images, self.train_labels, c) if (n or "").upper() == "CT"
                else {"scheme": "zscore"} for c, n in enumerate(names)]

    # ---------------------------------------------------------------- model
    def model_options(self) -> dict:
        """The settings this run's model takes (nets.select_options drops the others); img_size
        (UNETR) once the patch is known."""
        cfg = self.config
        return select_options(
            cfg.model, features=tuple(cfg.features) if cfg.features else None, norm=cfg.norm,
            strides=[list(s) for s in cfg.strides] if cfg.strides is not None else None,
            kernels=[list(k) for k in cfg.kernels] if cfg.kernels is not None else None,
            deep_supervision=cfg.deep_supervision, img_size=list(cfg.patch_size) if cfg.patch_size else None)

    def _prepare_model(self) -> None:
        cfg = self.config
        if cfg.features is None:
            cfg.features = FEATURES_3D if self.spatial_dims == 3 else FEATURES_2D
        divisor = axis_divisors(model_divisor(cfg.model, self.spatial_dims, **self.model_options()), self.spatial_dims)
        if cfg.patch_size is None:
            cfg.patch_size = choose_patch_size([tuple(x.shape[1:]) for x in self.train_images], max(divisor))
        if len(cfg.patch_size) != self.spatial_dims:
            raise ValueError(f"patch size {cfg.patch_size} has {len(cfg.patch_size)} axes but the images have "
                             f"{self.spatial_dims}")
        if any(p % d for p, d in zip(cfg.patch_size, divisor)):
            raise ValueError(f"patch size {cfg.patch_size} must be a multiple of {divisor} for this network")
        if cfg.batch_size is None:
            cfg.batch_size = choose_batch_size(cfg.patch_size)
        self.model = build_model(cfg.model, self.in_channels, self.num_classes, self.spatial_dims,
                                 **self.model_options()).to(self.device, memory_format=memory_format(self.spatial_dims))
        weights = None
        if cfg.loss == "weighted-dice":
            freq = self.class_voxels.double() / self.class_voxels.sum()
            inv = torch.where(freq > 0, 1 / freq.clamp_min(1e-12), torch.zeros_like(freq))
            weights = (inv / inv.sum()).tolist()
        self.loss_fn = DeepSupervisionLoss(make_loss(cfg.loss, self.num_classes, class_weights=weights,
                                                     ignore_index=self.ignore_index, **cfg.loss_options))
        self.optimiser = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sampler = PatchSampler(self.train_images, self.train_labels, cfg.patch_size, cfg.batch_size,
                                    cfg.augment, seed=distributed.sampler_seed(cfg.seed))  # rank 0: cfg.seed
        self.epoch, self.iteration, self.elapsed_before = 0, 0, 0.0
        self.best_score = -1.0
        self.ema = WeightEMA(self.model, cfg.ema) if cfg.ema else None
        self.val_seconds, self.validations = 0.0, 0  # this process's validation cost (`validation_due`)
        if self.resume_state is not None:
            st = self.resume_state
            if self.ema is not None and "train_model" in st:  # "model" holds the average
                self.model.load_state_dict(st["train_model"])
                self.ema.load_state_dict(st["model"], st["ema_updates"])
            else:
                self.model.load_state_dict(st["model"])
                if self.ema is not None:
                    self.ema.load_state_dict(st["model"], 0)
            self.optimiser.load_state_dict(st["optimiser"])
            self.epoch, self.iteration = st["epoch"], st["iteration"]
            self.elapsed_before, self.best_score = st["elapsed_s"], st["best_score"]
            torch.set_rng_state(st["torch_rng"])
        sample, _ = self.sampler.batch(torch.Generator().manual_seed(0))
        stored = (self.resume_state or {}).get("autocast")
        if stored is not None and cfg.precision == "auto":  # a resumed run keeps the arithmetic it began with
            self.autocast = torch.bfloat16 if stored == "bf16" else None
        else:
            self.autocast = choose_precision(cfg.precision, self.device, self.model, sample[:2].to(self.device))
        self.autocast = distributed.broadcast_object(self.autocast)  # a timed probe: rank 0 decides for all
        self.net = distributed.wrap(self.model, self.device)  # DDP for training steps; self.model saves
        self.compiled = compiles(cfg.compile, self.spatial_dims, self.device, cfg.minutes)
        if self.compiled:  # training steps only; validation and saving use the eager self.model
            self.net = compile_model(self.net, fall_back=cfg.compile == "auto")
        self.optimiser.zero_grad(set_to_none=True)

    # ------------------------------------------------------------ schedule
    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.start

    def progress(self) -> float:
        """Fraction of the budget used: by the clock for `minutes`, by iterations for `epochs`."""
        cfg = self.config
        parts = []
        if cfg.minutes:
            parts.append(self.elapsed() / (cfg.minutes * 60))
        if cfg.epochs:
            parts.append(self.iteration / (cfg.epochs * cfg.iterations_per_epoch))
        return min(1.0, max(parts))

    def learning_rate(self) -> float:
        warmup = 20
        factor = min(1.0, (self.iteration + 1) / warmup)
        return self.config.lr * factor * (1 - self.progress()) ** 0.9

    # ---------------------------------------------------------- validation
    def validate(self) -> dict[str, float]:
        if not self.val_images or not distributed.is_main():
            return {}
        model = self.eval_model
        model.eval()
        total_loss, dices = 0.0, []
        for image, label in zip(self.val_images, self.val_labels):
            probs = sliding_window(model, image, self.config.patch_size, overlap=self.config.overlap,
                                   divisor=axis_divisors(model, self.spatial_dims), device=self.device,
                                   autocast_dtype=self.autocast)
            target = label.long()[None]
            with torch.no_grad():
                total_loss += float(self.loss_fn(torch.log(probs.clamp_min(1e-8))[None], target))
            pred = argmax_mask(probs)
            dices.append(dice_from_confusion(confusion(pred, label.numpy(), self.num_classes, self.ignore_index)))
        self.model.train()
        dice = np.mean(dices, axis=0)
        row = {"val_loss": total_loss / len(self.val_images),
               "val_dice_mean": float(dice[1:].mean()) if self.num_classes > 1 else float(dice[0])}
        row.update({f"val_dice_{name}": float(d) for name, d in zip(self.class_names, dice)})
        return row

    def validation_due(self, final: bool) -> bool:
        """Whether this epoch validates: always the first and the last, otherwise only while
        validation stays within `val_share` of the elapsed time. On ISBI (five 512² slices, about
        4 s a validation against 16 s of training an epoch) validating every epoch took 22 % of a
        10-minute budget; the 15 % more steps it gives back are worth more than a finer curve."""
        if not self.val_images or self.validations == 0 or final or self.config.val_share >= 1:
            self.validations += bool(self.val_images)
            return bool(self.val_images)
        per_validation = self.val_seconds / self.validations
        if self.val_seconds + per_validation <= self.config.val_share * self.elapsed():
            self.validations += 1
            return True
        return False

    @property
    def eval_model(self) -> nn.Module:
        """The weights validation, checkpoints and prediction use: the average when `ema` is on."""
        return self.ema.model if self.ema is not None else self.model

    # -------------------------------------------------------------- saving
    def state(self) -> dict:
        extra = {} if self.ema is None else {"train_model": self.model.state_dict(), "ema_updates": self.ema.updates}
        return {
            "format": "medseg-checkpoint-1",
            "model": self.eval_model.state_dict(),
            **extra,
            "optimiser": self.optimiser.state_dict(),
            "model_name": self.config.model,
            "model_options": self.model_options(),
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "spatial_dims": self.spatial_dims,
            "class_names": self.class_names,
            "label_mapping": self.mapping.to_dict(),
            "preprocessor": self.pre.to_dict(),
            "dataset": self.info.to_dict(),
            "patch_size": list(self.config.patch_size),
            "config": self.config.to_dict(),
            "split": {"train": [p.case_id for p in self.train_pairs], "val": [p.case_id for p in self.val_pairs]},
            "plan": self.plan,
            "epoch": self.epoch,
            "iteration": self.iteration,
            "elapsed_s": self.elapsed(),
            "best_score": self.best_score,
            "torch_rng": torch.get_rng_state(),
            "autocast": "bf16" if self.autocast == torch.bfloat16 else "fp32",
        }

    def write_run_json(self, finished: bool) -> None:
        if not distributed.is_main():
            return
        info = {
            "medseg_run": 1,
            "data": str(self.data.resolve()),
            "config": self.config.to_dict(),
            "model": {"name": self.config.model, "options": {k: list(v) if isinstance(v, tuple) else v
                                                             for k, v in self.model_options().items()},
                      "parameters": count_parameters(self.model)},
            "device": str(self.device),
            "precision": "bf16" if self.autocast == torch.bfloat16 else "fp32",
            "label_mapping": self.mapping.to_dict(),
            "label_rule": self.mapping.describe(),
            "class_names": self.class_names,
            "preprocessor": self.pre.to_dict(),
            "dataset": self.info.to_dict(),
            "plan": {k: v for k, v in (self.plan or {}).items() if k != "fingerprint"} or None,
            "fold": self.config.fold,
            "cache_hits": self.cache_hits,
            "cases": {"train": len(self.train_pairs), "val": len(self.val_pairs),
                      "val_used_per_epoch": len(self.val_images)},
            "split": {"train": [p.case_id for p in self.train_pairs], "val": [p.case_id for p in self.val_pairs]},
            "epochs_done": self.epoch,
            "iterations_done": self.iteration,
            "elapsed_s": round(self.elapsed(), 1),
            "best_val_dice_mean": self.best_score if self.best_score >= 0 else None,
            "finished": finished,
        }
        tmp = self.out / "run.json.tmp"
        tmp.write_text(json.dumps(info, indent=2))
        os.replace(tmp, self.out / "run.json")

    def log(self, row: dict) -> None:
        if not distributed.is_main():
            return
        path = self.out / "log.csv"
        columns = ["epoch", "iteration", "elapsed_s", "lr", "train_loss", "val_loss", "val_dice_mean"]
        columns += [f"val_dice_{n}" for n in self.class_names] + ["images_per_s", "data_wait_s"]
        new = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
        plot_learning_curves(path, self.out / "learning_curves.png")
        from .report.tensorboard import log_scalars  # RUN/tensorboard: `tensorboard --logdir RUN/tensorboard`
        log_scalars(self.out, row)

    # ---------------------------------------------------------------- loop
    def budget_left(self) -> float:
        return math.inf if not self.config.minutes else self.config.minutes * 60 - self.elapsed()

    def fit(self) -> Path:
        cfg = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        if self.plan is not None and distributed.is_main() and not (self.out / "plan.json").exists():
            from .plan import write_plan
            write_plan(self.plan, self.out / "plan.json")
        self.write_run_json(finished=False)
        self.model.train()
        total_epochs = cfg.epochs or 10**9
        # seconds kept for the last validation + checkpoint: estimated from the validation's
        # window count and the measured step time until a validation has been timed
        val_windows = sum(count_windows(tuple(x.shape[1:]), cfg.patch_size, cfg.overlap) for x in self.val_images)
        reserve, reserve_measured = 5.0, False
        est_total = cfg.epochs * cfg.iterations_per_epoch if cfg.epochs else None
        bar = tqdm(total=est_total, initial=self.iteration, unit="it", dynamic_ncols=True,
                   desc="training", disable=None if distributed.is_main() else True)
        stop = False
        last_dice = "-"
        first_iteration = self.iteration + 1  # this process's first step (compiles with cfg.compile)
        try:
            while self.epoch < total_epochs and not stop:
                epoch_start = time.perf_counter()
                prefetch = Prefetcher(self.sampler.epoch(self.epoch, cfg.iterations_per_epoch))
                losses, images = [], 0
                rate_start, rate_images = epoch_start, 0  # what the validation reserve is estimated from
                try:
                    for x, y in prefetch:
                        for group in self.optimiser.param_groups:
                            group["lr"] = self.learning_rate()
                        x = x.to(self.device, non_blocking=True).contiguous(memory_format=memory_format(x.ndim - 2))
                        y = y.to(self.device, non_blocking=True)
                        with torch.autocast(self.device.type, dtype=self.autocast or torch.float32,
                                            enabled=self.autocast is not None):
                            logits = self.net(x)
                        loss = self.loss_fn(logits, y)
                        self.optimiser.zero_grad(set_to_none=True)
                        loss.backward()
                        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 12.0)
                        self.optimiser.step()
                        if self.ema is not None:
                            self.ema.update(self.model)
                        self.iteration += 1
                        images += len(x)
                        losses.append(float(loss.detach()))
                        bar.update(1)
                        if self.iteration % 5 == 0:
                            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", val_dice=last_dice, refresh=False)
                        if cfg.minutes:  # time-bounded: show the budget as the bar's horizon
                            rate = bar.format_dict.get("rate") or 0
                            if rate:
                                bar.total = self.iteration + int(max(0, self.budget_left() - reserve) * rate)
                        rate_images += len(x)
                        if self.compiled and self.iteration == first_iteration:
                            # the first compiled step includes compilation (~30 s): not a step's cost
                            rate_start, rate_images = time.perf_counter(), 0
                        elif not reserve_measured:  # a forward pass costs about a third of a step
                            per_image = (time.perf_counter() - rate_start) / rate_images
                            reserve = 5.0 + 1.5 * val_windows * per_image / 3
                        if distributed.agree_to_stop(self.budget_left() <= reserve):
                            stop = True
                            break
                finally:
                    prefetch.close()
                train_time = time.perf_counter() - epoch_start
                self.epoch += 1
                tail_start = time.perf_counter()
                row = {"epoch": self.epoch, "iteration": self.iteration, "lr": f"{self.learning_rate():.3g}",
                       "train_loss": float(np.mean(losses)) if losses else None,
                       "images_per_s": round(images / max(train_time, 1e-9), 2),
                       "data_wait_s": round(prefetch.waited_s, 2)}
                final = stop or self.epoch >= total_epochs or self.progress() >= 1.0
                validated = self.validation_due(final)
                if validated:
                    val_start = time.perf_counter()
                    row.update(self.validate())
                    self.val_seconds += time.perf_counter() - val_start
                score = row.get("val_dice_mean")
                if score is not None and score > self.best_score:
                    self.best_score = score
                    save_checkpoint(self.state(), self.out / "checkpoints" / "best.pt")
                row["elapsed_s"] = round(self.elapsed(), 1)
                if distributed.is_main():
                    save_checkpoint(self.state(), self.out / "checkpoints" / "last.pt")
                self.log(row)
                self.write_run_json(finished=False)
                distributed.barrier()  # other ranks wait for rank 0's validation and checkpoint
                if validated:  # the reserve is for a last validation, so only a validated tail measures it
                    reserve, reserve_measured = 1.5 * (time.perf_counter() - tail_start) + 2.0, True
                if score is not None:
                    last_dice = f"{score:.3f}"
                bar.set_postfix(loss=f"{row['train_loss']:.3f}" if losses else "-", val_dice=last_dice, refresh=False)
                if distributed.agree_to_stop(self.progress() >= 1.0):
                    stop = True
        finally:
            bar.close()
        self.write_run_json(finished=True)
        return self.out


# plan keys for which None is a real choice (native grid, no time limit), not "decide for me"
_NONE_IS_A_CHOICE = ("image_size", "target_spacing", "minutes", "epochs")


def plan_overrides(options: dict) -> dict:
    """The explicit options that replace plan settings ("auto" and unset values do not)."""
    from .plan import PLAN_KEYS

    out = {}
    for key, value in options.items():
        if key not in PLAN_KEYS or (isinstance(value, str) and value == "auto"):
            continue
        if value is None and key not in _NONE_IS_A_CHOICE:
            continue
        out[key] = value
    return out


def resolve_plan(data: Path, plan: str | os.PathLike | dict | None, options: dict,
                 memory_gb: float | None = None) -> dict:
    """The plan a run trains with: read or computed for the run's budget, then the explicit
    options applied on top (each recorded in the plan's reasons as set by the user)."""
    from .plan import Budget, apply_overrides, check_plan, make_plan, read_plan
    from .data.fingerprint import compute_fingerprint

    if isinstance(plan, dict):
        check_plan(plan)
        base = plan
    elif plan is not None:
        base = read_plan(plan)
    else:
        device = resolve_device(options.get("device", "auto")).type
        fp, _, _ = compute_fingerprint(data, workers=options.get("workers", 2), ignore=options.get("ignore_label"))
        base = make_plan(fp, Budget(device=device, memory_gb=memory_gb, minutes=options.get("minutes")),
                         model=options.get("model") or "unet", image_size=options.get("image_size", "auto"))
    return apply_overrides(base, plan_overrides(options))


def _config(options: dict, plan: dict | None) -> TrainConfig:
    augment = options.pop("augment", None)
    config = TrainConfig(**options)
    if plan is not None:
        config.apply_plan(plan)
    if isinstance(augment, bool):
        config.augment.enabled = augment
    elif isinstance(augment, dict):
        config.augment = AugmentConfig(**augment)
    elif isinstance(augment, AugmentConfig):
        config.augment = augment
    return config


def train(data: str | os.PathLike, out: str | os.PathLike, *, resume: bool = False,
          plan: str | os.PathLike | dict | bool | None = None, memory_gb: float | None = None,
          fold: int | None = None, folds: str | list[int] | None = None, split: dict | None = None,
          finish: bool = True, **options) -> Path:
    """Train a model on DATA into the run folder OUT; returns OUT.

    Options are `TrainConfig` fields, e.g. `train("data", "run", minutes=10, model="classic")`.
    plan:  None (default) fingerprints DATA and plans it for this budget (`medseg.plan`); a plan
           dict or JSON file is used as given; False keeps TrainConfig's fixed rules. Explicit
           options always win over the plan.
    fold / folds: cross-validation (`medseg.crossval`): OUT becomes the cross-validation folder
           and fold K trains into OUT/fold_K; `folds="all"` trains every fold in turn, and the
           minutes budget is then shared between them.
    finish: after training, predict the validation cases, choose postprocessing on them and
           write the report.
    """
    data, out = Path(data), Path(out)
    if (fold is not None or folds is not None) and distributed.world_size() > 1:
        raise ValueError("cross-validation (--fold/--folds) runs in one process for now; under torchrun "
                         "train a fold's split as a single run, or drop torchrun")
    if fold is not None or folds is not None:
        from .crossval import train_folds
        return train_folds(data, out, folds=folds if folds is not None else [fold], resume=resume, plan=plan,
                           memory_gb=memory_gb, finish=finish, **options)
    return train_single(data, out, options, resume=resume, plan=plan, memory_gb=memory_gb, split=split,
                        finish=finish)


def train_single(data: Path, out: Path, options: dict, *, resume: bool = False,
                 plan: str | os.PathLike | dict | bool | None = None, memory_gb: float | None = None,
                 split: dict | None = None, finish: bool = True) -> Path:
    """One run folder: resolve the plan, train, then (finish) validate, postprocess and report."""
    if distributed.world_size() > 1:  # under torchrun: join the group before planning
        distributed.init_from_env(resolve_device(options.get("device", "auto")))
    the_plan = None
    if not resume and plan is not False and distributed.is_main():
        the_plan = resolve_plan(data, None if plan is True else plan, options, memory_gb)
    the_plan = distributed.broadcast_object(the_plan)  # planned once, on rank 0
    config = _config(dict(options), the_plan)
    try:
        run = Trainer(data, out, config, resume=resume, plan=the_plan, split=split).fit()
        if finish and distributed.is_main():
            from .finish import finish_run
            finish_run(run)
    finally:
        distributed.shutdown()
    return run
