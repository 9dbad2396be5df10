"""DICOM series in and out through SimpleITK/GDCM: a folder is a series (not a suffix, so not in
the registry); reading sorts the slices by position and keeps their geometry, writing makes a
fresh series with new UIDs (tests and phantoms)."""
from __future__ import annotations

import functools
import locale
import os
import time
import uuid
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medseg.errors import MedsegInputError
from medseg.io.volume import VOLUME_SUFFIXES, _image_result, _itk_call

__all__ = ["is_dicom_folder", "read_dicom_series", "write_dicom_series"]


_SKIP_SUFFIXES = VOLUME_SUFFIXES + (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".json", ".txt",
                                    ".csv", ".md", ".raw", ".zraw", ".gz", ".zip", ".pt", ".pth", ".npy", ".npz")


def keeps_locale(func):
    """GDCM (through SimpleITK) leaves the process in the ASCII "C" locale; put the caller's back,
    or text read later without an explicit encoding fails on UTF-8 files."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        saved = locale.setlocale(locale.LC_ALL)
        try:
            return func(*args, **kwargs)
        finally:
            if locale.setlocale(locale.LC_ALL) != saved:
                locale.setlocale(locale.LC_ALL, saved)
    return wrapper


def _has_dicom_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


@keeps_locale
def is_dicom_folder(path: str | os.PathLike, max_files: int = 64) -> bool:
    """True when `path` is a folder holding DICOM files.

    Cheap: looks at up to `max_files` files for a ``.dcm`` suffix or the ``DICM`` magic at byte
    128; only when none matches but the folder holds files of no known type (old DICOM without a
    preamble) does it ask GDCM for series.
    """
    folder = Path(path)
    if not folder.is_dir():
        return False
    unknown = False
    for i, f in enumerate(p for p in folder.iterdir() if p.is_file()):
        if i >= max_files:
            break
        name = f.name.lower()
        if name.endswith(".dcm") or _has_dicom_magic(f):
            return True
        if not name.startswith(".") and not name.endswith(_SKIP_SUFFIXES):
            unknown = True
    if not unknown:
        return False
    try:
        return bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    except RuntimeError:
        return False


def _series_description(first_file: str) -> str:
    try:
        r = sitk.ImageFileReader()
        r.SetFileName(first_file)
        r.ReadImageInformation()
        return r.GetMetaData("0008|103e").strip() if r.HasMetaDataKey("0008|103e") else ""
    except RuntimeError:
        return ""


def _series_summary(folder: Path, series_ids) -> str:
    parts = []
    for sid in series_ids:
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid)
        desc = _series_description(files[0]) if files else ""
        parts.append(f"{sid} ({len(files)} files" + (f", {desc!r})" if desc else ")"))
    return ", ".join(parts)


@keeps_locale
def read_dicom_series(folder: str | os.PathLike) -> tuple[np.ndarray, tuple[float, ...], dict]:
    """Read the one DICOM series in `folder`: ``(array (1, z, y, x) float32, spacing, meta)``.

    Slices are sorted by position (GDCM). The meta has the same keys as `read_volume`'s, with
    ``format == "dicom"``, plus ``series_id``, ``series_description`` and ``files``.
    """
    folder = Path(folder)
    if not folder.exists():
        raise MedsegInputError(folder, "folder not found")
    if not folder.is_dir():
        raise MedsegInputError(folder, "is a file, expected a DICOM folder")
    series_ids = _itk_call(folder, "search DICOM series", sitk.ImageSeriesReader.GetGDCMSeriesIDs, str(folder))
    if not series_ids:
        raise MedsegInputError(folder, "holds no DICOM series")
    if len(series_ids) > 1:
        raise MedsegInputError(
            folder,
            f"holds {len(series_ids)} DICOM series: {_series_summary(folder, series_ids)}: put one series per folder",
        )
    sid = series_ids[0]
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    img = _itk_call(folder, "read DICOM series", reader.Execute)
    extra = {"series_id": sid, "series_description": _series_description(files[0]), "files": len(files)}
    return _image_result(img, folder, "dicom", extra)


def _new_uid() -> str:
    return f"2.25.{uuid.uuid4().int}"  # UUID-derived DICOM UID (ISO/IEC 9834-8), 44 characters


@keeps_locale
def write_dicom_series(
    volume: np.ndarray,
    folder: str | os.PathLike,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
    series_description: str = "medseg",
    study_uid: str | None = None,
    modality: str = "CT",
) -> list[Path]:
    """Write a volume (numpy (z, y, x), int16) as one DICOM file per slice; returns the files.

    `spacing`, `origin` and `direction` are in ITK order. Files are named after the series
    description, so two series can share a folder (for tests of multi-series folders).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"expected a (z, y, x) volume, got shape {volume.shape}")
    img = sitk.GetImageFromArray(np.ascontiguousarray(volume.astype(np.int16, copy=False)))
    img.SetSpacing([float(s) for s in spacing])
    img.SetOrigin([float(o) for o in origin])
    img.SetDirection([float(v) for v in direction])
    d = img.GetDirection()
    date, clock = time.strftime("%Y%m%d"), time.strftime("%H%M%S")
    series_tags = {
        "0008|0021": date, "0008|0031": clock, "0008|0008": "DERIVED\\SECONDARY", "0008|0060": modality,
        "0008|103e": series_description, "0020|000d": study_uid or _new_uid(), "0020|000e": _new_uid(),
        "0020|0052": _new_uid(), "0020|0011": "1",  # one frame of reference for the series, as a scanner writes
        "0020|0037": "\\".join(repr(float(v)) for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
        "0018|0050": repr(float(spacing[2])),
    }
    prefix = "".join(c if c.isalnum() else "_" for c in series_description) or "slice"
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()  # keep the UIDs set above instead of fresh ones per slice
    paths = []
    for k in range(img.GetDepth()):
        s = img[:, :, k]
        for tag, value in series_tags.items():
            s.SetMetaData(tag, value)
        s.SetMetaData("0008|0018", _new_uid())  # SOPInstanceUID
        s.SetMetaData("0020|0032", "\\".join(repr(float(v)) for v in img.TransformIndexToPhysicalPoint((0, 0, k))))
        s.SetMetaData("0020|0013", str(k + 1))
        out = folder / f"{prefix}_{k:04d}.dcm"
        writer.SetFileName(str(out))
        writer.Execute(s)
        paths.append(out)
    return paths
