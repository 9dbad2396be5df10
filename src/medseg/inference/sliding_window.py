"""Sliding-window inference: run a network over an image of any size, one patch at a time.

Windows overlap; each window's softmax is weighted by a Gaussian centred on the window, because
a network is most reliable in the middle of its field of view, and the weighted sum is
normalised at the end. Optional mirroring test-time augmentation averages predictions over
flips. The network is not part of this module (it is passed in), as in MONAI's inferer design.

Memory: the output (K, *spatial) in the caller's dtype, plus float32 sums over one window's
depth of rows (`_RowAccumulator`); windows that hold nothing but background can be skipped.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..device import memory_format


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


def windows_per_call(patch_size: Sequence[int], device: torch.device | str = "cpu") -> int:
    """How many windows to run per network call: about 256k voxels, 2 to 8 windows.

    On a CPU larger batches outgrow the caches, and at least 2 gives every core a window
    (docs/decisions.md, "Windows per call", "Use every core"). Other devices keep 4, not measured
    there (pass a batch size of your own where larger batches pay).
    """
    if torch.device(device).type != "cpu":
        return 4
    return int(max(2, min(8, 2**18 // max(1, math.prod(int(p) for p in patch_size)))))


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


def empty_value(image: torch.Tensor) -> torch.Tensor:
    """Per-channel background value of a (C, *spatial) image: its minimum (air after CT clipping,
    the zeros outside a skull-stripped brain after z-scoring)."""
    return image.reshape(image.shape[0], -1).amin(dim=1)


def is_empty(window: torch.Tensor, background: torch.Tensor) -> bool:
    """True when every voxel of a (C, *spatial) window equals its channel's background value."""
    view = (-1,) + (1,) * (window.ndim - 1)
    return bool((window == background.view(view)).all())


class _RowAccumulator:
    """Gaussian-weighted sum of window probabilities, kept only for the rows still open.

    Windows arrive sorted by their start along the first spatial axis; rows before the newest
    start can receive nothing more, so they are normalised and written out (in `out`'s dtype)
    and their buffer is reused. The float32 buffers span one window along that axis instead of
    the whole image, and the weight sum needs no full-size map. Each voxel sees the same float32
    additions in the same order as a full-size accumulator, so the result is the same.
    """

    def __init__(self, out: torch.Tensor, padded_shape: Sequence[int], window: Sequence[int],
                 device: torch.device):
        self.out = out                                   # (K, *spatial) on the CPU
        self.depth = int(window[0])
        rest = tuple(int(s) for s in padded_shape[1:])
        self.acc = torch.zeros((out.shape[0], self.depth) + rest, device=device)
        self.norm = torch.zeros((self.depth,) + rest, device=device)
        self.base = 0                                    # first open row
        self.rows = int(padded_shape[0])

    def add(self, start: Sequence[int], window: Sequence[int], probs: torch.Tensor | None,
            weight: torch.Tensor) -> None:
        """Add one window's probabilities (None: an empty window, all background)."""
        if start[0] > self.base:
            self._flush(start[0] - self.base)
        sl = (slice(start[0] - self.base, start[0] - self.base + window[0]),) + tuple(
            slice(s, s + w) for s, w in zip(start[1:], window[1:]))
        if probs is None:
            self.acc[(0,) + sl] += weight
        else:
            self.acc[(slice(None),) + sl] += probs * weight
        self.norm[sl] += weight

    def finish(self) -> torch.Tensor:
        self._flush(min(self.depth, self.rows - self.base))
        return self.out

    def _flush(self, count: int) -> None:
        """Write the first `count` open rows out and shift the buffers by as many rows."""
        count = min(count, self.depth)
        keep = tuple(slice(0, s) for s in self.out.shape[2:])
        rows = min(count, self.out.shape[1] - self.base)
        if rows > 0:
            done = self.acc[:, :rows] / self.norm[:rows]
            self.out[:, self.base:self.base + rows] = done[(slice(None), slice(None)) + keep].to(
                "cpu", self.out.dtype)
        left = self.depth - count
        if left > 0:
            self.acc[:, :left] = self.acc[:, count:].clone()
            self.norm[:left] = self.norm[count:].clone()
        self.acc[:, left:] = 0
        self.norm[left:] = 0
        self.base += count


@torch.inference_mode()
def sliding_window(
    model: nn.Module,
    image: torch.Tensor,
    patch_size: Sequence[int],
    *,
    overlap: float = 0.5,
    batch_size: int | None = None,
    mirror_axes: Sequence[int] = (),
    divisor: int | Sequence[int] = 16,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    out_dtype: torch.dtype = torch.float32,
    skip_empty: bool = False,
    member_entropy: bool = False,
) -> torch.Tensor:
    """Class probabilities (K, *spatial) for a (C, *spatial) image, on the CPU in `out_dtype`.

    Images that fit in one window are padded to a multiple of `divisor` (one number, or one per
    axis) and run whole;
    larger ones are tiled with `patch_size` windows. `mirror_axes` are spatial axes (0-based).
    Blending is float32 whatever `out_dtype` is (float16 halves the output, rounding each
    probability once, by at most 2.5e-4). `skip_empty`: a window in which every voxel equals
    its channel's minimum (`empty_value`) is not run; it counts as background with probability 1.
    `batch_size`: windows per network call, None for `windows_per_call(patch_size, device)`.
    `member_entropy=True` appends one channel (K+1 in all): the same weighted mean, over every
    pass that covers the voxel (each flip of each window), of that pass's own entropy, which
    with the mean probabilities gives the passes' mutual information
    (`medseg.inference.uncertainty`); the K probability channels are the same either way.
    """
    device = torch.device(device)
    batch_size = batch_size or windows_per_call(patch_size, device)
    spatial = tuple(image.shape[1:])
    if all(s <= p for s, p in zip(spatial, patch_size)):
        per_axis = (divisor,) * len(spatial) if isinstance(divisor, int) else tuple(divisor)
        window = tuple(math.ceil(s / d) * d for s, d in zip(spatial, per_axis))
    else:
        window = tuple(int(p) for p in patch_size)
    padded, _ = _pad_to(image, [max(s, w) for s, w in zip(spatial, window)])
    starts = list(itertools.product(*[window_starts(s, w, overlap) for s, w in zip(padded.shape[1:], window)]))
    weight = gaussian_weight(window).to(device) if len(starts) > 1 else torch.ones(window, device=device)
    flips = mirror_sets(mirror_axes)
    crops = [tuple(slice(s, s + w) for s, w in zip(start, window)) for start in starts]
    background = empty_value(padded) if skip_empty else None
    empty = [background is not None and is_empty(padded[(slice(None),) + sl], background) for sl in crops]
    if all(empty):  # nothing but background: run one window anyway (it tells the class count)
        empty[0] = False
    rows: _RowAccumulator | None = None
    pending: list[int] = []                     # window indices waiting, in order
    for index in range(len(starts)):
        pending.append(index)
        running = [i for i in pending if not empty[i]]
        if len(running) < batch_size and index + 1 < len(starts):
            continue
        probs = _run_batch(model, padded, [crops[i] for i in running], flips, device, autocast_dtype, batch_size,
                           member_entropy) if running else None
        if rows is None:
            assert probs is not None
            out = torch.empty((probs.shape[1],) + spatial, dtype=out_dtype)
            rows = _RowAccumulator(out, padded.shape[1:], window, device)
        by_index = dict(zip(running, probs)) if probs is not None else {}
        for i in pending:
            rows.add(starts[i], window, by_index.get(i), weight)
        pending = []
    assert rows is not None
    return rows.finish()


def _run_batch(model: nn.Module, padded: torch.Tensor, crops: list[tuple[slice, ...]],
               flips: list[tuple[int, ...]], device: torch.device,
               autocast_dtype: torch.dtype | None, per_call: int, member_entropy: bool = False) -> torch.Tensor:
    """Softmax (B, K, *window) of a batch of windows, averaged over the mirror flips (with
    `member_entropy`, a channel more: the flips' mean entropy, `sliding_window`).

    Flipped copies share a network call while the call holds at most `per_call` windows, so an
    image that fits in one window runs its 4 (2D) or 8 (3D) mirrored passes in fuller, faster
    batches (docs/decisions.md, "Mirrored passes share network calls"). The flips are summed in
    the same order either way.
    """
    batch = torch.stack([padded[(slice(None),) + sl] for sl in crops]).to(device)
    n = batch.shape[0]
    group = max(1, per_call // n)
    probs = 0
    entropy = 0
    for first in range(0, len(flips), group):
        chunk = flips[first:first + group]
        views = [batch.flip([a + 2 for a in flip]) if flip else batch for flip in chunk]
        x = torch.cat(views) if len(views) > 1 else views[0]
        x = x.contiguous(memory_format=memory_format(x.ndim - 2))
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            logits = model(x)
        p = torch.softmax(logits.float(), dim=1)
        if member_entropy:  # -sum p log p per pass, 0 log 0 = 0 (softmax probabilities can underflow to 0)
            h = -torch.special.xlogy(p, p).sum(dim=1, keepdim=True)
        for i, flip in enumerate(chunk):
            part = p[i * n:(i + 1) * n]
            probs = probs + (part.flip([a + 2 for a in flip]) if flip else part)
            if member_entropy:
                part = h[i * n:(i + 1) * n]
                entropy = entropy + (part.flip([a + 2 for a in flip]) if flip else part)
    if member_entropy:
        return torch.cat([probs / len(flips), entropy / len(flips)], dim=1)
    return probs / len(flips)


def argmax_mask(probabilities: torch.Tensor, chunk_voxels: int = 1 << 22) -> np.ndarray:
    """uint8 class-index map of (K, *spatial) probabilities (ties go to the lower class, as
    `torch.argmax`).

    A slab of rows at a time, so no full-size int64 index map is ever made; and class by class
    with comparisons, because `argmax` over the outer class axis is several times slower on a
    CPU (docs/decisions.md, "Argmax class by class").
    """
    spatial = tuple(probabilities.shape[1:])
    mask = np.empty(spatial, dtype=np.uint8)
    rows = max(1, chunk_voxels // max(1, int(np.prod(spatial[1:], dtype=np.int64))))
    for first in range(0, spatial[0], rows):
        slab = probabilities[:, first:first + rows]
        best = slab[0].float()
        index = torch.zeros(best.shape, dtype=torch.uint8)
        for k in range(1, slab.shape[0]):
            score = slab[k].float()
            better = score > best
            index.masked_fill_(better, k)
            best = torch.maximum(best, score)
        mask[first:first + rows] = index.numpy()
    return mask
