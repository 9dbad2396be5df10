"""The clinical output formats of `medseg predict --format`: a DICOM SEG (`dicom-seg`) or an RT
Structure Set (`rtstruct`) per DICOM series, in place of the mask file.

File contract: OUT/<case>_seg.dcm and OUT/<case>_rtstruct.dcm (case: the series folder's name).
Both need the series the mask was predicted from (they reference its slices by UID), so any other
input is refused before the first prediction. A prediction with no structure writes no file (a
DICOM SEG or RTSTRUCT needs at least one segment or ROI) and says so as a warning; its rows in
OUT/statistics.csv still show 0 voxels.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..case import Case
from ..errors import MedsegInputError
from ..io import write_mask
from ..io.dicom_seg import EmptySegmentation, write_dicom_seg
from ..io.layout import InputCase
from ..io.rtstruct import write_rtstruct

__all__ = ["DICOM_OUTPUTS", "check_dicom_output", "write_prediction"]

DICOM_OUTPUTS = {"dicom-seg": "_seg.dcm", "rtstruct": "_rtstruct.dcm"}  # --format -> file name ending


def check_dicom_output(item: InputCase, output_format: str | None) -> None:
    """Refuse a DICOM output format for an input that is not a DICOM series."""
    if output_format in DICOM_OUTPUTS and not item.dicom:
        raise MedsegInputError(item.source, f"is not a DICOM series; --format {output_format} writes objects that "
                               "reference the series' slices, so its input must be a DICOM series folder")


def write_prediction(target: Path, mask: np.ndarray, case: Case, output_format: str | None,
                     class_names: list[str], model_name: str) -> bool:
    """Write one case's prediction to `target` in the asked-for format; False when nothing was
    written (a DICOM format and a mask of background only)."""
    if output_format not in DICOM_OUTPUTS:
        write_mask(target, mask, case.meta)
        return True
    writer = write_dicom_seg if output_format == "dicom-seg" else write_rtstruct
    try:
        writer(target, mask, case.source, case.meta["geometry"], class_names, model_name=model_name)
    except EmptySegmentation as err:
        warnings.warn(str(err), stacklevel=2)
        return False
    return True
