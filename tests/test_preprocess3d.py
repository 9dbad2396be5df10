"""Crop, resample and restore: a case goes onto the working grid and its prediction comes back
onto exactly the original grid."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.case import Case
from medseg.data.preprocess import Preprocessor, crop_box, ct_statistics, resize_label
from medseg.planning.defaults import choose_patch_size


def _case() -> Case:
    image = np.zeros((1, 30, 40, 50), np.float32)
    image[0, 5:25, 10:30, 12:40] = np.random.default_rng(0).normal(100, 10, (20, 20, 28))
    label = np.zeros((30, 40, 50), np.uint8)
    label[10:20, 15:25, 20:30] = 1
    label[12:14, 18:20, 31:34] = 2   # a small structure (3 voxels across x, 1.5 after) that must survive
    return Case("c", image, label, spacing=(2.0, 1.0, 0.5))


def test_crop_box_is_the_nonzero_bounding_box():
    case = _case()
    assert crop_box(case.image) == (slice(5, 25), slice(10, 30), slice(12, 40))
    assert crop_box(np.zeros((1, 4, 4, 4))) == (slice(0, 4),) * 3


def test_resample_to_target_spacing_and_restore_to_the_original_grid():
    case = _case()
    pre = Preprocessor(None, (1.0, 1.0, 1.0), crop_nonzero=True, num_classes=3)
    r = pre.resample(case)
    assert tuple(r.image.shape) == (1, 40, 20, 14)   # (20*2, 20*1, 28*0.5)
    assert tuple(r.label.shape) == (40, 20, 14)
    assert set(torch.unique(r.label).tolist()) == {0, 1, 2}
    x = pre.normalise(r.image)
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3
    one_hot = torch.nn.functional.one_hot(r.label.long(), 3).permute(3, 0, 1, 2).float()
    back = pre.restore(one_hot, case.spatial_shape, r.box)
    assert tuple(back.shape) == (3, 30, 40, 50)
    mask = back.argmax(0).numpy()
    outside = np.ones(case.spatial_shape, bool)
    outside[r.box] = False
    assert (mask[outside] == 0).all()
    inter = ((mask == 1) & (case.label == 1)).sum()
    assert 2 * inter / ((mask == 1).sum() + (case.label == 1).sum()) > 0.9


def test_one_hot_label_resampling_keeps_thin_structures():
    label = torch.zeros(20, 20, dtype=torch.uint8)
    label[:, 10] = 1    # a one-pixel line, halved in width by the resampling
    down = resize_label(label, (20, 14), num_classes=2)
    assert (down == 1).any(dim=1).all()


def test_ct_statistics_use_the_foreground_only():
    image = torch.full((1, 10, 10, 10), -1000.0)
    image[0, 2:8, 2:8, 2:8] = torch.linspace(0, 100, 216).reshape(6, 6, 6)
    label = torch.zeros(10, 10, 10, dtype=torch.uint8)
    label[2:8, 2:8, 2:8] = 1
    stats = ct_statistics([image], [label], 0)
    assert stats["scheme"] == "ct" and 0 <= stats["lower"] < 1 and 99 < stats["upper"] <= 100
    assert abs(stats["mean"] - 50) < 1e-6
    pre = Preprocessor(None, None, normalization=[stats])
    assert float(pre.normalise(image).min()) == pytest.approx((stats["lower"] - stats["mean"]) / stats["std"], rel=1e-5)


def test_3d_patch_fits_the_voxel_budget():
    assert choose_patch_size([(36, 50, 35)] * 3, 8) == (40, 56, 40)
    big = choose_patch_size([(140, 170, 140)], 8)
    assert np.prod(big) <= 64 ** 3 and all(p % 8 == 0 for p in big)

