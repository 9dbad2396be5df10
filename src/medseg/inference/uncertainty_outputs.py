"""What `medseg predict --uncertainty` writes beside the masks (the file contract):

* ``OUT/uncertainty/<case><mask suffix>``: for volumes, the float32 entropy map (nats) on the
  mask's grid and geometry, in the mask's format (NIfTI, NRRD or MHA; ``.nii.gz`` where the mask
  is a DICOM object or a detached header); for 2D images ``OUT/uncertainty/<case>.tiff`` (float32)
  and ``OUT/uncertainty/<case>.png``, the heat map over the image (`medseg.report.heatmap`).
  With more than one pass (mirrors, folds), the mutual information goes beside it as
  ``<case>_mi<suffix>`` (``<case>_mi.tiff`` in 2D).
* ``OUT/uncertainty.csv`` and ``OUT/uncertainty.json``: one row per case: `case`, `score`
  (`medseg.inference.uncertainty.case_score`), `flagged` (score at or above the run's threshold),
  `members` (passes averaged), `mean_mi` (mean mutual information over the relevant region,
  with more than one pass), `relevant_voxels`, and `volume_<class>` per foreground class in
  `volume_unit` (ml for volumes with a known spacing, mm2 for 2D with one, else pixels/voxels).
  The JSON adds the temperature, the threshold and what the columns mean. Rows of earlier cases
  in OUT are kept, so the tables always describe every map there.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from ..atomic import write_text
from ..case import Case
from ..io.float_maps import FLOAT_VOLUME_SUFFIXES, write_float_map
from ..report.heatmap import save_heatmap
from .uncertainty import UncertainPrediction, max_entropy, relevant_region

UNCERTAINTY_DIR = "uncertainty"
UNCERTAINTY_CSV = "uncertainty.csv"
UNCERTAINTY_JSON = "uncertainty.json"


def map_suffix(mask_suffix: str, spatial_dims: int) -> str:
    """The entropy map's suffix: the mask's for volume formats that hold floats in one file,
    ``.nii.gz`` for other volumes (DICOM SEG/RTSTRUCT, MHD/NHDR), ``.tiff`` for 2D."""
    if spatial_dims == 2:
        return ".tiff"
    return mask_suffix if mask_suffix in FLOAT_VOLUME_SUFFIXES else ".nii.gz"


def write_case_maps(out: Path, case: Case, mask_suffix: str, result: UncertainPrediction,
                    spatial_dims: int) -> list[Path]:
    """Write one case's entropy map (and MI map, and 2D heat map) under OUT/uncertainty/."""
    folder = Path(out) / UNCERTAINTY_DIR
    suffix = map_suffix(mask_suffix, spatial_dims)
    written = [write_float_map(folder / f"{case.case_id}{suffix}", result.entropy.numpy(), case.meta)]
    if result.mutual_information is not None:
        written.append(write_float_map(folder / f"{case.case_id}_mi{suffix}", result.mutual_information.numpy(),
                                       case.meta))
    if spatial_dims == 2:
        written.append(save_heatmap(folder / f"{case.case_id}.png", case.image, result.entropy.numpy(),
                                    max_entropy(result.probabilities.shape[0]), result.mask))
    return written


def uncertainty_row(case: Case, result: UncertainPrediction, class_names: list[str]) -> dict:
    """The table row of one case (module docstring)."""
    region = relevant_region(result.probabilities)
    row: dict = {"case": case.case_id, "score": round(result.score, 6), "flagged": bool(result.flagged),
                 "members": result.members, "relevant_voxels": int(region.sum())}
    if result.mutual_information is not None:
        count = int(region.sum())
        row["mean_mi"] = round(float(result.mutual_information[region].sum()) / count, 6) if count else 0.0
    spacing_known = "geometry" in case.meta
    unit_size = float(np.prod(case.spacing)) if spacing_known else 1.0
    dims = result.mask.ndim
    row["volume_unit"] = ("ml" if dims == 3 else "mm2") if spacing_known else ("voxels" if dims == 3 else "pixels")
    counts = np.bincount(result.mask.ravel(), minlength=len(class_names))
    for k, name in enumerate(class_names[1:], start=1):
        value = int(counts[k]) * unit_size / (1000.0 if dims == 3 and spacing_known else 1.0)
        row[f"volume_{name}"] = round(value, 6) if spacing_known else int(counts[k])
    return row


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def write_uncertainty_tables(out: Path, rows: list[dict], settings: dict) -> tuple[Path, Path]:
    """OUT/uncertainty.csv and .json, atomically; earlier cases' rows in OUT are kept."""
    out = Path(out)
    earlier = out / UNCERTAINTY_JSON
    new = {r["case"] for r in rows}
    if earlier.is_file():
        try:
            old = json.loads(earlier.read_text(encoding="utf-8")).get("rows", [])
        except ValueError:
            old = []
        rows = [r for r in old if r.get("case") not in new] + rows
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    legend = {
        "score": "mean entropy (nats) of the calibrated probabilities over the foreground-relevant region "
                 "(predicted or possible foreground, dilated a few voxels); 0 when that region is empty",
        "flagged": "score at or above the run's flag_threshold (chosen on its validation cases): likely wrong",
        "members": "network passes averaged per voxel (mirrored flips x models); overlapping windows add more",
        "mean_mi": "mean mutual information (nats) of those passes over the relevant region (members > 1)",
        "relevant_voxels": "size of the foreground-relevant region",
        "volume_<class>": "predicted size of each class in volume_unit",
    }
    csv_path = write_text(out / UNCERTAINTY_CSV, buffer.getvalue())
    json_path = write_text(out / UNCERTAINTY_JSON, json.dumps({**settings, "columns": legend, "rows": rows},
                                                              indent=2))
    return csv_path, json_path
