"""The benchmark suites, one module each; `python -m benchmarks list` prints this registry.

Each suite module defines `TITLE`, `COMMAND` (the full run that reproduces its table),
`add_arguments(parser)`, `run(args) -> (settings, results)` and `table(envelope) -> list of
markdown lines`. Heavy imports (torch, medseg, MONAI) happen inside `run`, so listing the suites
and regenerating BENCHMARKS.md stay fast.
"""
from __future__ import annotations

import importlib
from types import ModuleType

# name -> one line: what the suite measures (kept here so `list` imports nothing heavy)
SUITES: dict[str, str] = {
    "serve": "medseg serve under load on loopback (2D and 3D mixed, malformed uploads): masks equal to predict's, "
              "4xx, no 5xx, queue bound, RSS, throughput against per-file `medseg predict`",
    "accuracy": "held-out Dice of `medseg train` + `medseg predict` on ISBI 2012, Kvasir-SEG, MSD Hippocampus "
                "(the project's judged protocols and budgets)",
    "generalisation": "defaults only, one CPU budget per set, on every labelled set in ../shared/data, "
                      "against the published reference",
    "train": "training throughput of medseg's Trainer against a plain MONAI loop, same network and weights, "
             "alternating rounds",
    "predict": "whole-volume prediction: medseg's Predictor against MONAI's and nnU-Net's sliding windows, "
               "same network object",
    "peak": "the CPU's conv peak, where a U-Net step's time goes, and windows per network call",
    "memory": "peak RSS and time of `medseg predict` on a CT-sized volume, every window and --skip-empty",
    "evaluate": "`medseg evaluate` speed on 260 hippocampus cases and its agreement with MONAI's metrics",
    "losses": "every loss of medseg on small targets (synthetic lesions, BraTS enhancing tumour), "
              "same plan and steps",
    "gpu": "training sampler patches/s against batch size (hippocampus, BraTS plans): batched on --device "
           "against the per-patch sampler, alternating rounds",
    "uncertainty": "held-out voxel AUROC of the entropy for wrong voxels, case score-Dice Spearman, ECE before/after "
                   "temperature, failure-flag precision/recall, predict --uncertainty time",
    "labelling": "labelling-loop simulation (slow): held-out Dice per round when cases are added by random, "
                 "foreground-aware random or `medseg suggest`, same steps, several seeds",
}


def load(name: str) -> ModuleType:
    """The suite module `name`; a clear error for an unknown name."""
    if name not in SUITES:
        raise SystemExit(f"unknown benchmark suite {name!r}; known: {', '.join(SUITES)}")
    return importlib.import_module(f"benchmarks.suites.{name}")
