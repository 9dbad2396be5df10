"""medseg.data.sampler: patches oversample the foreground reproducibly per seed and epoch, and the
prefetching thread yields every batch and passes its errors on."""
from __future__ import annotations

import torch

from medseg.data.augment import AugmentConfig
from medseg.data.sampler import PatchSampler, Prefetcher


def test_sampler_oversamples_foreground_and_is_reproducible():
    labels = [torch.zeros(100, 100, dtype=torch.uint8) for _ in range(3)]
    for lab in labels:
        lab[40:43, 60:63] = 1  # a tiny target: 9 of 10,000 pixels
    images = [torch.randn(1, 100, 100) for _ in range(3)]
    sampler = PatchSampler(images, labels, (16, 16), 8, AugmentConfig(enabled=False), seed=1)
    batches = list(sampler.epoch(0, 20))
    with_fg = sum(int(y.any()) for _, y in batches for y in y)
    assert with_fg >= 0.25 * 160  # ~1/3 forced + a few by chance; uniform sampling would give ~4%
    again = list(sampler.epoch(0, 20))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))
    assert not torch.equal(batches[0][0], next(iter(sampler.epoch(1, 1)))[0])


def test_prefetcher_yields_everything_and_surfaces_errors():
    assert list(Prefetcher(iter(range(10)))) == list(range(10))

    def broken():
        yield 1
        raise RuntimeError("decode failed")

    items = Prefetcher(broken())
    assert next(items) == 1
    try:
        next(items)
    except RuntimeError as exc:
        assert "decode failed" in str(exc)
    else:
        raise AssertionError("error was swallowed")


def test_a_suspended_epoch_leaves_the_callers_gradients_on():
    images = [torch.randn(1, 20, 24)]
    labels = [(images[0][0] > 0).to(torch.uint8)]
    sampler = PatchSampler(images, labels, (16, 16), 2, AugmentConfig(), seed=0)
    batches = sampler.epoch(0, 3)
    x, _ = next(batches)
    assert not x.requires_grad and torch.is_grad_enabled()
