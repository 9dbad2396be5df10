"""The settings of a training run (`TrainConfig`), stored in run.json and in each checkpoint,
and the policy of which runs compile their training step."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch

from ..data.augment import AugmentConfig
from ..device import has_cpp_compiler
from ..planning import train_settings


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
    batch_size: int | None = None                 # None: from the patch size (planning.rules.cpu_batch_size)
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
                                                  # checkpoints and prediction use (medseg.training.ema); None: off
    val_share: float = 0.1                        # validation may take at most this share of the elapsed
                                                  # time (first and last epoch always validate); 1: every epoch
    workers: int = 2
    compile: bool | str = "auto"                  # torch.compile the training step's network (~30 s once);
                                                  # "auto": see `compiles` (docs/decisions.md)
    class_names: tuple[str, ...] | None = None    # names for classes 0..K-1 in logs and reports
    deep_supervision: bool = False                # unet/resunet: logits at every decoder scale in training
    loss_options: dict = field(default_factory=dict)  # make_loss options, e.g. {"alpha": 0.3, "beta": 0.7}
    strides: list | None = None                   # unet: per downsampling, factor per axis (plan)
    kernels: list | None = None                   # unet: per level, convolution size per axis (plan)
    normalization: list | None = None             # per channel {"scheme": ...}; None: from the data
    fold: int | None = None                       # cross-validation fold this run trains (splits.json)
    label_suffix: str | None = None               # side-by-side masks: which ("_2ndHO": CHASE's second observer)
    init_from: str | None = None                  # fine-tuning: the run folder or model package whose weights
                                                  # start this run (medseg.training.init_from)
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
        """Take every setting of a plan (`medseg.planning.train_settings`)."""
        for key, value in train_settings(plan).items():
            setattr(self, key, value)


def config_from_options(options: dict, plan: dict | None) -> TrainConfig:
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


COMPILE_MIN_MINUTES = 5.0  # compiling takes ~30 s: "auto" compiles only budgets where that is < 10 %


def compiles(setting: bool | str, spatial_dims: int, device: torch.device, minutes: float | None) -> bool:
    """Whether training steps run through `torch.compile`.

    ``"auto"`` compiles training on a CPU with a clock budget of at least COMPILE_MIN_MINUTES
    and a C++ compiler on the PATH (inductor needs one): after ~30 s of compilation the planned
    U-Nets train markedly faster (docs/decisions.md). GPUs and epoch-counted runs
    (the tests, the demo) stay eager unless asked.
    """
    if setting == "auto":
        return (spatial_dims in (2, 3) and device.type == "cpu" and minutes is not None
                and minutes >= COMPILE_MIN_MINUTES and has_cpp_compiler())
    if isinstance(setting, bool):
        return setting
    raise ValueError(f"compile must be True, False or 'auto', got {setting!r}")
