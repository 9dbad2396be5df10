"""The `Case`: one subject's image channels, its label map and the geometry that places them.

Every stage of the flow (reading, preprocessing, training, prediction, writing) passes Cases,
so geometry read from disk is still there when a mask is written back. 2D and 3D share the type:
a 2D case simply has two spatial axes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Case:
    """One labelled (or unlabelled) subject.

    image:   float32 array shaped (channels, *spatial); channels are modalities or RGB.
    label:   integer array shaped (*spatial) with class indices 0..K-1, or None.
    spacing: physical size of one pixel/voxel per spatial axis (mm); 1.0 where unknown.
    source:  the file(s) the image came from, for error messages and output names.
    meta:    reader-specific facts needed to write results back (e.g. original mode, origin).
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray | None = None
    spacing: tuple[float, ...] = ()
    source: Path | None = None
    label_source: Path | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image.ndim < 3:
            raise ValueError(f"{self.case_id}: image must be (channels, *spatial), got {self.image.shape}")
        if not self.spacing:
            self.spacing = (1.0,) * (self.image.ndim - 1)
        if self.label is not None and self.label.shape != self.spatial_shape:
            raise ValueError(
                f"{self.label_source or self.case_id}: label size {self.label.shape} differs from "
                f"image size {self.spatial_shape} ({self.source})"
            )

    @property
    def channels(self) -> int:
        return int(self.image.shape[0])

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.image.shape[1:])

    @property
    def spatial_dims(self) -> int:
        return self.image.ndim - 1
