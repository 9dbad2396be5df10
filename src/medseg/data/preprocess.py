"""Turn a read `Case` into network input on the working grid, and map predictions back.

Training and prediction share this one object, stored in every run, so a case is always cropped,
resampled and normalised the same way at both ends. Policy (also in the README):

* Crop (3D default): to the bounding box of the voxels that differ from the background in any
  channel, so the network does not spend time on empty space around a skull-stripped brain.
  A channel's background is the value all its corner voxels share when they agree exactly (the
  constant left outside a brain z-scored before release, as in BraTS; a CT's padding), else 0. Runs
  saved before this rule (no ``crop_background`` in their preprocessor dict) keep the old one,
  background 0, so they see the input they were trained on. Outside the box prediction is
  background.
* Working grid: with `target_spacing` (3D default: the dataset's median spacing), every case is
  resampled so one voxel has that physical size. Without it (2D), images whose longer side
  exceeds `image_size` are resized, aspect ratio kept, so that side equals `image_size`; smaller
  images keep their size; `image_size=None` keeps the native grid.
  Images are interpolated linearly (antialiased when shrinking 2D images); labels are resampled
  per class as one-hot maps with linear interpolation and re-labelled by the largest value,
  which keeps thin structures that nearest-neighbour resampling would break.
* Intensities, per channel: ``zscore`` (default, MR, photos): zero mean, unit variance per case;
  ``ct``: clip to the dataset's foreground 0.5-99.5 percentiles, then subtract the dataset's
  foreground mean and divide by its standard deviation (Hounsfield units mean the same in every
  scan, so dataset statistics keep that information).
* Predicted probabilities are resampled back (linear, one class at a time to bound memory) to
  the cropped region's original size and pasted into the full grid, so the mask has exactly the
  input's shape.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..case import Case
from ..io.labels import IGNORE_INDEX

CT_SAMPLES_PER_CASE = 10000  # foreground voxels per case drawn for the CT statistics


def _zscore_stats(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of a (C, *spatial) tensor."""
    flat = image.reshape(image.shape[0], -1).float()
    mean = flat.mean(dim=1)
    std = flat.std(dim=1) if flat.shape[1] > 1 else torch.zeros_like(mean)
    return mean, std


def zscore(image: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-channel zero mean, unit variance over the spatial axes of a (C, *spatial) tensor."""
    mean, std = _zscore_stats(image)
    shape = (-1,) + (1,) * (image.ndim - 1)
    return (image - mean.view(shape)) / (std.view(shape) + eps)


def _interp_mode(dims: int) -> str:
    return "bilinear" if dims == 2 else "trilinear"


def resize_image(image: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Resize a (C, *spatial) float tensor; antialiased when shrinking 2D images."""
    if tuple(image.shape[1:]) == tuple(size):
        return image
    dims = image.ndim - 1
    antialias = dims == 2 and any(s < o for s, o in zip(size, image.shape[1:]))
    return F.interpolate(image[None].float(), size=size, mode=_interp_mode(dims),
                         align_corners=False, antialias=antialias)[0]


def resize_label(label: torch.Tensor, size: tuple[int, ...], num_classes: int | None = None) -> torch.Tensor:
    """Resize an integer (*spatial) label map: one-hot linear interpolation, largest class wins.

    "Not annotated" voxels (IGNORE_INDEX) compete as one more map, so they stay ignored (and
    never become background, which would teach the network a wrong label)."""
    if tuple(label.shape) == tuple(size):
        return label
    ignored = bool((label == IGNORE_INDEX).any())
    known = label[label != IGNORE_INDEX] if ignored else label
    k = (int(known.max()) + 1 if known.numel() else 1) if num_classes is None else num_classes
    best = torch.full(tuple(size), -1.0)
    out = torch.zeros(tuple(size), dtype=label.dtype)
    for c in list(range(k)) + ([IGNORE_INDEX] if ignored else []):
        score = resize_image((label == c)[None].float(), size)[0]
        better = score > best
        out[better] = c
        best = torch.where(better, score, best)
    return out


CROP_BACKGROUNDS = ("corners", "zero")   # how crop_box picks a channel's background value
CROP_SLAB_VOXELS = 1 << 24               # voxels compared at a time: a 16 MB mask, whatever the volume


def background_values(image: np.ndarray | torch.Tensor, rule: str = "corners") -> list[float]:
    """Per channel of (C, *spatial): the value its corner voxels all share, else 0 ("corners");
    always 0 ("zero", the rule before background-aware cropping)."""
    if rule not in CROP_BACKGROUNDS:
        raise ValueError(f"unknown crop background rule {rule!r}: use one of {', '.join(CROP_BACKGROUNDS)}")
    values = []
    for c in range(image.shape[0]):
        value = 0.0
        if rule == "corners":
            corners = [float(image[(c,) + idx]) for idx in itertools.product(*[(0, s - 1) for s in image.shape[1:]])]
            if all(v == corners[0] for v in corners):   # exact agreement (NaN never agrees)
                value = corners[0]
        values.append(value)
    return values


def crop_box(image: np.ndarray | torch.Tensor, background: str = "corners") -> tuple[slice, ...]:
    """Bounding box of the voxels of (C, *spatial) that differ from their channel's background
    value (`background_values`) in any channel; the whole grid if none does.

    The box of a union is the union of the boxes, so each channel is compared a slab of rows at a
    time and only its projections onto the axes are kept: memory stays ~16 MB for any volume."""
    array = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    spatial = tuple(array.shape[1:])
    hits = [np.zeros(s, dtype=bool) for s in spatial]
    rows = max(1, CROP_SLAB_VOXELS // max(1, int(np.prod(spatial[1:], dtype=np.int64))))
    for c, value in enumerate(background_values(array, background)):
        for first in range(0, spatial[0], rows):
            differs = array[c, first:first + rows] != array.dtype.type(value)
            for axis in range(len(spatial)):
                others = tuple(a for a in range(len(spatial)) if a != axis)
                projection = differs.any(axis=others) if others else differs
                if axis == 0:
                    hits[0][first:first + len(projection)] |= projection
                else:
                    hits[axis] |= projection
    box = []
    for axis, hit in enumerate(hits):
        where = np.flatnonzero(hit)
        if len(where) == 0:
            return tuple(slice(0, s) for s in spatial)
        box.append(slice(int(where[0]), int(where[-1]) + 1))
    return tuple(box)


def ct_statistics(images: list[torch.Tensor], labels: list[torch.Tensor], channel: int, seed: int = 0) -> dict:
    """Foreground intensity statistics of one channel over a dataset (CT normalisation)."""
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for image, label in zip(images, labels):
        values = image[channel][(label > 0) & (label != IGNORE_INDEX)]
        if len(values) > CT_SAMPLES_PER_CASE:
            values = values[torch.randint(len(values), (CT_SAMPLES_PER_CASE,), generator=gen)]
        samples.append(values.float())
    values = torch.cat(samples) if samples else torch.zeros(0)
    if len(values) < 2:
        values = torch.cat([im[channel].flatten().float() for im in images])
    v = values.double().numpy()
    return {"scheme": "ct", "lower": float(np.percentile(v, 0.5)), "upper": float(np.percentile(v, 99.5)),
            "mean": float(v.mean()), "std": float(v.std())}


@dataclass
class Resampled:
    """A case on the working grid before normalisation (what the on-disk cache stores)."""

    image: torch.Tensor              # (C, *working) float32, intensities as stored
    label: torch.Tensor | None       # (*working) uint8 class indices
    box: tuple[slice, ...]           # crop region on the original grid


@dataclass
class Preprocessor:
    """How cases map onto the grid the network sees (stored in the run as a dict)."""

    image_size: int | None = None
    target_spacing: tuple[float, ...] | None = None
    crop_nonzero: bool = False                # crop to the box of non-background voxels (3D)
    normalization: list[dict] | None = None   # one {"scheme": ...} per channel; None: z-score all
    num_classes: int | None = None
    crop_background: str = "corners"          # background value of the crop (`background_values`)

    def __post_init__(self) -> None:
        if self.crop_background not in CROP_BACKGROUNDS:
            raise ValueError(f"unknown crop_background {self.crop_background!r}: "
                             f"use one of {', '.join(CROP_BACKGROUNDS)}")

    def working_shape(self, shape: tuple[int, ...], spacing: tuple[float, ...] | None = None) -> tuple[int, ...]:
        if self.target_spacing is not None:
            spacing = spacing or (1.0,) * len(shape)
            return tuple(max(1, round(s * sp / t)) for s, sp, t in zip(shape, spacing, self.target_spacing))
        longest = max(shape)
        if self.image_size is None or longest <= self.image_size:
            return tuple(shape)
        scale = self.image_size / longest
        return tuple(max(1, round(s * scale)) for s in shape)

    def box(self, case: Case) -> tuple[slice, ...]:
        """Region of the case the network sees (the whole grid without `crop_nonzero`)."""
        if not self.crop_nonzero:
            return tuple(slice(0, s) for s in case.spatial_shape)
        return crop_box(case.image, self.crop_background)

    def resample(self, case: Case, with_label: bool = True) -> Resampled:
        """Crop and resample a case (image as stored, label as class indices)."""
        box = self.box(case)
        image = torch.from_numpy(np.ascontiguousarray(case.image[(slice(None),) + box], dtype=np.float32))
        shape = self.working_shape(tuple(image.shape[1:]), case.spacing)
        label = None
        if with_label:
            if case.label is None:
                raise ValueError(f"{case.case_id}: case has no label")
            label = torch.from_numpy(np.ascontiguousarray(case.label[box], dtype=np.uint8))
            label = resize_label(label, shape, self.num_classes).contiguous()
        return Resampled(resize_image(image, shape).contiguous(), label, box)

    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        """Per-channel intensity normalisation of a (C, *working) image (see module docstring).

        Written into one new float32 tensor, channel by channel and in place, so a CT-sized
        volume costs one copy rather than one per arithmetic step (same values as `zscore`)."""
        schemes = self.normalization or [{"scheme": "zscore"}] * image.shape[0]
        out = torch.empty(image.shape, dtype=torch.float32)
        for c in range(image.shape[0]):
            scheme = schemes[c] if c < len(schemes) else {"scheme": "zscore"}
            x, y = image[c:c + 1], out[c:c + 1]
            if scheme.get("scheme") == "ct":
                torch.clamp(x.float(), scheme["lower"], scheme["upper"], out=y)
                y.sub_(scheme["mean"]).div_(max(scheme["std"], 1e-6))
            else:
                mean, std = _zscore_stats(x)
                torch.sub(x.float(), mean.view(-1, *(1,) * (x.ndim - 1)), out=y)
                y.div_(std.view(-1, *(1,) * (x.ndim - 1)) + 1e-6)
        return out

    def image(self, case: Case) -> torch.Tensor:
        """(C, *working) float32 network input."""
        return self.normalise(self.resample(case, with_label=False).image)

    def label(self, case: Case) -> torch.Tensor:
        """(*working) uint8 class-index tensor."""
        return self.resample(case).label

    def restore(self, probabilities: torch.Tensor, shape: tuple[int, ...],
                box: tuple[slice, ...] | None = None) -> torch.Tensor:
        """(K, *working) probabilities -> (K, *shape) on the case's original grid, same dtype.

        Resampled one class at a time into the output, so memory holds one full-size map per
        class and nothing more (float16 maps stay float16; each class is interpolated in
        float32); outside the crop box the background class has probability 1.
        """
        shape = tuple(shape)
        box = box or tuple(slice(0, s) for s in shape)
        box_shape = tuple(b.stop - b.start for b in box)
        if box_shape == shape and tuple(probabilities.shape[1:]) == shape:
            return probabilities
        dtype = probabilities.dtype if probabilities.dtype in (torch.float16, torch.float32) else torch.float32
        out = torch.zeros((probabilities.shape[0],) + shape, dtype=dtype)
        out[0] = 1.0
        for k in range(probabilities.shape[0]):
            out[(k,) + tuple(box)] = resize_image(probabilities[k:k + 1], box_shape)[0]
        return out

    def to_dict(self) -> dict:
        return {"image_size": self.image_size,
                "target_spacing": list(self.target_spacing) if self.target_spacing else None,
                "crop_nonzero": self.crop_nonzero, "normalization": self.normalization,
                "num_classes": self.num_classes, "crop_background": self.crop_background}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessor":
        d = dict(d)
        # runs saved before background-aware cropping cropped at 0: keep that, it is what they trained on
        d.setdefault("crop_background", "zero")
        if d.get("target_spacing"):
            d["target_spacing"] = tuple(float(s) for s in d["target_spacing"])
        return cls(**d)
