"""What `PatchSampler` draws, measured from its batches alone (a black box), on real cases.

The sampler's distributions (which case, where the patch is centred, how often on foreground,
how patches are flipped, scaled, rotated and warped, how their intensities change) are read off
the batches it returns, so the same measurement applies to any implementation behind
`PatchSampler(images, labels, patch, batch, augment, seed).batch(gen)`:

* geometry: the cases get extra channels holding each voxel's own coordinates and the case's
  index (intensity changes off). Bilinear sampling of a linear function is exact, so a patch's
  coordinate channels say where each of its voxels was read: an affine fit on the central block
  gives the patch's matrix (flips, scale, rotation) and centre, the rest of the patch its warp.
* intensity: spatial changes off, the real (z-scored) channel only; per patch its mean, spread,
  extremes and roughness (mean absolute neighbour difference: noise raises it, blur lowers it).

Each statistic comes with a standard error from batch means (the draws split into GROUPS), so
two implementations can be compared within their sampling noise. `python tests/data/
sampler_statistics.py` rewrites tests/golden/sampler_statistics.json (the recorded reference).
"""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from helpers import HIPPOCAMPUS_CASES, real_dataset  # noqa: E402

from medseg.data.augment import AugmentConfig  # noqa: E402
from medseg.data.sampler import PatchSampler  # noqa: E402

REFERENCE = REPO / "tests" / "golden" / "sampler_statistics.json"
GROUPS = 20
BATCH = 8
PATCH = {3: (16, 24, 16), 2: (64, 64)}
NO_INTENSITY = dict(p_brightness=0.0, p_contrast=0.0, p_gamma=0.0, p_noise=0.0, p_blur=0.0)
NO_SPATIAL = dict(p_rotate=0.0, p_scale=0.0, p_flip=0.0, p_elastic=0.0)
ALL_ON = dict(p_rotate=0.5, p_scale=0.5, p_flip=0.5, p_elastic=0.5, p_blur=0.3, p_brightness=0.3,
              p_contrast=0.3, p_gamma=0.3, p_noise=0.3, flip_axes=None)
CONFIGS: dict[str, tuple[int, AugmentConfig]] = {
    "3d-default": (3, AugmentConfig(flip_axes=(2,))),   # what a 3D run trains with (left-right flips)
    "3d-all": (3, AugmentConfig(**ALL_ON)),
    "2d-default": (2, AugmentConfig()),
    "2d-all": (2, AugmentConfig(**ALL_ON)),
}


def _zscore(x: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return ((x - x.mean()) / x.std().clamp_min(1e-6))[None]


def real_cases(dims: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """3D: three MSD Hippocampus volumes (labels 0-2); 2D: two ISBI 2012 slices (membrane = 1)."""
    if dims == 3:
        import SimpleITK as sitk

        root = real_dataset("msd-hippocampus")
        images, labels = [], []
        for case in HIPPOCAMPUS_CASES[:3]:
            image = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "imagesTr" / f"{case}.nii.gz")))
            label = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "labelsTr" / f"{case}.nii.gz")))
            images.append(_zscore(image))
            labels.append(torch.from_numpy(label.astype(np.uint8)))
        return images, labels
    from PIL import Image

    root = real_dataset("isbi2012-membrane")
    images, labels = [], []
    for name in ("0.png", "1.png"):
        images.append(_zscore(np.asarray(Image.open(root / "images" / name), dtype=np.float32)))
        labels.append(torch.from_numpy((np.asarray(Image.open(root / "labels" / name)) < 128).astype(np.uint8)))
    return images, labels


def with_coordinates(images: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each case with one channel per axis holding the voxel's coordinate, and one its case index."""
    out = []
    for index, image in enumerate(images):
        shape = image.shape[1:]
        grids = torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij")
        out.append(torch.cat([image, torch.stack(grids), torch.full((1, *shape), float(index))]))
    return out


def _draw(images, labels, patch, cfg: AugmentConfig, draws: int, seed: int):
    sampler = PatchSampler(images, labels, patch, BATCH, cfg, seed=seed)
    xs, ys = [], []
    for x, y in sampler.epoch(0, draws // BATCH):
        xs.append(x.cpu())
        ys.append(y.cpu())
    return torch.cat(xs), torch.cat(ys)


def _offsets(patch: tuple[int, ...]) -> torch.Tensor:
    """(P, dims) offsets of the patch voxels from the patch centre, in voxels."""
    grids = torch.meshgrid(*[torch.arange(p, dtype=torch.float64) - (p - 1) / 2 for p in patch], indexing="ij")
    return torch.stack(grids, -1).reshape(-1, len(patch))


def geometry_values(x: torch.Tensor, y: torch.Tensor, shapes: list[tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Per patch: case, centre (as a fraction of the case's extent), matrix entries, scale,
    flips, warp (residual of the affine fit) and foreground at the centre and overall."""
    dims = y.ndim - 1
    patch = tuple(y.shape[1:])
    coords = x[:, 1:1 + dims].double()                  # (N, dims, *patch)
    case = x[:, 1 + dims].flatten(1)[:, 0].round().long()
    d = _offsets(patch)
    central = (d.abs() <= 2.0).all(1)                   # the 4^dims voxels around the centre
    design = torch.cat([d, torch.ones(len(d), 1, dtype=torch.float64)], 1)
    flat = coords.flatten(2).transpose(1, 2)            # (N, P, dims)
    fit = torch.linalg.lstsq(design[central].expand(len(x), -1, -1), flat[:, central]).solution
    matrix = fit[:, :dims].transpose(1, 2)              # (N, dims, dims): d(coordinate k)/d(offset a)
    centre = fit[:, dims]
    inner = (d.abs() <= torch.tensor(patch, dtype=torch.float64) / 4).all(1)
    residual = flat[:, inner] - design[inner] @ fit
    extent = torch.tensor(shapes, dtype=torch.float64)[case] - 1
    det = torch.linalg.det(matrix)
    values = {"case": case.numpy().astype(float), "scale": det.abs().pow(1 / dims).numpy(),
              "det_negative": (det < 0).double().numpy(),
              "warp_rms": residual.pow(2).sum(-1).mean(-1).sqrt().numpy(),
              "fg_centre": (y[(slice(None),) + tuple(p // 2 for p in patch)] > 0).double().numpy(),
              "fg_any": (y.flatten(1) > 0).any(1).double().numpy(),
              "fg_voxels": (y.flatten(1) > 0).double().mean(1).numpy()}
    values["scaled"] = (np.abs(values["scale"] - 1) > 1e-3).astype(float)
    values["warped"] = (values["warp_rms"] > 0.05).astype(float)
    for a in range(dims):
        values[f"centre_{a}"] = (centre[:, a] / extent[:, a]).numpy()
        values[f"flip_{a}"] = (matrix[:, a, a] < 0).double().numpy()
        for b in range(dims):
            values[f"m{a}{b}_abs"] = matrix[:, a, b].abs().numpy()
            values[f"m{a}{b}_sq"] = matrix[:, a, b].pow(2).numpy()
    return values


def intensity_values(x: torch.Tensor) -> dict[str, np.ndarray]:
    """Per patch of the real channel: mean, std, min, max and roughness."""
    v = x[:, 0].double()
    flat = v.flatten(1)
    rough = (v.diff(dim=-1).abs().flatten(1).mean(1))
    return {"mean": flat.mean(1).numpy(), "std": flat.std(1).numpy(), "min": flat.min(1).values.numpy(),
            "max": flat.max(1).values.numpy(), "roughness": rough.numpy()}


def summarise(values: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per statistic: its mean over the draws and a standard error from GROUPS batch means; the
    spread (std over draws) of the continuous ones too, with its own error."""
    out = {}
    for name, v in values.items():
        groups = np.array_split(v, GROUPS)
        means = np.array([g.mean() for g in groups])
        out[name] = {"value": float(v.mean()), "se": float(means.std(ddof=1) / np.sqrt(GROUPS))}
        if len(np.unique(v)) > 2:
            spreads = np.array([g.std() for g in groups])
            out[f"{name}:spread"] = {"value": float(v.std()), "se": float(spreads.std(ddof=1) / np.sqrt(GROUPS))}
    return out


def measure(name: str, draws: int = 1600, seed: int = 11) -> dict[str, dict[str, float]]:
    """The statistics of one configuration of CONFIGS over `draws` patches."""
    dims, cfg = CONFIGS[name]
    images, labels = real_cases(dims)
    shapes = [tuple(im.shape[1:]) for im in images]
    x, y = _draw(with_coordinates(images), labels, PATCH[dims], replace(cfg, **NO_INTENSITY), draws, seed)
    stats = {f"geometry.{k}": v for k, v in summarise(geometry_values(x, y, shapes)).items()}
    x, _ = _draw(images, labels, PATCH[dims], replace(cfg, **NO_SPATIAL), draws, seed + 1)
    stats.update({f"intensity.{k}": v for k, v in summarise(intensity_values(x)).items()})
    return stats


def compare(reference: dict, measured: dict, sigmas: float = 4.0, floor: float = 1e-3) -> list[str]:
    """Statistics that differ by more than `sigmas` combined standard errors (plus `floor`)."""
    bad = []
    for key, ref in reference.items():
        new = measured[key]
        allowed = sigmas * float(np.hypot(ref["se"], new["se"])) + floor
        if abs(new["value"] - ref["value"]) > allowed:
            bad.append(f"{key}: {new['value']:.4f} vs {ref['value']:.4f} (allowed ±{allowed:.4f})")
    return bad


if __name__ == "__main__":
    torch.set_num_threads(1)
    record = {"draws": 1600, "seed": 11, "patch": {str(k): list(v) for k, v in PATCH.items()},
              "configs": {name: measure(name) for name in CONFIGS}}
    REFERENCE.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {REFERENCE}")
