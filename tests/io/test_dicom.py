"""medseg.io.dicom: a DICOM series folder round-trips a real volume with its geometry; a folder with
two series or none is refused, saying so."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import real_dataset
from medseg.errors import MedsegInputError
from medseg.io.dicom import is_dicom_folder, read_dicom_series, write_dicom_series


def test_dicom_series_round_trip(tmp_path):
    image = sorted((real_dataset("msd-hippocampus") / "imagesTr").glob("*.nii.gz"))[0]
    volume = sitk.GetArrayFromImage(sitk.ReadImage(str(image))).astype(np.int16)
    spacing = (0.7, 0.9, 2.5)  # ITK order: x, y, z
    folder = tmp_path / "dicom"
    write_dicom_series(volume, folder, spacing, (5.0, -3.0, 12.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert is_dicom_folder(folder) and not is_dicom_folder(tmp_path / "nothing")
    array, read_spacing, meta = read_dicom_series(folder)
    assert meta["format"] == "dicom" and meta["files"] == volume.shape[0]
    np.testing.assert_array_equal(array[0], volume)
    np.testing.assert_allclose(read_spacing, spacing[::-1], atol=1e-4)
    np.testing.assert_allclose(meta["geometry"]["origin"], (5.0, -3.0, 12.0), atol=1e-4)


def test_dicom_folder_with_two_series_is_refused(tmp_path):
    vol = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5)
    write_dicom_series(vol, tmp_path, series_description="first scan")
    write_dicom_series(vol + 1, tmp_path, series_description="second scan")
    with pytest.raises(MedsegInputError, match="holds 2 DICOM series") as err:
        read_dicom_series(tmp_path)
    assert "first scan" in str(err.value) and "second scan" in str(err.value)
    assert "one series per folder" in str(err.value)


def test_empty_dicom_folder(tmp_path):
    with pytest.raises(MedsegInputError, match="no DICOM series"):
        read_dicom_series(tmp_path)
    assert not is_dicom_folder(tmp_path)
