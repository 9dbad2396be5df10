"""medseg.io.labels: mask values to class indices (index, levels, threshold for lossy masks), and
the values that fit no rule, named with their file."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import raises_naming, real_dataset
from medseg.errors import MedsegInputError
from medseg.io.labels import NOT_A_LABEL_MASK, LabelMapping, infer_label_mapping
from medseg.io.registry import read_mask


# --------------------------------------------------------------------------------- labels

def masks_of(*arrays):
    return [(Path(f"m{i}.png"), np.asarray(a)) for i, a in enumerate(arrays)]


def jpeg_like(shape=(40, 40), seed=0, smear=0.02, dtype=np.uint8, top=255):
    """A binary mask whose edge pixels took a few grey values near 0 or the top, plus `smear` mid-grey."""
    rng = np.random.default_rng(seed)
    m = np.where(rng.random(shape) > 0.5, top - rng.integers(0, 10, shape), rng.integers(0, 10, shape))
    mid = rng.random(shape) < smear
    m[mid] = top // 2
    return m.astype(dtype)


def test_index_mapping():
    m = infer_label_mapping(masks_of([[0, 1], [2, 2]], [[0, 0], [1, 0]]))
    assert m.mode == "index" and m.num_classes == 3
    np.testing.assert_array_equal(m.apply(np.array([[2, 0]], np.uint16)), [[2, 0]])
    assert m.apply(np.array([[2, 0]])).dtype == np.uint8
    assert infer_label_mapping(masks_of(np.zeros((3, 3)))).num_classes == 2  # all background: still binary
    assert infer_label_mapping(masks_of(np.full((2, 2), 31))).num_classes == 32
    with raises_naming(Path("test_case.png"), "5"):
        m.apply_checked(np.array([[0, 5]]), Path("test_case.png"))
    with pytest.raises(MedsegInputError):
        m.apply(np.array([[-1, 0]]))


def test_levels_mapping():
    m = infer_label_mapping(masks_of(np.array([[0, 255]], np.uint8), np.array([[0, 0]], np.uint8)))
    assert (m.mode, m.values, m.num_classes) == ("levels", [0, 255], 2)
    np.testing.assert_array_equal(m.apply(np.array([[255, 0]], np.uint8)), [[1, 0]])
    m3 = infer_label_mapping(masks_of(np.array([[0, 128]], np.uint8), np.array([[255, 0]], np.uint8)))
    assert (m3.mode, m3.values, m3.num_classes) == ("levels", [0, 128, 255], 3)
    np.testing.assert_array_equal(m3.apply(np.array([[0, 128, 255]], np.uint8)), [[0, 1, 2]])
    np.testing.assert_array_equal(m3.apply(np.array([[0, 128, 255]], np.int32)), [[0, 1, 2]])  # non-LUT path
    wide = infer_label_mapping(masks_of(np.array([[0, 1000, 65535]], np.uint16)))
    assert wide.values == [0, 1000, 65535]
    np.testing.assert_array_equal(wide.apply(np.array([[65535, 1000]], np.uint16)), [[2, 1]])
    assert infer_label_mapping(masks_of(np.full((2, 2), 255, np.uint8))).values == [0, 255]  # lone value v -> 0/v
    # a value the mapping does not know
    with raises_naming(Path("odd_case.png"), "128"):
        m.apply_checked(np.array([[0, 128, 255]], np.uint8), Path("odd_case.png"))
    with raises_naming(Path("odd_case.png"), "7"):
        m.apply_checked(np.array([[0, 7]], np.int64), Path("odd_case.png"))


def test_threshold_mapping_for_lossy_binary_masks():
    masks = masks_of(jpeg_like(seed=0), jpeg_like(seed=1), jpeg_like(seed=2, smear=0.0))
    m = infer_label_mapping(masks)
    assert (m.mode, m.threshold, m.num_classes) == ("threshold", 128, 2)
    raw = masks[0][1]
    np.testing.assert_array_equal(m.apply(raw), (raw >= 128).astype(np.uint8))
    # 16-bit values: the range is 0..65535, the cut half of it
    m16 = infer_label_mapping(masks_of(jpeg_like(dtype=np.uint16, top=65535)))
    assert (m16.mode, m16.threshold) == ("threshold", 32768)
    # a grey-scale picture put among the masks: named, with its fraction of mid-grey pixels
    picture = np.random.default_rng(5).integers(0, 256, (40, 40), dtype=np.uint8)
    bad = [(Path("ok.png"), jpeg_like()), (Path("photo_not_mask.png"), picture)]
    with raises_naming(Path("photo_not_mask.png"), NOT_A_LABEL_MASK) as info:
        infer_label_mapping(bad)
    assert "%" in str(info.value)
    # just over the 3 % allowance fails, just under passes
    with raises_naming(Path("m0.png"), "mid-grey"):
        infer_label_mapping(masks_of(jpeg_like(smear=0.05)))
    assert infer_label_mapping(masks_of(jpeg_like(smear=0.01))).mode == "threshold"
    # applying the mapping to a smeared mask is refused too
    with raises_naming(Path("smear.png"), "mid-grey"):
        m.apply_checked(picture, Path("smear.png"))
    with raises_naming(Path("deep.png")):
        m.apply_checked(np.array([[0, 300]], np.uint16), Path("deep.png"))


def test_values_that_fit_no_rule():
    many_classes = np.arange(41, dtype=np.uint8).reshape(1, 41)  # 41 classes: too many for rule 1 or 2
    with raises_naming(Path("m0.png"), NOT_A_LABEL_MASK):
        infer_label_mapping(masks_of(many_classes))
    probs = np.random.default_rng(6).random((5, 5))
    with raises_naming(Path("m1.png"), "non-integer"):
        infer_label_mapping(masks_of(np.zeros((5, 5)), probs))
    with raises_naming(Path("m0.png"), "negative"):
        infer_label_mapping(masks_of(np.arange(-5, 5).reshape(2, 5)))
    with pytest.raises(MedsegInputError):
        infer_label_mapping([])


def test_mapping_round_trips_through_json():
    for m in (LabelMapping("index", num_classes=4), LabelMapping("levels", values=[0, 128, 255]),
              LabelMapping("threshold", threshold=128)):
        d = json.loads(json.dumps(m.to_dict()))
        assert LabelMapping.from_dict(d) == m
        assert m.describe()
    assert LabelMapping("levels", values=[0, 255]).num_classes == 2
    with pytest.raises(ValueError):
        LabelMapping("guess")
    with pytest.raises(ValueError):
        LabelMapping("levels", values=[255, 0])


def test_kvasir_masks_are_lossy_binary():
    """Kvasir-SEG masks are RGB JPEGs: grey (channels equal), values near 0 or 255 only."""
    root = real_dataset("kvasir-seg")
    files = sorted((root / "masks").glob("*.jpg"))[:25]
    masks = [(f, read_mask(f)) for f in files]
    for f, m in masks:
        assert m.ndim == 2 and m.dtype == np.uint8, f
    m = infer_label_mapping(masks)
    assert (m.mode, m.threshold) == ("threshold", 128)
    fg = np.mean([m.apply_checked(raw, f).mean() for f, raw in masks])
    assert 0.02 < fg < 0.6  # polyps cover a minority of the frame
