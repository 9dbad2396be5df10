"""The batched sampler draws what the per-patch sampler drew: the statistics of its batches on
real cases (tests/data/sampler_statistics.py) against the reference recorded from the per-patch
implementation (tests/golden/sampler_statistics.json), each within 4 combined standard errors."""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helper beside this file
from sampler_statistics import CONFIGS, REFERENCE, compare, measure  # noqa: E402

RECORDED = json.loads(REFERENCE.read_text())


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n.endswith("-all") else n
                                  for n in CONFIGS])
def test_batched_sampler_matches_the_recorded_distributions(name):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the reference was recorded on one thread
    try:
        measured = measure(name, RECORDED["draws"], RECORDED["seed"])
    finally:
        torch.set_num_threads(threads)  # the tests that follow plan for the machine's threads
    reference = RECORDED["configs"][name]
    assert set(measured) == set(reference)
    bad = compare(reference, measured)
    assert not bad, f"{name}: statistics moved beyond sampling noise:\n" + "\n".join(bad)


def test_the_comparison_sees_a_changed_distribution(monkeypatch):
    """The comparison has power: doubling the gamma and flip probabilities is caught."""
    import sampler_statistics

    dims, cfg = CONFIGS["3d-default"]
    monkeypatch.setitem(sampler_statistics.CONFIGS, "3d-default",
                        (dims, replace(cfg, p_gamma=0.9, p_flip=0.9, p_scale=0.6)))
    bad = compare(RECORDED["configs"]["3d-default"], measure("3d-default", RECORDED["draws"], RECORDED["seed"]))
    assert any("flip_2" in b for b in bad) and any("scaled" in b for b in bad) and any("intensity" in b for b in bad)
