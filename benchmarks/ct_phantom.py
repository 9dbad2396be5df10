"""CT-like phantom volumes for the memory suite (`benchmarks/suites/memory.py`): int16 HU, a body in air.

A real CT is mostly air (-1000 HU) around an elliptical body (soft tissue ~40 HU with a fat
rim), organs of slightly different density and bone (spine and ribs, 300-1000 HU). The
benchmark needs that layout, not anatomy: air is what lets empty windows be skipped, and the
size and dtype are what memory is spent on. Built slab by slab, so a 512 x 512 x 400 volume
costs little more than its own int16 array.

Labels: 0 background, 1 liver, 2 kidneys, 3 bone.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

CLASSES = {"background": 0, "liver": 1, "kidneys": 2, "bone": 3}


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def ct_phantom(shape: tuple[int, int, int], seed: int = 0, slab: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(image int16 HU, label uint8), numpy (z, y, x). Geometry is relative to the field of
    view, so a small phantom is a coarse whole body and a 512 x 512 x 400 one a fine one."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    image = np.empty(shape, np.int16)
    label = np.zeros(shape, np.uint8)
    yy, xx = np.meshgrid(np.arange(ny, dtype=np.float32) / ny, np.arange(nx, dtype=np.float32) / nx, indexing="ij")
    wobble = rng.uniform(-0.03, 0.03, 4)
    for z0 in range(0, nz, slab):
        z1 = min(nz, z0 + slab)
        for z in range(z0, z1):
            t = z / max(1, nz - 1)                       # 0 (feet end) .. 1 (head end)
            ry = 0.30 + wobble[0] + 0.04 * np.sin(3 * t)  # body half-axes, fraction of the FOV
            rx = 0.42 + wobble[1] + 0.05 * np.cos(2 * t)
            cy, cx = 0.52 + wobble[2], 0.5 + wobble[3]
            body = _ellipse(yy, xx, cy, cx, ry, rx)
            inner = _ellipse(yy, xx, cy, cx, ry - 0.03, rx - 0.03)
            hu = np.full((ny, nx), -1000.0, np.float32)
            hu[body] = -100.0                              # subcutaneous fat
            hu[inner] = 40.0                               # soft tissue
            lab = np.zeros((ny, nx), np.uint8)
            if 0.35 < t < 0.75:                            # liver: right upper abdomen
                s = np.sin(np.pi * (t - 0.35) / 0.4)
                liver = inner & _ellipse(yy, xx, cy - 0.02, cx - 0.16, 0.13 * s + 0.01, 0.14 * s + 0.01)
                hu[liver], lab[liver] = 60.0, 1
            if 0.25 < t < 0.5:                             # kidneys: both sides of the spine
                s = np.sin(np.pi * (t - 0.25) / 0.25)
                for side in (-1, 1):
                    kidney = inner & _ellipse(yy, xx, cy + 0.12, cx + side * 0.12, 0.05 * s + 0.005,
                                              0.035 * s + 0.005)
                    hu[kidney], lab[kidney] = 150.0, 2
            spine = _ellipse(yy, xx, cy + 0.2, cx, 0.045, 0.04)
            cortex = spine & ~_ellipse(yy, xx, cy + 0.2, cx, 0.03, 0.025)
            hu[spine], hu[cortex] = 300.0, 900.0
            lab[spine] = 3
            if t > 0.45 and (z // 6) % 2 == 0:               # ribs: a ring inside the fat rim
                ring = _ellipse(yy, xx, cy, cx, ry - 0.035, rx - 0.035) & ~_ellipse(yy, xx, cy, cx, ry - 0.05, rx - 0.05)
                ribs = ring & (yy < cy + 0.15)
                hu[ribs], lab[ribs] = 700.0, 3
            hu += 15.0 * rng.standard_normal(hu.shape, dtype=np.float32)   # scanner noise, air included
            image[z] = np.clip(np.round(hu), -1024, 3071).astype(np.int16)
            label[z] = lab
    return image, label


def write_volume(path: Path, array: np.ndarray, spacing_zyx: tuple[float, float, float]) -> Path:
    """NIfTI (or any SimpleITK format) with the given (z, y, x) spacing in mm."""
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(tuple(float(s) for s in reversed(spacing_zyx)))
    img.SetOrigin((-200.0, -200.0, -300.0))
    sitk.WriteImage(img, str(path), useCompression=path.name.endswith(".gz"))
    return path


def write_ct_dataset(root: Path, shape: tuple[int, int, int], z_spacings: list[float],
                     xy_spacing: float = 0.8) -> Path:
    """An MSD-layout CT dataset (modality "CT", so the plan normalises with CT statistics)."""
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    training = []
    for i, sz in enumerate(z_spacings):
        image, label = ct_phantom(shape, seed=100 + i)
        name = f"ct_{i:03d}.nii.gz"
        write_volume(root / "imagesTr" / name, image, (sz, xy_spacing, xy_spacing))
        write_volume(root / "labelsTr" / name, label, (sz, xy_spacing, xy_spacing))
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {"name": "ct-phantoms", "modality": {"0": "CT"},
            "labels": {str(v): k for k, v in CLASSES.items()}, "numTraining": len(training),
            "training": training}
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root
