"""One training run from options: the plan it trains with (read, or computed for its budget,
with the user's explicit options on top), then the Trainer, then the finishing work."""
from __future__ import annotations

import os
from pathlib import Path

from .. import distributed
from ..device import resolve_device
from ..planning import PLAN_KEYS, Budget, apply_overrides, check_plan, compute_fingerprint, make_plan, read_plan
from .config import config_from_options
from .finish import finish_run
from .init_from import check_data_fits, inherit_network, source_state
from .trainer import Trainer


# plan keys for which None is a real choice (native grid, no time limit), not "decide for me"
_NONE_IS_A_CHOICE = ("image_size", "target_spacing", "minutes", "epochs")


def plan_overrides(options: dict) -> dict:
    """The explicit options that replace plan settings ("auto" and unset values do not)."""
    out = {}
    for key, value in options.items():
        if key not in PLAN_KEYS or (isinstance(value, str) and value == "auto"):
            continue
        if value is None and key not in _NONE_IS_A_CHOICE:
            continue
        out[key] = value
    return out


def resolve_plan(data: Path, plan: str | os.PathLike | dict | None, options: dict,
                 memory_gb: float | None = None) -> dict:
    """The plan a run trains with: read or computed for the run's budget, then the explicit
    options applied on top (each recorded in the plan's reasons as set by the user)."""
    if isinstance(plan, dict):
        check_plan(plan)
        base = plan
    elif plan is not None:
        base = read_plan(plan)
    else:
        device = resolve_device(options.get("device", "auto")).type
        fp, _, _ = compute_fingerprint(data, workers=options.get("workers", 2), ignore=options.get("ignore_label"),
                                       label_suffix=options.get("label_suffix"))
        base = make_plan(fp, Budget(device=device, memory_gb=memory_gb, minutes=options.get("minutes")),
                         model=options.get("model") or "unet", image_size=options.get("image_size", "auto"))
    return apply_overrides(base, plan_overrides(options))


def train_single(data: Path, out: Path, options: dict, *, resume: bool = False,
                 plan: str | os.PathLike | dict | bool | None = None, memory_gb: float | None = None,
                 split: dict | None = None, finish: bool = True, report: bool = True) -> Path:
    """One run folder: resolve the plan, train, then (finish) validate, postprocess and (report)
    write RUN/report.html; `report=False` leaves the page to the caller (the demo writes its own)."""
    if distributed.world_size() > 1:  # under torchrun: join the group before planning
        distributed.init_from_env(resolve_device(options.get("device", "auto")))
    if options.get("init_from") and not resume:  # fine-tuning: the source's network, patch and grid
        initial = source_state(options["init_from"])
        check_data_fits(data, options["init_from"], initial, options.get("label_suffix"))
        options = inherit_network({**options, "init_from": str(options["init_from"])}, initial)
    the_plan = None
    if not resume and plan is not False and distributed.is_main():
        the_plan = resolve_plan(data, None if plan is True else plan, options, memory_gb)
    the_plan = distributed.broadcast_object(the_plan)  # planned once, on rank 0
    config = config_from_options(dict(options), the_plan)
    try:
        run = Trainer(data, out, config, resume=resume, plan=the_plan, split=split, finishing=finish).fit()
        if finish and distributed.is_main():
            finish_run(run, report=report)
    finally:
        distributed.shutdown()
    return run
