"""Per-step learning-rate schedules: linear warm-up, then piecewise, cosine or constant."""

from __future__ import annotations

import math
from typing import Any

import torch

from afa.runs.options import ScheduleConfig


def lr_at(
    cfg: ScheduleConfig, base_lr: float, step: int, total_steps: int, warmup_steps: int
) -> float:
    """The learning rate used by optimizer step ``step`` (counting from 0).

    * warm-up (``step < warmup_steps``): ``base_lr * step / warmup_steps`` (0 at step 0,
      ``base_lr`` at ``warmup_steps``), as in nanoGPT;
    * ``piecewise``: ``base_lr * gamma**k``, ``k`` = milestones with
      ``step >= round(milestone * total_steps)`` (milestones are fractions of training);
    * ``cosine``: from ``base_lr`` at the end of the warm-up to ``min_lr`` at
      ``total_steps`` (held there afterwards);
    * ``constant``: ``base_lr``.
    """
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    if cfg.name == "constant":
        return base_lr
    if cfg.name == "piecewise":
        k = sum(1 for m in cfg.milestones if step >= round(m * total_steps))
        return base_lr * cfg.gamma**k
    if cfg.name == "cosine":
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return cfg.min_lr + (base_lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {cfg.name!r}")  # ScheduleConfig already checks


class LRSchedule:
    """Sets each parameter group's LR from ``lr_at`` before every optimizer step.

    Like ``torch.optim.lr_scheduler.LambdaLR``: construct it after the optimizer (it
    applies step 0's LR at once) and call ``step()`` after each ``optimizer.step()``.
    Its ``state_dict`` holds only numbers, so it loads with ``weights_only=True``.

    Args:
        optimizer: the stage's optimizer; each group's current ``lr`` is its base LR.
        cfg: the schedule.
        steps_per_epoch: optimizer steps per epoch (``len(train_loader)``).
        epochs: the stage's epochs.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        cfg: ScheduleConfig,
        *,
        steps_per_epoch: int,
        epochs: int,
    ) -> None:
        if steps_per_epoch < 1 or epochs < 1:
            raise ValueError(
                f"LRSchedule: need steps_per_epoch >= 1 and epochs >= 1, "
                f"got {steps_per_epoch} and {epochs}"
            )
        self.optimizer = optimizer
        self.cfg = cfg
        self.steps_per_epoch = steps_per_epoch
        self.epochs = epochs
        self.total_steps = steps_per_epoch * epochs
        self.warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
        if self.warmup_steps > self.total_steps:
            raise ValueError(
                f"schedule.warmup_epochs={cfg.warmup_epochs} is longer than the stage "
                f"({epochs} epochs)"
            )
        self.base_lrs = [float(g["lr"]) for g in optimizer.param_groups]
        self.last_step = 0
        self._apply()

    def lr_at(self, step: int) -> list[float]:
        """Each group's LR at optimizer step ``step``."""
        return [
            lr_at(self.cfg, base, step, self.total_steps, self.warmup_steps)
            for base in self.base_lrs
        ]

    def _apply(self) -> None:
        for group, lr in zip(self.optimizer.param_groups, self.lr_at(self.last_step), strict=True):
            group["lr"] = lr

    def step(self) -> None:
        """Advance one optimizer step and set the next step's LR."""
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        """The LRs the next ``optimizer.step()`` will use."""
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {
            "last_step": self.last_step,
            "base_lrs": list(self.base_lrs),
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the position; a checkpoint taken at an epoch boundary also loads into a
        run with another number of steps per epoch (a resume with a different world size),
        at the same epoch of the stage."""
        last = int(state["last_step"])
        saved_total = int(state["total_steps"])
        if saved_total != self.total_steps:
            saved_per_epoch, rest = divmod(saved_total, self.epochs)
            if rest or saved_per_epoch == 0 or last % saved_per_epoch:
                raise ValueError(
                    f"LR schedule: the checkpoint's stage has {saved_total} steps, this one "
                    f"{self.total_steps}, and the checkpoint is not at an epoch boundary of "
                    f"a {self.epochs}-epoch stage (epochs changed?)"
                )
            last = last // saved_per_epoch * self.steps_per_epoch
        self.last_step = last
        self.base_lrs = [float(v) for v in state["base_lrs"]]
        self._apply()


__all__ = ["LRSchedule", "lr_at"]
