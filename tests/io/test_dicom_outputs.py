"""medseg.io.dicom_seg and medseg.io.rtstruct on a real MR volume written as an oblique,
anisotropic DICOM series: the reference label goes out as a DICOM SEG and an RTSTRUCT and comes
back voxel for voxel; masks that do not fit the series, or hold nothing, are refused."""
from __future__ import annotations

import numpy as np
import pydicom
import pytest

pytest.importorskip("highdicom")
import highdicom as hd  # noqa: E402

from helpers import hippocampus_dicom_series  # noqa: E402
from medseg.errors import MedsegInputError  # noqa: E402
from medseg.io.dicom import read_dicom_series  # noqa: E402
from medseg.io.dicom_seg import EmptySegmentation, segment_codes, series_in_mask_order, write_dicom_seg  # noqa: E402
from medseg.io.rtstruct import rasterise_rtstruct, slice_contours, write_rtstruct  # noqa: E402

NAMES = ["background", "Anterior", "Posterior"]


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """(series folder, geometry, reference label in the series' slice order)."""
    folder, label = hippocampus_dicom_series(tmp_path_factory.mktemp("dicom"))
    image, _, meta = read_dicom_series(folder)
    assert image.shape[1:] == label.shape
    return folder, meta["geometry"], label


def seg_as_mask(path, sources) -> np.ndarray:
    """A SEG's segments on the given source slices, as class indices by segment label."""
    seg = hd.seg.segread(path)
    pixels = seg.get_pixels_by_source_instance([ds.SOPInstanceUID for ds in sources], combine_segments=True,
                                               skip_overlap_checks=True)
    labels = {d.SegmentNumber: NAMES.index(d.SegmentLabel) for d in seg.SegmentSequence}
    lookup = np.zeros(max(labels) + 1, np.uint8)
    for number, index in labels.items():
        lookup[number] = index
    return lookup[pixels]


def test_seg_round_trip_references_the_series(series, tmp_path):
    folder, geometry, label = series
    path = write_dicom_seg(tmp_path / "case_seg.dcm", label, folder, geometry, NAMES, model_name="reference")
    sources = series_in_mask_order(folder, geometry, label.shape)
    np.testing.assert_array_equal(seg_as_mask(path, sources), label)
    seg = hd.seg.segread(path)
    first = sources[0]
    assert seg.FrameOfReferenceUID == first.FrameOfReferenceUID and seg.StudyInstanceUID == first.StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID
    assert seg.SegmentationType == "BINARY" and [d.SegmentLabel for d in seg.SegmentSequence] == NAMES[1:]
    tissue = seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0]
    assert (tissue.CodeValue, tissue.CodingSchemeDesignator) == ("85756007", "SCT")  # generic: no code for 'Anterior'


def test_segment_codes_name_known_structures():
    category, kind = segment_codes("left kidney")
    assert (category.meaning, kind.value) == ("Anatomical Structure", "64033007")
    assert segment_codes("Tumours")[1].meaning == "Neoplasm"
    assert segment_codes("Anterior")[1].value == "85756007"


def test_empty_classes_are_left_out_and_an_empty_mask_writes_nothing(series, tmp_path):
    folder, geometry, label = series
    only_posterior = np.where(label == 2, 2, 0).astype(np.uint8)
    seg = hd.seg.segread(write_dicom_seg(tmp_path / "p_seg.dcm", only_posterior, folder, geometry, NAMES))
    assert [(d.SegmentNumber, d.SegmentLabel) for d in seg.SegmentSequence] == [(1, "Posterior")]
    with pytest.raises(EmptySegmentation, match="no structure"):
        write_dicom_seg(tmp_path / "empty_seg.dcm", np.zeros_like(label), folder, geometry, NAMES)
    with pytest.raises(EmptySegmentation):
        write_rtstruct(tmp_path / "empty_rt.dcm", np.zeros_like(label), folder, geometry, NAMES)
    assert not list(tmp_path.glob("empty*"))


def test_a_mask_that_does_not_fit_the_series_is_refused(series, tmp_path):
    folder, geometry, label = series
    with pytest.raises(MedsegInputError, match="image slice"):
        write_dicom_seg(tmp_path / "x.dcm", label[1:], folder, geometry, NAMES)
    with pytest.raises(MedsegInputError, match=r"is \d+x\d+, the mask"):
        write_dicom_seg(tmp_path / "x.dcm", label[:, 1:], folder, geometry, NAMES)
    shifted = {**geometry, "origin": [o + 1.0 for o in geometry["origin"]]}
    with pytest.raises(MedsegInputError, match="no DICOM slice lies at mask slice 0"):
        write_rtstruct(tmp_path / "x.dcm", label, folder, shifted, NAMES)


def test_rtstruct_contours_fill_back_to_the_mask(series, tmp_path):
    folder, geometry, label = series
    path = write_rtstruct(tmp_path / "case_rtstruct.dcm", label, folder, geometry, NAMES)
    back = rasterise_rtstruct(path, folder, geometry, label.shape, NAMES)
    for c in (1, 2):
        dice = 2 * np.sum((back == c) & (label == c)) / (np.sum(back == c) + np.sum(label == c))
        assert dice >= 0.95, (NAMES[c], dice)
    np.testing.assert_array_equal(back, label)  # voxel-centre filling of half-way outlines is exact
    rt = pydicom.dcmread(path)
    sources = {ds.SOPInstanceUID: ds for ds in series_in_mask_order(folder, geometry, label.shape)}
    assert rt.Modality == "RTSTRUCT" and [r.ROIName for r in rt.StructureSetROISequence] == NAMES[1:]
    for roi in rt.ROIContourSequence:
        for contour in roi.ContourSequence:  # every point in the plane of the slice it references
            ds = sources[contour.ContourImageSequence[0].ReferencedSOPInstanceUID]
            cosines = np.asarray(ds.ImageOrientationPatient, float)
            normal = np.cross(cosines[:3], cosines[3:])
            points = np.asarray(contour.ContourData, float).reshape(-1, 3)
            assert np.abs((points - np.asarray(ds.ImagePositionPatient, float)) @ normal).max() < 1e-3
            assert contour.ContourGeometricType == "CLOSED_PLANAR" and contour.NumberOfContourPoints == len(points)


def test_outlines_keep_holes_and_single_pixels():
    region = np.zeros((9, 9), bool)
    region[1:6, 1:6] = True
    region[3, 3] = False  # a hole
    region[7, 7] = True   # one pixel on its own
    outlines = slice_contours(region)
    assert len(outlines) == 3
    from matplotlib.path import Path as Polygon
    centres = np.stack(np.meshgrid(np.arange(9), np.arange(9)), -1).reshape(-1, 2)
    filled = np.zeros(81, bool)
    for outline in outlines:
        filled ^= Polygon(outline).contains_points(centres)
    np.testing.assert_array_equal(filled.reshape(9, 9), region)
