"""Planning: a dataset's fingerprint turned into a readable plan (JSON) by rules that say why.
Re-exports only: `fingerprint` measures, `rules` decides, `plan` writes and reads the file,
`defaults` applies the same rules to a run without a plan."""
from .fingerprint import Fingerprint, compute_fingerprint
from .plan import (PLAN_FORMAT, PLAN_KEYS, TRAIN_KEYS, apply_overrides, check_plan, expected_steps, format_plan,
                   make_plan, plan_dataset, read_plan, train_settings, write_plan)
from .rules import (ANISOTROPY_THRESHOLD, AUTO_IMAGE_SIZE, MIN_FEATURE_SIZE, NATIVE_MAX_SIDE, Budget, divisors,
                    forward_gflops, network_for_patch, pooling_plan)

__all__ = ["ANISOTROPY_THRESHOLD", "AUTO_IMAGE_SIZE", "Budget", "Fingerprint", "MIN_FEATURE_SIZE",
           "NATIVE_MAX_SIDE", "PLAN_FORMAT", "PLAN_KEYS", "TRAIN_KEYS", "apply_overrides", "check_plan",
           "compute_fingerprint", "divisors", "expected_steps", "format_plan", "forward_gflops", "make_plan",
           "network_for_patch", "plan_dataset", "pooling_plan", "read_plan", "train_settings", "write_plan"]
