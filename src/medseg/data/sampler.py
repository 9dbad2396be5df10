"""Training batches: random augmented patches of the cases, a whole batch per call, made in the background.

A third of the patches (by default) are centred on a labelled (non-background) voxel, so small
structures are seen often enough to be learned. One call (`PatchSampler.batch`) draws every
choice of the batch on the CPU as vectors (cases, centres, matrices, warps, intensity changes)
and builds the batch on the device where the cases live (`medseg.data.residence`): one
`grid_sample` for all its patches (`medseg.data.stack`), then vectorised intensity changes. A
CPU run and a GPU run execute the same code. Each epoch draws from a generator seeded by (seed,
epoch), which makes a resumed run see exactly the batches the uninterrupted run would have, and
lets a background thread prepare batches while the network trains.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Sequence

import torch

from ..io.labels import IGNORE_INDEX
from .augment import AugmentConfig, change_intensity, elastic_controls, spatial_matrices
from .residence import Residence, place_cases
from .stack import sample_stack

MAX_FOREGROUND_POINTS = 20000


def foreground_points(label: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Up to MAX_FOREGROUND_POINTS coordinates (N, dims) of voxels with a class > 0 ("not
    annotated" voxels, IGNORE_INDEX, are no foreground: centring on them teaches nothing)."""
    points = torch.nonzero((label > 0) & (label != IGNORE_INDEX))
    if len(points) > MAX_FOREGROUND_POINTS:
        points = points[torch.randperm(len(points), generator=gen)[:MAX_FOREGROUND_POINTS]]
    return points


def on_voxel_grid(centre: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    """The centre nearest to `centre` whose patch voxels (centre - half + 0.5 + i) fall on the
    image's voxels: a patch that is not rotated or scaled is then an exact copy of the image.

    Off the grid, bilinear resampling averages neighbouring voxels: a half-voxel offset is a
    2x2 box blur of thin structures (membranes, vessels) in training patches that prediction
    never sees, and nearest-neighbour labels at half-way points (rounded half to even) double
    some rows and drop others.
    """
    offset = half - 0.5
    return torch.round(centre - offset) + offset


class PatchSampler:
    """Draws (image, label) batches of `patch_size` patches, on `device` (default: the CPU)."""

    def __init__(
        self,
        images: Sequence[torch.Tensor],
        labels: Sequence[torch.Tensor],
        patch_size: Sequence[int],
        batch_size: int,
        augment: AugmentConfig,
        seed: int = 0,
        foreground_fraction: float = 1 / 3,
        device: torch.device | str = "cpu",
        residence: Residence | None = None,
        step_bytes: int = 0,
    ):
        if not images:
            raise ValueError("no training cases")
        self.patch_size = tuple(int(p) for p in patch_size)
        self.batch_size = batch_size
        self.augment = augment
        self.seed = seed
        self.foreground_fraction = foreground_fraction
        gen = torch.Generator().manual_seed(seed)
        self.points = [foreground_points(lab, gen) for lab in labels]
        self.counts = torch.tensor([len(p) for p in self.points], dtype=torch.long)
        self.starts = torch.cat([torch.zeros(1, dtype=torch.long), self.counts.cumsum(0)[:-1]])
        dims = len(self.patch_size)
        self.all_points = torch.cat([p.reshape(-1, dims) for p in self.points]).to(torch.float64)
        self.shapes = torch.tensor([tuple(im.shape[1:]) for im in images], dtype=torch.float64)
        self.cases, self.residence = place_cases(images, labels, torch.device(device), batch_size, step_bytes,
                                                 residence)

    def centres(self, cases: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """(B, dims) patch centres: a foreground voxel with probability `foreground_fraction`
        (cases with foreground), else uniform over the centres that keep the patch inside the
        case (the case's middle where it is smaller than the patch); snapped to the voxel grid."""
        n, dims = len(cases), len(self.patch_size)
        shape = self.shapes[cases]
        half = torch.tensor(self.patch_size, dtype=torch.float64) / 2
        counts = self.counts[cases]
        on_foreground = (torch.rand(n, generator=gen, dtype=torch.float64) < self.foreground_fraction) & (counts > 0)
        pick = (torch.rand(n, generator=gen, dtype=torch.float64) * counts).long().clamp_max((counts - 1).clamp_min(0))
        lo = torch.minimum(half - 0.5, (shape - 1) / 2)
        hi = torch.maximum(shape - half - 0.5, (shape - 1) / 2)
        centre = lo + (hi - lo) * torch.rand((n, dims), generator=gen, dtype=torch.float64)
        if len(self.all_points):
            points = self.all_points[(self.starts[cases] + pick).clamp_max(len(self.all_points) - 1)]
            centre = torch.where(on_foreground[:, None], points, centre)
        return on_voxel_grid(centre, half)

    def batch(self, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch, (B, C, *patch) float32 images and (B, *patch) long labels, on the device."""
        n, dims = self.batch_size, len(self.patch_size)
        cases = torch.randint(len(self.shapes), (n,), generator=gen)
        matrices = spatial_matrices(n, dims, gen, self.augment)
        centres = self.centres(cases, gen)
        warps = elastic_controls(n, self.patch_size, gen, self.augment)
        stack, local = self.cases.stack_for(cases)
        x, y = sample_stack(stack, local, centres, matrices, warps, self.patch_size)
        return change_intensity(x, gen, self.augment), y

    def epoch(self, epoch: int, iterations: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        for _ in range(iterations):
            # grad mode is the caller's thread state: switched off around each batch only, never
            # across a yield, where a suspended generator would leave the caller without gradients
            with torch.no_grad():
                batch = self.batch(gen)
            yield batch


class Prefetcher:
    """Runs an iterator in a background thread, a few items ahead; records the time spent waiting.

    `waited_s` is the time the consumer spent blocked: if it grows, data loading is the bottleneck.
    """

    _END = object()

    def __init__(self, source: Iterator, depth: int = 3):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.waited_s = 0.0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(source,), daemon=True)
        self._thread.start()

    def _run(self, source: Iterator) -> None:
        # One thread here: with OpenMP the setting is this thread's own, and a second team of
        # spinning threads competing with the training step slows it (docs/decisions.md).
        torch.set_num_threads(1)
        try:
            for item in source:
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as exc:  # surfaced in the consumer's thread
            self._error = exc
        self._queue.put(self._END)

    def __iter__(self) -> "Prefetcher":
        return self

    def __next__(self):
        start = time.perf_counter()
        item = self._queue.get()
        self.waited_s += time.perf_counter() - start
        if item is self._END:
            if self._error is not None:
                raise self._error
            raise StopIteration
        return item

    def close(self) -> None:
        self._stop.set()
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        self._thread.join(timeout=5)
