"""Augmentation drawn for a whole batch at once, for 2D and 3D alike.

Crop, rotation, scaling and flips are folded into one affine map per patch (`spatial_matrices`),
and the patches of a batch are read with a single `grid_sample` from the stacked cases
(`medseg.data.stack`), so augmentation costs one interpolation of the patches (not of the
images) and never introduces black corners inside an image: outside it, content is mirrored.
Elastic deformation (the original U-Net paper's augmentation for its EM membranes: random
displacements on a coarse grid of control points, smoothly interpolated) is added to the same
sampling grid, so it costs no second interpolation either. Labels are read nearest-neighbour
through the same map. Intensity changes (brightness, contrast, gamma, blur, noise) follow, each
applied to the chosen patches of the batch in one vectorised operation.

Every random choice of a batch (which patch is flipped, by which angle, ...) is drawn on the CPU
from one seeded `torch.Generator` as a vector over the batch, so a run is reproducible with
`--seed` and the same code runs on a CPU and on a GPU; only per-voxel noise is drawn on the
patches' device, from a generator seeded by that one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    """Probabilities and ranges of each augmentation (per patch)."""

    p_rotate: float = 0.0             # off by default: short CPU budgets learn faster without it
    max_rotation_deg: float = 180.0   # 2D; 3D uses max_rotation_deg_3d about each axis
    max_rotation_deg_3d: float = 30.0
    p_scale: float = 0.2
    scale_range: tuple[float, float] = (0.85, 1.15)
    p_flip: float = 0.5               # per axis
    # spatial axes that may be flipped: None = all; "auto" = all in 2D, in 3D only the patient's
    # left-right axis (bodies are near mirror-symmetric left to right, not front to back), as
    # resolved by the trainer from the scans' direction (`left_right_axis`)
    flip_axes: tuple[int, ...] | str | None = "auto"
    p_elastic: float = 0.0            # off by default: no measurable gain (docs/decisions.md)
    elastic_points: int = 3           # control points per axis (3x3 in the U-Net paper)
    elastic_sigma: float = 0.04       # displacement std as a fraction of the patch side (10 px of 256)
    p_brightness: float = 0.15
    p_contrast: float = 0.15
    p_gamma: float = 0.3
    p_noise: float = 0.1
    noise_std: float = 0.1            # noise std drawn from [0, this] (z-scored units)
    p_blur: float = 0.0               # Gaussian blur (off by default: no measurable gain, docs/decisions.md)
    blur_sigma: tuple[float, float] = (0.5, 1.0)  # in voxels
    enabled: bool = True


def _uniform(gen: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)


def _chance(gen: torch.Generator, n: int, p: float) -> torch.Tensor:
    """(n,) booleans, each true with probability p; nothing is drawn when p is 0."""
    if p <= 0:
        return torch.zeros(n, dtype=torch.bool)
    return torch.rand(n, generator=gen, dtype=torch.float64) < p


def _rotations(n: int, dims: int, gen: torch.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """(n, dims, dims) rotations: 2D one angle in +-max_rotation_deg; 3D one angle in
    +-max_rotation_deg_3d about each axis in turn."""
    if dims == 2:
        a = torch.deg2rad(_uniform(gen, n, -cfg.max_rotation_deg, cfg.max_rotation_deg))
        c, s = torch.cos(a), torch.sin(a)
        return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    rot = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
    for axis in range(3):
        a = torch.deg2rad(_uniform(gen, n, -cfg.max_rotation_deg_3d, cfg.max_rotation_deg_3d))
        i, j = [k for k in range(3) if k != axis]
        r = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
        r[:, i, i] = r[:, j, j] = torch.cos(a)
        r[:, i, j], r[:, j, i] = -torch.sin(a), torch.sin(a)
        rot = rot @ r
    return rot


def left_right_axis(direction: list[float] | tuple[float, ...]) -> int:
    """The numpy axis (of a (z, y, x) array) along which the patient's left-right runs: the
    voxel axis whose direction cosine has the largest physical-x (LPS: right-to-left) part.
    `direction` is ITK's flat row-major 3x3 matrix (rows: physical x, y, z; columns: i, j, k)."""
    row_x = [abs(float(v)) for v in list(direction)[:3]]
    return 2 - max(range(3), key=lambda c: row_x[c])


def spatial_matrices(n: int, dims: int, gen: torch.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """(n, dims, dims) random matrices in voxel units: rotation, isotropic scale and flips."""
    matrix = torch.eye(dims, dtype=torch.float64).repeat(n, 1, 1)
    if not cfg.enabled:
        return matrix
    rotate = _chance(gen, n, cfg.p_rotate)
    if rotate.any():
        matrix[rotate] = _rotations(int(rotate.sum()), dims, gen, cfg)
    scaled = _chance(gen, n, cfg.p_scale)
    if scaled.any():
        factors = _uniform(gen, n, *cfg.scale_range)
        matrix = matrix * torch.where(scaled, factors, 1.0).view(n, 1, 1)
    for axis in range(dims) if cfg.flip_axes in (None, "auto") else cfg.flip_axes:
        flip = _chance(gen, n, cfg.p_flip)
        matrix[flip, :, axis] *= -1
    return matrix


def spatial_transform(dims: int, gen: torch.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """One patch's (dims x dims) matrix (`spatial_matrices` for a batch of one)."""
    return spatial_matrices(1, dims, gen, cfg)[0]


Controls = tuple[torch.Tensor, torch.Tensor]


def elastic_controls(n: int, patch_size: tuple[int, ...], gen: torch.Generator, cfg: AugmentConfig
                     ) -> Controls | None:
    """Which patches of a batch of n are warped, and their control-point displacements
    (k, dims, points, ...) in voxels: normal with std `elastic_sigma` x the patch side, on a grid
    of `elastic_points` per axis; None when no patch is warped."""
    if not cfg.enabled:
        return None
    warped = _chance(gen, n, cfg.p_elastic)
    if not warped.any():
        return None
    dims = len(patch_size)
    points = max(2, int(cfg.elastic_points))
    sigma = torch.tensor([cfg.elastic_sigma * p for p in patch_size], dtype=torch.float32)
    k = int(warped.sum())
    control = torch.randn((k, dims) + (points,) * dims, generator=gen) * sigma.view(1, dims, *(1,) * dims)
    return warped.nonzero()[:, 0], control


def displacement_fields(control: torch.Tensor, patch_size: tuple[int, ...]) -> torch.Tensor:
    """Control-point displacements interpolated (bicubic / trilinear) to every patch voxel:
    (k, dims, *patch_size), a smooth warp like tissue deforming, which thin structures survive."""
    mode = "bicubic" if len(patch_size) == 2 else "trilinear"
    return F.interpolate(control, size=tuple(patch_size), mode=mode, align_corners=True)


def elastic_displacement(patch_size: tuple[int, ...], gen: torch.Generator, cfg: AugmentConfig) -> torch.Tensor | None:
    """One patch's displacement field (dims, *patch_size) in voxels, or None (not drawn)."""
    drawn = elastic_controls(1, tuple(patch_size), gen, cfg)
    return None if drawn is None else displacement_fields(drawn[1], tuple(patch_size))[0]


def change_intensity(x: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """Brightness, contrast, gamma, blur and noise on a z-scored (B, C, *spatial) batch, each
    drawn per patch; a patch's mean (contrast) and range (gamma) are over all its channels.
    The batch is changed in place (a fresh batch from the sampler: no copy of it is needed)."""
    if not cfg.enabled:
        return x
    n = len(x)
    drawn = {}
    for name, p, lo, hi in (("brightness", cfg.p_brightness, 0.75, 1.25), ("contrast", cfg.p_contrast, 0.75, 1.25),
                            ("gamma", cfg.p_gamma, 0.7, 1.5), ("blur", cfg.p_blur, *cfg.blur_sigma),
                            ("noise", cfg.p_noise, 0.0, cfg.noise_std)):
        chosen = _chance(gen, n, p)
        drawn[name] = (chosen.nonzero()[:, 0], _uniform(gen, n, lo, hi)[chosen]) if chosen.any() else None
    seed = int(torch.randint(2**62, (), generator=gen)) if drawn["noise"] is not None else 0
    shape = (-1,) + (1,) * (x.ndim - 1)
    axes = tuple(range(1, x.ndim))

    def factor(values: torch.Tensor) -> torch.Tensor:
        return values.to(x.device, torch.float32).view(shape)

    if drawn["brightness"] is not None:
        idx, f = drawn["brightness"]
        x[idx] = x[idx] * factor(f)
    if drawn["contrast"] is not None:
        idx, f = drawn["contrast"]
        part = x[idx]
        mean = part.mean(dim=axes, keepdim=True)
        x[idx] = (part - mean) * factor(f) + mean
    if drawn["gamma"] is not None:
        idx, g = drawn["gamma"]
        part = x[idx]
        lo, hi = part.amin(dim=axes, keepdim=True), part.amax(dim=axes, keepdim=True)
        span = (hi - lo).clamp_min(1e-6)
        x[idx] = ((part - lo) / span).pow(factor(g)) * span + lo
    if drawn["blur"] is not None:
        idx, sigma = drawn["blur"]
        x[idx] = blur_batch(x[idx], sigma)
    if drawn["noise"] is not None:
        idx, sigma = drawn["noise"]
        noise_gen = torch.Generator(device=x.device).manual_seed(seed)
        noise = torch.randn((len(idx),) + tuple(x.shape[1:]), generator=noise_gen, device=x.device)
        x[idx] = x[idx] + factor(sigma) * noise
    return x


def augment_intensity(patch: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """One (C, *spatial) patch through `change_intensity` (a batch of one)."""
    return change_intensity(patch[None].clone(), gen, cfg)[0] if cfg.enabled else patch


def blur_batch(x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """(B, C, *spatial) patches each smoothed by a Gaussian of its own sigma (voxels) along every
    spatial axis (separable, mirrored edges, one grouped convolution per axis): scans differ in
    sharpness between scanners and protocols."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32).reshape(-1)
    radius = max(1, math.ceil(3 * float(sigmas.max())))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernels = torch.exp(-0.5 * (taps[None] / sigmas[:, None]) ** 2)
    kernels = (kernels / kernels.sum(1, keepdim=True)).to(x.device)
    b, c = x.shape[:2]
    weight = kernels.repeat_interleave(c, 0)[:, None]          # (B*C, 1, taps): one kernel per patch
    out = x.float()
    for axis in range(2, x.ndim):
        moved = out.movedim(axis, -1)
        shape = moved.shape
        rows = moved.reshape(b * c, -1, shape[-1]).transpose(0, 1)  # (rows, B*C, L)
        rows = F.conv1d(F.pad(rows, (radius, radius), mode="reflect"), weight, groups=b * c)
        out = rows.transpose(0, 1).reshape(shape).movedim(-1, axis)
    return out.to(x.dtype).contiguous()


def gaussian_blur(patch: torch.Tensor, sigma: float) -> torch.Tensor:
    """One (C, *spatial) patch smoothed by a Gaussian of `sigma` voxels (`blur_batch`)."""
    return blur_batch(patch[None], torch.tensor([sigma]))[0]
