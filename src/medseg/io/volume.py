"""3D medical image files through SimpleITK: NIfTI, NRRD, MetaImage (MHA/MHD) and DICOM series.

Axis order: arrays come back in ``sitk.GetArrayFromImage`` order, i.e. numpy ``(z, y, x)`` (the
reverse of ITK's ``(x, y, z)`` index order), with a leading channel axis for images:
``(C, z, y, x)``. Spacing is given in the same numpy order ``(sz, sy, sx)``, so ``spacing[i]``
always belongs to ``array.shape[i + 1]``. A 4D file (e.g. MSD multi-modality NIfTI, ITK size
``(x, y, z, t)``) gives one channel per volume ``t``; vector pixels give one channel per component.

Geometry travels in ``meta["geometry"]`` in ITK order (``spacing``, ``origin``, flat row-major
``direction``), exactly as SimpleITK reports it, so a predicted mask is written back
(`write_volume_mask`) on the exact voxel grid of its image and overlays it in any viewer.

DICOM series are folders, not suffixes, so they are not in the registry: `medseg.io.dicom`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medseg.errors import MedsegInputError
from medseg.io.registry import (
    float32_array,
    match_suffix,
    register_header_reader,
    register_mask_reader,
    register_mask_writer,
    register_reader,
)

__all__ = [
    "VOLUME_SUFFIXES",
    "read_volume",
    "read_volume_header",
    "read_volume_mask",
    "write_volume_mask",
]

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
# Single-file formats that SimpleITK compresses when asked (.nii stays plain by name; .mhd and
# .nhdr keep a detached data file).
_COMPRESSED_SUFFIXES = (".nii.gz", ".nrrd", ".mha")
_SINGLE_FILE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")
NOT_A_SINGLE_VOLUME = "a label file must be a single 3D volume"


# ----------------------------------------------------------------------------- helpers

def _short_itk_message(e: Exception) -> str:
    """The useful line of a SimpleITK exception (the first line only names the C++ source file)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:
        if "ERROR:" in ln:
            return ln.split("ERROR:", 1)[1].strip()
    return lines[-1] if lines else type(e).__name__


def _check_not_empty(path: Path) -> None:
    if path.is_file() and path.stat().st_size == 0:
        raise MedsegInputError(path, "file is empty (0 bytes)")


def _itk_call(path: Path, what: str, func, *args):
    """Run a SimpleITK call; its RuntimeError becomes a short MedsegInputError naming `path`."""
    try:
        return func(*args)
    except RuntimeError as e:
        raise MedsegInputError(path, f"cannot {what}: {_short_itk_message(e)}") from e


def _file_reader(path: Path) -> sitk.ImageFileReader:
    """An ImageFileReader with the header already read (no pixels yet)."""
    _check_not_empty(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    _itk_call(path, "read header", reader.ReadImageInformation)
    return reader


def _geometry(dim: int, spacing, origin, direction) -> dict:
    """ITK-order geometry of the (at most 3) spatial axes; a 4D image keeps its top-left 3x3."""
    full = len(spacing)
    d = min(dim, 3)
    matrix = np.asarray(direction, dtype=float).reshape(full, full)[:d, :d]
    return {
        "spacing": [float(s) for s in spacing[:d]],
        "origin": [float(o) for o in origin[:d]],
        "direction": [float(v) for v in matrix.ravel()],
    }


def _layout(path: Path, dim: int, size, components: int) -> tuple[tuple[int, ...], int]:
    """(numpy-order spatial shape, channels) of an ITK image of `dim` axes and `components`."""
    if dim == 4:
        if components > 1:
            raise MedsegInputError(path, f"4D image with {components}-component pixels is not supported")
        return tuple(int(s) for s in reversed(size[:3])), int(size[3])
    if dim in (2, 3):
        return tuple(int(s) for s in reversed(size)), int(components)
    raise MedsegInputError(path, f"{dim}D image is not supported (expected 2D, 3D or 4D)")


def _to_channels_first(img: sitk.Image) -> np.ndarray:
    """(C, *spatial) numpy array of a 2D/3D scalar or vector image, or a 4D scalar image."""
    a = sitk.GetArrayFromImage(img)
    if img.GetDimension() == 4:  # ITK (x, y, z, t) -> numpy (t, z, y, x): t is already first
        return a
    if img.GetNumberOfComponentsPerPixel() > 1:  # numpy (*spatial, C)
        return np.moveaxis(a, -1, 0)
    return a[None]


def _image_result(img: sitk.Image, path: Path, fmt: str, extra: dict | None = None):
    dim = img.GetDimension()
    size, channels = _layout(path, dim, img.GetSize(), img.GetNumberOfComponentsPerPixel())
    geometry = _geometry(dim, img.GetSpacing(), img.GetOrigin(), img.GetDirection())
    raw = _to_channels_first(img)
    array = float32_array(raw, path)
    spacing = tuple(reversed(geometry["spacing"]))
    meta = {"size": size, "geometry": geometry, "format": fmt, "channels": channels, "dtype": raw.dtype.name}
    if extra:
        meta.update(extra)
    return array, spacing, meta


def _smallest_int_dtype(lo: int, hi: int) -> np.dtype:
    for dt in (np.uint8, np.uint16, np.int16, np.int32, np.int64):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dt)
    raise ValueError(f"values {lo}..{hi} do not fit a 64-bit integer")


# ----------------------------------------------------------------------------- files

@register_reader(*VOLUME_SUFFIXES)
def read_volume(path: Path) -> tuple[np.ndarray, tuple[float, ...], dict]:
    """``(array (C, z, y, x) float32, spacing (sz, sy, sx), meta)`` of a NIfTI/NRRD/MHA/MHD file."""
    path = Path(path)
    reader = _file_reader(path)
    _layout(path, reader.GetDimension(), reader.GetSize(), reader.GetNumberOfComponents())  # refuse early
    img = _itk_call(path, "read image", reader.Execute)
    suffix = match_suffix(path, VOLUME_SUFFIXES) or path.suffix.lower()
    if suffix in (".nii", ".nii.gz") and "float" in sitk.GetPixelIDValueAsString(reader.GetPixelID()):
        _check_nifti_finite(path, "fix or mask them before training")
    return _image_result(img, path, suffix)


def _check_nifti_finite(path: Path, advice: str) -> None:
    """ITK's NIfTI reader turns NaN voxels into 0 without a word; read the stored values with
    nibabel so a scan (or a mask: NaN is not background) with NaN or infinite values is refused
    instead of silently altered."""
    import nibabel

    data = np.asanyarray(nibabel.load(str(path)).dataobj)
    bad = data.size - int(np.count_nonzero(np.isfinite(data)))
    if bad:
        raise MedsegInputError(path, f"holds {bad} NaN or infinite voxel value(s); {advice}")


@register_header_reader(*VOLUME_SUFFIXES)
def read_volume_header(path: Path) -> dict:
    """Size, channels and geometry from the header only (no pixels are read)."""
    path = Path(path)
    reader = _file_reader(path)
    dim = reader.GetDimension()
    size, channels = _layout(path, dim, reader.GetSize(), reader.GetNumberOfComponents())
    geometry = _geometry(dim, reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())
    return {
        "size": size,
        "channels": channels,
        "geometry": geometry,
        "spacing": tuple(reversed(geometry["spacing"])),
        "format": match_suffix(path, VOLUME_SUFFIXES) or path.suffix.lower(),
        "pixel_type": sitk.GetPixelIDValueAsString(reader.GetPixelID()),
    }


@register_mask_reader(*VOLUME_SUFFIXES)
def read_volume_mask(path: Path) -> np.ndarray:
    """Raw stored label values, numpy ``(z, y, x)`` (or ``(y, x)`` for a 2D file), integer dtype."""
    path = Path(path)
    reader = _file_reader(path)
    dim, comps = reader.GetDimension(), reader.GetNumberOfComponents()
    if dim not in (2, 3) or comps > 1:
        shape = "x".join(str(s) for s in reader.GetSize())
        found = f"{dim}D ({shape})" + (f" with {comps} components per voxel" if comps > 1 else "")
        raise MedsegInputError(path, f"{NOT_A_SINGLE_VOLUME}, found {found}")
    suffix = match_suffix(path, VOLUME_SUFFIXES) or path.suffix.lower()
    if suffix in (".nii", ".nii.gz") and "float" in sitk.GetPixelIDValueAsString(reader.GetPixelID()):
        _check_nifti_finite(path, "a mask holds class values, and NaN is no class (not background either)")
    mask = sitk.GetArrayFromImage(_itk_call(path, "read mask", reader.Execute))
    if mask.dtype == bool:
        return mask.astype(np.uint8)
    if np.issubdtype(mask.dtype, np.integer):
        return mask
    if not np.all(np.isfinite(mask)) or not np.array_equal(mask, np.round(mask)):
        raise MedsegInputError(
            path, f"mask holds non-integer values (dtype {mask.dtype}; a probability map?): store class indices"
        )
    lo, hi = (int(mask.min()), int(mask.max())) if mask.size else (0, 0)
    return mask.astype(_smallest_int_dtype(lo, hi))


def _mask_pixel_dtype(path: Path, mask: np.ndarray) -> np.dtype:
    lo, hi = (int(mask.min()), int(mask.max())) if mask.size else (0, 0)
    if lo >= 0 and hi < 256:
        return np.dtype(np.uint8)
    if lo >= 0 and hi < 65536:
        return np.dtype(np.uint16)
    if np.iinfo(np.int32).min <= lo and hi <= np.iinfo(np.int32).max:
        return np.dtype(np.int32)
    raise MedsegInputError(path, f"mask values {lo}..{hi} do not fit a 32-bit integer")


def _apply_geometry(path: Path, img: sitk.Image, meta: dict | None) -> None:
    """Copy spacing/origin/direction (ITK order) from `meta["geometry"]`; check `meta["size"]`."""
    meta = meta or {}
    shape = sitk.GetArrayViewFromImage(img).shape
    if meta.get("size") is not None and tuple(int(s) for s in meta["size"]) != tuple(shape):
        raise MedsegInputError(path, f"mask shape {tuple(shape)} does not match the image size {tuple(meta['size'])}")
    geometry = meta.get("geometry")
    if not geometry:
        return
    dim = img.GetDimension()
    spacing, origin, direction = geometry.get("spacing"), geometry.get("origin"), geometry.get("direction")
    if spacing is not None and len(spacing) != dim or origin is not None and len(origin) != dim \
            or direction is not None and len(direction) != dim * dim:
        raise MedsegInputError(path, f"image geometry {geometry} does not fit a {dim}D mask")
    try:
        if spacing is not None:
            img.SetSpacing([float(s) for s in spacing])
        if origin is not None:
            img.SetOrigin([float(o) for o in origin])
        if direction is not None:
            img.SetDirection([float(v) for v in direction])
    except RuntimeError as e:
        raise MedsegInputError(path, f"cannot use the image geometry: {_short_itk_message(e)}") from e


@register_mask_writer(*_SINGLE_FILE_SUFFIXES)
def write_volume_mask(path: Path, mask: np.ndarray, meta: dict | None = None) -> None:
    """Write an integer mask (z, y, x) on the image grid given by `meta["geometry"]`
    (`medseg.io.write_mask` makes the write atomic and reads the file back)."""
    path = Path(path)
    mask = np.asarray(mask)
    if mask.ndim not in (2, 3):
        raise MedsegInputError(path, f"a volume mask must be 2D or 3D, got shape {mask.shape}")
    img = sitk.GetImageFromArray(np.ascontiguousarray(mask.astype(_mask_pixel_dtype(path, mask), copy=False)))
    _apply_geometry(path, img, meta)
    suffix = match_suffix(path, VOLUME_SUFFIXES) or path.suffix.lower()
    try:
        sitk.WriteImage(img, str(path), suffix in _COMPRESSED_SUFFIXES)
    except RuntimeError as e:  # an OSError, so the caller says "cannot write FILE: ..."
        raise OSError(_short_itk_message(e)) from e


@register_mask_writer(".mhd", ".nhdr")
def write_detached_volume_mask(path: Path, mask: np.ndarray, meta: dict | None = None) -> None:
    """MHD/NHDR: a header plus a data file named after it, so written under the final name (a
    temporary header would name a temporary data file); `write_mask` puts the pair in a temporary
    folder first (`medseg.atomic.atomic_file_set`)."""
    write_volume_mask(path, mask, meta)


write_detached_volume_mask.in_place = True  # type: ignore[attr-defined]
