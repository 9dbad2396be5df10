"""The plan reads the structures: the fingerprint measures how thin each labelled class is, and the
2D working grid and the 3D coarsening follow from it (medseg.planning.rules), on real data."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import real_dataset

from medseg.planning import Budget, compute_fingerprint, make_plan
from medseg.planning.fingerprint import thickness_mm
from medseg.planning.rules import AUTO_IMAGE_SIZE, MIN_THIN_VOXELS, working_image_size


def test_thickness_of_lines_and_discs():
    image = np.zeros((200, 200), bool)
    image[50, 10:190] = True                      # a 1-pixel line
    assert thickness_mm(image, (1.0, 1.0)) == 1.0
    image[:] = False
    image[40:47, 10:190] = True                   # a 7-pixel band
    assert thickness_mm(image, (1.0, 1.0)) == pytest.approx(7.0, abs=1.0)
    yy, xx = np.mgrid[:200, :200]
    disc = (yy - 100) ** 2 + (xx - 100) ** 2 <= 60 ** 2
    assert thickness_mm(disc, (1.0, 1.0)) > 40    # a blob measures its body, not its outline
    assert thickness_mm(image, (0.5, 0.5)) == pytest.approx(3.5, abs=0.5)  # in mm, with the spacing


def test_working_grid_follows_the_thinnest_parts():
    assert working_image_size(400, thin_px=1.0) is None            # small images keep their grid
    assert working_image_size(999, thin_px=4.0) is None            # thin vessels: native
    assert working_image_size(622, thin_px=97.0) == AUTO_IMAGE_SIZE   # large polyps: the coarsest grid
    side = working_image_size(1000, thin_px=20.0)                  # in between: thin parts keep 4 px
    assert side == int(np.ceil(1000 * MIN_THIN_VOXELS / 20.0))
    assert working_image_size(1000) == AUTO_IMAGE_SIZE             # headers only (no fingerprint)


def test_chasedb1_vessels_keep_the_native_grid():
    fp, _, _ = compute_fingerprint(real_dataset("chasedb1"), progress=False)
    assert fp.thinnest_mm() is not None and fp.thinnest_mm() <= 6    # vessels a few pixels wide
    plan = make_plan(fp, Budget("cpu", 8.0, 15.0, threads=2))
    assert plan["image_size"] is None, plan["reasons"]["image_size"]
    assert "thinnest" in plan["reasons"]["image_size"]
    assert plan["patch_size"][0] >= 128                             # native images train in patches
    assert "14 groups" in plan["fingerprint"]["grouping"]           # both eyes of a child together


def test_thin_structures_stop_3d_coarsening():
    """A 1-minute CPU budget coarsens hippocampus volumes for speed only while their thinnest parts
    (~3 mm) keep MIN_THIN_VOXELS voxels; they are thinner than that already, so the grid stays."""
    fp, _, _ = compute_fingerprint(real_dataset("msd-hippocampus"), progress=False)
    assert 2.0 <= fp.thinnest_mm() < MIN_THIN_VOXELS
    plan = make_plan(fp, Budget("cpu", 8.0, 1.0, threads=2))
    assert plan["target_spacing"] == pytest.approx([1.0, 1.0, 1.0])
