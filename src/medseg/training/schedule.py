"""The clock of a run: how much of the budget (minutes or epochs) is used, the learning rate
that follows it (warm-up, then polynomial decay to zero at the budget's end), and when to
validate.

With a clock budget, the end of the training steps is the budget minus a reserve for the work
still to come after them: the last validation and checkpoint and, when the run finishes itself,
predicting every validation case at full resolution, scoring it and writing the report (at most
a quarter of the budget: slower finishing work overruns it rather than starve the training). The
learning rate decays over the steps' share only, so a timed run always ends annealed."""
from __future__ import annotations

import math
import time


MIN_RESERVE_S = 5.0          # checkpoint and log of the last epoch
FINISH_OVERHEAD_S = 10.0     # postprocessing choice, evaluation and report after the validation predictions
MAX_RESERVE_SHARE = 0.25     # the reserve never takes more of the budget: training steps are worth more than
                             # finishing on time, so slower finishing work overruns the budget instead


class Schedule:
    """Budget, learning rate and validation pacing of a Trainer (needs config, start,
    elapsed_before, iteration, val_images, val_seconds, validations, reserve_s, finish_factor)."""

    def budget_left(self) -> float:
        return math.inf if not self.config.minutes else self.config.minutes * 60 - self.elapsed()

    def steps_time_left(self) -> float:
        """Seconds the training steps may still use: the budget left minus the reserve."""
        return self.budget_left() - self.reserve_s

    def reserve_for_validation(self, validation_s: float) -> None:
        """Set the reserve from what one validation (of the per-epoch subset) costs: the last one,
        with a margin, plus the finishing work scaled from it (`finish_factor`: how many times a
        validation's work the finishing predictions are; 0 when the run does not finish itself)."""
        finishing = self.finish_factor * validation_s + (FINISH_OVERHEAD_S if self.finish_factor else 0.0)
        reserve = 1.5 * validation_s + MIN_RESERVE_S + finishing
        self.reserve_s = min(reserve, MAX_RESERVE_SHARE * self.config.minutes * 60) if self.config.minutes else reserve

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.start

    def progress(self) -> float:
        """Fraction of the budget used: by the clock for `minutes`, by iterations for `epochs`."""
        cfg = self.config
        parts = []
        if cfg.minutes:  # the steps' share of the budget: the reserve is not theirs to spend
            parts.append(self.elapsed() / max(1.0, cfg.minutes * 60 - self.reserve_s))
        if cfg.epochs:
            parts.append(self.iteration / (cfg.epochs * cfg.iterations_per_epoch))
        return min(1.0, max(parts))

    def learning_rate(self) -> float:
        warmup = 20
        factor = min(1.0, (self.iteration + 1) / warmup)
        return self.config.lr * factor * (1 - self.progress()) ** 0.9

    def validation_due(self, final: bool) -> bool:
        """Whether this epoch validates: always the first and the last, otherwise only while
        validation stays within `val_share` of the elapsed time: on small datasets of large images
        validating every epoch took a fifth of a short budget (docs/decisions.md)."""
        if not self.val_images or self.validations == 0 or final or self.config.val_share >= 1:
            self.validations += bool(self.val_images)
            return bool(self.val_images)
        per_validation = self.val_seconds / self.validations
        if self.val_seconds + per_validation <= self.config.val_share * self.elapsed():
            self.validations += 1
            return True
        return False
