"""Training: settings (`config`), which cases train and validate (`cases`), the setup before the
first step (`setup`), the clock (`schedule`), what a run writes (`state`), the loop (`trainer`),
one run from options (`run`), cross-validation folds (`folds`), the finishing work after training
(`finish`), losses and the weight average (`ema`). Re-exports only."""
from .cases import MAX_VAL_CASES, load_cases, pairs_of_split, split_cases
from .config import TrainConfig, compiles
from .finish import ensure_validation, finish_crossval, finish_run
from .folds import load_or_create_splits, make_splits, parse_folds, train_folds
from .run import plan_overrides, resolve_plan, train_single
from .trainer import Trainer

__all__ = ["MAX_VAL_CASES", "TrainConfig", "Trainer", "compiles", "ensure_validation", "finish_crossval",
           "finish_run", "load_cases", "load_or_create_splits", "make_splits", "pairs_of_split", "parse_folds",
           "plan_overrides", "resolve_plan", "split_cases", "train_folds", "train_single"]
