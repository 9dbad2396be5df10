"""The clock of a run: how much of the budget (minutes or epochs) is used, the learning rate
that follows it (warm-up, then polynomial decay to zero at the budget's end), and when to
validate."""
from __future__ import annotations

import math
import time


class Schedule:
    """Budget, learning rate and validation pacing of a Trainer (needs config, start,
    elapsed_before, iteration, val_images, val_seconds, validations)."""

    def budget_left(self) -> float:
        return math.inf if not self.config.minutes else self.config.minutes * 60 - self.elapsed()

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.start

    def progress(self) -> float:
        """Fraction of the budget used: by the clock for `minutes`, by iterations for `epochs`."""
        cfg = self.config
        parts = []
        if cfg.minutes:
            parts.append(self.elapsed() / (cfg.minutes * 60))
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
