"""Many processes, one run: PyTorch's DistributedDataParallel behind a handful of helpers.

`torchrun --nproc_per_node N -m medseg train DATA --out RUN` starts N processes that share
the environment variables WORLD_SIZE, RANK and LOCAL_RANK. Each process loads the dataset, draws
its own patches (a rank-dependent sampler seed) and trains a replica; DDP averages the gradients
after every backward pass, so the replicas stay identical and each step sees N batches.
Rank 0 alone writes: plan, run.json, log, checkpoints (weights without DDP's `module.` prefix,
so they load in a single process), the finishing step and the report.

Every helper is a no-op in a single process (no WORLD_SIZE, or WORLD_SIZE=1), which keeps the
plain `medseg train` path exactly as it was.
"""
from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

SAMPLER_SEED_STRIDE = 7919  # rank r draws with seed + r * stride: distinct streams, rank 0 unchanged
_created_group = False      # shutdown() leaves a group it did not create (a caller's own) alone


def world_size() -> int:
    """Processes in the job: the initialised group's size, else WORLD_SIZE, else 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def active() -> bool:
    """True once a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main() -> bool:
    """Whether this process writes files and logs (rank 0, or the only process)."""
    return rank() == 0


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group torchrun describes (gloo on CPU, NCCL on CUDA); return this
    process's device (`cuda:LOCAL_RANK` on GPUs). Without WORLD_SIZE > 1, returns `device`."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        global _created_group
        backend = "nccl" if device.type == "cuda" else "gloo"
        # validation and checkpoints run on rank 0 while the others wait at a barrier: allow long waits
        dist.init_process_group(backend, timeout=timedelta(hours=2))
        _created_group = True
    return device


def shutdown() -> None:
    """Leave the process group init_from_env created (end of a run)."""
    global _created_group
    if _created_group and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _created_group = False


def barrier() -> None:
    if active():
        dist.barrier()


def sampler_seed(seed: int) -> int:
    """The patch sampler's seed for this rank, so ranks do not draw the same patches."""
    return seed + rank() * SAMPLER_SEED_STRIDE


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The module the training step calls: DDP around `model` when distributed, else `model`.
    Keep the plain module for saving, validation and the precision probe."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DDP wrapper (its state dict has no `module.` prefix)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def agree_to_stop(flag: bool) -> bool:
    """True on every rank when any rank wants to stop (all_reduce MAX), so all ranks leave the
    loop at the same step; a rank that kept training would wait for the others forever."""
    if not active():
        return flag
    value = torch.tensor([1 if flag else 0], dtype=torch.int32)
    if dist.get_backend() == "nccl":
        value = value.cuda()
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (picklable objects: plans, dtypes)."""
    if not active():
        return obj
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def launched() -> bool:
    """Whether torchrun started this process as one of several (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def my_share(count: int) -> list[int]:
    """The indices of `count` items this rank handles: every world_size-th from its rank
    (rank r of W takes r, r + W, r + 2W ...), so the ranks split a sorted list evenly, each
    item exactly once. All indices in a single process."""
    return list(range(rank(), count, world_size())) if active() else list(range(count))


def gather_lists(items: list) -> list:
    """Every rank's `items` concatenated (rank 0's first), on every rank (all_gather_object);
    `items` itself in a single process. Items must be picklable."""
    if not active():
        return list(items)
    boxes: list = [None] * dist.get_world_size()
    dist.all_gather_object(boxes, list(items))
    return [item for box in boxes for item in box]
