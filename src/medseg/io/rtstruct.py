"""RT Structure Sets (RTSTRUCT) of predicted masks: the planar contours a treatment planning system
imports as structures, written with pydicom over the series the mask was predicted from.

Why pydicom and not a wrapper: highdicom (which writes medseg's SEG) has no RT Structure Set
support, and rt-utils, the usual wrapper, had its last release in January 2023 and needs the GUI
build of OpenCV (libGL) for its contours. The IOD is small; the contours come from contourpy
(maintained, already installed with matplotlib).

The file contract: `write_rtstruct(OUT/<case>_rtstruct.dcm, mask, series folder, ...)`.
- One ROI per class present in the mask (named by the run's class names, numbered 1..n in class
  order, generated AUTOMATIC, with the SNOMED CT code of `dicom_seg.segment_codes` as its RT ROI
  identification code); a mask with no class writes no file (`EmptySegmentation`).
- Contours are CLOSED_PLANAR, one or more per class per slice, each referencing its slice's SOP
  Instance UID and lying in that slice's plane; holes are contours of their own inside the outer
  one (the even-odd rule planning systems apply when they fill a structure).
- Where the outline runs: marching squares at level 0.5 of the binary slice, so every point lies
  half-way between a voxel of the structure and one outside it, and filling the polygon at voxel
  centres gives back the mask's voxels.
- Orientation, the usual pitfalls, handled: Pixel Spacing is (between rows, between columns);
  Image Orientation's first triplet is the direction of increasing column, the second of
  increasing row; every point is placed from its own slice's Image Position, so oblique and
  reversed slice orders come out right (`series_in_mask_order`).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

import contourpy
import numpy as np

from ..atomic import atomic_path
from ..errors import MedsegInputError
from .dicom_seg import medseg_version, present_classes, segment_codes, series_in_mask_order

__all__ = ["RTSTRUCT_SOP_CLASS", "rasterise_rtstruct", "slice_contours", "write_rtstruct"]

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
STUDY_COMPONENT_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"  # what RT Referenced Study Sequence items name, by custom
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255), (255, 128, 0),
           (128, 0, 255), (0, 128, 255), (255, 0, 128)]


def slice_contours(region: np.ndarray) -> list[np.ndarray]:
    """Closed outlines of a 2D boolean slice as (N, 2) arrays of (column, row) pixel coordinates,
    the closing point not repeated; holes come out as outlines of their own."""
    padded = np.pad(region.astype(np.float64), 1)  # structures touching the edge still close
    lines = contourpy.contour_generator(z=padded, line_type="Separate").lines(0.5)
    out = []
    for line in lines:
        points = np.asarray(line, dtype=np.float64) - 1.0
        if len(points) > 1 and np.allclose(points[0], points[-1]):
            points = points[:-1]
        if len(points) >= 3:
            out.append(points)
    return out


def _patient_points(points: np.ndarray, ds) -> np.ndarray:
    """(column, row) pixel coordinates of one slice -> flat x, y, z patient coordinates (mm)."""
    origin = np.asarray([float(v) for v in ds.ImagePositionPatient])
    cosines = np.asarray([float(v) for v in ds.ImageOrientationPatient])
    along_row, along_column = cosines[:3], cosines[3:]  # directions of increasing column, increasing row
    row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
    xyz = (origin + points[:, :1] * column_spacing * along_row + points[:, 1:] * row_spacing * along_column)
    return xyz.ravel()


def _ds(**items):
    from pydicom.dataset import Dataset

    ds = Dataset()
    for key, value in items.items():
        setattr(ds, key, value)
    return ds


def _code_item(code):
    return _ds(CodeValue=code.value, CodingSchemeDesignator=code.scheme_designator, CodeMeaning=code.meaning)


def write_rtstruct(path: str | os.PathLike, mask: np.ndarray, folder: str | os.PathLike, geometry: dict,
                   class_names: Sequence[str], *, model_name: str = "medseg",
                   series_description: str = "medseg structures") -> Path:
    """Write `mask` ((z, y, x) class indices on the series' grid) as an RTSTRUCT over the series in
    `folder`; returns `path`. Written atomically (`medseg.atomic`) and read back."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence as Seq
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

    path = Path(path)
    mask = np.asarray(mask)
    sources = series_in_mask_order(folder, geometry, mask.shape)
    present = present_classes(mask, class_names, path, "RTSTRUCT")
    first = sources[0]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    date, clock = time.strftime("%Y%m%d"), time.strftime("%H%M%S")
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = RTSTRUCT_SOP_CLASS, meta.MediaStorageSOPInstanceUID
    for key in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName"):
        setattr(ds, key, first.get(key, ""))
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "RTSTRUCT", generate_uid(), 901
    ds.SeriesDescription, ds.InstanceNumber = series_description[:64], 1
    ds.Manufacturer, ds.ManufacturerModelName, ds.SoftwareVersions = "medseg", model_name[:64], medseg_version()
    ds.StructureSetLabel, ds.StructureSetName = "MEDSEG", f"medseg {model_name}"[:64]
    ds.StructureSetDate, ds.StructureSetTime = date, clock
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, clock
    frame = first.FrameOfReferenceUID
    images = Seq([_ds(ReferencedSOPClassUID=s.SOPClassUID, ReferencedSOPInstanceUID=s.SOPInstanceUID)
                  for s in sources])
    series = _ds(SeriesInstanceUID=first.SeriesInstanceUID, ContourImageSequence=images)
    study = _ds(ReferencedSOPClassUID=STUDY_COMPONENT_SOP_CLASS, ReferencedSOPInstanceUID=first.StudyInstanceUID,
                RTReferencedSeriesSequence=Seq([series]))
    ds.ReferencedFrameOfReferenceSequence = Seq([_ds(FrameOfReferenceUID=frame,
                                                     RTReferencedStudySequence=Seq([study]))])
    rois, contours, observations = [], [], []
    for number, index in enumerate(present, start=1):
        name = str(class_names[index])[:64]
        rois.append(_ds(ROINumber=number, ReferencedFrameOfReferenceUID=frame, ROIName=name,
                        ROIGenerationAlgorithm="AUTOMATIC", ROIGenerationDescription=f"medseg {model_name}"[:64]))
        items = []
        for k in np.flatnonzero(np.any(mask == index, axis=(1, 2))):
            reference = Seq([_ds(ReferencedSOPClassUID=sources[k].SOPClassUID,
                                 ReferencedSOPInstanceUID=sources[k].SOPInstanceUID)])
            for outline in slice_contours(mask[k] == index):
                items.append(_ds(ContourImageSequence=reference, ContourGeometricType="CLOSED_PLANAR",
                                 NumberOfContourPoints=len(outline),
                                 ContourData=[f"{v:.4f}" for v in _patient_points(outline, sources[k])]))
        contours.append(_ds(ROIDisplayColor=list(COLOURS[(number - 1) % len(COLOURS)]), ReferencedROINumber=number,
                            ContourSequence=Seq(items)))
        _, kind = segment_codes(name)
        observations.append(_ds(ObservationNumber=number, ReferencedROINumber=number, ROIObservationLabel=name,
                                RTROIInterpretedType="ORGAN", ROIInterpreter="",
                                RTROIIdentificationCodeSequence=Seq([_code_item(kind)])))
    ds.StructureSetROISequence = Seq(rois)
    ds.ROIContourSequence = Seq(contours)
    ds.RTROIObservationsSequence = Seq(observations)

    def check(tmp: Path) -> None:
        back = pydicom.dcmread(tmp)
        if len(back.StructureSetROISequence) != len(present):
            raise ValueError(f"{len(back.StructureSetROISequence)} ROIs read back, {len(present)} written")

    with atomic_path(path, check=check) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path


def rasterise_rtstruct(path: str | os.PathLike, folder: str | os.PathLike, geometry: dict, shape: Sequence[int],
                       class_names: Sequence[str]) -> np.ndarray:
    """The mask an RTSTRUCT draws on the series in `folder` ((z, y, x) class indices; ROIs named as
    `class_names`, other ROIs ignored): each contour is filled at voxel centres on the slice it
    references, the contours of one ROI on one slice combined by the even-odd rule (holes)."""
    import pydicom
    from matplotlib.path import Path as Polygon

    path = Path(path)
    sources = series_in_mask_order(folder, geometry, shape)
    slice_of = {ds.SOPInstanceUID: k for k, ds in enumerate(sources)}
    rt = pydicom.dcmread(path)
    names = {roi.ROINumber: roi.ROIName for roi in rt.StructureSetROISequence}
    mask = np.zeros(tuple(int(s) for s in shape), np.uint8)
    rows, cols = mask.shape[1:]
    centres = np.stack(np.meshgrid(np.arange(cols), np.arange(rows)), -1).reshape(-1, 2)  # (column, row)
    for roi in rt.ROIContourSequence:
        name = names.get(roi.ReferencedROINumber)
        if name not in class_names:
            continue
        filled: dict[int, np.ndarray] = {}
        for contour in roi.get("ContourSequence", []):
            k = slice_of.get(contour.ContourImageSequence[0].ReferencedSOPInstanceUID)
            if k is None:
                raise MedsegInputError(path, f"a contour of {name!r} references a slice not in {folder}")
            ds = sources[k]
            points = np.asarray(contour.ContourData, float).reshape(-1, 3) - [float(v) for v in ds.ImagePositionPatient]
            cosines = np.asarray([float(v) for v in ds.ImageOrientationPatient])
            row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
            pixels = np.c_[points @ cosines[:3] / column_spacing, points @ cosines[3:] / row_spacing]
            inside = Polygon(pixels).contains_points(centres).reshape(rows, cols)
            filled[k] = filled.get(k, np.zeros((rows, cols), bool)) ^ inside
        for k, region in filled.items():
            mask[k][region] = class_names.index(name)
    return mask
