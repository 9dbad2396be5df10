"""Sliding-window inference: run a network over an image of any size, one patch at a time.

Windows overlap; each window's softmax is weighted by a Gaussian centred on the window, because
a network is most reliable in the middle of its field of view, and the weighted sum is
normalised at the end. Optional mirroring test-time augmentation averages predictions over
flips. The network is not part of this module (it is passed in), as in MONAI's inferer design.

Memory: one (K, *spatial) float32 accumulator and one (*spatial) weight map, nothing per window.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .device import memory_format


def gaussian_weight(patch_size: Sequence[int], sigma_scale: float = 0.125) -> torch.Tensor:
    """Separable Gaussian importance map, peak 1, floored so edges still count a little."""
    weight = torch.ones(())
    for size in patch_size:
        x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
        g = torch.exp(-0.5 * (x / max(size * sigma_scale, 1e-3)) ** 2)
        weight = weight[..., None] * g
    weight = weight / weight.max()
    return weight.clamp_min(1e-3)


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Evenly spaced window starts covering [0, size) with at least `overlap` between windows."""
    if size <= patch:
        return [0]
    step = max(1, int(patch * (1 - overlap)))
    count = math.ceil((size - patch) / step) + 1
    return [round(i * (size - patch) / (count - 1)) for i in range(count)]


def count_windows(shape: Sequence[int], patch_size: Sequence[int], overlap: float) -> int:
    """How many network passes `sliding_window` makes for an image of `shape` (no mirroring)."""
    if all(s <= p for s, p in zip(shape, patch_size)):
        return 1
    count = 1
    for size, patch in zip(shape, patch_size):
        count *= len(window_starts(max(size, patch), patch, overlap))
    return count


def _pad_to(image: torch.Tensor, shape: Sequence[int]) -> tuple[torch.Tensor, list[slice]]:
    """Pad a (C, *spatial) tensor at the end of each axis up to `shape`; return the crop back."""
    pads: list[int] = []
    for size, target in zip(reversed(image.shape[1:]), reversed(list(shape))):
        pads += [0, max(0, target - size)]
    crop = [slice(0, s) for s in image.shape[1:]]
    if any(pads):
        mode = "reflect" if all(p < s for p, s in zip(pads[1::2], reversed(image.shape[1:]))) else "replicate"
        image = F.pad(image[None], pads, mode=mode)[0]
    return image, crop


def mirror_sets(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """All subsets of the spatial axes to flip for mirroring TTA (the empty set included)."""
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


@torch.inference_mode()
def sliding_window(
    model: nn.Module,
    image: torch.Tensor,
    patch_size: Sequence[int],
    *,
    overlap: float = 0.5,
    batch_size: int = 4,
    mirror_axes: Sequence[int] = (),
    divisor: int | Sequence[int] = 16,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Class probabilities (K, *spatial) float32 for a (C, *spatial) image.

    Images that fit in one window are padded to a multiple of `divisor` (one number, or one per
    axis) and run whole;
    larger ones are tiled with `patch_size` windows. `mirror_axes` are spatial axes (0-based).
    """
    device = torch.device(device)
    spatial = tuple(image.shape[1:])
    if all(s <= p for s, p in zip(spatial, patch_size)):
        per_axis = (divisor,) * len(spatial) if isinstance(divisor, int) else tuple(divisor)
        window = tuple(math.ceil(s / d) * d for s, d in zip(spatial, per_axis))
    else:
        window = tuple(int(p) for p in patch_size)
    padded, crop = _pad_to(image, [max(s, w) for s, w in zip(spatial, window)])
    starts = list(itertools.product(*[window_starts(s, w, overlap) for s, w in zip(padded.shape[1:], window)]))
    weight = gaussian_weight(window).to(device) if len(starts) > 1 else torch.ones(window, device=device)
    flips = mirror_sets(mirror_axes)
    accum: torch.Tensor | None = None
    norm = torch.zeros(padded.shape[1:], device=device)
    padded = padded.to(device)
    for first in range(0, len(starts), batch_size):
        chunk = starts[first:first + batch_size]
        slices = [tuple(slice(s, s + w) for s, w in zip(start, window)) for start in chunk]
        batch = torch.stack([padded[(slice(None),) + sl] for sl in slices])
        probs = 0
        for flip in flips:
            dims = [a + 2 for a in flip]
            x = batch.flip(dims) if dims else batch
            x = x.contiguous(memory_format=memory_format(x.ndim - 2))
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                logits = model(x)
            p = torch.softmax(logits.float(), dim=1)
            probs = probs + (p.flip(dims) if dims else p)
        probs = probs / len(flips)
        if accum is None:
            accum = torch.zeros((probs.shape[1],) + tuple(padded.shape[1:]), device=device)
        for p, sl in zip(probs, slices):
            accum[(slice(None),) + sl] += p * weight
            norm[sl] += weight
    assert accum is not None
    accum /= norm
    return accum[(slice(None),) + tuple(crop)].cpu()
