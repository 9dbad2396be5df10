"""medseg.report.overlay: overlays show the prediction (filled) and the reference (outlined) apart,
each class in its one colour, on grey or colour images of any range, in 2D and as three slices of
a volume."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.case import Case
from medseg.report.overlay import PALETTE, REF_COLOUR, class_colour, outline_width, overlay, save_overlay, volume_overlay


def square_masks(size=64):
    pred = np.zeros((size, size), np.uint8)
    pred[10:40, 10:40] = 1
    pred[20:25, 20:25] = 2
    ref = np.zeros((size, size), np.uint8)
    ref[14:44, 14:44] = 1
    return pred, ref


def test_palette_is_distinct_and_avoids_the_reference_colour():
    assert len(set(PALETTE)) == len(PALETTE) >= 10
    assert REF_COLOUR not in PALETTE
    assert class_colour(1) == PALETTE[0] and class_colour(len(PALETTE) + 1) == PALETTE[0]
    with pytest.raises(ValueError):
        class_colour(0)


def test_grey_image_without_masks_is_grey_rgb_uint8():
    image = np.random.default_rng(0).normal(100.0, 30.0, (50, 70))  # any float range
    out = overlay(image)
    assert out.shape == (50, 70, 3) and out.dtype == np.uint8
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert out.min() == 0 and out.max() == 255  # 1/99 percentile stretch


def test_channel_first_inputs():
    rgb = np.zeros((3, 20, 30), np.float32)
    rgb[0] = 1.0  # pure red
    out = overlay(rgb)
    assert out.shape == (20, 30, 3)
    assert (out[..., 0] > out[..., 1]).all()
    two_channels = np.stack([np.linspace(0, 1, 600).reshape(20, 30), np.zeros((20, 30))])
    grey = overlay(two_channels)  # other channel counts: first channel as grey
    assert (grey[..., 0] == grey[..., 2]).all() and grey.max() == 255
    assert overlay(np.ones((1, 8, 8))).shape == (8, 8, 3)  # flat image does not divide by zero


def test_prediction_colours_appear_only_where_predicted():
    image = np.full((64, 64), 0.5, np.float32)
    pred, _ = square_masks()
    out = overlay(image, pred=pred).astype(int)
    background = out[pred == 0]
    assert (background == background[0]).all()  # background untouched
    organ_colour, lesion_colour = np.array(class_colour(1)), np.array(class_colour(2))
    assert (out[30, 30] != out[5, 5]).any()  # fill tints the inside
    assert np.abs(out[30, 30] - organ_colour).sum() < np.abs(out[5, 5] - organ_colour).sum()
    assert (out[10, 25] == organ_colour).all()  # outline in the class colour
    assert (out[20, 22] == lesion_colour).all()
    outline = (out == organ_colour).all(-1)
    assert not outline[pred == 0].any()


def test_reference_is_outlined_in_each_class_colour():
    """One outline colour per class: the reference's organ and lesion outlines differ, and each
    matches its class's prediction fill; with a reference the prediction is fill only."""
    image = np.zeros((64, 64), np.float32)
    pred, ref = square_masks()
    ref[30:36, 30:36] = 2  # a reference lesion inside the organ
    out = overlay(image, pred=pred, ref=ref)
    organ, lesion = np.array(class_colour(1)), np.array(class_colour(2))
    assert (out[14, 14:30] == organ).all() and (out[43, 20] == organ).all()  # organ reference outline
    assert (out[30, 30:36] == lesion).all() and (out[35, 31] == lesion).all()  # lesion reference outline
    assert not (out[10, 25] == organ).all()  # the prediction's edge is not outlined: tinted fill only
    assert np.abs(out[10, 25].astype(int) - organ).sum() < np.abs(out[5, 5].astype(int) - organ).sum()
    assert not (out == REF_COLOUR).all(-1).any()  # no single colour for every class's reference
    ref_only = overlay(image, ref=ref)
    assert set(map(tuple, ref_only.reshape(-1, 3))) == {(0, 0, 0), tuple(organ), tuple(lesion)}  # outlines only


def test_outlines_thicken_on_large_images():
    assert outline_width(128, 128) == outline_width(512, 512) == 1
    assert outline_width(1080, 1350) >= 3
    pred = np.zeros((1080, 1350), np.uint8)
    pred[200:800, 300:900] = 1
    out = overlay(np.zeros((3, 1080, 1350), np.float32), pred=pred)
    assert (out[200:203, 500] == class_colour(1)).all()


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="pred"):
        overlay(np.zeros((10, 10)), pred=np.zeros((10, 12), np.uint8))


def test_save_overlay_writes_png(tmp_path: Path):
    pred, ref = square_masks()
    path = save_overlay(tmp_path / "sub" / "case.png", np.random.default_rng(1).random((64, 64)), pred, ref, alpha=0.5)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (64, 64) and im.mode == "RGB"


def test_volume_overlay_shows_three_orthogonal_slices():
    image = np.zeros((1, 30, 40, 50), np.float32)
    image[0, 5:25, 10:30, 12:40] = np.random.default_rng(0).normal(100, 10, (20, 20, 28))
    label = np.zeros((30, 40, 50), np.uint8)
    label[10:20, 15:25, 20:30] = 1
    label[12:14, 18:20, 31:34] = 2
    case = Case("c", image, label, spacing=(2.0, 1.0, 0.5))
    picture = volume_overlay(case.image, case.label, case.label, spacing=case.spacing)
    assert picture.ndim == 3 and picture.shape[2] == 3 and picture.shape[1] > picture.shape[0] >= 192
    for k in (1, 2):  # each class's reference contour is drawn, in its colour
        assert (picture == np.array(class_colour(k), np.uint8)).all(-1).any()
