"""Uncertainty heat maps over the image: where a reviewer should look.

The map's value (entropy in nats) is coloured on a dark-to-bright ramp (black, purple, red,
orange, pale yellow: the look of matplotlib's "inferno", without needing it) from 0 to `vmax`
(log K, the largest entropy K classes can have, so pictures of one run compare), blended over
the grey image with an opacity that grows with the value, so certain regions show the anatomy
and doubtful ones glow. The predicted mask is outlined in its class colours.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import atomic_path
from .overlay import MIN_PANEL_SIDE, _display_range, _display_rgb, _outline, _rescale, class_colour, outline_width

_RAMP = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float32)
MAX_OPACITY = 0.85


def _ramp_table(levels: int = 256) -> np.ndarray:
    f = np.linspace(0.0, 1.0, levels, dtype=np.float32) * (len(_RAMP) - 1)
    low = np.minimum(f.astype(np.int64), len(_RAMP) - 2)
    t = (f - low)[:, None]
    return (1 - t) * _RAMP[low] + t * _RAMP[low + 1]


_TABLE = _ramp_table()  # 256 levels: finer than a PNG shows, and a lookup instead of arithmetic per pixel


def colour_ramp(fraction: np.ndarray) -> np.ndarray:
    """(..., 3) float32 RGB of values in [0, 1] on the ramp (256 levels)."""
    f = np.clip(np.nan_to_num(np.asarray(fraction, np.float32)), 0.0, 1.0)
    return _TABLE[np.round(f * (len(_TABLE) - 1)).astype(np.uint8)]


def heat_overlay(image: np.ndarray, values: np.ndarray, vmax: float, pred: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3): `values` (H, W) as a heat map over `image` ((H, W) or (C, H, W))."""
    rgb = _display_rgb(np.asarray(image)).astype(np.float32)
    values = np.asarray(values, np.float32)
    if values.shape != rgb.shape[:2]:
        raise ValueError(f"map shape {values.shape} differs from image size {rgb.shape[:2]}")
    fraction = np.clip(np.nan_to_num(values) / max(float(vmax), 1e-6), 0.0, 1.0)
    alpha = (MAX_OPACITY * np.sqrt(fraction))[..., None]  # sqrt: faint doubt still shows
    out = (1 - alpha) * rgb + alpha * colour_ramp(fraction)
    if pred is not None:
        pred = np.asarray(pred).astype(np.int64)
        thickness = outline_width(*pred.shape)
        for k in np.unique(pred):
            if k > 0:
                out[_outline(pred == k, thickness)] = class_colour(int(k))
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def volume_heat_overlay(image: np.ndarray, values: np.ndarray, vmax: float, pred: np.ndarray | None = None,
                        spacing: tuple[float, ...] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Three orthogonal slices (axial, coronal, sagittal) through the most uncertain voxel
    (the first, in array order, of the largest value), side by side, true aspect ratio."""
    image = np.asarray(image)
    vol = image[0] if image.ndim == 4 else image
    values = np.asarray(values, np.float32)
    centre = np.unravel_index(int(np.nanargmax(values)), values.shape) if values.size and np.nanmax(values) > 0 \
        else tuple(s // 2 for s in values.shape)
    window = _display_range(vol if vol.dtype.kind == "f" else vol.astype(np.float32))
    panels = []
    for axis in range(3):
        take = lambda a: None if a is None else np.take(a, centre[axis], axis=axis)  # noqa: E731
        rgb = heat_overlay(_rescale(take(vol).astype(np.float64), window), take(values), vmax, take(pred))
        if axis != 0:  # coronal and sagittal rows run along z: the top of the head on top
            rgb = rgb[::-1]
        rows, cols = [spacing[a] for a in range(3) if a != axis]
        h, w = rgb.shape[:2]
        scale = max(1.0, MIN_PANEL_SIDE / max(h * rows, w * cols))
        panels.append(np.asarray(Image.fromarray(rgb).resize((max(1, round(w * cols * scale)),
                                                             max(1, round(h * rows * scale))), Image.NEAREST)))
    height = max(p.shape[0] for p in panels)
    gap = np.zeros((height, 4, 3), np.uint8)
    padded = [np.pad(p, ((0, height - p.shape[0]), (0, 0), (0, 0))) for p in panels]
    return np.concatenate([padded[0], gap, padded[1], gap, padded[2]], axis=1)


def save_heatmap(path: Path, image: np.ndarray, values: np.ndarray, vmax: float, pred: np.ndarray | None = None,
                 spacing: tuple[float, ...] | None = None) -> Path:
    """Write the heat map PNG (2D picture, or three slices of a volume) atomically."""
    values = np.asarray(values)
    picture = volume_heat_overlay(image, values, vmax, pred, spacing or (1.0, 1.0, 1.0)) if values.ndim == 3 \
        else heat_overlay(image, values, vmax, pred)
    with atomic_path(Path(path)) as tmp:
        Image.fromarray(picture).save(tmp, format="PNG")
    return Path(path)
