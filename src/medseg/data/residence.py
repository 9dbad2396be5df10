"""Where the training cases live while a run trains: beside the training device's arithmetic.

The rule (`choose_residence`): on a CPU the cases stay in host memory (nothing to move). On a
GPU the packed cases (`medseg.data.stack`) are copied to the card once when they take at most
DEVICE_SHARE of its memory and fit in what is free after the planned training step; patches
are then cut and augmented on the card and no batch crosses the bus. Otherwise they stay in
page-locked host memory and each batch's cases are copied to the card asynchronously, on their
own stream, into a ring of RING_SLOTS buffers (`StreamedCases`), while the card trains on the
batch before. The choice and its reason are recorded in run.json (`data_residence`).
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .stack import CaseStack, label_dtype, stack_bytes

DEVICE_SHARE = 0.25   # the cases may take at most this share of the card: the rest is the training step's
RING_SLOTS = 3        # batches in flight when streaming: one copying, one sampling, one spare


@dataclass(frozen=True)
class Residence:
    """Where the cases live ("host", "device" or "streamed") and why."""

    where: str
    reason: str

    def to_dict(self) -> dict:
        return {"where": self.where, "reason": self.reason}


def choose_residence(device_type: str, cases_bytes: int, total_bytes: int | None = None,
                     free_bytes: int | None = None, step_bytes: int = 0, share: float = DEVICE_SHARE) -> Residence:
    """The rule of this module, from memory figures alone (pure: tested with made-up cards)."""
    gb = 2**30
    if device_type != "cuda":
        return Residence("host", f"training runs on the {device_type}: the cases ({cases_bytes / gb:.2f} GB) "
                                 "stay in host memory where it reads them")
    total, free = int(total_bytes or 0), int(free_bytes if free_bytes is not None else total_bytes or 0)
    room = min(share * total, free - step_bytes)
    if cases_bytes <= room:
        return Residence("device", f"the cases ({cases_bytes / gb:.2f} GB) fit in {share:.0%} of the card's "
                                   f"{total / gb:.0f} GB with the training step's {step_bytes / gb:.1f} GB free: "
                                   "copied once, patches cut on the card")
    return Residence("streamed", f"the cases ({cases_bytes / gb:.2f} GB) exceed {max(room, 0) / gb:.1f} GB "
                                 f"({share:.0%} of the card's {total / gb:.0f} GB, less the training step): "
                                 "pinned host memory, each batch's cases copied asynchronously")


class ResidentCases:
    """All cases in one stack on the device that samples them."""

    def __init__(self, stack: CaseStack):
        self.stack = stack

    def stack_for(self, cases: torch.Tensor) -> tuple[CaseStack, torch.Tensor]:
        return self.stack, cases


class StreamedCases:
    """Cases in (pinned) host memory; each batch's distinct cases copied into the next of
    RING_SLOTS device buffers on a copy stream, which the sampling waits for. A slot is written
    again only after the sampling that read it (recorded by an event) has run."""

    def __init__(self, host: CaseStack, device: torch.device, batch_size: int, slots: int = RING_SLOTS):
        self.host, self.device = host, torch.device(device)
        rows = batch_size * (int(host.shapes[:, 0].max()) + 1)
        rest = tuple(host.label.shape[1:])
        channels = host.image.shape[0]
        self.slots = [(torch.zeros((channels, rows) + rest, device=self.device),
                       torch.zeros((rows,) + rest, dtype=host.label.dtype, device=self.device)) for _ in range(slots)]
        cuda = self.device.type == "cuda"
        self.stream = torch.cuda.Stream(self.device) if cuda else None
        self.read: list = [None] * slots
        self.next = 0

    def stack_for(self, cases: torch.Tensor) -> tuple[CaseStack, torch.Tensor]:
        unique, local = torch.unique(cases, return_inverse=True)
        slot = self.next
        self.next = (slot + 1) % len(self.slots)
        if self.stream is not None:  # everything enqueued so far (the last sampling included) read its slot
            previous = (slot - 1) % len(self.slots)
            self.read[previous] = torch.cuda.current_stream(self.device).record_event()
        image, label = self.slots[slot]
        offsets, row = [], 0
        context = torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()
        with context:
            if self.stream is not None and self.read[slot] is not None:
                self.stream.wait_event(self.read[slot])
            for case in unique.tolist():
                start, rows = int(self.host.offsets[case]), int(self.host.shapes[case, 0])
                for c in range(image.shape[0]):  # one contiguous block per channel: a direct async copy
                    image[c, row:row + rows].copy_(self.host.image[c, start:start + rows], non_blocking=True)
                label[row:row + rows].copy_(self.host.label[start:start + rows], non_blocking=True)
                offsets.append(row)
                row += rows + 1
        if self.stream is not None:
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
        return CaseStack(image, label, self.host.shapes[unique], torch.tensor(offsets)), local


def device_memory(device: torch.device) -> tuple[int | None, int | None]:
    """(total, free) bytes of a CUDA device; (None, None) elsewhere."""
    if device.type != "cuda":
        return None, None
    free, total = torch.cuda.mem_get_info(device)
    return int(total), int(free)


def place_cases(images: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], device: torch.device,
                batch_size: int, step_bytes: int = 0, residence: Residence | None = None
                ) -> tuple[ResidentCases | StreamedCases, Residence]:
    """The cases packed where `choose_residence` says (or where `residence` forces them)."""
    device = torch.device(device)
    need = stack_bytes([tuple(im.shape[1:]) for im in images], int(images[0].shape[0]),
                       label_dtype(labels).itemsize)
    if residence is None:
        total, free = device_memory(device)
        residence = choose_residence(device.type, need, total, free, step_bytes)
    if residence.where == "streamed":
        host = CaseStack.pack(images, labels, "cpu", pin=device.type == "cuda")
        return StreamedCases(host, device, batch_size), residence
    return ResidentCases(CaseStack.pack(images, labels, device)), residence
