"""Planning for a GPU: what the card can do, and the batch that keeps it busy.

A training step on a card costs a fixed time (kernel launches, the optimiser, the loss, Python:
CUDA_STEP_OVERHEAD_S) plus its arithmetic (FLOPs / the card's throughput). At batch 2 the fixed
part dominates a small 3D patch, so the card idles; a larger batch spreads it over more patches
until the arithmetic dominates. `card_throughput` takes the card's rate from its name (a table of
dense bf16 tensor TFLOP/s from the vendors' datasheets, scaled by the card's SM count, times
ACHIEVABLE_FRACTION) with CUDA_TRAIN_GFLOPS as the fallback for unknown cards; `choose_card_batch`
picks the batch. Both are pure functions of figures, tested with made-up cards; the figures are
assumptions until the device check measures them (docs/plan.md, benchmarks/device_check.sh).
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

import torch

from ..data.residence import DEVICE_SHARE

CUDA_TRAIN_GFLOPS = 20000.0   # an unknown card: a conservative figure for mixed-precision 3D U-Net training
CUDA_STEP_OVERHEAD_S = 0.015  # fixed time of a training step on a card: launches, optimiser, loss, Python. A
                              # linear fit of the step times measured on an H200 with the per-patch sampler
                              # (52 / 73 / 77 patches/s at batch 2 / 8 / 32) leaves 8-15 ms that do not grow
                              # with the batch; to be measured with the batched sampler
ACHIEVABLE_FRACTION = 0.15    # share of the dense bf16 peak a 3D U-Net step reaches (narrow convolutions,
                              # normalisation and elementwise work run far below the tensor cores' peak)
# name (a whole word in torch's device name) -> (dense bf16 tensor TFLOP/s without sparsity, SMs); the
# more specific names first
CARD_PEAKS: tuple[tuple[str, float, int], ...] = (
    ("H200", 989.0, 132), ("H100 PCIe", 756.0, 114), ("H100 NVL", 835.0, 132), ("H100", 989.0, 132),
    ("A100", 312.0, 108), ("L40S", 362.0, 142), ("L40", 181.0, 142), ("L4", 121.0, 58),
)
STEP_MEMORY_SHARE = 1.0 - DEVICE_SHARE  # the training step's share of the card; the rest may hold the cases
BATCH_DATA_SHARE = 0.05       # a batch covers at most this share of the dataset's voxels (nnU-Net's rule)
ARITHMETIC_PER_OVERHEAD = 3.0  # the batch grows until its arithmetic takes this many times the fixed step time:
                               # 75 % of the patches/s the card's arithmetic allows; doubling it again gains < 15 %
MIN_CARD_BATCH = 2            # nnU-Net's smallest batch


@dataclass(frozen=True)
class Card:
    """A GPU as the plan sees it: torch's device name, its memory (GB) and streaming multiprocessors."""

    name: str
    memory_gb: float
    sm_count: int | None = None

    @classmethod
    def from_dict(cls, d: dict | None) -> "Card | None":
        return None if not d or not d.get("name") else cls(d["name"], float(d["memory_gb"]), d.get("sm_count"))


def visible_card(index: int = 0) -> Card | None:
    """The card torch sees (None without one): the only place the plan reads the hardware."""
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(index)
    return Card(props.name, props.total_memory / 2**30, int(props.multi_processor_count))


def card_throughput(card: Card | None) -> dict:
    """The training arithmetic the plan assumes for a card: {"train_gflops", "assumed"} plus the
    table entry, its peak and the fraction. A known name: its dense bf16 peak, scaled down by the
    card's SM count where it has fewer than the table's (a MIG slice, a cut-down variant), times
    ACHIEVABLE_FRACTION. An unknown card, or none visible: CUDA_TRAIN_GFLOPS."""
    name = card.name if card else None
    for entry, peak, sms in CARD_PEAKS:
        if name and re.search(rf"(?<![A-Za-z0-9]){re.escape(entry)}(?![A-Za-z0-9])", name):
            scale = min(1.0, card.sm_count / sms) if card.sm_count else 1.0
            gflops = peak * 1000 * scale * ACHIEVABLE_FRACTION
            sm_text = f" x {card.sm_count}/{sms} SMs" if scale < 1 else ""
            return {"train_gflops": round(gflops, 1), "table_entry": entry, "peak_bf16_tflops": peak,
                    "sm_scale": round(scale, 3), "achievable_fraction": ACHIEVABLE_FRACTION,
                    "assumed": (f"{name}: {ACHIEVABLE_FRACTION:.0%} of the {entry}'s {peak:g} dense bf16 TFLOP/s"
                                f"{sm_text} = {gflops / 1000:.0f} TFLOP/s (datasheet and fraction, not measured)")}
    who = f"{name} is not in the card table" if name else "no card visible"
    return {"train_gflops": CUDA_TRAIN_GFLOPS, "table_entry": None,
            "assumed": f"{who}: the fallback {CUDA_TRAIN_GFLOPS / 1000:g} TFLOP/s (not measured)"}


def card_record(card: Card | None) -> dict:
    """What the plan records of the card: its figures and every assumption made about it."""
    out = asdict(card) if card else {"name": None, "memory_gb": None, "sm_count": None}
    if card:
        out["memory_gb"] = round(card.memory_gb, 1)
    return {**out, **card_throughput(card), "step_overhead_s": CUDA_STEP_OVERHEAD_S}


@dataclass(frozen=True)
class CardBatch:
    """The batch chosen for a card, what limited it, and the modelled patches/s."""

    batch: int
    limited_by: str
    step_seconds: float
    patches_per_s: float
    patches_per_s_at_2: float
    caps: dict

    def to_dict(self) -> dict:
        return asdict(self)


def modelled_step_s(batch: int, train_gflops_per_patch: float, card_gflops: float,
                    overhead_s: float = CUDA_STEP_OVERHEAD_S) -> float:
    """The throughput model: a fixed time per step plus the batch's arithmetic on the card."""
    return overhead_s + batch * train_gflops_per_patch / card_gflops


def choose_card_batch(train_gflops_per_patch: float, card_gflops: float, *, patch_gb: float, fixed_gb: float,
                      memory_gb: float, patch_voxels: float, dataset_voxels: float,
                      train_seconds: float | None, min_steps: int,
                      overhead_s: float = CUDA_STEP_OVERHEAD_S) -> CardBatch:
    """The batch on a card: the smallest at which the step's arithmetic takes ARITHMETIC_PER_OVERHEAD
    times its fixed overhead (beyond it more patches per step buy little per second), within three
    caps: the estimated step memory within STEP_MEMORY_SHARE of the card, at most BATCH_DATA_SHARE of
    the dataset's voxels per batch (nnU-Net's rule), and, with a time budget, at least `min_steps`
    steps in `train_seconds`. Never below MIN_CARD_BATCH (the patch shrinks instead)."""
    per_patch_s = train_gflops_per_patch / card_gflops
    caps = {"throughput": math.ceil(ARITHMETIC_PER_OVERHEAD * overhead_s / max(per_patch_s, 1e-12)),
            "memory": math.floor((STEP_MEMORY_SHARE * memory_gb - fixed_gb) / max(patch_gb, 1e-12)),
            "data": math.floor(BATCH_DATA_SHARE * dataset_voxels / max(patch_voxels, 1.0))}
    if train_seconds is not None:
        caps["steps"] = math.floor((train_seconds / min_steps - overhead_s) / max(per_patch_s, 1e-12))
    caps = {k: max(0, int(v)) for k, v in caps.items()}
    limited_by = min(caps, key=lambda k: caps[k])
    batch = max(MIN_CARD_BATCH, caps[limited_by])
    if batch == MIN_CARD_BATCH and caps[limited_by] < MIN_CARD_BATCH:
        limited_by = f"{limited_by} (floor {MIN_CARD_BATCH})"
    step = modelled_step_s(batch, train_gflops_per_patch, card_gflops, overhead_s)
    at_2 = modelled_step_s(MIN_CARD_BATCH, train_gflops_per_patch, card_gflops, overhead_s)
    return CardBatch(batch, limited_by, round(step, 4), round(batch / step, 1),
                     round(MIN_CARD_BATCH / at_2, 1), caps)


LIMIT_TEXT = {"throughput": "where the arithmetic takes {a:g}x the fixed {o:g} ms per step (more buys little per "
                            "second)",
              "memory": "the estimated step memory must stay within {m:.0%} of the card (the rest may hold the cases)",
              "data": "a batch covers at most {d:.0%} of the dataset's voxels (nnU-Net's rule)",
              "steps": "the time budget must leave at least {s} steps"}


def card_batch_reason(figures: dict, card: dict, min_steps: int) -> str:
    """The plan's reason for a card's batch, from the recorded figures."""
    limit = figures["limited_by"].split(" ")[0]
    why = LIMIT_TEXT[limit].format(a=ARITHMETIC_PER_OVERHEAD, o=card.get("step_overhead_s", 0) * 1000,
                                   m=STEP_MEMORY_SHARE, d=BATCH_DATA_SHARE, s=min_steps)
    caps = ", ".join(f"{k} {v}" for k, v in figures["caps"].items())
    return (f"{figures['batch']} patches per step on the card, limited by {figures['limited_by']}: {why}; "
            f"modelled ~{figures['patches_per_s']:g} patches/s against ~{figures['patches_per_s_at_2']:g} at batch "
            f"{MIN_CARD_BATCH} (caps: {caps}; {card.get('assumed')}; to be measured)")
