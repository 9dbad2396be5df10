"""medseg.evaluation.surface and metrics.case_metrics against MONAI (the oracle) and hand-computed cases.

MONAI: compute_hausdorff_distance(percentile=95), compute_average_surface_distance(symmetric),
compute_surface_dice(class_thresholds) and compute_dice on one-hot (B, C, ...) tensors with the
same anisotropic spacing. Where MONAI gives NaN or inf (empty masks) medseg's documented values
are checked by hand instead.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage

from medseg.evaluation.metrics import ALL_METRIC_NAMES, METRIC_NAMES, case_metrics, relative_volume_difference
from medseg.evaluation.surface import (
    bounding_box,
    lesion_metrics,
    surface_distances,
    surface_metrics,
    surface_voxels,
    worst_distance,
)

torch = pytest.importorskip("torch")
monai_metrics = pytest.importorskip("monai.metrics")

DIST_ATOL = 1e-3   # mm; MONAI keeps float32 distances
OVERLAP_ATOL = 1e-4


def _blobs(rng: np.random.Generator, shape: tuple[int, ...], k: int, smooth: float = 2.0) -> np.ndarray:
    """Random smooth label map with classes 0..k-1 (irregular structures, several components)."""
    noise = ndimage.gaussian_filter(rng.standard_normal((k, *shape)), (0, *([smooth] * len(shape))))
    labels = np.argmax(noise, axis=0)
    labels[noise.max(axis=0) < np.quantile(noise.max(axis=0), 0.45)] = 0
    return labels


def _perturb(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """A plausible prediction: shifted, eroded/dilated per class, with a few flipped voxels."""
    pred = np.roll(labels, tuple(int(s) for s in rng.integers(-2, 3, labels.ndim)), axis=tuple(range(labels.ndim)))
    for k in np.unique(pred)[1:]:
        if rng.random() < 0.5:
            grown = ndimage.binary_dilation(pred == k)
            pred[grown & (pred == 0)] = k
        else:
            pred[(pred == k) & ~ndimage.binary_erosion(pred == k)] = 0
    flips = rng.random(labels.shape) < 0.01
    pred[flips] = rng.integers(0, labels.max() + 1, int(flips.sum()))
    return pred


def _monai(pred: np.ndarray, ref: np.ndarray, k: int, spacing, tol: float) -> dict[str, np.ndarray]:
    """MONAI's per-class HD95, ASSD, NSD and Dice for foreground classes 1..k-1."""
    def onehot(a):
        return torch.nn.functional.one_hot(torch.from_numpy(a.astype(np.int64)), k).movedim(-1, 0)[None].float()

    p, r = onehot(pred), onehot(ref)
    sp = [float(s) for s in spacing]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "hd95": monai_metrics.compute_hausdorff_distance(p, r, percentile=95, spacing=sp)[0].numpy(),
            "assd": monai_metrics.compute_average_surface_distance(p, r, symmetric=True, spacing=sp)[0].numpy(),
            "nsd": monai_metrics.compute_surface_dice(p, r, class_thresholds=[tol] * (k - 1), spacing=sp)[0].numpy(),
            "dice": monai_metrics.compute_dice(p, r, include_background=False, ignore_empty=False)[0].numpy(),
        }


def _compare(pred, ref, k, spacing, tol=1.0):
    ours = case_metrics(pred, ref, k, spacing, tolerance=tol)
    want = _monai(pred, ref, k, spacing, tol)
    compared = 0
    for c in range(1, k):
        in_pred, in_ref = bool((pred == c).any()), bool((ref == c).any())
        assert ours[c]["dice"] == pytest.approx(float(want["dice"][c - 1]), abs=OVERLAP_ATOL)
        if in_pred and in_ref:  # MONAI is defined here: it is the oracle
            for name, atol in (("hd95", DIST_ATOL), ("assd", DIST_ATOL), ("nsd", OVERLAP_ATOL)):
                assert ours[c][name] == pytest.approx(float(want[name][c - 1]), abs=atol), (c, name, spacing)
            compared += 1
    return compared


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("shape,spacing", [
    ((48, 40), (1.0, 1.0)),
    ((48, 40), (0.7, 1.9)),
    ((20, 28, 24), (1.0, 1.0, 1.0)),
    ((20, 28, 24), (3.0, 0.8, 1.1)),
])
def test_random_blobs_match_monai(seed, shape, spacing):
    rng = np.random.default_rng(seed)
    ref = _blobs(rng, shape, k=3)
    pred = _perturb(rng, ref)
    assert _compare(pred, ref, 3, spacing, tol=float(rng.choice([0.5, 1.0, 2.0]))) >= 1


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.6, 0.9)])
def test_salt_and_pepper_masks_match_monai(spacing):
    """Worst case for surfaces: every voxel is on one (scattered single voxels, border contact)."""
    rng = np.random.default_rng(7)
    ref = (rng.random((12, 14, 10)) < 0.3).astype(np.int64)
    pred = (rng.random((12, 14, 10)) < 0.2).astype(np.int64)
    assert _compare(pred, ref, 2, spacing, tol=1.0) == 1


def test_hand_made_2d_square_shifted():
    """A 4x4 square and the same square shifted by one column, 1 mm spacing, computed by hand."""
    ref = np.zeros((10, 10), int)
    ref[2:6, 2:6] = 1
    pred = np.zeros_like(ref)
    pred[2:6, 3:7] = 1
    # surface of a 4x4 square: its 12 border pixels. pred->ref: on rows 2 and 5, columns 3..5 lie
    # on ref's surface (6 x 0 mm) and column 6 is 1 mm away (2 x); the side pixels (rows 3, 4 of
    # columns 3 and 6) are 1 mm from ref's nearest surface pixel (4 x). The same from ref to pred.
    d_pr, d_rp = surface_distances(pred == 1, ref == 1)
    assert sorted(d_pr.tolist()) == [0.0] * 6 + [1.0] * 6
    assert sorted(d_rp.tolist()) == [0.0] * 6 + [1.0] * 6
    m = surface_metrics(pred == 1, ref == 1, tolerance=0.5)
    assert m["assd"] == pytest.approx(12 / 24)
    assert m["hd95"] == pytest.approx(1.0)
    assert m["nsd"] == pytest.approx(12 / 24)
    assert surface_metrics(pred == 1, ref == 1, tolerance=1.0)["nsd"] == 1.0  # 1 mm is within 1 mm
    assert _compare(pred, ref, 2, (1.0, 1.0), tol=0.5) == 1


def test_hand_made_3d_anisotropic_distance():
    """Two single voxels three slices apart along an axis of 2.5 mm: every distance is 7.5 mm."""
    ref = np.zeros((8, 5, 5), int)
    pred = np.zeros_like(ref)
    ref[1, 2, 2] = 1
    pred[4, 2, 2] = 1
    m = surface_metrics(pred == 1, ref == 1, (2.5, 0.5, 0.5), tolerance=7.5)
    assert m == {"hd95": pytest.approx(7.5), "assd": pytest.approx(7.5), "nsd": 1.0}
    assert _compare(pred, ref, 2, (2.5, 0.5, 0.5), tol=7.0) == 1


def test_surface_is_monai_edges():
    """Surface voxels equal MONAI's get_mask_edges, including where the mask touches the border."""
    from monai.metrics.utils import get_mask_edges

    rng = np.random.default_rng(3)
    mask = _blobs(rng, (16, 18, 14), k=2) == 1
    mask[0] |= True  # touches the image border
    edges, _ = get_mask_edges(mask, mask, crop=False)
    np.testing.assert_array_equal(surface_voxels(mask), edges)


def test_empty_mask_conventions_are_stated_values_not_nan():
    shape, spacing = (10, 12, 8), (2.0, 1.0, 0.5)
    diag = math.sqrt(20.0**2 + 12.0**2 + 4.0**2)
    assert worst_distance(shape, spacing) == pytest.approx(diag)
    empty, full = np.zeros(shape, int), np.zeros(shape, int)
    full[3:6, 4:8, 2:5] = 1
    both = case_metrics(empty, empty, 2, spacing)[1]
    assert (both["dice"], both["hd95"], both["assd"], both["nsd"], both["lesion_f1"]) == (1.0, 0.0, 0.0, 1.0, 1.0)
    assert both["rvd"] == 0.0 and both["precision"] == 1.0 and both["sensitivity"] == 1.0
    missed = case_metrics(empty, full, 2, spacing)[1]
    assert missed["dice"] == 0.0 and missed["nsd"] == 0.0 and missed["lesion_f1"] == 0.0
    assert missed["hd95"] == pytest.approx(diag) and missed["assd"] == pytest.approx(diag)
    assert missed["rvd"] == -1.0 and missed["lesion_fn"] == 1.0 and missed["sensitivity"] == 0.0
    spurious = case_metrics(full, empty, 2, spacing)[1]
    assert spurious["dice"] == 0.0 and spurious["hd95"] == pytest.approx(diag) and spurious["nsd"] == 0.0
    assert spurious["rvd"] == 1.0 and spurious["lesion_fp"] == 1.0 and spurious["precision"] == 0.0
    # MONAI differs exactly here (that is why the convention is documented)
    want = _monai(empty, full, 2, spacing, 1.0)
    assert math.isinf(float(want["hd95"][0])) or math.isnan(float(want["hd95"][0]))
    for per_class in (both, missed, spurious):
        assert all(math.isfinite(v) for v in per_class.values())


def test_volumes_in_ml_and_mm2():
    ref = np.zeros((10, 10, 10), int)
    ref[:5, :4, :2] = 1  # 40 voxels
    pred = np.zeros_like(ref)
    pred[:5, :4, :3] = 1  # 60 voxels
    m = case_metrics(pred, ref, 2, (2.0, 2.5, 2.0))[1]  # 10 mm³ per voxel
    assert m["ref_volume"] == pytest.approx(0.4) and m["pred_volume"] == pytest.approx(0.6)  # mL
    assert m["rvd"] == pytest.approx(0.5)
    m2 = case_metrics(pred[0], ref[0], 2, (0.5, 0.5))[1]  # 2D: mm²
    assert m2["ref_volume"] == pytest.approx(8 * 0.25) and m2["pred_volume"] == pytest.approx(12 * 0.25)
    assert relative_volume_difference(0.0, 0.0) == 0.0


def test_lesion_detection_hand_made():
    ref = np.zeros((20, 20), bool)
    ref[1:3, 1:3] = True      # found by a small overlap
    ref[10:12, 10:12] = True  # missed
    ref[15:17, 1:3] = True    # found
    pred = np.zeros_like(ref)
    pred[2:4, 2:4] = True     # overlaps lesion 1 by one pixel
    pred[15:17, 1:3] = True
    pred[5:7, 15:17] = True   # false positive
    pred[18, 18] = True       # false positive (single pixel)
    m = lesion_metrics(pred, ref)
    assert (m["lesion_tp"], m["lesion_fp"], m["lesion_fn"]) == (2, 2, 1)
    assert m["lesion_f1"] == pytest.approx(4 / 7)
    assert (m["ref_lesions"], m["pred_lesions"]) == (3, 4)
    # requiring half of a lesion to be covered: the one-pixel overlap no longer counts
    strict = lesion_metrics(pred, ref, min_overlap=0.5)
    assert (strict["lesion_tp"], strict["lesion_fn"]) == (1, 2)
    # diagonal neighbours are one lesion (full connectivity)
    diag = np.zeros((5, 5), bool)
    diag[1, 1] = diag[2, 2] = True
    assert lesion_metrics(diag, diag)["ref_lesions"] == 1


def test_case_metrics_keys_and_background():
    rng = np.random.default_rng(5)
    ref = _blobs(rng, (30, 30), k=3)
    m = case_metrics(_perturb(rng, ref), ref, 3, (1.0, 1.0))
    assert set(m[0]) == set(METRIC_NAMES) | {"ref_volume", "pred_volume", "rvd"}  # background: no distances
    assert set(m[1]) == set(ALL_METRIC_NAMES)
    fast = case_metrics(ref, ref, 3, distances=False, lesions=False)
    assert "hd95" not in fast[1] and fast[1]["dice"] == 1.0


def test_cropping_is_exact_and_errors():
    rng = np.random.default_rng(11)
    ref = np.zeros((60, 60, 60), bool)
    pred = np.zeros_like(ref)
    ref[20:30, 25:33, 10:18] = _blobs(rng, (10, 8, 8), 2) == 1
    pred[21:31, 24:32, 10:18] = _blobs(rng, (10, 8, 8), 2) == 1
    assert bounding_box(np.zeros((3, 3), bool)) is None
    d1, d2 = surface_distances(pred, ref, (1.2, 0.9, 2.0))
    # reference: the uncropped distance transform over the whole volume
    full1 = ndimage.distance_transform_edt(~surface_voxels(ref), sampling=(1.2, 0.9, 2.0))[surface_voxels(pred)]
    np.testing.assert_allclose(np.sort(d1), np.sort(full1))
    assert d2.size == surface_voxels(ref).sum()
    with pytest.raises(ValueError, match="spacing"):
        surface_metrics(pred, ref, (1.0, 1.0))
    with pytest.raises(ValueError, match="tolerance"):
        surface_metrics(pred, ref, tolerance=-1)
    with pytest.raises(ValueError, match="shape"):
        surface_distances(pred, ref[:-1])
