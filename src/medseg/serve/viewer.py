"""NIfTI files for the browser viewer: the image, the mask and the uncertainty map of a job, all
with one affine, so niivue draws the overlays exactly on the image whatever the input's format.

Why always NIfTI: niivue reads NIfTI natively, while a PNG mask or a DICOM series is no volume it
can overlay. Volumes keep their geometry (ITK's LPS origin and direction, turned into NIfTI's
RAS); 2D pictures become one-slice volumes whose rows run downwards on the screen, as in the
picture; colour pictures are stored as RGB (NIfTI RGB24), so the viewer shows them in colour.
"""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from ..atomic import atomic_path
from ..case import Case

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def viewer_affine(case: Case) -> np.ndarray:
    """4x4 voxel (x, y, z) -> RAS mm. Volumes: from the case's geometry (spacing, origin and
    direction in ITK order); 2D: the picture upright (row 0 at the top), spacing as read."""
    affine = np.eye(4)
    geometry = case.meta.get("geometry")
    if case.spatial_dims == 3 and geometry:
        spacing = np.asarray(geometry["spacing"], float)
        direction = np.asarray(geometry["direction"], float).reshape(3, 3)
        affine[:3, :3] = LPS_TO_RAS @ direction @ np.diag(spacing)
        affine[:3, 3] = LPS_TO_RAS @ np.asarray(geometry["origin"], float)
    elif case.spatial_dims == 3:
        affine[:3, :3] = np.diag(list(reversed([float(s) for s in case.spacing])))
    else:
        sy, sx = (float(s) for s in case.spacing)
        affine[:3, :3] = np.diag([sx, -sy, 1.0])
        affine[1, 3] = sy * (case.spatial_shape[0] - 1)
    return affine


def _voxels(array: np.ndarray) -> np.ndarray:
    """numpy (z, y, x) or (y, x) -> NIfTI (x, y, z) order."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[None]
    return np.ascontiguousarray(array.transpose(2, 1, 0))


def _write(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))
    return Path(path)


def write_viewer_image(path: Path, case: Case) -> Path:
    """The case's image: colour pictures (3 channels, 2D) as RGB24, else its first channel (float32)."""
    image = case.image
    if case.spatial_dims == 2 and image.shape[0] == 3 and image.min() >= 0 and image.max() <= 255:
        rgb = np.moveaxis(np.round(image).astype(np.uint8), 0, -1)  # (y, x, 3)
        packed = np.zeros(rgb.shape[:2], dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
        packed["R"], packed["G"], packed["B"] = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        return _write(path, _voxels(packed), viewer_affine(case))
    return _write(path, _voxels(image[0].astype(np.float32)), viewer_affine(case))


def write_viewer_map(path: Path, values: np.ndarray, case: Case, dtype: type = np.float32) -> Path:
    """A map on the case's grid (mask: uint8 class indices; uncertainty: float32 nats)."""
    return _write(path, _voxels(np.asarray(values).astype(dtype)), viewer_affine(case))
