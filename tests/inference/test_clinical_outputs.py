"""`medseg predict` into the clinic's formats, on a real MR volume written as an oblique DICOM
series and a tiny run trained here: OUT/statistics.csv (exact volumes), a DICOM SEG equal voxel
for voxel to the NIfTI mask of the same prediction in the same geometry, and an RTSTRUCT whose
contours fill back to that mask (Dice >= 0.95 per class)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

pytest.importorskip("highdicom")
import highdicom as hd  # noqa: E402

import medseg  # noqa: E402
from helpers import OBLIQUE_SPACING, hippocampus_dicom_series, hippocampus_msd, raises_naming  # noqa: E402
from medseg.cli import main  # noqa: E402
from medseg.io.dicom import read_dicom_series  # noqa: E402
from medseg.io.dicom_seg import series_in_mask_order  # noqa: E402
from medseg.io.rtstruct import rasterise_rtstruct  # noqa: E402

TINY = dict(features=(4, 8, 16), batch_size=2, patch_size=(24, 32, 24), iterations_per_epoch=2, val_fraction=0.25,
            device="cpu")
CASES = ["hippocampus_003", "hippocampus_004", "hippocampus_006", "hippocampus_007"]


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    """(run, series folder, NIfTI prediction folder): a tiny run (4 cases, one epoch) predicts
    hippocampus_001, a case it never saw, written as an oblique DICOM series."""
    root = tmp_path_factory.mktemp("clinical")
    run = medseg.train(hippocampus_msd(root / "data", CASES), root / "run", epochs=1, plan=False, finish=False, **TINY)
    series, _ = hippocampus_dicom_series(root / "series")
    assert main(["predict", str(run), str(series), "--out", str(root / "nifti"), "--device", "cpu",
                 "--no-overlays"]) == 0
    return run, series, root / "nifti"


def nifti_mask(folder) -> tuple[np.ndarray, sitk.Image]:
    image = sitk.ReadImage(str(folder / "hippocampus_001.nii.gz"))
    return sitk.GetArrayFromImage(image), image


def test_statistics_csv_has_exact_volumes(predicted):
    _, _, out = predicted
    mask, _ = nifti_mask(out)
    with open(out / "statistics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["case"], r["class"]) for r in rows] == [("hippocampus_001", "Anterior"), ("hippocampus_001", "Posterior")]
    voxel_ml = float(np.prod(OBLIQUE_SPACING)) / 1000
    for row in rows:
        voxels = int(np.sum(mask == int(row["class_index"])))
        assert int(row["voxels"]) == voxels
        assert float(row["volume_ml"]) == pytest.approx(voxels * voxel_ml, rel=1e-12)
        assert int(row["components"]) >= (1 if voxels else 0)
    assert json.loads((out / "statistics.json").read_text())["rows"][0]["voxels"] == int(rows[0]["voxels"])


def test_dicom_seg_equals_the_nifti_mask_in_the_same_geometry(predicted, tmp_path):
    run, series, nifti = predicted
    assert main(["predict", str(run), str(series), "--out", str(tmp_path), "--format", "dicom-seg",
                 "--device", "cpu", "--no-overlays"]) == 0
    path = tmp_path / "hippocampus_001_seg.dcm"
    mask, image = nifti_mask(nifti)
    _, _, meta = read_dicom_series(series)
    sources = series_in_mask_order(series, meta["geometry"], mask.shape)
    seg = hd.seg.segread(path)
    names = json.loads((run / "run.json").read_text())["class_names"]
    present = [c for c in range(1, len(names)) if np.any(mask == c)]
    assert [d.SegmentLabel for d in seg.SegmentSequence] == [names[c] for c in present]
    pixels = seg.get_pixels_by_source_instance([ds.SOPInstanceUID for ds in sources], combine_segments=True)
    back = np.asarray([0] + present, np.uint8)[pixels]
    np.testing.assert_array_equal(back, mask)  # voxel for voxel
    # the same geometry: each frame sits where the NIfTI puts its slice, with its orientation and spacing
    slice_of = {ds.SOPInstanceUID: k for k, ds in enumerate(sources)}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        k = slice_of[frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
        np.testing.assert_allclose(frame.PlanePositionSequence[0].ImagePositionPatient,
                                   image.TransformIndexToPhysicalPoint((0, 0, k)), atol=1e-3)
    shared = seg.SharedFunctionalGroupsSequence[0]
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(shared.PlaneOrientationSequence[0].ImageOrientationPatient,
                               np.r_[direction[:, 0], direction[:, 1]], atol=1e-5)
    np.testing.assert_allclose(shared.PixelMeasuresSequence[0].PixelSpacing, image.GetSpacing()[1::-1], atol=1e-5)
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    with pydicom.config.strict_reading():  # pydicom's own checks of every value
        str(pydicom.dcmread(path))


def test_rtstruct_fills_back_to_the_nifti_mask(predicted, tmp_path):
    run, series, nifti = predicted
    assert main(["predict", str(run), str(series), "--out", str(tmp_path), "--format", "rtstruct",
                 "--device", "cpu", "--no-overlays"]) == 0
    mask, _ = nifti_mask(nifti)
    _, _, meta = read_dicom_series(series)
    names = json.loads((run / "run.json").read_text())["class_names"]
    back = rasterise_rtstruct(tmp_path / "hippocampus_001_rtstruct.dcm", series, meta["geometry"], mask.shape, names)
    for c in range(1, len(names)):
        total = np.sum(back == c) + np.sum(mask == c)
        dice = 1.0 if total == 0 else 2 * np.sum((back == c) & (mask == c)) / total
        assert dice >= 0.95, (names[c], dice)
    with pydicom.config.strict_reading():
        str(pydicom.dcmread(tmp_path / "hippocampus_001_rtstruct.dcm"))


def test_dicom_formats_need_a_dicom_series(predicted, tmp_path):
    run = predicted[0]
    volume = hippocampus_msd(tmp_path / "data", CASES[:1]) / "imagesTr" / f"{CASES[0]}.nii.gz"
    with raises_naming(volume, "is not a DICOM series"):
        medseg.predict(run, volume, tmp_path / "out", output_format="dicom-seg", device="cpu")
    assert not list(tmp_path.glob("out/*"))  # refused before anything was written
