"""Turn a read `Case` into network input on the working grid, and map predictions back.

Training and prediction share this one object, stored in every run, so an image is always
resized and normalised the same way at both ends. Policy (also in the README):

* Working grid (2D): images whose longer side exceeds `image_size` are resized, aspect ratio
  kept, so that side equals `image_size`; smaller images keep their size. `image_size=None`
  keeps every image at its native resolution. Labels are resized with nearest neighbour.
* Intensities: z-score per image and per channel (RGB channels separately), so scanners and
  exposure differences do not have to be learned.
* Predicted probabilities are resized back (linear) to the original grid before argmax, so the
  mask has exactly the input's size.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..case import Case


def zscore(image: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-channel zero mean, unit variance over the spatial axes of a (C, *spatial) tensor."""
    flat = image.reshape(image.shape[0], -1).float()
    mean = flat.mean(dim=1)
    std = flat.std(dim=1)
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


def resize_label(label: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Nearest-neighbour resize of an integer (*spatial) label map."""
    if tuple(label.shape) == tuple(size):
        return label
    out = F.interpolate(label[None, None].float(), size=size, mode="nearest-exact")
    return out[0, 0].to(label.dtype)


@dataclass
class Preprocessor:
    """How cases map onto the grid the network sees (stored in the run as a dict)."""

    image_size: int | None = None

    def working_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        longest = max(shape)
        if self.image_size is None or longest <= self.image_size:
            return tuple(shape)
        scale = self.image_size / longest
        return tuple(max(1, round(s * scale)) for s in shape)

    def image(self, case: Case) -> torch.Tensor:
        """(C, *working) float32 tensor, resized and z-scored."""
        image = torch.from_numpy(np.ascontiguousarray(case.image, dtype=np.float32))
        return zscore(resize_image(image, self.working_shape(case.spatial_shape))).contiguous()

    def label(self, case: Case) -> torch.Tensor:
        """(*working) uint8 class-index tensor."""
        if case.label is None:
            raise ValueError(f"{case.case_id}: case has no label")
        label = torch.from_numpy(np.ascontiguousarray(case.label, dtype=np.uint8))
        return resize_label(label, self.working_shape(case.spatial_shape)).contiguous()

    def restore(self, probabilities: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """Resize (K, *working) probabilities back to the case's original spatial shape."""
        return resize_image(probabilities, tuple(shape)) if tuple(probabilities.shape[1:]) != tuple(shape) else probabilities

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessor":
        return cls(**d)
