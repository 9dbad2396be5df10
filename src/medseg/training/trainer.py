"""The training loop: data in, a checkpointed model and a learning curve out.

`Trainer.fit` trains with AdamW and the clock of `medseg.training.schedule`: with `minutes`, the
schedule follows the clock instead of an iteration count, so a time-bounded run still ends with a
fully decayed learning rate; the budget includes loading and validation, and the last validation
is reserved for. Every epoch writes checkpoints/last.pt, log.csv and run.json; the epoch with the
best mean foreground validation Dice also writes checkpoints/best.pt (`medseg.runs` names them).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import distributed
from ..data.sampler import Prefetcher
from ..device import memory_format, resolve_device
from ..evaluation.metrics import confusion, dice_from_confusion
from ..inference.predictor import mirrors
from ..inference.sliding_window import argmax_mask, count_windows, mirror_sets, sliding_window
from ..nets import axis_divisors
from ..planning import write_plan
from ..report.tensorboard import close as close_scalars
from ..runs import PLAN_FILE, checkpoint_path, load_checkpoint, save_checkpoint
from .cases import check_run_folder
from .config import TrainConfig
from .progress import TrainingProgress
from .schedule import MIN_RESERVE_S, Schedule
from .setup import DataSetup, ModelSetup
from .state import RunRecord


class Trainer(DataSetup, ModelSetup, Schedule, RunRecord):
    """Owns the model, optimiser and loop for one run folder; the setup, the clock and the
    records live in the mixins it inherits (`setup`, `schedule`, `state`)."""

    def __init__(self, data: Path, out: Path, config: TrainConfig, resume: bool = False,
                 plan: dict | None = None, split: dict | None = None, finishing: bool = True):
        self.start = time.perf_counter()
        self.data, self.out, self.config = Path(data), Path(out), config
        self.plan, self.split = plan, split
        check_run_folder(self.out, resume, config.epochs, config.minutes)
        self.resume_state = load_checkpoint(checkpoint_path(self.out, "last")) if resume else None
        if self.resume_state is not None:
            saved = TrainConfig.from_dict(self.resume_state["config"])
            # the budget may be extended on resume; everything else stays as the run began
            saved.epochs, saved.minutes = config.epochs or saved.epochs, config.minutes or saved.minutes
            saved.device = config.device
            self.config = config = saved
        if config.epochs is None and config.minutes is None:
            raise ValueError("give a budget: epochs or minutes")
        torch.manual_seed(config.seed)
        self.device = distributed.init_from_env(resolve_device(config.device))  # cuda:LOCAL_RANK under torchrun
        self._prepare_data()
        self._prepare_model()
        self.reserve_s = MIN_RESERVE_S
        self.finish_factor = self._finish_factor() if finishing else 0.0

    def _finish_factor(self) -> float:
        """How many per-epoch validations the finishing predictions cost: every validation case
        (not only the per-epoch subset), with the mirrored passes prediction makes by default."""
        if not self.val_images:
            return 0.0
        passes = len(mirror_sets(tuple(range(self.spatial_dims)))) if mirrors("auto", self.spatial_dims) else 1
        return passes * len(self.val_pairs) / len(self.val_images)

    def validate(self) -> dict[str, float]:
        if not self.val_images or not distributed.is_main():
            return {}
        model = self.eval_model
        model.eval()
        total_loss, dices = 0.0, []
        for image, label in zip(self.val_images, self.val_labels):
            probs = sliding_window(model, image, self.config.patch_size, overlap=self.config.overlap,
                                   divisor=axis_divisors(model, self.spatial_dims), device=self.device,
                                   autocast_dtype=self.autocast)
            target = label.long()[None]
            with torch.no_grad():
                total_loss += float(self.loss_fn(torch.log(probs.clamp_min(1e-8))[None], target))
            pred = argmax_mask(probs)
            dices.append(dice_from_confusion(confusion(pred, label.numpy(), self.num_classes, self.ignore_index)))
        self.model.train()
        dice = np.mean(dices, axis=0)
        row = {"val_loss": total_loss / len(self.val_images),
               "val_dice_mean": float(dice[1:].mean()) if self.num_classes > 1 else float(dice[0])}
        row.update({f"val_dice_{name}": float(d) for name, d in zip(self.class_names, dice)})
        return row

    @property
    def eval_model(self) -> nn.Module:
        """The weights validation, checkpoints and prediction use: the average when `ema` is on."""
        return self.ema.model if self.ema is not None else self.model

    def fit(self) -> Path:
        cfg = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        if self.plan is not None and distributed.is_main() and not (self.out / PLAN_FILE).exists():
            write_plan(self.plan, self.out / PLAN_FILE)
        self.write_run_json(finished=False)
        self.model.train()
        total_epochs = cfg.epochs or 10**9
        # the reserve (`Schedule`) is estimated from the validation's window count and the measured
        # step time until a validation has been timed
        val_windows = sum(count_windows(tuple(x.shape[1:]), cfg.patch_size, cfg.overlap) for x in self.val_images)
        reserve_measured = False
        progress = TrainingProgress(self, total=cfg.epochs * cfg.iterations_per_epoch if cfg.epochs else None)
        stop = False
        first_iteration = self.iteration + 1  # this process's first step (compiles with cfg.compile)
        try:
            while self.epoch < total_epochs and not stop:
                epoch_start = time.perf_counter()
                prefetch = Prefetcher(self.sampler.epoch(self.epoch, cfg.iterations_per_epoch))
                losses, images = [], 0
                rate_start, rate_images = epoch_start, 0  # what the validation reserve is estimated from
                try:
                    for x, y in prefetch:
                        for group in self.optimiser.param_groups:
                            group["lr"] = self.learning_rate()
                        x = x.to(self.device, non_blocking=True).contiguous(memory_format=memory_format(x.ndim - 2))
                        y = y.to(self.device, non_blocking=True)
                        with torch.autocast(self.device.type, dtype=self.autocast or torch.float32,
                                            enabled=self.autocast is not None):
                            logits = self.net(x)
                        loss = self.loss_fn(logits, y)
                        self.optimiser.zero_grad(set_to_none=True)
                        loss.backward()
                        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 12.0)
                        self.optimiser.step()
                        if self.ema is not None:
                            self.ema.update(self.model)
                        self.iteration += 1
                        images += len(x)
                        losses.append(float(loss.detach()))
                        progress.step(losses)
                        rate_images += len(x)
                        if self.compiled and self.iteration == first_iteration:
                            # the first compiled step includes compilation (~30 s): not a step's cost
                            rate_start, rate_images = time.perf_counter(), 0
                        elif not reserve_measured:  # a forward pass costs about a third of a step
                            per_image = (time.perf_counter() - rate_start) / rate_images
                            self.reserve_for_validation(val_windows * per_image / 3)
                        if distributed.agree_to_stop(self.steps_time_left() <= 0):
                            stop = True
                            break
                finally:
                    prefetch.close()
                train_time = time.perf_counter() - epoch_start
                self.epoch += 1
                tail_start = time.perf_counter()
                row = {"epoch": self.epoch, "iteration": self.iteration, "lr": f"{self.learning_rate():.3g}",
                       "train_loss": float(np.mean(losses)) if losses else None,
                       "images_per_s": round(images / max(train_time, 1e-9), 2),
                       "data_wait_s": round(prefetch.waited_s, 2)}
                final = stop or self.epoch >= total_epochs or self.progress() >= 1.0
                validated = self.validation_due(final)
                if validated:
                    val_start = time.perf_counter()
                    row.update(self.validate())
                    self.val_seconds += time.perf_counter() - val_start
                score = row.get("val_dice_mean")
                if score is not None and score > self.best_score:
                    self.best_score = score
                    save_checkpoint(self.state(), checkpoint_path(self.out, "best"))
                row["elapsed_s"] = round(self.elapsed(), 1)
                if distributed.is_main():
                    save_checkpoint(self.state(), checkpoint_path(self.out, "last"))
                self.log(row)
                self.write_run_json(finished=False)
                distributed.barrier()  # other ranks wait for rank 0's validation and checkpoint
                if validated:  # the reserve is for a last validation, so only a validated tail measures it
                    self.reserve_for_validation(time.perf_counter() - tail_start)
                    reserve_measured = True
                progress.epoch_done(row)
                if distributed.agree_to_stop(self.progress() >= 1.0):
                    stop = True
            progress.finished()
        finally:
            progress.close()
            close_scalars(self.out)  # the event file is complete; a run made again here starts a new one
        self.write_run_json(finished=True)
        return self.out
