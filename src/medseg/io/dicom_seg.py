"""DICOM Segmentation (SEG) objects of predicted masks, written with highdicom: what a PACS, OHIF
or 3D Slicer stores and shows over the series it was predicted from.

The file contract: `write_dicom_seg(OUT/<case>_seg.dcm, mask, series folder, ...)`.
- The SEG references the source series (its study, its frame of reference, and every source
  slice by SOP Instance UID, frame by frame), so a viewer lays it over the right images.
- One segment per class present in the mask, numbered 1..n in class order; classes absent from
  the mask are left out (DICOM has no empty segments), and a mask with no class at all writes no
  file (`EmptySegmentation`).
- Binary segmentation (one bit per voxel): a medseg mask holds one class per voxel, so segments
  never overlap, and medseg writes its argmax, not probabilities.
- Each segment carries the run's class name as its label and a coded property category and type
  (`segment_codes`): the SNOMED CT concept where the class name is a known structure, otherwise
  the generic pair category "Tissue" / type "Tissue" (SCT 85756007), as dcmqi and 3D Slicer use for
  a structure they cannot name. The algorithm is recorded as AUTOMATIC, family "Artificial
  Intelligence", name "medseg" with the run's name and the medseg version.

The mask must be the series' own grid, in the slice order GDCM reads it (`read_dicom_series`);
`series_in_mask_order` matches every mask slice to its DICOM file by position and refuses a
folder whose slices do not fit the mask.
"""
from __future__ import annotations

import os
import re
from importlib import metadata
from pathlib import Path
from typing import Sequence

import numpy as np

from ..atomic import atomic_path
from ..errors import MedsegInputError

__all__ = ["EmptySegmentation", "GENERIC_CODE", "STRUCTURE_CODES", "medseg_version", "segment_codes",
           "series_in_mask_order", "write_dicom_seg"]

POSITION_TOLERANCE_MM = 0.01  # a mask slice and its DICOM file must lie this close
# class name word -> (category keyword, type keyword) of pydicom's SNOMED CT dictionary (`codes.SCT`)
STRUCTURE_CODES = {
    "hippocampus": ("AnatomicalStructure", "Hippocampus"), "liver": ("AnatomicalStructure", "Liver"),
    "spleen": ("AnatomicalStructure", "Spleen"), "pancreas": ("AnatomicalStructure", "Pancreas"),
    "kidney": ("AnatomicalStructure", "Kidney"), "brain": ("AnatomicalStructure", "Brain"),
    "prostate": ("AnatomicalStructure", "Prostate"), "heart": ("AnatomicalStructure", "Heart"),
    "lung": ("AnatomicalStructure", "Lung"), "vessel": ("AnatomicalStructure", "BloodVessel"),
    "tumour": ("MorphologicallyAbnormalStructure", "Neoplasm"),
    "tumor": ("MorphologicallyAbnormalStructure", "Neoplasm"),
    "neoplasm": ("MorphologicallyAbnormalStructure", "Neoplasm"),
    "lesion": ("MorphologicallyAbnormalStructure", "Lesion"),
}
GENERIC_CODE = ("Tissue", "Tissue")  # SCT 85756007 for both: the generic segment of dcmqi and 3D Slicer


class EmptySegmentation(MedsegInputError):
    """The mask holds no class but background: a DICOM SEG needs at least one segment."""


def medseg_version() -> str:
    try:
        return metadata.version("medseg")
    except metadata.PackageNotFoundError:
        return "unknown"


def segment_codes(name: str) -> tuple:
    """(category, type) SNOMED CT codes (pydicom `Code`s) for a class name: the first word of the
    name found in `STRUCTURE_CODES` ("left kidney" -> Kidney), else the generic Tissue / Tissue."""
    from pydicom.sr.codedict import codes

    words = re.findall(r"[a-z]+", name.lower())
    for word in words:
        for key in (word, word.rstrip("s")):
            if key in STRUCTURE_CODES:
                category, kind = STRUCTURE_CODES[key]
                return getattr(codes.SCT, category), getattr(codes.SCT, kind)
    return getattr(codes.SCT, GENERIC_CODE[0]), getattr(codes.SCT, GENERIC_CODE[1])


def present_classes(mask: np.ndarray, class_names: Sequence[str], path: Path, what: str) -> list[int]:
    """The foreground classes the mask holds (an object per class is written, empty ones left
    out); a mask of background only is refused naming the file that was not written."""
    present = [c for c in range(1, len(class_names)) if np.any(mask == c)]
    if not present:
        raise EmptySegmentation(path, f"the prediction holds no structure (background only): no {what} written")
    return present


def series_in_mask_order(folder: str | os.PathLike, geometry: dict, shape: Sequence[int]) -> list:
    """The DICOM datasets (headers only) of the series in `folder`, one per mask slice, in mask
    order: slice k is the file whose Image Position lies at the mask's slice k (from `geometry`,
    the ITK-order spacing/origin/direction `read_dicom_series` returned). Raises
    `MedsegInputError` when the files do not fit the mask (other size, missing slice)."""
    import pydicom

    folder = Path(folder)
    datasets = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # not DICOM: a note or a thumbnail beside the slices
            continue
        if "ImagePositionPatient" in ds and "PixelSpacing" in ds:
            datasets.append(ds)
    z, rows, cols = (int(s) for s in shape)
    if len(datasets) != z:
        raise MedsegInputError(folder, f"holds {len(datasets)} image slice(s) but the mask has {z}")
    origin = np.asarray(geometry["origin"], float)
    direction = np.asarray(geometry["direction"], float).reshape(3, 3)
    step = direction[:, 2] * float(geometry["spacing"][2])
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
    ordered = []
    for k in range(z):
        gap = np.linalg.norm(positions - (origin + k * step), axis=1)
        best = int(np.argmin(gap))
        if gap[best] > POSITION_TOLERANCE_MM:
            raise MedsegInputError(folder, f"no DICOM slice lies at mask slice {k} (nearest {gap[best]:.3f} mm away)")
        ds = datasets[best]
        if (int(ds.Rows), int(ds.Columns)) != (rows, cols):
            raise MedsegInputError(folder, f"slice {ds.SOPInstanceUID} is {ds.Rows}x{ds.Columns}, the mask {rows}x{cols}")
        ordered.append(ds)
    if len({ds.SOPInstanceUID for ds in ordered}) != z:
        raise MedsegInputError(folder, "two mask slices fall on the same DICOM slice (duplicate positions)")
    return ordered


def write_dicom_seg(path: str | os.PathLike, mask: np.ndarray, folder: str | os.PathLike, geometry: dict,
                    class_names: Sequence[str], *, model_name: str = "medseg",
                    series_description: str = "medseg segmentation") -> Path:
    """Write `mask` ((z, y, x) class indices on the series' grid) as a binary DICOM SEG over the
    series in `folder`; returns `path`. Written atomically (`medseg.atomic`) and read back."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    path = Path(path)
    mask = np.asarray(mask)
    sources = series_in_mask_order(folder, geometry, mask.shape)
    present = present_classes(mask, class_names, path, "DICOM SEG")
    labels = np.zeros(len(class_names), np.uint8)
    labels[present] = np.arange(1, len(present) + 1)  # class index -> segment number
    version = medseg_version()
    algorithm = hd.AlgorithmIdentificationSequence(name="medseg", version=version,
                                                   family=codes.cid7162.ArtificialIntelligence,
                                                   source=model_name[:64])
    descriptions = []
    for number, index in enumerate(present, start=1):
        category, kind = segment_codes(str(class_names[index]))
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=str(class_names[index])[:64], segmented_property_category=category,
            segmented_property_type=kind, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, tracking_uid=hd.UID(), tracking_id=str(class_names[index])[:64]))
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=labels[mask], segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=900,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="medseg", manufacturer_model_name=model_name[:64],
        software_versions=version, device_serial_number="0", series_description=series_description[:64],
        content_label="MEDSEG", content_description=f"medseg {model_name}"[:64])

    def check(tmp: Path) -> None:
        back = hd.seg.segread(tmp)
        if back.number_of_segments != len(present):
            raise ValueError(f"{back.number_of_segments} segments read back, {len(present)} written")

    with atomic_path(path, check=check) as tmp:
        seg.save_as(tmp)
    return path
