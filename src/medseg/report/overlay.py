"""Overlay pictures: a scan with the predicted mask filled in colour and the reference as a contour.

Each class has one colour (PALETTE), used for both: the prediction is a semi-transparent fill,
the reference (ground truth) a solid outline of the same colour, so a class's miss (an outline
around nothing), its spurious parts (fill outside the outline) and which class is which are
visible at a glance, with one legend entry per class. Without a reference (`medseg predict`'s
pictures) the prediction is outlined too. Class 0 is background and is never drawn.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from ..atomic import atomic_path

# Classes 1, 2, ... take PALETTE[0], PALETTE[1], ... (cycling after 10): well separated hues,
# none of them yellow or white, so the reference contour stands out against any of them.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (60, 180, 75),    # green
    (230, 25, 75),    # red
    (0, 130, 200),    # blue
    (245, 130, 48),   # orange
    (145, 30, 180),   # purple
    (70, 240, 240),   # cyan
    (240, 50, 230),   # magenta
    (0, 128, 128),    # teal
    (170, 110, 40),   # brown
    (128, 0, 0),      # maroon
)
REF_COLOUR: tuple[int, int, int] = (255, 255, 0)  # yellow: kept out of the palette (reference outlines were
                                                  # drawn in it before each class had its own outline colour)


def class_colour(class_index: int) -> tuple[int, int, int]:
    """Palette colour of a foreground class (1-based, as in label maps)."""
    if class_index < 1:
        raise ValueError(f"class {class_index} is background and has no colour")
    return PALETTE[(class_index - 1) % len(PALETTE)]


def outline_width(height: int, width: int) -> int:
    """Outline thickness in pixels: 1 up to ~640 px, thicker on large images (e.g. 1080p endoscopy)."""
    return 1 + max(height, width) // 640


def overlay(
    image: np.ndarray, pred: np.ndarray | None = None, ref: np.ndarray | None = None, alpha: float = 0.35,
) -> np.ndarray:
    """RGB uint8 (H, W, 3) picture of `image` with `pred` filled and `ref` outlined, each class in
    its colour; without `ref`, `pred` is outlined too.

    image: (H, W) or (C, H, W) channels-first; 3 channels are shown as RGB, otherwise the
    first channel as grey. Float images are rescaled with their 1/99 percentiles; uint8 images
    are taken as display-ready. pred / ref: (H, W) integer class maps.
    """
    rgb = _display_rgb(np.asarray(image))
    height, width = rgb.shape[:2]
    for name, mask in (("pred", pred), ("ref", ref)):
        if mask is not None and np.shape(mask) != (height, width):
            raise ValueError(f"{name} shape {np.shape(mask)} differs from image size {(height, width)}")
    thickness = outline_width(height, width)
    out = rgb.astype(np.float32)

    if pred is not None:
        pred = np.asarray(pred).astype(np.int64)
        classes = [int(k) for k in np.unique(pred) if k > 0]
        for k in classes:
            region = pred == k
            out[region] = (1.0 - alpha) * out[region] + alpha * np.array(class_colour(k), np.float32)
        if ref is None:
            for k in classes:
                out[_outline(pred == k, thickness)] = class_colour(k)
    if ref is not None:
        ref = np.asarray(ref).astype(np.int64)
        for k in np.unique(ref):
            if k > 0:
                out[_outline(ref == k, thickness)] = class_colour(int(k))
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


MIN_PANEL_SIDE = 192  # small volumes (hippocampus crops are ~40 voxels) are enlarged to this


def structure_centre(*masks: np.ndarray | None) -> tuple[int, ...] | None:
    """Centre of mass of the foreground of the first mask that has any, as voxel indices."""
    for mask in masks:
        if mask is not None and np.any(mask > 0):
            # mean index per axis from the per-axis voxel counts: the same value as
            # argwhere(...).mean(0) without an (N, ndim) int64 array for CT-sized masks
            fg = np.asarray(mask) > 0
            total = int(fg.sum())
            centre = []
            for axis in range(fg.ndim):
                counts = fg.sum(axis=tuple(a for a in range(fg.ndim) if a != axis), dtype=np.int64)
                centre.append(int(round(float(np.dot(np.arange(len(counts), dtype=np.int64), counts)) / total)))
            return tuple(centre)
    return None


def volume_overlay(image: np.ndarray, pred: np.ndarray | None = None, ref: np.ndarray | None = None,
                   spacing: tuple[float, ...] = (1.0, 1.0, 1.0), alpha: float = 0.35,
                   centre: tuple[int, ...] | None = None) -> np.ndarray:
    """Three orthogonal slices (axial, coronal, sagittal) through the centre of the labelled
    structure (reference first, else prediction, else the volume's centre), side by side.

    image: (C, z, y, x) or (z, y, x); pred / ref: (z, y, x). Each panel is drawn with its true
    aspect ratio from `spacing` (z, y, x) and enlarged when small. `centre` (z, y, x) chooses
    the slices instead.
    """
    image = np.asarray(image)
    vol = image[0] if image.ndim == 4 else image
    centre = centre or structure_centre(ref, pred) or tuple(s // 2 for s in vol.shape)
    # one intensity scale for the three panels, from the whole volume; only the panels are
    # converted to float64 (a CT-sized volume would need 0.8 GB per float64 copy)
    window = _display_range(vol if vol.dtype.kind == "f" else vol.astype(np.float32))
    panels = []
    for axis in range(3):
        take = lambda a: None if a is None else np.take(a, centre[axis], axis=axis)  # noqa: E731
        display = _rescale(take(vol).astype(np.float64), window)
        rgb = overlay(display, take(pred), take(ref), alpha=alpha)
        if axis != 0:  # coronal and sagittal rows run along z: draw the top of the head on top
            rgb = rgb[::-1]
        rows, cols = [spacing[a] for a in range(3) if a != axis]
        h, w = rgb.shape[:2]
        scale = max(1.0, MIN_PANEL_SIDE / max(h * rows, w * cols))
        size = (max(1, round(w * cols * scale)), max(1, round(h * rows * scale)))
        panels.append(np.asarray(Image.fromarray(rgb).resize(size, Image.NEAREST)))
    height = max(p.shape[0] for p in panels)
    gap = np.zeros((height, 4, 3), np.uint8)
    padded = [np.pad(p, ((0, height - p.shape[0]), (0, 0), (0, 0))) for p in panels]
    return np.concatenate([padded[0], gap, padded[1], gap, padded[2]], axis=1)


def save_overlay(
    path: Path, image: np.ndarray, pred: np.ndarray | None = None, ref: np.ndarray | None = None,
    spacing: tuple[float, ...] | None = None, **kw,
) -> Path:
    """Write an overlay PNG (parent folders are made) and return its path: `overlay` for 2D
    images, `volume_overlay` (three orthogonal slices) for 3D volumes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = pred if pred is not None else ref
    if mask is not None and np.ndim(mask) == 3:
        picture = volume_overlay(image, pred, ref, spacing=spacing or (1.0, 1.0, 1.0), **kw)
    else:
        picture = overlay(image, pred, ref, **kw)
    with atomic_path(path) as tmp:
        Image.fromarray(picture).save(tmp, format="PNG")
    return path


def _display_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 view of a (H, W) or (C, H, W) image."""
    if image.ndim == 3:
        image = image if image.shape[0] == 3 else image[0]
    elif image.ndim != 2:
        raise ValueError(f"overlay needs a 2D image (H, W) or (C, H, W); got shape {image.shape}")
    if image.dtype != np.uint8:
        image = _rescale(image.astype(np.float64))
    return np.ascontiguousarray(np.moveaxis(image, 0, -1) if image.ndim == 3 else np.stack([image] * 3, axis=-1))


def _display_range(image: np.ndarray) -> tuple[float, float] | None:
    """The 1st..99th percentile of the finite values (their full range if that is flat); None
    for an empty or flat image."""
    finite = np.isfinite(image)
    values = image if finite.all() else image[finite]
    if values.size == 0:
        return None
    lo, hi = np.percentile(values, [1, 99])
    if hi <= lo:  # flat or nearly flat image: fall back to the full range
        lo, hi = values.min(), values.max()
    return None if hi <= lo else (float(lo), float(hi))


def _rescale(image: np.ndarray, window: tuple[float, float] | None | str = "auto") -> np.ndarray:
    """Map the 1st..99th percentile (or a given `window`) to 0..255 (one scale for all channels,
    so colours keep their balance)."""
    window = _display_range(image) if window == "auto" else window
    if window is None:
        return np.zeros(image.shape, np.uint8)
    lo, hi = window
    scaled = np.clip((np.nan_to_num(image, nan=lo) - lo) / (hi - lo), 0.0, 1.0)
    return np.round(scaled * 255).astype(np.uint8)


def _outline(mask: np.ndarray, thickness: int) -> np.ndarray:
    """Inner boundary band of a mask; regions touching the image edge get no line along that edge."""
    return mask & ~ndimage.binary_erosion(mask, iterations=thickness, border_value=1)
