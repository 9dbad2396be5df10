"""Structure statistics of a predicted mask: per case and class, how big the structure is, in how
many pieces, where, and what the image holds inside it (`medseg predict` writes them as
OUT/statistics.csv and OUT/statistics.json).

Rules, and why:
- Volume is exact: voxel count x voxel volume (the product of the spacing, mm) / 1000 in ml.
  No surface smoothing or partial-volume estimate: the number must be reproducible from the mask.
- 3D rows carry `voxels` and `volume_ml`; 2D rows carry `pixels` and `area_mm2`, the area only
  where the file states a pixel size (volume formats); pictures (PNG, JPEG, TIFF) state none, and
  a 1 mm guess would pass for a measurement.
- Components use face connectivity (6 in 3D, 4 in 2D), as the postprocessing that keeps the
  largest component does, so a postprocessed structure counts 1.
- The bounding box is in array index order ((z, y, x) or (y, x)), first and last index inclusive,
  and its extent in mm.
- Intensities are of the image as read (before any normalisation), per channel, inside the
  structure: mean, std (population), min, max.
- Background (class 0) gets no row; an empty class gets a row with 0 voxels and blank the rest,
  so every case lists every class.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from ..atomic import write_text

__all__ = ["structure_statistics", "statistics_columns", "write_statistics", "STATISTICS_CSV", "STATISTICS_JSON"]

STATISTICS_CSV = "statistics.csv"
STATISTICS_JSON = "statistics.json"
INTENSITY_STATS = ("mean", "std", "min", "max")


def _channel_names(channels: int, names: Sequence[str] | None) -> list[str]:
    if names and len(names) == channels:
        return [str(n) for n in names]
    return [f"channel{c}" for c in range(channels)]


def structure_statistics(case_id: str, mask: np.ndarray, image: np.ndarray | None, spacing: Sequence[float],
                         class_names: Sequence[str], *, spacing_known: bool = True,
                         channel_names: Sequence[str] | None = None) -> list[dict]:
    """One row per foreground class of `mask` (class indices 0..K-1, K = len(class_names)).

    `image` is (channels, *spatial) as read (or None: no intensity columns); `spacing` is per
    array axis in mm; `spacing_known=False` (pictures) leaves the physical sizes blank.
    """
    mask = np.asarray(mask)
    dims = mask.ndim
    if len(spacing) != dims:
        raise ValueError(f"{case_id}: spacing {tuple(spacing)} does not fit a {dims}D mask")
    if image is not None and tuple(image.shape[1:]) != mask.shape:
        raise ValueError(f"{case_id}: image {image.shape[1:]} and mask {mask.shape} differ in size")
    channels = _channel_names(image.shape[0], channel_names) if image is not None else []
    unit = float(np.prod(np.asarray(spacing, dtype=np.float64)))
    structure = ndimage.generate_binary_structure(dims, 1)
    rows = []
    for index in range(1, len(class_names)):
        region = mask == index
        count = int(np.count_nonzero(region))
        row: dict = {"case": case_id, "class_index": index, "class": str(class_names[index])}
        if dims == 3:
            row["voxels"] = count
            row["volume_ml"] = count * unit / 1000.0 if spacing_known else None
        else:
            row["pixels"] = count
            row["area_mm2"] = count * unit if spacing_known else None
        row["components"] = int(ndimage.label(region, structure=structure)[1]) if count else 0
        if count:
            where = np.nonzero(region)
            first = [int(a.min()) for a in where]
            last = [int(a.max()) for a in where]
            row["bbox_first"], row["bbox_last"] = first, last
            row["bbox_size_mm"] = ([(b - a + 1) * float(s) for a, b, s in zip(first, last, spacing)]
                                   if spacing_known else None)
        else:
            row["bbox_first"] = row["bbox_last"] = row["bbox_size_mm"] = None
        for c, name in enumerate(channels):
            values = image[c][region].astype(np.float64) if count else None
            for stat in INTENSITY_STATS:
                row[f"{name}_{stat}"] = float(getattr(np, stat)(values)) if count else None
        rows.append(row)
    return rows


def statistics_columns(rows: list[dict]) -> list[str]:
    """The CSV columns: those of the first row, then any later row adds (channel names may vary)."""
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    return columns


def _cell(value: object) -> str:
    """CSV text of a value: blank for None, index lists as 'z y x', floats with every digit
    (`repr`), so volume_ml reads back exactly."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(_cell(v) for v in value)
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def _earlier_rows(out: Path, replaced: set[str]) -> list[dict]:
    """Rows of OUT/statistics.json from an earlier prediction into the same folder, less those of
    the cases predicted again; nothing when there is no readable file."""
    try:
        earlier = json.loads((out / STATISTICS_JSON).read_text()).get("rows", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [r for r in earlier if isinstance(r, dict) and r.get("case") not in replaced]


def write_statistics(out: str | os.PathLike, rows: list[dict]) -> tuple[Path, Path]:
    """Write OUT/statistics.csv (one row per case and class) and OUT/statistics.json (the same
    rows, plus what the columns mean) atomically; returns both paths.

    Rows of other cases already in OUT/statistics.json (an earlier `medseg predict` into the same
    folder) are kept, so the files always describe every mask in OUT; a case predicted again
    replaces its rows."""
    out = Path(out)
    rows = _earlier_rows(out, {r["case"] for r in rows}) + rows
    columns = statistics_columns(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    csv_path = write_text(out / STATISTICS_CSV, buffer.getvalue())
    legend = {
        "voxels / pixels": "count of the class's voxels (3D) or pixels (2D)",
        "volume_ml / area_mm2": "count x voxel volume / 1000 (ml), or count x pixel area (mm2); blank when the "
                                "file states no pixel size",
        "components": "connected pieces, face connectivity (6 in 3D, 4 in 2D)",
        "bbox_first / bbox_last": "first and last array index holding the class, array axis order, inclusive",
        "bbox_size_mm": "extent of the bounding box per array axis in mm",
        "<channel>_mean/std/min/max": "image intensity inside the structure as read, per channel (std: population)",
    }
    json_path = write_text(out / STATISTICS_JSON, json.dumps({"columns": legend, "rows": rows}, indent=2))
    return csv_path, json_path
