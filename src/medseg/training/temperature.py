"""Which temperature a run keeps: fitted on one half of the validation cases, judged on the other.

The rule, and why:

* Candidates: none (T = 1), one T per run, one T per class (with at least
  `MIN_CASES_PER_CLASS` validation cases). Each is fitted by minimising the negative
  log-likelihood (NLL) of the voxels' reference labels under ``softmax(log p / T)``
  (golden-section search on log T in `T_RANGE`; one per class by coordinate descent from the
  single T).
* Judged where it was not fitted: the validation cases are split in two halves (alternating),
  each candidate is fitted on one half and applied to the other, both ways, so every voxel is
  judged once by a temperature that never saw its case. On these pooled held-out voxels: the NLL
  and the ECE (`medseg.evaluation.calibration`: `ECE_BINS` equal-width bins of the confidence,
  the calibrated probability of the class the mask gives, i.e. the argmax of the uncalibrated
  probabilities, since a temperature never changes a mask).
* Kept only when it helps on both: a candidate must give a lower held-out ECE *and* a lower
  held-out NLL than T = 1. NLL alone is not enough: it weighs every class's probability, the
  ECE only the confidence the mask is shown with, and a per-class T can lower the first while
  the second gets worse. Per class replaces the single T only when its held-out NLL is at least
  `PER_CLASS_GAIN` lower and its held-out ECE no higher (more parameters must earn their place
  on both). Nothing passes: T = 1, and the reason is recorded.
* Recorded, not judged: the share of held-out voxels whose most probable class a candidate
  moves away from the mask's. One T never moves it; a per-class T does wherever it corrects a
  class the model over- or under-weights (the mask keeps the uncalibrated argmax), so there the
  calibrated probability of the mask's class falls below another's.
* The kept kind is then refitted on all the validation voxels (more data, the same rule); a T
  at the edge of `T_RANGE` is noted (the NLL wanted it further: a model that knows little there).
  Fewer than 2 cases (or a half without relevant voxels) leave nothing to judge on: T = 1.
"""
from __future__ import annotations

import math

import torch

from ..evaluation.calibration import ECE_BINS, expected_calibration_error

PER_CLASS_GAIN = 0.02
MIN_CASES_PER_CLASS = 4
T_RANGE = (0.05, 20.0)

Sample = tuple[torch.Tensor, torch.Tensor]  # one case's (log p (N, K), reference label (N,))


def nll(log_probs: torch.Tensor, labels: torch.Tensor, temperature: torch.Tensor | float | list) -> float:
    """Mean negative log-likelihood of `labels` (N,) under softmax(log_probs (N, K) / T)."""
    return float(torch.nn.functional.cross_entropy(log_probs / torch.as_tensor(temperature), labels))


def mask_class_ece(log_probs: torch.Tensor, labels: torch.Tensor, temperature: torch.Tensor | float | list,
                   bins: int = ECE_BINS) -> float:
    """ECE of the calibrated probability of the mask's class (the uncalibrated argmax)."""
    return _ece_against(log_probs, torch.log_softmax(log_probs / torch.as_tensor(temperature), dim=1), labels, bins)


def _golden(f, lo: float, hi: float, steps: int = 30) -> float:
    """Minimiser of a unimodal f on [lo, hi] by golden-section search."""
    ratio = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(steps):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    return (a + b) / 2


def fit_temperature(log_probs: torch.Tensor, labels: torch.Tensor, per_class: bool = False,
                    sweeps: int = 3) -> list[float]:
    """The temperature(s) minimising the NLL: one number, or one per class (module docstring)."""
    lo, hi = math.log(T_RANGE[0]), math.log(T_RANGE[1])
    single = math.exp(_golden(lambda u: nll(log_probs, labels, math.exp(u)), lo, hi))
    if not per_class:
        return [single]
    t = torch.full((log_probs.shape[1],), single)
    for _ in range(sweeps):
        for k in range(len(t)):
            def f(u: float, k: int = k) -> float:
                trial = t.clone()
                trial[k] = math.exp(u)
                return nll(log_probs, labels, trial)
            t[k] = math.exp(_golden(f, lo, hi))
    return [float(v) for v in t]


def _pool(samples: list[Sample]) -> Sample:
    return torch.cat([s[0] for s in samples]), torch.cat([s[1] for s in samples])


def held_out_scores(samples: list[Sample], kinds: list[str]) -> dict[str, dict]:
    """Per candidate kind ("none", "single", "per_class"): NLL and ECE of the validation voxels,
    each judged with the temperature fitted on the other half of the cases (alternating halves,
    both ways, pooled), and the share of voxels whose most probable class it changed."""
    halves = [_pool(samples[i::2]) for i in (0, 1)]
    kinds = ["none"] + [k for k in kinds if k != "none"]  # T = 1 is what the others are judged against
    judged: dict[str, list[torch.Tensor]] = {k: [] for k in kinds}
    labels = []
    for fit, test in ((halves[0], halves[1]), (halves[1], halves[0])):
        labels.append(test[1])
        for kind in kinds:
            t = [1.0] if kind == "none" else fit_temperature(*fit, per_class=kind == "per_class")
            judged[kind].append(torch.log_softmax(test[0] / torch.tensor(t), dim=1))  # exact for T = 1
    y = torch.cat(labels)
    raw = torch.cat(judged["none"])
    out = {}
    for kind, parts in judged.items():
        lp = torch.cat(parts)
        out[kind] = {"nll": nll(lp, y, 1.0), "ece": _ece_against(raw, lp, y),
                     "argmax_changed": float((lp.argmax(1) != raw.argmax(1)).float().mean())}
    return out


def _ece_against(raw: torch.Tensor, calibrated: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """ECE of `calibrated` log-probabilities' confidence in the class `raw` predicts (the mask's)."""
    predicted = raw.argmax(dim=1)
    confidence = calibrated.exp().gather(1, predicted[:, None])[:, 0]
    return expected_calibration_error(confidence.numpy(), (predicted == labels).numpy(), bins)


def _verdict(held: dict, kind: str) -> str | None:
    """Why candidate `kind` may not be kept (None: it may), from its held-out figures."""
    row, base = held[kind], held["none"]
    faults = ([f"ECE {row['ece']:.4f} not below {base['ece']:.4f}"] if row["ece"] >= base["ece"] else []) + \
        ([f"NLL {row['nll']:.4f} not below {base['nll']:.4f}"] if row["nll"] >= base["nll"] else [])
    return f"{kind.replace('_', ' ')}: held-out " + ", ".join(faults) if faults else None


def choose_temperature(samples: list[Sample]) -> tuple[list[float], dict]:
    """The run's temperature (module docstring) and the evidence for it; ``[1.0]`` when none helps
    where it was not fitted, with the reason under "choice"."""
    log_probs, labels = _pool(samples)
    evidence: dict = {"nll_before": nll(log_probs, labels, 1.0), "cases": len(samples),
                      "rule": "fitted on one half of the validation cases, judged on the other (both ways); "
                              "kept only if held-out ECE and NLL are both below T = 1's; per class only if its "
                              f"held-out NLL is {PER_CLASS_GAIN:.0%} below the single T's and its ECE no higher"}
    if len(samples) < 2 or log_probs.shape[1] < 2 or min(sum(len(x[1]) for x in samples[i::2]) for i in (0, 1)) == 0:
        return [1.0], {**evidence, "choice": "T = 1: fewer than 2 validation cases with relevant voxels, no held-out "
                                             "half to judge on"}
    kinds = ["none", "single"] + (["per_class"] if len(samples) >= MIN_CASES_PER_CLASS else [])
    held = held_out_scores(samples, kinds)
    evidence["held_out"] = held
    faults = {k: _verdict(held, k) for k in kinds[1:]}
    if "per_class" not in held:
        faults["per_class"] = f"per class: not tried (fewer than {MIN_CASES_PER_CLASS} validation cases)"
    elif faults["single"] is None and faults["per_class"] is None and not (
            held["per_class"]["nll"] <= held["single"]["nll"] * (1 - PER_CLASS_GAIN)
            and held["per_class"]["ece"] <= held["single"]["ece"]):
        faults["per_class"] = (f"per class: held-out NLL not {PER_CLASS_GAIN:.0%} below the single T's, or ECE "
                               "above it")
    if faults["per_class"] is None:
        kept, t = "per class", fit_temperature(log_probs, labels, per_class=True)
    elif faults["single"] is None:
        kept, t = "single", fit_temperature(log_probs, labels)
    else:
        return [1.0], {**evidence, "choice": f"T = 1: no temperature helped on held-out voxels ({faults['single']}; "
                                             f"{faults['per_class']})"}
    bound = [v for v in t if min(abs(math.log(v / b)) for b in T_RANGE) < 1e-3]
    note = f"; at the bound of {T_RANGE} (the fit wants more)" if bound else ""
    rest = f" ({faults['per_class']})" if kept == "single" else ""
    return t, {**evidence, "choice": f"{kept}: lowers held-out ECE and NLL{rest}{note}"}


def describe_choice(evidence: dict) -> str:
    """One line for logs: the choice and its held-out figures."""
    return str(evidence.get("choice", "")) + "".join(
        f"; {k} ECE {v['ece']:.4f} NLL {v['nll']:.4f}" for k, v in (evidence.get("held_out") or {}).items())

