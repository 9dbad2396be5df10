"""medseg.planning.defaults: the settings chosen from the data when no plan gives them (here the 3D
training patch, which must fit the voxel budget and the network's divisor)."""
from __future__ import annotations

import numpy as np

from medseg.planning.defaults import choose_patch_size


def test_3d_patch_fits_the_voxel_budget():
    assert choose_patch_size([(36, 50, 35)] * 3, 8) == (40, 56, 40)
    big = choose_patch_size([(140, 170, 140)], 8)
    assert np.prod(big) <= 64 ** 3 and all(p % 8 == 0 for p in big)
