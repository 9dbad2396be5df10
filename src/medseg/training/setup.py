"""Everything a Trainer sets up before the first step: the cases (split, preprocessing chosen,
loaded, normalised) and the model with its loss, optimiser, sampler, EMA, precision, DDP wrapper
and compilation, restored from the checkpoint when a run is resumed."""
from __future__ import annotations

import torch

from .. import distributed
from ..data.cache import CaseCache, default_cache_dir
from ..data.preprocess import Preprocessor, ct_statistics
from ..data.sampler import PatchSampler
from ..device import choose_precision, compile_model, memory_format
from ..errors import MedsegInputError
from ..evaluation import default_class_names
from ..io.dataset import CasePair, validate_dataset
from ..io.labels import LabelMapping
from ..io.layout import describe_dataset
from ..io.registry import read_image_header
from ..nets import FEATURES_2D, FEATURES_3D, axis_divisors, build_model, model_divisor, select_options
from ..planning.defaults import (choose_flip_axes, choose_image_size, choose_patch_size,
                                 choose_spacing)
from ..planning.rules import cpu_batch_size, training_step_gb
from .cases import MAX_VAL_CASES, load_cases, pairs_of_split, split_cases
from .config import compiles
from .ema import WeightEMA
from .init_from import check_source_fits, load_initial_weights, source_state
from .loss_registry import make_loss
from .deep_supervision import DeepSupervisionLoss


class DataSetup:
    """The Trainer's cases: split, preprocessor, loaded tensors, class voxel counts."""

    def _prepare_data(self) -> None:
        cfg = self.config
        pairs, self.info = describe_dataset(self.data, label_suffix=cfg.label_suffix)
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


class ModelSetup:
    """The Trainer's model, loss, optimiser, sampler, EMA, precision and step network."""

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
        initial = None  # fine-tuning: the checkpoint this run starts from
        if self.resume_state is None and cfg.init_from:
            initial = source_state(cfg.init_from)
            check_source_fits(cfg.init_from, initial, self.in_channels, self.spatial_dims)
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
            cfg.batch_size = cpu_batch_size(cfg.patch_size)
        self.model = build_model(cfg.model, self.in_channels, self.num_classes, self.spatial_dims,
                                 **self.model_options()).to(self.device, memory_format=memory_format(self.spatial_dims))
        if initial is not None:
            note = load_initial_weights(self.model, cfg.init_from, initial, model_name=cfg.model,
                                        model_options=self.model_options(), in_channels=self.in_channels,
                                        spatial_dims=self.spatial_dims, class_names=self.class_names,
                                        channel_names=self.info.channel_names)
            if distributed.is_main():
                print(note, flush=True)
        weights = None
        if cfg.loss == "weighted-dice":
            freq = self.class_voxels.double() / self.class_voxels.sum()
            inv = torch.where(freq > 0, 1 / freq.clamp_min(1e-12), torch.zeros_like(freq))
            weights = (inv / inv.sum()).tolist()
        self.loss_fn = DeepSupervisionLoss(make_loss(cfg.loss, self.num_classes, class_weights=weights,
                                                     ignore_index=self.ignore_index, **cfg.loss_options))
        self.optimiser = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        # batches are cut and augmented on the training device (the cases moved there when they fit)
        step_bytes = int(2**30 * training_step_gb(cfg.patch_size, cfg.batch_size, cfg.features, cfg.strides,
                                                  sum(p.numel() for p in self.model.parameters())))
        self.sampler = PatchSampler(self.train_images, self.train_labels, cfg.patch_size, cfg.batch_size,
                                    cfg.augment, seed=distributed.sampler_seed(cfg.seed),  # rank 0: cfg.seed
                                    device=self.device, step_bytes=step_bytes)
        self.data_residence = self.sampler.residence.to_dict()
        self.train_images = self.train_labels = []  # the sampler holds the packed copy from here on
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
