"""Progress of a training run where someone can see it: a bar on a terminal, and where stderr is
not a terminal (nohup, a batch scheduler, a CI log) one line per epoch, and at least one a
minute, with the iteration, elapsed time, the time left, the loss and the validation Dice.

A timed run also compares its steps with the plan's estimate for this machine: a run that gets
fewer than half of them (a busy machine, a slower one than planned) is starved, and says so once
while it trains and again when it ends; the same result on another day would differ."""
from __future__ import annotations

import sys
import time

import numpy as np
from tqdm.auto import tqdm

from .. import distributed

LINE_EVERY_S = 60.0   # without a terminal: at least one line this often, even inside a long epoch
STARVED_SHARE = 0.5   # fewer steps than this share of the plan's estimate: the run was starved
PACE_CHECK_SHARE = 0.25  # the pace is first judged once this share of the budget has passed


def starvation_warning(done: int, expected: int, minutes: float) -> str:
    """The line a starved run ends with: what it got, what the plan expected, what to do."""
    return (f"training: WARNING: starved: {done} steps in {minutes:g} min where the plan expected ~{expected} on this "
            f"machine ({done / max(expected, 1):.0%}; the machine was busy or slower than planned). The model is "
            "undertrained and a run on an idle machine would score differently: train again with more --minutes, "
            "on an idle machine, or with --epochs for a fixed number of steps")


def clock(seconds: float) -> str:
    """H:MM:SS (or M:SS under an hour)."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class TrainingProgress:
    """The bar (terminals) or the lines (logs) of one Trainer's `fit`; rank 0 only under torchrun."""

    def __init__(self, trainer, total: int | None, stream=None):
        self.trainer = trainer
        self.stream = stream or sys.stderr
        main = distributed.is_main()
        self.lines = main and not self.stream.isatty()
        self.bar = tqdm(total=total, initial=trainer.iteration, unit="it", dynamic_ncols=True, desc="training",
                        disable=None if main and not self.lines else True, file=self.stream)
        self.last_dice = "-"
        self.last_line = time.perf_counter()
        self.first_iteration, self.first_time = trainer.iteration, time.perf_counter()
        self.expected = trainer.steps_expected() if main else None  # the plan's steps for a timed run
        self.pace_warned = False

    def seconds_left(self) -> float | None:
        """Time left: by the clock for a minutes budget, else from the measured step rate."""
        t = self.trainer
        if t.config.minutes:
            return max(0.0, t.budget_left())
        steps = t.iteration - self.first_iteration
        if not t.config.epochs or steps == 0:
            return None
        per_step = (time.perf_counter() - self.first_time) / steps
        return max(0, t.config.epochs * t.config.iterations_per_epoch - t.iteration) * per_step

    def step(self, losses: list[float]) -> None:
        t = self.trainer
        self.bar.update(1)
        if t.iteration % 5 == 0:
            self.bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", val_dice=self.last_dice, refresh=False)
        if t.config.minutes:  # time-bounded: show the budget as the bar's horizon
            rate = self.bar.format_dict.get("rate") or 0
            if rate:
                self.bar.total = t.iteration + int(max(0, t.steps_time_left()) * rate)
        if self.lines and time.perf_counter() - self.last_line >= LINE_EVERY_S:
            self.write(f"loss {np.mean(losses[-20:]):.3f}")

    def epoch_done(self, row: dict) -> None:
        if row.get("val_dice_mean") is not None:
            self.last_dice = f"{row['val_dice_mean']:.3f}"
        loss = row.get("train_loss")
        self.bar.set_postfix(loss=f"{loss:.3f}" if loss is not None else "-", val_dice=self.last_dice, refresh=False)
        if self.lines:
            self.write(f"loss {loss:.3f}" if loss is not None else "loss -",
                       f"{row.get('images_per_s', 0):.1f} img/s")
        self.check_pace()

    def check_pace(self) -> None:
        """Once a quarter of a timed budget has passed: say so (once) when the steps so far are
        fewer than half of what the plan's estimate expects by now."""
        t = self.trainer
        if self.expected is None or self.pace_warned or not t.config.minutes:
            return
        share = t.elapsed() / (t.config.minutes * 60)
        if share < PACE_CHECK_SHARE or t.iteration >= STARVED_SHARE * self.expected * share:
            return
        self.pace_warned = True
        self.bar.clear()
        print(f"training: WARNING: slower than planned: {t.iteration} steps after {clock(t.elapsed())}, the plan "
              f"expected ~{int(self.expected * share)} by now (~{self.expected} in {t.config.minutes:g} min); "
              "is the machine busy?", file=self.stream, flush=True)

    def finished(self) -> None:
        """The end of the run: the starvation warning when it got under half the expected steps."""
        t = self.trainer
        if self.expected is not None and t.config.minutes and t.iteration < STARVED_SHARE * self.expected:
            self.bar.clear()
            print(starvation_warning(t.iteration, self.expected, t.config.minutes), file=self.stream, flush=True)

    def write(self, *parts: str) -> None:
        t = self.trainer
        left = self.seconds_left()
        fields = [f"epoch {t.epoch}", f"it {t.iteration}", f"elapsed {clock(t.elapsed())}",
                  f"left {clock(left)}" if left is not None else "left ?", *parts, f"val Dice {self.last_dice}"]
        print("training: " + " | ".join(fields), file=self.stream, flush=True)
        self.last_line = time.perf_counter()

    def close(self) -> None:
        self.bar.close()
