"""What a run writes as it goes: the checkpoint state (weights plus everything prediction and
--resume need), run.json, and one log.csv row per epoch (with the learning curves redrawn)."""
from __future__ import annotations

import csv
import io
import json

import torch

from .. import distributed
from ..atomic import write_text
from ..nets import count_parameters
from ..planning import expected_steps
from ..report.curves import plot_learning_curves
from ..report.tensorboard import log_scalars
from ..runs import LOG_CSV, RUN_INFO
from .progress import STARVED_SHARE


class RunRecord:
    """Checkpoint state, run.json and log.csv of a Trainer."""

    def steps_expected(self) -> int | None:
        """Steps the plan's estimate expects in this run's minutes on this machine (timed runs)."""
        return expected_steps(self.plan, self.config.minutes)

    def starved(self) -> bool | None:
        """Whether the run got fewer than half the expected steps; None when nothing was expected."""
        expected = self.steps_expected()
        return None if expected is None else bool(self.iteration < STARVED_SHARE * expected)

    def state(self) -> dict:
        extra = {} if self.ema is None else {"train_model": self.model.state_dict(), "ema_updates": self.ema.updates}
        return {
            "format": "medseg-checkpoint-1",
            "model": self.eval_model.state_dict(),
            **extra,
            "optimiser": self.optimiser.state_dict(),
            "model_name": self.config.model,
            "model_options": self.model_options(),
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "spatial_dims": self.spatial_dims,
            "class_names": self.class_names,
            "label_mapping": self.mapping.to_dict(),
            "preprocessor": self.pre.to_dict(),
            "dataset": self.info.to_dict(),
            "patch_size": list(self.config.patch_size),
            "config": self.config.to_dict(),
            "split": {"train": [p.case_id for p in self.train_pairs], "val": [p.case_id for p in self.val_pairs]},
            "plan": self.plan,
            "epoch": self.epoch,
            "iteration": self.iteration,
            "elapsed_s": self.elapsed(),
            "best_score": self.best_score,
            "torch_rng": torch.get_rng_state(),
            "autocast": "bf16" if self.autocast == torch.bfloat16 else "fp32",
        }

    def write_run_json(self, finished: bool) -> None:
        if not distributed.is_main():
            return
        info = {
            "medseg_run": 1,
            "data": str(self.data.resolve()),
            "config": self.config.to_dict(),
            "model": {"name": self.config.model, "options": {k: list(v) if isinstance(v, tuple) else v
                                                             for k, v in self.model_options().items()},
                      "parameters": count_parameters(self.model)},
            "device": str(self.device),
            "precision": "bf16" if self.autocast == torch.bfloat16 else "fp32",
            "label_mapping": self.mapping.to_dict(),
            "label_rule": self.mapping.describe(),
            "class_names": self.class_names,
            "preprocessor": self.pre.to_dict(),
            "dataset": self.info.to_dict(),
            "plan": {k: v for k, v in (self.plan or {}).items() if k != "fingerprint"} or None,
            "fold": self.config.fold,
            "cache_hits": self.cache_hits,
            "data_residence": getattr(self, "data_residence", None),  # where the cases lived (data.residence)
            "cases": {"train": len(self.train_pairs), "val": len(self.val_pairs),
                      "val_used_per_epoch": len(self.val_images)},
            "split": {"train": [p.case_id for p in self.train_pairs], "val": [p.case_id for p in self.val_pairs]},
            "epochs_done": self.epoch,
            "iterations_done": self.iteration,
            "steps_expected": self.steps_expected(),
            "starved": self.starved() if finished else None,  # judged when the run ends
            "elapsed_s": round(self.elapsed(), 1),
            "best_val_dice_mean": self.best_score if self.best_score >= 0 else None,
            "finished": finished,
        }
        write_text(self.out / RUN_INFO, json.dumps(info, indent=2))

    def log(self, row: dict) -> None:
        if not distributed.is_main():
            return
        path = self.out / LOG_CSV
        columns = ["epoch", "iteration", "elapsed_s", "lr", "train_loss", "val_loss", "val_dice_mean"]
        columns += [f"val_dice_{n}" for n in self.class_names] + ["images_per_s", "data_wait_s"]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore", lineterminator="\r\n")
        if not path.exists():
            writer.writeheader()
        writer.writerow(row)
        # the whole file rewritten atomically: a full disk never leaves half a row behind
        write_text(path, (path.read_bytes().decode("utf-8") if path.exists() else "") + text.getvalue())
        plot_learning_curves(path, self.out / "learning_curves.png")
        log_scalars(self.out, row)
