"""medseg.data.residence: where the cases live (host on a CPU; on a card when they fit its share,
else streamed from pinned memory), decided from memory figures alone; the streamed ring cuts the
same patches as the resident stack."""
from __future__ import annotations

import torch

from medseg.data.augment import AugmentConfig
from medseg.data.residence import DEVICE_SHARE, Residence, choose_residence
from medseg.data.sampler import PatchSampler
from medseg.data.stack import CaseStack, stack_bytes

GB = 2**30


def test_cpu_keeps_the_cases_in_host_memory_whatever_their_size():
    for size in (1, 10**12):
        assert choose_residence("cpu", size).where == "host"


def test_cases_move_to_the_card_only_within_its_share_and_its_free_memory():
    card = 141 * GB  # an H200
    assert choose_residence("cuda", 2 * GB, card, card, step_bytes=8 * GB).where == "device"
    at_share = int(DEVICE_SHARE * card)
    assert choose_residence("cuda", at_share, card, card).where == "device"
    over = choose_residence("cuda", at_share + 1, card, card)
    assert over.where == "streamed" and "25%" in over.reason
    # a card mostly taken by something else: the free memory, less the training step, decides
    assert choose_residence("cuda", 2 * GB, card, 9 * GB, step_bytes=8 * GB).where == "streamed"
    assert choose_residence("cuda", 1 * GB, 24 * GB, 24 * GB, step_bytes=4 * GB).where == "device"
    assert choose_residence("cuda", 7 * GB, 24 * GB, 24 * GB, step_bytes=4 * GB).where == "streamed"


def test_stack_bytes_counts_the_packed_stack():
    images = [torch.zeros(2, 5, 7, 3), torch.zeros(2, 4, 6, 9)]
    labels = [torch.zeros(5, 7, 3, dtype=torch.uint8), torch.zeros(4, 6, 9, dtype=torch.uint8)]
    stack = CaseStack.pack(images, labels)
    assert stack.nbytes() == stack_bytes([(5, 7, 3), (4, 6, 9)], 2) == (6 + 6) * 7 * 9 * 9  # rows: each case, a gap, rounded up to even


def test_streamed_cases_give_the_batches_of_resident_ones():
    gen = torch.Generator().manual_seed(0)
    images = [torch.randn(1, s, 30, 26, generator=gen) for s in (20, 31, 24, 18)]
    labels = [(x[0] > 1).to(torch.uint8) for x in images]
    cfg = AugmentConfig(p_rotate=0.5, p_elastic=0.5, flip_axes=None)
    resident = PatchSampler(images, labels, (12, 16, 16), 6, cfg, seed=4)
    streamed = PatchSampler(images, labels, (12, 16, 16), 6, cfg, seed=4, residence=Residence("streamed", "test"))
    assert resident.residence.where == "host" and streamed.residence.where == "streamed"
    for (x1, y1), (x2, y2) in zip(resident.epoch(0, 5), streamed.epoch(0, 5)):
        assert torch.allclose(x1, x2, atol=1e-4) and torch.equal(y1, y2)
