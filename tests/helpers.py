"""Writing test data: the real datasets beside the checkout, small datasets linked from them, and
the one writer of volume files.

Imported as `from helpers import ...` (tests/conftest.py puts this folder on sys.path; pytest runs
with --import-mode=importlib, so test folders are no packages and `tests/io` shadows no `io`).
Fixtures live in conftest.py; plain functions that build data live here.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pytest

DATA_ROOT = Path(os.environ.get("MEDSEG_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

HIPPOCAMPUS_CASES = ["hippocampus_001", "hippocampus_003", "hippocampus_004", "hippocampus_006",
                     "hippocampus_007", "hippocampus_008"]


# ------------------------------------------------------------------------------ real datasets
def real_dataset(name: str) -> Path:
    """The real dataset `name` under DATA_ROOT ($MEDSEG_DATA or ../shared/data); the test skips,
    saying where it looked, when the data is not there."""
    path = DATA_ROOT / name
    if not path.is_dir():
        pytest.skip(f"real dataset {name} not found under {DATA_ROOT} (set MEDSEG_DATA)")
    return path


def link_subset(src: Path, dst: Path, stems: list[str], image_dir: str = "images", label_dir: str = "labels") -> Path:
    """A dataset folder holding symlinks to some cases of a real dataset (never copies data)."""
    (dst / "images").mkdir(parents=True)
    (dst / "labels").mkdir(parents=True)
    for stem in stems:
        for sub, out in ((image_dir, "images"), (label_dir, "labels")):
            match = next((src / sub).glob(f"{stem}.*"))
            (dst / out / match.name).symlink_to(match)
    return dst


def hippocampus_msd(dst: Path, cases: list[str] = HIPPOCAMPUS_CASES) -> Path:
    """An MSD folder (dataset.json + imagesTr/labelsTr symlinks) with some hippocampus cases."""
    src = real_dataset("msd-hippocampus")
    desc = json.loads((src / "dataset.json").read_text())
    for sub in ("imagesTr", "labelsTr"):
        (dst / sub).mkdir(parents=True)
        for case in cases:
            (dst / sub / f"{case}.nii.gz").symlink_to(src / sub / f"{case}.nii.gz")
    desc["training"] = [e for e in desc["training"] if Path(e["image"]).name[:-7] in cases]
    desc["numTraining"] = len(desc["training"])
    (dst / "dataset.json").write_text(json.dumps(desc))
    return dst


# ------------------------------------------------------------------------------ pictures and errors
def save_picture(path: Path, array: np.ndarray, mode: str | None = None, **kw) -> Path:
    """Write a 2D picture (PNG, JPEG, BMP, TIFF: by the suffix) with Pillow, optionally converted to `mode`,
    making its folder; `kw` goes to Image.save (e.g. quality=95)."""
    from PIL import Image

    im = Image.fromarray(np.asarray(array)) if mode is None else Image.fromarray(np.asarray(array)).convert(mode)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **kw)
    return path


@contextmanager
def raises_naming(path: Path, match: str | None = None) -> Iterator[pytest.ExceptionInfo]:
    """pytest.raises for a MedsegInputError whose message holds the file name (and `match`): the
    rule that bad input names the file it came from."""
    from medseg.errors import MedsegInputError

    with pytest.raises(MedsegInputError) as info:
        yield info
    message = str(info.value)
    assert Path(path).name in message, message
    if match is not None:
        assert match in message, message


# ------------------------------------------------------------------------------ volume files
def write_volume(path: Path, array_zyx: np.ndarray, spacing_zyx: Sequence[float] = (1.0, 1.0, 1.0), *,
                 origin_xyz: Sequence[float] | None = None, direction: Sequence[float] | None = None,
                 dtype: np.dtype | type | None = None) -> Path:
    """Write a 3D array as a volume file (NIfTI, NRRD, MHA: by the suffix of `path`) with SimpleITK.

    Axes follow medseg.io.volume: the array is numpy (z, y, x) and `spacing_zyx` is in that same
    order (spacing[i] belongs to array.shape[i]); it is reversed into ITK's (x, y, z) here, the one
    place tests convert. `origin_xyz` and the flat row-major `direction` are in ITK order, as
    `meta["geometry"]` holds them. `dtype` converts the pixels first (e.g. np.uint8 for labels).
    """
    import SimpleITK as sitk

    array = np.asarray(array_zyx if dtype is None else np.asarray(array_zyx).astype(dtype))
    if array.ndim != 3 or len(spacing_zyx) != 3:
        raise ValueError(f"write_volume needs a (z, y, x) array and 3 spacings; got {array.shape}, {spacing_zyx}")
    image = sitk.GetImageFromArray(array)
    image.SetSpacing([float(s) for s in reversed(spacing_zyx)])
    if origin_xyz is not None:
        image.SetOrigin([float(o) for o in origin_xyz])
    if direction is not None:
        image.SetDirection([float(d) for d in direction])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


# ------------------------------------------------------------------------------ training runs
def crash_after_first_epoch(monkeypatch: pytest.MonkeyPatch, train: Callable[[], object]) -> None:
    """Call `train()` with the trainer dying right after its first epoch's checkpoint and log
    row, as a killed process would; the trainer is whole again afterwards."""
    from medseg.training import Trainer

    original_log = Trainer.log

    def crash(self, row):
        original_log(self, row)
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(Trainer, "log", crash)
    with pytest.raises(KeyboardInterrupt):
        train()
    monkeypatch.setattr(Trainer, "log", original_log)


# ------------------------------------------------------------------------------ DICOM series
OBLIQUE_SPACING = (0.7, 0.9, 2.5)  # ITK order (x, y, z): every axis different, so a swap shows


def oblique_direction(about_z_deg: float = 20.0, about_x_deg: float = 10.0) -> tuple[float, ...]:
    """A flat row-major ITK direction matrix tilted about z then x: an oblique acquisition."""
    a, b = np.radians(about_z_deg), np.radians(about_x_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return tuple(float(v) for v in (rz @ rx).ravel())


def hippocampus_dicom_series(dst: Path, case: str = "hippocampus_001") -> tuple[Path, np.ndarray]:
    """(series folder dst/<case>, its reference label (z, y, x)): a real MSD Hippocampus MR volume
    written as a DICOM series with oblique orientation and anisotropic spacing (OBLIQUE_SPACING)."""
    import SimpleITK as sitk

    from medseg.io.dicom import write_dicom_series

    src = real_dataset("msd-hippocampus")
    volume = sitk.GetArrayFromImage(sitk.ReadImage(str(src / "imagesTr" / f"{case}.nii.gz"))).astype(np.int16)
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(src / "labelsTr" / f"{case}.nii.gz"))).astype(np.uint8)
    folder = Path(dst) / case
    write_dicom_series(volume, folder, OBLIQUE_SPACING, (10.0, -20.0, 30.0), oblique_direction(), modality="MR")
    return folder, label
