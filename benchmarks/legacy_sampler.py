"""The per-patch sampler medseg used before sampling was batched, kept as a benchmark peer.

A frozen copy (not part of the package, never imported by it): each patch draws its own
choices and is cut with its own `grid_sample`, one after another on the CPU. The `gpu` suite
times it against the batched `medseg.data.sampler.PatchSampler` in the same run.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from medseg.data.augment import AugmentConfig
from medseg.data.sampler import foreground_points, on_voxel_grid


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def _chance(gen: torch.Generator, p: float) -> bool:
    return p > 0 and float(torch.rand((), generator=gen)) < p


def _rotation(dims: int, gen: torch.Generator, cfg: AugmentConfig) -> torch.Tensor:
    if dims == 2:
        a = math.radians(_uniform(gen, -cfg.max_rotation_deg, cfg.max_rotation_deg))
        return torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64)
    rot = torch.eye(3, dtype=torch.float64)
    for axis in range(3):
        a = math.radians(_uniform(gen, -cfg.max_rotation_deg_3d, cfg.max_rotation_deg_3d))
        i, j = [k for k in range(3) if k != axis]
        r = torch.eye(3, dtype=torch.float64)
        r[i, i] = r[j, j] = math.cos(a)
        r[i, j], r[j, i] = -math.sin(a), math.sin(a)
        rot = rot @ r
    return rot


def spatial_transform(dims: int, gen: torch.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """A random (dims x dims) matrix in voxel units: rotation, isotropic scale and flips."""
    matrix = torch.eye(dims, dtype=torch.float64)
    if not cfg.enabled:
        return matrix
    if _chance(gen, cfg.p_rotate):
        matrix = _rotation(dims, gen, cfg) @ matrix
    if _chance(gen, cfg.p_scale):
        matrix = matrix * _uniform(gen, *cfg.scale_range)
    for axis in range(dims) if cfg.flip_axes in (None, "auto") else cfg.flip_axes:
        if _chance(gen, cfg.p_flip):
            matrix[:, axis] *= -1
    return matrix


def elastic_displacement(patch_size: tuple[int, ...], gen: torch.Generator, cfg: AugmentConfig) -> torch.Tensor | None:
    """A smooth random displacement field (dims, *patch_size) in voxels, or None (not drawn).

    Control-point displacements are normal with std `elastic_sigma` x the patch side, on a grid of
    `elastic_points` per axis, and interpolated (bicubic / trilinear) to every patch voxel: a
    smooth warp like tissue deforming, which thin structures (membranes, vessels) survive."""
    if not cfg.enabled or not _chance(gen, cfg.p_elastic):
        return None
    dims = len(patch_size)
    points = max(2, int(cfg.elastic_points))
    sigma = torch.tensor([cfg.elastic_sigma * p for p in patch_size], dtype=torch.float32)
    control = torch.randn((1, dims) + (points,) * dims, generator=gen) * sigma.view(1, dims, *(1,) * dims)
    mode = "bicubic" if dims == 2 else "trilinear"
    return F.interpolate(control, size=tuple(patch_size), mode=mode, align_corners=True)[0]


def sample_patch(
    image: torch.Tensor,
    label: torch.Tensor | None,
    centre: torch.Tensor,
    patch_size: tuple[int, ...],
    matrix: torch.Tensor,
    displacement: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Resample a patch of `patch_size` centred at `centre` (voxel coords) through `matrix`.

    Output voxel offset d (from the patch centre) reads input voxel `centre + matrix @ d`, plus
    `displacement[:, d]` (input voxels, array-axis order; `elastic_displacement`) when given.
    """
    size_in = torch.tensor(image.shape[1:], dtype=torch.float64)
    half_out = torch.tensor(patch_size, dtype=torch.float64) / 2
    # normalised output coords u in [-1, 1] -> offset d = u * P/2 -> input voxel -> normalised input
    to_norm = torch.diag(2.0 / size_in)
    linear = to_norm @ matrix @ torch.diag(half_out)
    shift = to_norm @ centre.to(torch.float64) + 1.0 / size_in - 1.0
    # affine_grid orders coordinates x, y(, z): reverse the array-axis order
    theta = torch.cat([linear.flip(0).flip(1), shift.flip(0)[:, None]], dim=1)[None].float()
    grid = F.affine_grid(theta, [1, 1, *patch_size], align_corners=False)
    if displacement is not None:  # voxels -> normalised units, axes reversed to grid's x, y(, z)
        scale = (2.0 / size_in).to(torch.float32).view(-1, *(1,) * len(patch_size))
        grid = grid + (displacement * scale).flip(0).movedim(0, -1)[None]
    patch = F.grid_sample(image[None].float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)[0]
    patch_label = None
    if label is not None:
        patch_label = F.grid_sample(label[None, None].float(), grid, mode="nearest",
                                    padding_mode="reflection", align_corners=False)[0, 0].to(torch.long)
    return patch, patch_label


def augment_intensity(patch: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """Brightness, contrast, gamma and noise on a z-scored (C, *spatial) patch."""
    if not cfg.enabled:
        return patch
    if _chance(gen, cfg.p_brightness):
        patch = patch * _uniform(gen, 0.75, 1.25)
    if _chance(gen, cfg.p_contrast):
        mean = patch.mean()
        patch = (patch - mean) * _uniform(gen, 0.75, 1.25) + mean
    if _chance(gen, cfg.p_gamma):
        lo, hi = patch.min(), patch.max()
        span = (hi - lo).clamp_min(1e-6)
        patch = ((patch - lo) / span).pow(_uniform(gen, 0.7, 1.5)) * span + lo
    if _chance(gen, cfg.p_blur):
        patch = gaussian_blur(patch, _uniform(gen, *cfg.blur_sigma))
    if _chance(gen, cfg.p_noise):
        sigma = _uniform(gen, 0.0, cfg.noise_std)
        patch = patch + sigma * torch.randn(patch.shape, generator=gen)
    return patch


def gaussian_blur(patch: torch.Tensor, sigma: float) -> torch.Tensor:
    """A (C, *spatial) patch smoothed by a Gaussian of `sigma` voxels along every spatial axis
    (separable, mirrored edges): scans differ in sharpness between scanners and protocols."""
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    dims = patch.ndim - 1
    out = patch.float()
    for axis in range(dims):
        moved = out.movedim(axis + 1, -1)
        shape = moved.shape
        rows = moved.reshape(-1, 1, shape[-1])
        rows = F.conv1d(F.pad(rows, (radius, radius), mode="reflect"), kernel.view(1, 1, -1))
        out = rows.reshape(shape).movedim(-1, axis + 1)
    return out.to(patch.dtype).contiguous()


class LegacyPatchSampler:
    """The per-patch sampler: one patch at a time, one grid_sample each, on the CPU."""

    def __init__(
        self,
        images: Sequence[torch.Tensor],
        labels: Sequence[torch.Tensor],
        patch_size: Sequence[int],
        batch_size: int,
        augment: AugmentConfig,
        seed: int = 0,
        foreground_fraction: float = 1 / 3,
    ):
        if not images:
            raise ValueError("no training cases")
        self.images, self.labels = list(images), list(labels)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.batch_size = batch_size
        self.augment = augment
        self.seed = seed
        self.foreground_fraction = foreground_fraction
        gen = torch.Generator().manual_seed(seed)
        self.points = [foreground_points(lab, gen) for lab in self.labels]

    def _centre(self, index: int, gen: torch.Generator) -> torch.Tensor:
        shape = torch.tensor(self.images[index].shape[1:], dtype=torch.float64)
        points = self.points[index]
        half = torch.tensor(self.patch_size, dtype=torch.float64) / 2
        if len(points) and float(torch.rand((), generator=gen)) < self.foreground_fraction:
            centre = points[int(torch.randint(len(points), (), generator=gen))].to(torch.float64)
        else:
            lo = torch.minimum(half - 0.5, (shape - 1) / 2)
            hi = torch.maximum(shape - half - 0.5, (shape - 1) / 2)
            centre = lo + (hi - lo) * torch.rand(len(shape), generator=gen, dtype=torch.float64)
        return on_voxel_grid(centre, half)

    def batch(self, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        dims = len(self.patch_size)
        for _ in range(self.batch_size):
            index = int(torch.randint(len(self.images), (), generator=gen))
            matrix = spatial_transform(dims, gen, self.augment)
            centre = self._centre(index, gen)
            warp = elastic_displacement(self.patch_size, gen, self.augment)
            x, y = sample_patch(self.images[index], self.labels[index], centre, self.patch_size, matrix, warp)
            xs.append(augment_intensity(x, gen, self.augment))
            ys.append(y)
        return torch.stack(xs), torch.stack(ys)

    def epoch(self, epoch: int, iterations: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        with torch.no_grad():
            for _ in range(iterations):
                yield self.batch(gen)
