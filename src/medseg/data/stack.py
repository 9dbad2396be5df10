"""The training cases packed end to end into one tensor, and a whole batch of patches read from
it with one `grid_sample`.

Cases differ in shape, so `grid_sample` cannot take them as one batch; packed one after another
along the first axis (a gap row between cases, the other axes padded to the largest case) they
form one volume that every patch of a batch can read from. Each patch's sampling coordinates
are computed in its own case's voxels (centre + matrix @ offset + warp), mirrored at that
case's own edges exactly as `grid_sample(padding_mode="reflection", align_corners=False)`
mirrors them, and only then moved into the stack: a patch never reads a neighbouring case.
Labels are read nearest-neighbour by integer index from the same coordinates (exact, whatever
the stack's length); the image's coordinates in the stack carry float32 rounding of about 1e-7
of the stack's length (1e-3 voxel for 10,000 rows), far below the half-voxel blur that
`medseg.data.sampler.on_voxel_grid` exists to avoid.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .augment import Controls, displacement_fields


def label_dtype(labels: Sequence[torch.Tensor]) -> torch.dtype:
    """The narrowest dtype holding every case's labels (uint8 unless a case needs more)."""
    dtype = torch.uint8
    for label in labels:
        dtype = torch.promote_types(dtype, label.dtype)
    return dtype


def stack_bytes(shapes: Sequence[Sequence[int]], channels: int, label_bytes: int = 1) -> int:
    """Bytes of the packed stack of cases of these spatial shapes (float32 images, labels)."""
    rows = sum((int(s[0]) + 2) // 2 * 2 for s in shapes)  # as `CaseStack.pack` lays them out
    rest = [max(int(s[a]) for s in shapes) for a in range(1, len(shapes[0]))]
    voxels = rows * int(torch.tensor(rest).prod()) if rest else rows
    return voxels * (4 * channels + label_bytes)


class CaseStack:
    """Images (C, rows, *rest) float32 and labels (rows, *rest), case i in rows
    offsets[i] .. offsets[i] + shapes[i][0]; `shapes` (N, dims) gives each case's own extent."""

    def __init__(self, image: torch.Tensor, label: torch.Tensor, shapes: torch.Tensor, offsets: torch.Tensor):
        self.image, self.label = image, label
        self.shapes, self.offsets = shapes, offsets
        self.device = image.device

    @classmethod
    def pack(cls, images: Sequence[torch.Tensor], labels: Sequence[torch.Tensor],
             device: torch.device | str = "cpu", pin: bool = False) -> "CaseStack":
        """The cases copied into one stack on `device` (`pin`: in page-locked host memory, for
        asynchronous copies to a GPU)."""
        if not images:
            raise ValueError("no training cases")
        shapes = torch.tensor([tuple(im.shape[1:]) for im in images], dtype=torch.long)
        rest = tuple(int(v) for v in shapes[:, 1:].amax(0))
        extent = (shapes[:, 0] + 2) // 2 * 2  # a gap row at least; even offsets keep rounding half to even exact
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), extent.cumsum(0)[:-1]])
        rows = int(extent.sum())
        channels = int(images[0].shape[0])
        image = torch.zeros((channels, rows) + rest, dtype=torch.float32, pin_memory=pin)
        label = torch.zeros((rows,) + rest, dtype=label_dtype(labels), pin_memory=pin)
        for im, lab, off in zip(images, labels, offsets.tolist()):
            region = (slice(off, off + im.shape[1]),) + tuple(slice(0, s) for s in im.shape[2:])
            image[(slice(None),) + region] = im
            label[region] = lab
        if torch.device(device).type != "cpu":
            image, label = image.to(device), label.to(device)
        return cls(image, label, shapes, offsets)

    @property
    def dims(self) -> int:
        return int(self.shapes.shape[1])

    def nbytes(self) -> int:
        return self.image.numel() * self.image.element_size() + self.label.numel() * self.label.element_size()


def patch_offsets(patch_size: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """(P, dims) offsets d = i - (P - 1) / 2 of the patch voxels from the patch centre."""
    grids = torch.meshgrid(*[torch.arange(p, dtype=torch.float32, device=device) - (p - 1) / 2
                             for p in patch_size], indexing="ij")
    return torch.stack(grids, -1).reshape(-1, len(patch_size))


def mirror(coords: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """Coordinates mirrored into [-0.5, size - 0.5] and clipped to [0, size - 1], as
    `grid_sample`'s reflection padding does with align_corners=False (any number of reflections)."""
    span = size
    shifted = (coords + 0.5).abs()
    flips = torch.div(shifted, span, rounding_mode="floor")
    extra = shifted - flips * span
    out = torch.where(flips.remainder(2) == 0, extra, span - extra) - 0.5
    return torch.minimum(out.clamp_min(0), size - 1)


def mirror_once_(coords: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """`mirror` in place for coordinates at most one reflection outside (within [-size - 0.5,
    2 size - 0.5]), the common case, in a few cheap passes: |x + 0.5| folds the low edge,
    size - |size - y| the high one."""
    coords.add_(0.5).abs_().sub_(size).abs_().neg_().add_(size).sub_(0.5).clamp_(min=0)
    return torch.minimum(coords, size - 1, out=coords)


def sample_stack(stack: CaseStack, cases: torch.Tensor, centres: torch.Tensor, matrices: torch.Tensor,
                 warps: Controls | None, patch_size: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of patches, (B, C, *patch) images and (B, *patch) long labels: patch b's voxel
    at offset d reads its case's voxel centres[b] + matrices[b] @ d (+ its warp), bilinear for
    the image, nearest for the label. `cases`, `centres` (B, dims) and `matrices` live on the CPU
    (they are drawn there); the work happens on the stack's device.

    Coordinates are computed once, in the stack and in grid_sample's axis order (x, y(, z)), with
    one batched matrix product; only patches that reach beyond their case are mirrored (their
    bounds follow from the matrix, the patch's half size and the warp's largest displacement)."""
    device, dims, b = stack.device, stack.dims, len(cases)
    d = patch_offsets(patch_size, device)
    half = torch.tensor([(p - 1) / 2 for p in patch_size], dtype=torch.float64)
    size = stack.shapes[cases].to(torch.float64)
    origin = torch.zeros(b, dims, dtype=torch.float64)
    origin[:, 0] = stack.offsets[cases].to(torch.float64)
    reach = matrices.abs() @ half                                    # (B, dims): the patch's extent from its centre
    fields = None
    if warps is not None:
        index, control = warps
        fields = displacement_fields(control.to(device), patch_size)
        reach[index] += fields.abs().flatten(2).amax(-1).to("cpu", torch.float64)
    outside = ((centres - reach) < 0).any(1) | ((centres + reach) > size - 1).any(1)
    # reversed axis order (x, y(, z)), as grid_sample reads its grid
    bias = (centres + origin).flip(-1).to(device, torch.float32)[:, None, :]
    coords = torch.baddbmm(bias, d.expand(b, -1, -1), matrices.flip(1).to(device, torch.float32).transpose(1, 2))
    if fields is not None:
        coords[index.to(device)] += fields.flip(1).flatten(2).transpose(1, 2)
    if outside.any():  # in each case's own voxels, mirrored at its own edges, then back into the stack
        once = ((centres - reach) >= -size).all(1) & ((centres + reach) <= 2 * size - 1).all(1)
        shift = origin.flip(-1).to(device, torch.float32)[:, None, :]
        extent = size.flip(-1).to(device, torch.float32)[:, None, :]
        if bool(outside.all() and once.all()):
            mirror_once_(coords.sub_(shift), extent).add_(shift)
        else:
            which = outside.nonzero()[:, 0].to(device)
            coords[which] = mirror(coords[which] - shift[which], extent[which]) + shift[which]
    # labels: nearest voxel (half to even, as grid_sample's nearest mode; even case offsets keep it exact)
    exact = torch.float32 if stack.label.numel() < 2**24 else torch.float64  # integers exact below 2^24 in float32
    strides = torch.tensor(stack.label.stride()[::-1], dtype=exact, device=device)
    flat = (coords.round().to(exact) @ strides).long()
    label = stack.label.reshape(-1)[flat.reshape(-1)].view(b, *patch_size).long()
    # image: one bilinear grid_sample over the whole stack (align_corners=True: voxel i at -1 + 2i/(n-1))
    extent = torch.tensor(stack.image.shape[1:][::-1], dtype=torch.float32, device=device)
    grid = torch.addcmul(torch.full((dims,), -1.0, device=device), coords, 2 / (extent - 1).clamp_min(1))
    image = F.grid_sample(stack.image[None], grid.view(1, b * patch_size[0], *patch_size[1:], dims),
                          mode="bilinear", padding_mode="border", align_corners=True)
    image = image.view(stack.image.shape[0], b, *patch_size).transpose(0, 1).contiguous()
    return image, label


def sample_patch(image: torch.Tensor, label: torch.Tensor | None, centre: torch.Tensor,
                 patch_size: tuple[int, ...], matrix: torch.Tensor, displacement: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One patch of one case through `sample_stack` (a stack and batch of one): voxel offset d
    from the patch centre reads `centre + matrix @ d`, plus `displacement[:, d]` (voxels, array
    axis order) when given."""
    lab = label if label is not None else torch.zeros(image.shape[1:], dtype=torch.uint8)
    stack = CaseStack.pack([image.float()], [lab], image.device)
    warps = None
    if displacement is not None:  # a field given voxel by voxel: its own "control points" at full size
        warps = (torch.zeros(1, dtype=torch.long), displacement[None].float())
    x, y = sample_stack(stack, torch.zeros(1, dtype=torch.long), centre.to(torch.float64)[None],
                        matrix[None], warps, tuple(patch_size))
    return x[0], (y[0] if label is not None else None)
