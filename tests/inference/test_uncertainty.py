"""Uncertainty maps and scores (medseg.inference.uncertainty): hand-computed entropy and mutual
information, a perfectly confident correct prediction of a real hippocampus label scoring 0, the
relevant region, a case score that does not grow with the structure, and temperature 1 changing
nothing, down to the Predictor's output on a real run folder."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from helpers import real_dataset
from medseg.inference import Predictor, read_input_case, sliding_window
from medseg.inference.uncertainty import (apply_temperature, case_score, mutual_information, mutual_information_from,
                                          predictive_entropy, relevant_region)
from medseg.io.layout import prediction_inputs
from medseg.io.registry import read_mask

OLD_RUN = Path(__file__).resolve().parents[1] / "golden" / "run_before_restructure"


def _hippocampus_label() -> np.ndarray:
    return np.asarray(read_mask(real_dataset("msd-hippocampus") / "labelsTr" / "hippocampus_001.nii.gz"))


def test_entropy_and_mutual_information_match_a_hand_computation() -> None:
    probs = torch.tensor([[0.5, 1.0, 0.9], [0.5, 0.0, 0.1]]).view(2, 1, 3)
    by_hand = [math.log(2), 0.0, -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))]
    entropy = predictive_entropy(probs)
    assert entropy.dtype == torch.float32 and entropy.shape == (1, 3)
    assert entropy.flatten().tolist() == pytest.approx(by_hand, abs=1e-6)   # 0 log 0 = 0: no NaN
    a = torch.tensor([0.9, 0.1]).view(2, 1)
    b = torch.tensor([0.1, 0.9]).view(2, 1)
    # mean (0.5, 0.5): log 2; each member: H(0.9, 0.1)
    assert float(mutual_information([a, b])) == pytest.approx(math.log(2) - by_hand[2], abs=1e-6)
    assert float(mutual_information([a, a])) == pytest.approx(0.0, abs=1e-7)       # agreeing members
    # the streaming form gives the same from the mean and the members' mean entropy
    streamed = mutual_information_from((a + b) / 2, (predictive_entropy(a) + predictive_entropy(b)) / 2)
    assert float(streamed) == pytest.approx(float(mutual_information([a, b])), abs=1e-6)


def test_a_perfectly_confident_correct_prediction_has_no_uncertainty() -> None:
    label = torch.from_numpy(_hippocampus_label().astype(np.int64))
    probs = torch.nn.functional.one_hot(label, 3).movedim(-1, 0).float()   # certain, and right
    entropy = predictive_entropy(probs)
    assert float(entropy.abs().max()) == 0.0
    assert float(mutual_information([probs, probs]).max()) == 0.0
    region = relevant_region(probs)
    assert region.sum() > (label > 0).sum()          # the structure and a margin around it
    assert case_score(probs, entropy) == 0.0


def test_empty_confident_prediction_scores_zero_and_the_reference_widens_the_region() -> None:
    label = torch.from_numpy(_hippocampus_label().astype(np.int64))
    probs = torch.zeros((3,) + tuple(label.shape))
    probs[0] = 0.97
    probs[1] = 0.03                                   # below the relevance threshold everywhere
    assert not relevant_region(probs).any()
    assert case_score(probs) == 0.0
    with_reference = relevant_region(probs, label)    # a missed structure still counts when scored
    assert bool(with_reference[label > 0].all())


def _disc(size: int, radius: float, blur: float) -> torch.Tensor:
    """Two-class probabilities of a disc with a soft boundary of width `blur` pixels."""
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    distance = torch.sqrt((y - size / 2) ** 2 + (x - size / 2) ** 2) - radius
    fg = torch.sigmoid(-distance / blur)
    return torch.stack([1 - fg, fg])


def test_case_score_does_not_grow_with_the_size_of_the_structure() -> None:
    small, large = _disc(200, 10, 1.0), _disc(200, 60, 1.0)   # the same boundary, 36x the area
    assert predictive_entropy(large).sum() > 4 * predictive_entropy(small).sum()   # a sum would
    assert case_score(large) <= case_score(small)
    doubtful = _disc(200, 10, 4.0)                             # the same disc, a blurred boundary
    assert case_score(doubtful) > 1.5 * case_score(small)


def test_temperature_one_changes_nothing_and_others_keep_the_argmax() -> None:
    probs = torch.softmax(torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(0)) * 3, dim=0)
    assert apply_temperature(probs, 1.0) is probs
    assert apply_temperature(probs, [1.0, 1.0, 1.0]) is probs
    assert apply_temperature(probs, None) is probs
    hot = apply_temperature(probs, 2.0)
    assert torch.equal(hot.argmax(0), probs.argmax(0))
    assert predictive_entropy(hot).mean() > predictive_entropy(probs).mean()
    logits = torch.randn(3, 5)
    assert torch.allclose(apply_temperature(logits, 2.0, logits=True), torch.softmax(logits / 2, dim=0))
    # on one pass, tempering log-probabilities is tempering the logits
    assert torch.allclose(apply_temperature(torch.softmax(logits, 0), 2.0), torch.softmax(logits / 2, 0), atol=1e-6)
    with pytest.raises(ValueError, match="positive"):
        apply_temperature(probs, 0.0)
    with pytest.raises(ValueError, match="one per class"):
        apply_temperature(probs, [1.0, 2.0])


class _Fixed(nn.Module):
    """Logits that depend on the flip: the mirrored passes disagree where the image is not symmetric."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(-3, 3, x.shape[-1]).expand_as(x[:, :1])
        return torch.cat([x[:, :1] * 0, x[:, :1] + ramp], dim=1)


def test_sliding_window_member_entropy_keeps_the_probabilities_and_gives_nonnegative_information() -> None:
    image = torch.from_numpy(_hippocampus_label()[17].astype(np.float32))[None]   # a real slice, (1, H, W)
    kw = dict(patch_size=(32, 32), mirror_axes=(0, 1), divisor=1, overlap=0.5)
    plain = sliding_window(_Fixed(), image, **kw)
    both = sliding_window(_Fixed(), image, member_entropy=True, **kw)
    assert both.shape[0] == plain.shape[0] + 1
    assert torch.equal(both[:2], plain)                       # the same probabilities, bit for bit
    information = mutual_information_from(both[:2], both[2])
    assert float(information.min()) >= 0.0 and float(information.max()) > 0.01


def _old_run_cases(predictor: Predictor):
    items = prediction_inputs(OLD_RUN / "inputs", predictor.in_channels, predictor.dataset.channel_names)
    return [read_input_case(item, predictor.in_channels) for item in items]


def test_a_stored_temperature_of_one_changes_nothing_and_none_changes_a_mask(tmp_path: Path) -> None:
    run = shutil.copytree(OLD_RUN, tmp_path / "run", ignore=shutil.ignore_patterns("expected*", "inputs"))
    plain = Predictor(run, device="cpu", compile=False)
    assert plain.calibration == {}                            # a run calibrated never
    cases = _old_run_cases(plain)
    before = [plain.predict_uncertain(c) for c in cases]
    (run / "calibration.json").write_text(json.dumps({"temperature": 1.0, "flag_threshold": 0.5}))
    same = [Predictor(run, device="cpu", compile=False).predict_uncertain(c) for c in cases]
    (run / "calibration.json").write_text(json.dumps({"temperature": [2.0, 0.5, 1.0]}))
    hot = [Predictor(run, device="cpu", compile=False).predict_uncertain(c) for c in cases]
    for case, b, s, h in zip(cases, before, same, hot):
        assert np.array_equal(b.mask, plain.segment(case))
        assert torch.equal(b.entropy, s.entropy) and b.score == s.score and b.members == 4
        assert s.flagged == (s.score >= 0.5)
        assert np.array_equal(h.mask, b.mask)                 # a temperature never changes a mask
        assert not torch.allclose(h.entropy, b.entropy)
