"""Calibration and error-detection metrics (medseg.evaluation.calibration) and the temperature
fit (medseg.training.calibrate): ECE near 0 for a calibrated set, above 0 for an overconfident
one and reduced by the fitted temperature; AUROC and Spearman against hand values and MONAI."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medseg.evaluation.calibration import (auroc, expected_calibration_error, flag_precision_recall,
                                           reliability_bins, spearman)
from medseg.training.calibrate import flag_threshold, mean_dice
from medseg.training.temperature import (choose_temperature, fit_temperature, held_out_scores, mask_class_ece,
                                         nll)


def _calibrated_set(n: int = 60000, classes: int = 3, seed: int = 0):
    """Logits, and labels drawn from their own softmax: a perfectly calibrated model."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=g) * 2
    labels = torch.multinomial(torch.softmax(logits, 1), 1, generator=g)[:, 0]
    return logits, labels


def _ece(logits: torch.Tensor, labels: torch.Tensor, temperature=1.0) -> float:
    probs = torch.softmax(logits / torch.as_tensor(temperature), 1)
    confidence, predicted = probs.max(1)
    return expected_calibration_error(confidence.numpy(), (predicted == labels).numpy())


def test_ece_is_near_zero_when_calibrated_and_temperature_repairs_overconfidence() -> None:
    logits, labels = _calibrated_set()
    assert _ece(logits, labels) < 0.01
    over = logits * 3                                     # the same ranking, three times as sure
    before = _ece(over, labels)
    assert before > 0.08
    (t,) = fit_temperature(torch.log_softmax(over, 1), labels)
    assert t == pytest.approx(3.0, rel=0.1)
    assert _ece(over, labels, t) < before / 4


def test_per_class_temperatures_are_kept_only_when_they_help_on_held_out_cases() -> None:
    logits, labels = _calibrated_set(40000)
    log_probs = torch.log_softmax(logits * 2, 1)
    samples = [(log_probs[i::8], labels[i::8]) for i in range(8)]
    temperature, evidence = choose_temperature(samples)    # one overconfidence for all classes
    assert len(temperature) == 1 and temperature[0] == pytest.approx(2.0, rel=0.1)
    held = evidence["held_out"]
    assert held["single"]["nll"] < held["none"]["nll"] and held["single"]["ece"] < held["none"]["ece"] / 2
    assert evidence["choice"].startswith("single")
    # class 2's log-probability alone is 3x too sharp: p_k proportional to q_k ** a_k, a = (1, 1, 3)
    log_probs = torch.log_softmax(torch.log_softmax(logits, 1) * torch.tensor([1.0, 1.0, 3.0]), 1)
    samples = [(log_probs[i::8], labels[i::8]) for i in range(8)]
    temperature, evidence = choose_temperature(samples)
    assert evidence["choice"].startswith("per class") and len(temperature) == 3
    assert temperature[2] == pytest.approx(3.0, rel=0.15)
    # correcting one class moves the most probable class off the mask's somewhere: recorded, not hidden
    assert evidence["held_out"]["per_class"]["argmax_changed"] > 0.01


def _skewed_overconfident(seed: int, cases: int = 8, voxels: int = 3000) -> list:
    """A binary model on mostly background (a skewed 2D region), twice too sure of itself, its
    truth a gentle slope: P(foreground | logit z) = sigmoid(0.6 z - 2)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(cases):
        z = torch.randn(voxels, generator=g) * 2.5 - 2
        labels = (torch.rand(voxels, generator=g) < torch.sigmoid(0.6 * z - 2)).long()
        out.append((torch.log_softmax(torch.stack([torch.zeros(voxels), z], 1), 1), labels))
    return out


def _mask_ece(samples: list, temperature) -> float:
    log_probs, labels = torch.cat([s[0] for s in samples]), torch.cat([s[1] for s in samples])
    return mask_class_ece(log_probs, labels, temperature)


def test_a_per_class_temperature_that_wins_on_nll_but_loses_on_ece_is_not_kept() -> None:
    """The fault behind a calibration that made ECE worse: per-class temperatures chosen because
    their held-out NLL was lower, never asked about ECE. Here they push the background's T to
    the bound and make fresh cases' ECE worse than no temperature; the single T repairs it."""
    fit_on, fresh = _skewed_overconfident(0), _skewed_overconfident(1)
    log_probs, labels = torch.cat([s[0] for s in fit_on]), torch.cat([s[1] for s in fit_on])
    per_class = fit_temperature(log_probs, labels, per_class=True)
    assert per_class[0] == pytest.approx(20.0, rel=0.01)                      # at the bound
    assert _mask_ece(fresh, per_class) > _mask_ece(fresh, 1.0)                 # worse than nothing
    temperature, evidence = choose_temperature(fit_on)
    held = evidence["held_out"]
    assert held["per_class"]["nll"] < 0.98 * held["single"]["nll"]            # what the NLL rule chose on
    assert held["per_class"]["ece"] > held["single"]["ece"]
    assert evidence["choice"].startswith("single") and len(temperature) == 1
    assert _mask_ece(fresh, temperature) < _mask_ece(fresh, 1.0) / 2


def test_a_temperature_that_does_not_help_held_out_cases_is_not_kept() -> None:
    """Half the cases three times too sure, half three times too unsure: a T fitted on one half
    makes the other worse, so none is kept (T = 1, and the record says why), although a T fitted
    on all of them lowers their in-sample NLL."""
    logits, labels = _calibrated_set(24000)
    samples = [(torch.log_softmax(logits[i::8] * (3.0 if i % 2 else 1 / 3), 1), labels[i::8]) for i in range(8)]
    temperature, evidence = choose_temperature(samples)
    assert temperature == [1.0]
    assert evidence["choice"].startswith("T = 1") and "not below" in evidence["choice"]
    held = held_out_scores(samples, ["single"])
    assert held["single"]["nll"] > held["none"]["nll"] and held["single"]["ece"] > held["none"]["ece"]
    pooled = torch.cat([s[0] for s in samples]), torch.cat([s[1] for s in samples])
    assert nll(*pooled, fit_temperature(*pooled)) < nll(*pooled, 1.0)
    assert choose_temperature(samples[:1])[0] == [1.0]                         # no half to judge on


def test_reliability_bins_count_every_voxel_once() -> None:
    table = reliability_bins([0.0, 0.05, 0.5, 0.99, 1.0], [1, 0, 1, 1, 1], bins=10)
    assert sum(table["count"]) == 5 and table["count"][0] == 2 and table["count"][9] == 2
    assert table["accuracy"][0] == 0.5 and table["confidence"][5] == 0.5 and table["accuracy"][3] is None
    assert expected_calibration_error(np.full(100, 0.9), np.arange(100) < 90) == pytest.approx(0.0, abs=1e-12)


def test_auroc_and_spearman_match_hand_values_and_monai() -> None:
    assert auroc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
    assert auroc([4, 3, 2, 1], [0, 0, 1, 1]) == 0.0
    assert auroc([1, 1, 1, 1], [0, 1, 0, 1]) == 0.5      # ties count half
    assert math.isnan(auroc([1, 2], [1, 1]))
    rng = np.random.default_rng(0)
    wrong = rng.uniform(size=5000) < 0.2
    score = rng.normal(size=5000) + wrong                 # tied values too
    score = np.round(score, 1)
    monai = pytest.importorskip("monai.metrics")
    oracle = float(monai.compute_roc_auc(torch.from_numpy(score), torch.from_numpy(wrong.astype(np.int64))))
    assert auroc(score, wrong) == pytest.approx(oracle, abs=1e-9)
    assert spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_flag_threshold_separates_bad_cases_and_falls_back_to_a_quantile() -> None:
    dice = np.array([0.9, 0.88, 0.2, 0.91, 0.87, 0.3, 0.9, 0.86, 0.92, 0.89])   # 20 % quantile: 0.42
    scores = np.array([0.1, 0.12, 0.6, 0.09, 0.11, 0.5, 0.1, 0.13, 0.08, 0.2])
    threshold, rule = flag_threshold(scores, dice)
    assert threshold == 0.5 and "F1" in rule
    found = flag_precision_recall(scores, dice < np.quantile(dice, 0.2), threshold)
    assert found["precision"] == 1.0 and found["recall"] == 1.0
    threshold, rule = flag_threshold(scores[:5], dice[:5])
    assert threshold == pytest.approx(np.quantile(scores[:5], 0.8)) and "quantile" in rule


def test_mean_dice_counts_classes_present_in_either_map() -> None:
    ref = np.zeros((4, 4), np.int64)
    ref[:2] = 1
    pred = ref.copy()
    pred[3, 3] = 2                                        # a spurious class 2 scores 0
    assert mean_dice(pred, ref, 3) == pytest.approx(0.5)
    assert mean_dice(np.zeros_like(ref), np.zeros_like(ref), 3) == 1.0
