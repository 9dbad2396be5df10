"""Float maps beside masks (uncertainty, probabilities): float32 values on the image's own grid.

Volumes go to NIfTI / NRRD / MHA (a single file) through SimpleITK with the image's geometry
(`meta["geometry"]`, as `write_volume_mask` uses it), so a map lies on its scan in any viewer;
2D maps go to a float32 TIFF (pictures have no geometry to keep). Writes are atomic and read
back: a map is either whole on disk or not there.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import tifffile

from ..atomic import atomic_path
from ..errors import MedsegInputError
from .registry import match_suffix
from .volume import _apply_geometry

FLOAT_VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
FLOAT_PICTURE_SUFFIXES = (".tiff", ".tif")

__all__ = ["FLOAT_PICTURE_SUFFIXES", "FLOAT_VOLUME_SUFFIXES", "read_float_map", "write_float_map"]


def _check(tmp: Path, values: np.ndarray) -> None:
    back = read_float_map(tmp)
    if back.shape != values.shape or not np.array_equal(back, values, equal_nan=True):
        raise ValueError("reads back with other values than were written")


def write_float_map(path: str | os.PathLike, values: np.ndarray, meta: dict | None = None) -> Path:
    """Write a float32 map: 3D (z, y, x) as a volume with `meta`'s geometry, 2D (H, W) as TIFF."""
    path = Path(path)
    values = np.ascontiguousarray(np.asarray(values, dtype=np.float32))
    suffix = match_suffix(path, FLOAT_VOLUME_SUFFIXES + FLOAT_PICTURE_SUFFIXES)
    if suffix is None:
        raise ValueError(f"{path}: float maps are written as {', '.join(FLOAT_VOLUME_SUFFIXES + FLOAT_PICTURE_SUFFIXES)}")
    if suffix in FLOAT_PICTURE_SUFFIXES and values.ndim != 2:
        raise MedsegInputError(path, f"a TIFF map must be 2D, got shape {values.shape}")
    with atomic_path(path, check=lambda tmp: _check(tmp, values)) as tmp:
        if suffix in FLOAT_PICTURE_SUFFIXES:
            tifffile.imwrite(tmp, values, photometric="minisblack", compression="zlib")
        else:
            img = sitk.GetImageFromArray(values)
            _apply_geometry(path, img, meta)
            try:
                sitk.WriteImage(img, str(tmp), suffix != ".nii")
            except RuntimeError as e:  # an OSError, so the caller says "cannot write FILE: ..."
                raise OSError(str(e).strip().splitlines()[-1]) from e
    return path


def read_float_map(path: str | os.PathLike) -> np.ndarray:
    """A float32 map as written by `write_float_map` (volume array order (z, y, x))."""
    path = Path(path)
    suffix = match_suffix(path, FLOAT_VOLUME_SUFFIXES + FLOAT_PICTURE_SUFFIXES)
    if suffix in FLOAT_PICTURE_SUFFIXES:
        return np.asarray(tifffile.imread(path), dtype=np.float32)
    if suffix is None:
        raise MedsegInputError(path, "is not a float map file (NIfTI, NRRD, MHA or TIFF)")
    try:
        return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32, copy=False)
    except RuntimeError as e:
        raise MedsegInputError(path, f"cannot be read as a float map: {str(e).strip().splitlines()[-1]}") from e
