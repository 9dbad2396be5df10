"""Dataset fingerprint: the facts about a labelled dataset that a plan is derived from.

One pass over the cases (threads; decoding releases the GIL) records per case: the spatial shape,
the voxel spacing, the shape of the non-zero region (what 3D cropping keeps), voxel counts per
class, the sizes of the connected components of each foreground class, how thin each class is
(`thickness_mm`), the extent of the labelled region, and a bounded sample of foreground
intensities per channel. Dataset-level facts (medians, percentiles, anisotropy,
intensity statistics per modality) are computed from those rows, so the fingerprint is cheap to
keep and to print.

Intensity samples are capped per case (`INTENSITY_SAMPLES_PER_CASE`) and only the summary is
stored, so a single huge case costs one read, not memory proportional to its size.
"""
from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from ..io.dataset import CasePair, read_case, validate_dataset
from ..io.groups import case_grouping
from ..io.labels import IGNORE_INDEX, LabelMapping
from ..io.layout import describe_dataset
from ..data.preprocess import crop_box

INTENSITY_SAMPLES_PER_CASE = 10000
MAX_COMPONENTS_KEPT = 50          # per case and class: the largest component sizes kept in the row
THICKNESS_CASES = 50              # thickness is measured on at most this many cases, spread over the dataset
OPENING_RADII = (1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48)   # ball radii (in the finest voxel size) tried


@dataclass
class CaseFingerprint:
    """What one case contributes to the fingerprint."""

    case_id: str
    shape: tuple[int, ...]                 # spatial shape as stored
    spacing: tuple[float, ...]             # mm per voxel, numpy axis order
    nonzero_shape: tuple[int, ...]         # shape of the crop box: voxels differing from the background
                                           # (corner value, else 0) in any channel; crop_box
    class_voxels: list[int]                # voxels per class 0..K-1 (original grid)
    components: list[list[int]]            # per foreground class: component sizes, largest first
    thickness_mm: list[float] = field(default_factory=list)  # per foreground class: its thin parts' width
                                           # (`thickness_mm`); 0 where the class is absent
    extent_mm: tuple[float, ...] = ()      # the box of all labelled voxels, mm per axis (empty: none)


@dataclass
class Fingerprint:
    """Per-case rows plus the dataset-level facts a plan needs."""

    dataset: str
    layout: str
    spatial_dims: int
    channel_names: list[str]
    class_names: list[str]
    num_classes: int
    cases: list[CaseFingerprint]
    intensity: list[dict] = field(default_factory=list)   # per channel: foreground statistics
    grouping: str = ""                                     # which cases belong together (`medseg.io.groups`)
    seconds: float = 0.0

    # ------------------------------------------------------------ derived facts
    def shapes(self, cropped: bool) -> np.ndarray:
        return np.array([c.nonzero_shape if cropped else c.shape for c in self.cases], dtype=float)

    def spacings(self) -> np.ndarray:
        return np.array([c.spacing for c in self.cases], dtype=float)

    def median_spacing(self) -> tuple[float, ...]:
        return tuple(float(s) for s in np.median(self.spacings(), axis=0))

    def median_shape(self, cropped: bool = True, spacing: tuple[float, ...] | None = None) -> tuple[float, ...]:
        """Median spatial shape, optionally as it would be after resampling to `spacing`."""
        shapes = self.shapes(cropped)
        if spacing is not None:
            shapes = shapes * self.spacings() / np.asarray(spacing, dtype=float)
        return tuple(float(s) for s in np.median(shapes, axis=0))

    def anisotropy(self) -> float:
        """Largest over smallest median voxel size (1.0 for isotropic data)."""
        spacing = self.median_spacing()
        return float(max(spacing) / max(min(spacing), 1e-9))

    def crop_fraction(self) -> float:
        """Median fraction of each case's voxels that lies inside its non-zero box."""
        full = np.prod(self.shapes(False), axis=1)
        kept = np.prod(self.shapes(True), axis=1)
        return float(np.median(kept / np.maximum(full, 1)))

    def class_summary(self) -> list[dict]:
        """Per foreground class: how often present, its median volume share and component sizes."""
        rows = []
        for k in range(1, self.num_classes):
            voxels = np.array([c.class_voxels[k] for c in self.cases], dtype=float)
            totals = np.array([max(1, sum(c.class_voxels)) for c in self.cases], dtype=float)
            present = voxels > 0
            comps = [c.components[k - 1] for c in self.cases if c.components[k - 1]]
            counts = [len(c) for c in comps]
            sizes = [s for c in comps for s in c]
            rows.append({
                "class": k,
                "name": self.class_names[k] if k < len(self.class_names) else f"class{k}",
                "cases_present": int(present.sum()),
                "cases": len(self.cases),
                "median_fraction": float(np.median(voxels[present] / totals[present])) if present.any() else 0.0,
                "median_voxels": float(np.median(voxels[present])) if present.any() else 0.0,
                "median_components": float(np.median(counts)) if counts else 0.0,
                "median_component_voxels": float(np.median(sizes)) if sizes else 0.0,
                "smallest_component_voxels": int(min(sizes)) if sizes else 0,
                "thin_mm": self.class_thickness_mm(k),
            })
        return rows

    def class_thickness_mm(self, k: int) -> float:
        """How thin class k's thin parts are: the median over the cases holding it of each case's
        `thickness_mm` (0.0 when no case measured it)."""
        values = [c.thickness_mm[k - 1] for c in self.cases if len(c.thickness_mm) >= k and c.thickness_mm[k - 1] > 0]
        return round(float(np.median(values)), 4) if values else 0.0

    def thinnest_mm(self) -> float | None:
        """The thinnest structures that matter: the smallest `class_thickness_mm` over the foreground
        classes (None when nothing was measured, e.g. a fingerprint stored before it was)."""
        values = [t for t in (self.class_thickness_mm(k) for k in range(1, self.num_classes)) if t > 0]
        return min(values) if values else None

    def median_extent_mm(self) -> tuple[float, ...] | None:
        """Median extent of the labelled region per axis (mm), over the cases that have labels."""
        extents = [c.extent_mm for c in self.cases if c.extent_mm]
        return tuple(float(e) for e in np.median(np.array(extents), axis=0)) if extents else None

    def summary(self) -> dict:
        """The dataset-level facts, small enough to print and to store in a plan."""
        spacing = self.median_spacing()
        return {
            "dataset": self.dataset, "layout": self.layout, "cases": len(self.cases),
            "spatial_dims": self.spatial_dims, "channels": self.channel_names,
            "classes": self.class_names,
            "median_shape": [round(s, 1) for s in self.median_shape(cropped=False)],
            "median_nonzero_shape": [round(s, 1) for s in self.median_shape(cropped=True)],
            "median_spacing": [round(s, 4) for s in spacing],
            "spacing_min": [round(float(s), 4) for s in self.spacings().min(axis=0)],
            "spacing_max": [round(float(s), 4) for s in self.spacings().max(axis=0)],
            "anisotropy": round(self.anisotropy(), 2),
            "nonzero_fraction": round(self.crop_fraction(), 3),
            "intensity": self.intensity,
            "class_stats": self.class_summary(),
            "thinnest_mm": self.thinnest_mm(),
            "median_extent_mm": [round(e, 1) for e in self.median_extent_mm() or ()],
            "grouping": self.grouping,
            "seconds": round(self.seconds, 1),
        }

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cases"] = [asdict(c) for c in self.cases]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Fingerprint":
        d = dict(d)
        d["cases"] = [CaseFingerprint(**{**c, "shape": tuple(c["shape"]), "spacing": tuple(c["spacing"]),
                                         "nonzero_shape": tuple(c["nonzero_shape"]),
                                         "extent_mm": tuple(c.get("extent_mm", ()))}) for c in d["cases"]]
        return cls(**d)


def component_sizes(mask: np.ndarray) -> list[int]:
    """Sizes of the connected components of a binary mask (face connectivity), largest first."""
    labelled, n = ndimage.label(mask)
    if n == 0:
        return []
    sizes = np.bincount(labelled.ravel())[1:]
    return sorted((int(s) for s in sizes), reverse=True)


def thickness_mm(mask: np.ndarray, spacing: tuple[float, ...]) -> float:
    """How wide a structure's thin parts are: the local thickness (the diameter of the largest
    ball inside the structure that covers a voxel) that 90 % of its voxels reach, found by opening
    it with balls of growing radius until more than 10 % of it is removed. Voxel-weighted, so a
    vessel tree measures its vessels and a blob its body, not the spurs of its outline."""
    if not mask.any():
        return 0.0
    sl = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in ndimage.find_objects(mask.astype(np.uint8))[0])
    part = np.pad(mask[sl], 1)
    unit = min(spacing)
    inside = ndimage.distance_transform_edt(part, sampling=spacing)
    total = int(part.sum())
    kept_radius = None
    for level in OPENING_RADII:
        radius = level * unit
        core = inside > radius
        if not core.any():
            break
        opened = ndimage.distance_transform_edt(~core, sampling=spacing) <= radius
        if int((opened & part).sum()) < 0.9 * total:
            break
        kept_radius = radius
    return float(unit if kept_radius is None else 2 * kept_radius + unit)


def _case_row(pair: CasePair, mapping: LabelMapping, channels: int | None, num_classes: int,
              seed: int, measure_thickness: bool = True) -> tuple[CaseFingerprint, list[np.ndarray]]:
    case = read_case(pair, mapping, channels)
    box = crop_box(case.image)
    label = case.label
    counts = np.bincount(label.ravel(), minlength=num_classes)[:num_classes]
    components = []
    for k in range(1, num_classes):
        if counts[k] == 0:
            components.append([])
            continue
        # components only inside the class's own bounding box: cheap even for a huge case
        sl = ndimage.find_objects((label == k).astype(np.uint8))[0]
        components.append(component_sizes(label[sl] == k)[:MAX_COMPONENTS_KEPT])
    spacing = tuple(float(s) for s in case.spacing)
    thickness = [round(thickness_mm(label == k, spacing), 4) if counts[k] and measure_thickness else 0.0
                 for k in range(1, num_classes)]
    labelled = ndimage.find_objects(((label > 0) & (label != IGNORE_INDEX)).astype(np.uint8))
    extent = tuple(round((b.stop - b.start) * s, 2) for b, s in zip(labelled[0], spacing)) if labelled else ()
    rng = np.random.default_rng(seed)
    foreground = (label > 0) & (label != IGNORE_INDEX)  # class_voxels above stop at K-1: no ignore either
    if not foreground.any():
        foreground = np.ones_like(label, dtype=bool)
    samples = []
    for c in range(case.channels):
        values = case.image[c][foreground]
        if values.size > INTENSITY_SAMPLES_PER_CASE:
            values = values[rng.integers(0, values.size, INTENSITY_SAMPLES_PER_CASE)]
        samples.append(values.astype(np.float64))
    row = CaseFingerprint(case_id=pair.case_id, shape=case.spatial_shape,
                          spacing=tuple(float(s) for s in case.spacing),
                          nonzero_shape=tuple(int(b.stop - b.start) for b in box),
                          class_voxels=[int(v) for v in counts], components=components,
                          thickness_mm=thickness, extent_mm=extent)
    return row, samples


def intensity_statistics(samples: list[np.ndarray]) -> dict:
    """Foreground statistics of one channel from pooled per-case samples."""
    v = np.concatenate(samples) if samples else np.zeros(1)
    return {"mean": float(v.mean()), "std": float(v.std()), "median": float(np.median(v)),
            "min": float(v.min()), "max": float(v.max()),
            "percentile_00_5": float(np.percentile(v, 0.5)), "percentile_99_5": float(np.percentile(v, 99.5))}


def compute_fingerprint(data: str | Path, workers: int = 2, progress: bool = True, ignore: float | None = None,
                        label_suffix: str | None = None) -> tuple[Fingerprint, list[CasePair], LabelMapping]:
    """Read every case of the dataset at DATA once and return its fingerprint (and the checked
    case list and label mapping, so callers need not validate twice). `ignore`: the stored
    "not annotated" value (`LabelMapping.ignore`), never counted as a class. `label_suffix`: which
    masks of a side-by-side folder (`medseg.io.layout.describe_dataset`)."""
    start = time.perf_counter()
    data = Path(data)
    pairs, info = describe_dataset(data, label_suffix=label_suffix)
    mapping = validate_dataset(pairs, info.label_mapping(), info.channels, ignore=ignore)
    k = mapping.num_classes

    every = max(1, math.ceil(len(pairs) / THICKNESS_CASES))

    def one(item: tuple[int, CasePair]):
        return _case_row(item[1], mapping, info.channels, k, seed=item[0], measure_thickness=item[0] % every == 0)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(tqdm(pool.map(one, enumerate(pairs)), total=len(pairs), desc="fingerprint",
                            unit="case", leave=False, disable=not progress or len(pairs) < 20))
    rows = [r for r, _ in results]
    n_channels = len(results[0][1])
    intensity = [intensity_statistics([s[c] for _, s in results]) for c in range(n_channels)]
    channel_names = list(info.channel_names or ([f"channel{c}" for c in range(n_channels)]))
    class_names = list(info.class_names or (["background"] + [f"class{c}" for c in range(1, k)]))
    for c, name in enumerate(channel_names[:n_channels]):
        intensity[c]["channel"] = name
    fp = Fingerprint(dataset=data.name, layout=info.layout, spatial_dims=len(rows[0].shape),
                     channel_names=channel_names, class_names=class_names, num_classes=k,
                     cases=rows, intensity=intensity, grouping=case_grouping(pairs).describe())
    fp.seconds = time.perf_counter() - start
    return fp, pairs, mapping


__all__ = ["CaseFingerprint", "Fingerprint", "compute_fingerprint", "component_sizes", "intensity_statistics",
           "thickness_mm"]
