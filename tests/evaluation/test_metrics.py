"""medseg.evaluation.metrics: hand-computed cases, independent recomputation, MONAI oracle, conventions."""
from __future__ import annotations

import time

import numpy as np
import pytest

from medseg.evaluation.metrics import (
    METRIC_NAMES,
    confusion,
    dice_from_confusion,
    metrics_from_confusion,
    overlap_metrics,
)


def test_hand_computed_2d():
    ref = np.array(
        [
            [0, 0, 1, 1],
            [0, 0, 1, 1],
            [2, 2, 0, 0],
        ]
    )
    pred = np.array(
        [
            [0, 1, 1, 1],
            [0, 0, 1, 0],
            [2, 0, 0, 0],
        ]
    )
    conf = confusion(pred, ref, 3)
    assert conf.dtype == np.int64 and conf.shape == (3, 4)
    # class 0: ref has 6 voxels; pred 0 at 7 voxels; overlap 5
    # class 1: ref 4, pred 4, overlap 3
    # class 2: ref 2, pred 1, overlap 1
    np.testing.assert_array_equal(
        conf,
        [
            [5, 2, 1, 4],  # TP, FP, FN, TN (N = 12)
            [3, 1, 1, 7],
            [1, 0, 1, 10],
        ],
    )
    m = overlap_metrics(pred, ref, 3)
    assert set(m) == {0, 1, 2}
    for k in m:
        assert tuple(m[k]) == METRIC_NAMES
    assert m[0]["dice"] == pytest.approx(10 / 13)
    assert m[0]["jaccard"] == pytest.approx(5 / 8)
    assert m[0]["sensitivity"] == pytest.approx(5 / 6)
    assert m[0]["specificity"] == pytest.approx(4 / 6)
    assert m[0]["accuracy"] == pytest.approx(9 / 12)
    assert m[1]["dice"] == pytest.approx(6 / 8)
    assert m[1]["jaccard"] == pytest.approx(3 / 5)
    assert m[2]["dice"] == pytest.approx(2 / 3)
    assert m[2]["sensitivity"] == pytest.approx(1 / 2)
    assert m[2]["specificity"] == pytest.approx(1.0)
    assert m[2]["accuracy"] == pytest.approx(11 / 12)
    np.testing.assert_allclose(dice_from_confusion(conf), [10 / 13, 6 / 8, 2 / 3])


def _direct(pred, ref, k):
    """Independent per-class computation with boolean masks."""
    out = {}
    n = ref.size
    for c in range(k):
        p, r = pred == c, ref == c
        tp = int(np.sum(p & r))
        fp = int(np.sum(p & ~r))
        fn = int(np.sum(~p & r))
        tn = int(np.sum(~p & ~r))
        assert tp + fp + fn + tn == n
        out[c] = dict(
            tp=tp,
            fp=fp,
            fn=fn,
            tn=tn,
            dice=2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 1.0,
            jaccard=tp / (tp + fp + fn) if (tp + fp + fn) else 1.0,
            sensitivity=tp / (tp + fn) if (tp + fn) else 1.0,
            specificity=tn / (tn + fp) if (tn + fp) else 1.0,
            precision=tp / (tp + fp) if (tp + fp) else 1.0,
            accuracy=(tp + tn) / n,
        )
    return out


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int64])
def test_random_3d_matches_direct_computation(dtype):
    rng = np.random.default_rng(0)
    k = 5
    ref = rng.integers(0, k, size=(9, 11, 7)).astype(dtype)
    pred = np.where(rng.random(ref.shape) < 0.6, ref, rng.integers(0, k, size=ref.shape)).astype(dtype)
    conf = confusion(pred, ref, k)
    got = overlap_metrics(pred, ref, k)
    want = _direct(pred, ref, k)
    for c in range(k):
        np.testing.assert_array_equal(conf[c], [want[c][n] for n in ("tp", "fp", "fn", "tn")])
        for name in METRIC_NAMES:
            assert got[c][name] == pytest.approx(want[c][name], abs=1e-12), (c, name)


@pytest.mark.parametrize("spatial", [(16, 13), (8, 9, 6)])
def test_dice_matches_monai_compute_dice(spatial):
    torch = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")
    rng = np.random.default_rng(1)
    k, batch = 4, 3
    ref = rng.integers(0, k, size=(batch, *spatial))
    pred = np.where(rng.random(ref.shape) < 0.5, ref, rng.integers(0, k, size=ref.shape))
    # sample 2: class 3 absent from both; sample 1: class 3 only in pred
    ref[1][ref[1] == 3] = 0
    ref[2][ref[2] == 3] = 0
    pred[2][pred[2] == 3] = 0
    pred[1].flat[0] = 3

    def onehot(a):
        return torch.nn.functional.one_hot(torch.from_numpy(a), k).movedim(-1, 1)

    want = monai_metrics.compute_dice(onehot(pred), onehot(ref), include_background=True, ignore_empty=False)
    got = np.stack([dice_from_confusion(confusion(pred[b], ref[b], k)) for b in range(batch)])
    np.testing.assert_allclose(got, want.numpy(), atol=1e-6, rtol=0)
    assert got[2, 3] == 1.0 and got[1, 3] == 0.0


def test_empty_mask_conventions():
    ref = np.zeros((4, 4), dtype=int)
    pred = np.zeros((4, 4), dtype=int)
    m = overlap_metrics(pred, ref, 2)
    # class 1 absent from both: every overlap metric is 1; class 0 fills the image: no negatives
    assert m[1] == {name: 1.0 for name in METRIC_NAMES}
    assert m[0] == {name: 1.0 for name in METRIC_NAMES}

    pred_one = pred.copy()
    pred_one[0, 0] = 1  # class 1 only predicted (false positive)
    m = overlap_metrics(pred_one, ref, 2)
    assert m[1]["dice"] == 0.0 and m[1]["jaccard"] == 0.0
    assert m[1]["sensitivity"] == 1.0  # nothing to miss
    assert m[1]["specificity"] == pytest.approx(15 / 16)

    m = overlap_metrics(ref, pred_one, 2)  # class 1 only in the reference (missed)
    assert m[1]["dice"] == 0.0 and m[1]["jaccard"] == 0.0
    assert m[1]["sensitivity"] == 0.0
    assert m[1]["specificity"] == 1.0

    for per_class in overlap_metrics(pred_one, ref, 5).values():
        assert all(np.isfinite(v) for v in per_class.values())


def test_ignore_index_excluded():
    rng = np.random.default_rng(2)
    ref = rng.integers(0, 3, size=(10, 12))
    pred = rng.integers(0, 3, size=(10, 12))
    ignored = rng.random(ref.shape) < 0.25
    ref_ig = np.where(ignored, 255, ref)
    conf = confusion(pred, ref_ig, 3, ignore_index=255)
    np.testing.assert_array_equal(conf, confusion(pred[~ignored], ref[~ignored], 3))
    assert conf[0].sum() == (~ignored).sum()
    got = overlap_metrics(pred, ref_ig, 3, ignore_index=255)
    want = overlap_metrics(pred[~ignored], ref[~ignored], 3)
    assert got == want
    # without ignore_index the 255 labels are an error, not silently counted
    with pytest.raises(ValueError, match="outside"):
        confusion(pred, ref_ig, 3)


def test_everything_ignored_is_not_nan():
    ref = np.full((3, 3), -1)
    pred = np.zeros((3, 3), dtype=int)
    m = overlap_metrics(pred, ref, 2, ignore_index=-1)
    assert m == {0: {n: 1.0 for n in METRIC_NAMES}, 1: {n: 1.0 for n in METRIC_NAMES}}


def test_errors():
    with pytest.raises(ValueError, match="shape"):
        confusion(np.zeros((3, 4), int), np.zeros((4, 3), int), 2)
    with pytest.raises(ValueError, match="outside"):
        confusion(np.full((2, 2), 2), np.zeros((2, 2), int), 2)
    with pytest.raises(ValueError, match="integer"):
        confusion(np.zeros((2, 2)), np.zeros((2, 2), int), 2)
    with pytest.raises(ValueError):
        dice_from_confusion(np.zeros((3, 3)))


def test_bool_masks_accepted():
    ref = np.array([[True, False], [True, True]])
    pred = np.array([[True, True], [False, True]])
    assert overlap_metrics(pred, ref, 2)[1]["dice"] == pytest.approx(4 / 6)


def test_confusions_sum_over_cases():
    rng = np.random.default_rng(3)
    cases = [(rng.integers(0, 3, (6, 7, 5)), rng.integers(0, 3, (6, 7, 5))) for _ in range(4)]
    total = sum(confusion(p, r, 3) for p, r in cases)
    stacked = confusion(np.stack([p for p, _ in cases]), np.stack([r for _, r in cases]), 3)
    np.testing.assert_array_equal(total, stacked)
    np.testing.assert_allclose(dice_from_confusion(total), metrics_from_confusion(total)["dice"])
    # leading axes are kept: (cases, K, 4) -> (cases, K)
    per_case = np.stack([confusion(p, r, 3) for p, r in cases])
    assert dice_from_confusion(per_case).shape == (4, 3)


def test_large_3d_is_fast():
    rng = np.random.default_rng(4)
    ref = rng.integers(0, 4, size=(128, 128, 128), dtype=np.uint8)
    pred = ref.copy()
    pred[::2] = rng.integers(0, 4, size=pred[::2].shape, dtype=np.uint8)
    start = time.perf_counter()
    m = overlap_metrics(pred, ref, 4, ignore_index=255)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"overlap_metrics on 128^3 took {elapsed:.2f}s"
    # half the slices copied, half random: Dice for each class is about 0.5 + 0.5 * 0.25
    for k in range(4):
        assert m[k]["dice"] == pytest.approx(0.625, abs=0.01)
