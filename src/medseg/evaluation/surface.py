"""Surface-distance and lesion-wise metrics for one class of one case (numpy + scipy, 2D or 3D).

Surfaces follow MONAI's `get_mask_edges` (spacing=None), the reference the tests compare with: a
mask's surface is its voxels that disappear under one binary erosion with the face-connected
structuring element, the outside of the array counting as background (so a structure touching the
image border has a surface there). Distances are Euclidean in millimetres (voxel indices times
``spacing``), from every surface voxel of one mask to the nearest surface voxel of the other.

* HD95: the larger of the two directed 95th percentiles (linear interpolation, as
  ``numpy.percentile`` and ``torch.quantile``).
* ASSD: the mean of both directed distance sets pooled, i.e.
  ``(sum d(P->R) + sum d(R->P)) / (|surface P| + |surface R|)``.
* NSD (normalised surface Dice, Nikolov et al. 2021, counted in surface voxels as MONAI's
  ``use_subvoxels=False``): the fraction of both surfaces within ``tolerance`` mm of the other.

Empty masks (MONAI gives NaN or inf here; medseg never does):

* both empty: HD95 = ASSD = 0 mm, NSD = 1 (nothing to find and nothing wrongly found);
* one empty: HD95 = ASSD = `worst_distance` (the image diagonal in mm, larger than any distance
  two voxels of the image can have), NSD = 0.

Speed: everything runs on the bounding box of the union of both masks. That is exact, not an
approximation: every surface voxel of either mask lies inside the box, and the box's outside is
background for both, which the erosion's border value already assumes. The distance transform
(`scipy.ndimage.distance_transform_edt` with ``sampling=spacing``, exact Euclidean) therefore
touches only the box, not the volume.

Lesion-wise detection splits each mask into connected components (full connectivity: 8 in 2D, 26
in 3D). A reference lesion is *detected* (true positive) when at least ``min_overlap`` of its
voxels are predicted (default: any voxel); a predicted lesion that overlaps no reference voxel is a
false positive; an undetected reference lesion is a false negative. Lesion F1 =
2TP / (2TP + FP + FN), 1.0 when both masks are empty.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage

__all__ = [
    "DISTANCE_METRICS",
    "LESION_METRICS",
    "as_spacing",
    "bounding_box",
    "surface_voxels",
    "surface_distances",
    "surface_metrics",
    "lesion_metrics",
    "worst_distance",
]

DISTANCE_METRICS = ("hd95", "assd", "nsd")
LESION_METRICS = ("lesion_f1", "lesion_tp", "lesion_fp", "lesion_fn")
# Distances within this relative margin of the tolerance count as within it: sqrt and float32
# rounding (MONAI keeps float32 distances) must not decide whether a 1.0 mm step is inside 1 mm.
_TOLERANCE_RTOL = 1e-6


def as_spacing(spacing: Sequence[float] | float | None, ndim: int) -> np.ndarray:
    """Spacing as `ndim` positive floats (None: 1 mm; one number: isotropic); ValueError otherwise."""
    if spacing is None:
        return np.ones(ndim)
    s = np.asarray(spacing, dtype=np.float64).ravel()
    if s.size == 1:
        s = np.repeat(s, ndim)
    if s.size != ndim or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"spacing {tuple(s)} must be {ndim} positive numbers (one per axis)")
    return s


def worst_distance(shape: Sequence[int], spacing: Sequence[float] | None = None) -> float:
    """The image diagonal in mm, ``sqrt(sum((n_i * s_i)^2))``: the distance reported when only one
    of the two masks holds the structure (longer than any distance inside the image)."""
    s = as_spacing(spacing, len(shape))
    return float(math.sqrt(float(np.sum((np.asarray(shape, dtype=np.float64) * s) ** 2))))


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Tight bounding box of a boolean mask as slices, or None when it is empty."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hit.size == 0:
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Boolean surface of a boolean mask: its voxels removed by one face-connected erosion."""
    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def _directed(from_surface: np.ndarray, to_surface: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Distance (mm) from each voxel of `from_surface` to the nearest voxel of `to_surface`."""
    edt = ndimage.distance_transform_edt(~to_surface, sampling=spacing)
    return edt[from_surface]


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(distances pred->ref, distances ref->pred) in mm over the two surfaces.

    Either array is empty when that mask is empty; when the *other* mask is empty the distances
    are undefined and both arrays come back empty (callers apply the empty-mask convention).
    """
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"pred shape {pred.shape} differs from ref shape {ref.shape}")
    s = as_spacing(spacing, pred.ndim)
    if not pred.any() or not ref.any():
        return np.zeros(0), np.zeros(0)
    box = bounding_box(pred | ref)
    p_surface, r_surface = surface_voxels(pred[box]), surface_voxels(ref[box])
    return _directed(p_surface, r_surface, s), _directed(r_surface, p_surface, s)


def surface_metrics(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None, *,
    tolerance: float = 1.0, percentile: float = 95.0, worst: float | None = None,
) -> dict[str, float]:
    """``{"hd95", "assd", "nsd"}`` for two boolean masks (see the module docstring).

    tolerance: NSD tolerance in mm. percentile: of the directed distances (95 gives HD95, 100 the
    Hausdorff distance). worst: distance for a structure in only one mask (default: image diagonal).
    """
    if tolerance < 0 or not math.isfinite(tolerance):
        raise ValueError(f"NSD tolerance must be a finite number >= 0 mm, got {tolerance}")
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    has_pred, has_ref = bool(pred.any()), bool(ref.any())
    if not has_pred and not has_ref:
        return {"hd95": 0.0, "assd": 0.0, "nsd": 1.0}
    if not has_pred or not has_ref:
        w = worst_distance(pred.shape, spacing) if worst is None else float(worst)
        return {"hd95": w, "assd": w, "nsd": 0.0}
    d_pr, d_rp = surface_distances(pred, ref, spacing)
    hd = max(float(np.percentile(d_pr, percentile)), float(np.percentile(d_rp, percentile)))
    total = d_pr.size + d_rp.size
    assd = (float(d_pr.sum()) + float(d_rp.sum())) / total
    limit = tolerance * (1 + _TOLERANCE_RTOL) + 1e-12
    nsd = (int(np.count_nonzero(d_pr <= limit)) + int(np.count_nonzero(d_rp <= limit))) / total
    return {"hd95": hd, "assd": assd, "nsd": nsd}


def lesion_metrics(pred: np.ndarray, ref: np.ndarray, *, min_overlap: float = 0.0) -> dict[str, float]:
    """Connected-component detection counts and F1 (see the module docstring).

    Returns lesion_tp, lesion_fp, lesion_fn (as floats, for uniform tables), lesion_f1,
    ref_lesions and pred_lesions. min_overlap: fraction of a reference lesion's voxels that must
    be predicted for it to count as found; 0 means any overlap.
    """
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"pred shape {pred.shape} differs from ref shape {ref.shape}")
    box = bounding_box(pred | ref)
    if box is None:
        return {"lesion_f1": 1.0, "lesion_tp": 0.0, "lesion_fp": 0.0, "lesion_fn": 0.0,
                "ref_lesions": 0.0, "pred_lesions": 0.0}
    pred, ref = pred[box], ref[box]
    structure = ndimage.generate_binary_structure(pred.ndim, pred.ndim)  # full connectivity
    ref_labels, n_ref = ndimage.label(ref, structure)
    pred_labels, n_pred = ndimage.label(pred, structure)
    if n_ref:
        size = np.bincount(ref_labels.ravel(), minlength=n_ref + 1)[1:]
        hit = np.bincount(ref_labels[pred].ravel(), minlength=n_ref + 1)[1:]
        found = hit > 0 if min_overlap <= 0 else hit >= min_overlap * size
        tp = int(np.count_nonzero(found))
    else:
        tp = 0
    fn = n_ref - tp
    fp = n_pred - int(np.count_nonzero(np.unique(pred_labels[ref & pred])))
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 1.0
    return {"lesion_f1": float(f1), "lesion_tp": float(tp), "lesion_fp": float(fp), "lesion_fn": float(fn),
            "ref_lesions": float(n_ref), "pred_lesions": float(n_pred)}
