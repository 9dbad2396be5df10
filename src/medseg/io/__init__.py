"""Reading and writing images and masks, and finding the cases of a dataset.

Importing `medseg.io` registers every built-in file format with `medseg.io.registry`; callers use
the generic functions re-exported here and never branch on file types:

* `read_image`, `read_image_header`, `read_mask`, `write_mask`, `is_image_file`, `is_mask_file`;
* `LabelMapping`, `infer_label_mapping`: stored mask values -> class indices (`medseg.io.labels`);
* `CasePair`, `discover_pairs`, `validate_dataset`, `read_case` (`medseg.io.dataset`);
* `DatasetInfo`, `describe_dataset`, `InputCase`, `prediction_inputs` (`medseg.io.layout`);
* `LABEL_SUFFIXES`, `discover_side_by_side`: masks beside their images (`medseg.io.side_by_side`);
* `CaseGrouping`, `case_grouping`, `case_groups`, `grouped_split`, `grouped_folds`: cases that
  belong together (one patient's slices) and splits that keep them on one side (`medseg.io.groups`).

A new format is a module that decorates its functions with `register_reader`,
`register_mask_reader`, ... and is imported below.
"""
from medseg.io import registry
from medseg.io import image2d  # noqa: F401  (registers PNG, JPEG, BMP, GIF, TIFF)
from medseg.io import volume  # noqa: F401  (registers NIfTI, NRRD, MHA/MHD; DICOM series)
from medseg.io.dataset import CasePair, discover_pairs, read_case, validate_dataset
from medseg.io.groups import CaseGrouping, case_grouping, case_groups, grouped_folds, grouped_split
from medseg.io.layout import DatasetInfo, InputCase, describe_dataset, prediction_inputs
from medseg.io.labels import LabelMapping, infer_label_mapping
from medseg.io.side_by_side import LABEL_SUFFIXES, discover_side_by_side
from medseg.io.registry import (
    IMAGE_SUFFIXES,
    MASK_SUFFIXES,
    case_stem,
    is_image_file,
    is_mask_file,
    read_image,
    read_image_header,
    read_mask,
    register_header_reader,
    register_mask_reader,
    register_mask_writer,
    register_reader,
    write_mask,
)

__all__ = [
    "registry",
    "IMAGE_SUFFIXES",
    "MASK_SUFFIXES",
    "register_reader",
    "register_header_reader",
    "register_mask_reader",
    "register_mask_writer",
    "read_image",
    "read_image_header",
    "read_mask",
    "write_mask",
    "is_image_file",
    "is_mask_file",
    "case_stem",
    "LabelMapping",
    "infer_label_mapping",
    "CasePair",
    "discover_pairs",
    "validate_dataset",
    "read_case",
    "DatasetInfo",
    "InputCase",
    "describe_dataset",
    "prediction_inputs",
    "LABEL_SUFFIXES",
    "discover_side_by_side",
    "CaseGrouping",
    "case_grouping",
    "case_groups",
    "grouped_split",
    "grouped_folds",
]
