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
from medseg.training.calibrate import choose_temperature, fit_temperature, flag_threshold, mean_dice


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
    assert evidence["nll_after_single"] < evidence["nll_before"]
    # class 2's log-probability alone is 3x too sharp: p_k proportional to q_k ** a_k, a = (1, 1, 3)
    log_probs = torch.log_softmax(torch.log_softmax(logits, 1) * torch.tensor([1.0, 1.0, 3.0]), 1)
    samples = [(log_probs[i::8], labels[i::8]) for i in range(8)]
    temperature, evidence = choose_temperature(samples)
    assert evidence["per_class"] == "chosen" and len(temperature) == 3


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
