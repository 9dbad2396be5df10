"""Settings of a run trained without a plan (`plan=False`): the rules of `medseg.planning.rules`
applied to the image headers instead of a fingerprint, so there is one rule for each setting."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np

from ..data.augment import left_right_axis
from ..io.dataset import CasePair
from ..io.registry import read_image_header
from .rules import MAX_PATCH, working_image_size

MAX_PATCH_VOXELS_3D = 64 ** 3   # ~1.5 s per patch for a training step of the default 3D U-Net on a CPU


def choose_image_size(pairs: list[CasePair], requested: int | str | None) -> int | None:
    """`image_size="auto"` from the image headers: `rules.working_image_size` of the longest side."""
    if requested != "auto":
        return None if requested in (None, 0) else int(requested)
    return working_image_size(max(max(read_image_header(p.image)["size"]) for p in pairs))


def choose_patch_size(shapes: list[tuple[int, ...]], divisor: int) -> tuple[int, ...]:
    """Median working shape rounded up to the network's divisor, capped per axis (the CPU's
    MAX_PATCH); in 3D the longest axis then shrinks until the patch holds at most
    MAX_PATCH_VOXELS_3D voxels, so one CPU training step stays around a second or two."""
    median = np.median(np.array(shapes), axis=0)
    cap = MAX_PATCH["cpu"][len(median)]
    patch = [int(min(cap, math.ceil(m / divisor) * divisor)) for m in median]
    while len(patch) == 3 and int(np.prod(patch)) > MAX_PATCH_VOXELS_3D and max(patch) > divisor:
        patch[int(np.argmax(patch))] -= divisor
    return tuple(patch)


def choose_spacing(pairs: list[CasePair], requested) -> tuple[float, ...] | None:
    """`target_spacing="auto"`: the median voxel size per axis of the dataset (3D only)."""
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
