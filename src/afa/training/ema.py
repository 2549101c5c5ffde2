"""An exponential moving average (EMA) of a classifier's weights."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class ModelEMA:
    """An averaged copy of a model: ``ema = d * ema + (1 - d) * live`` after each step.

    Parameters are averaged; buffers (BN running statistics, ``num_batches_tracked``)
    are COPIED from the live model at every update, as in Gowal et al. 2020
    ("Uncovering the Limits of Adversarial Training against Norm-Bounded Adversarial
    Examples") and Wang et al. 2023's code: averaged weights with averaged running
    statistics would not match each other either, and copying keeps BN consistent with
    the most recent data. The decay warm-up ``d_t = min(decay, (1 + t) / (10 + t))`` at
    update ``t`` (from 0) keeps the random initialisation from dominating early averages.

    Args:
        model: the live classifier (unwrapped: not DDP, not compiled).
        decay: the target decay in (0, 1).
        warmup: use the warm-up above (else ``d_t = decay``).

    Attributes:
        module: the averaged classifier, in eval mode, without gradients.
        updates: how many updates have been applied.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"ModelEMA: decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def decay_at(self, t: int) -> float:
        """The decay used by update ``t`` (counting from 0)."""
        if self.warmup:
            return min(self.decay, (1 + t) / (10 + t))
        return self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the live ``model``'s current weights into the average."""
        d = self.decay_at(self.updates)
        live = dict(model.named_parameters())
        for name, p in self.module.named_parameters():
            # lerp: p + (1 - d) * (live - p) == d * p + (1 - d) * live
            p.lerp_(live[name].detach(), 1.0 - d)
        live_buffers = dict(model.named_buffers())
        for name, b in self.module.named_buffers():
            b.copy_(live_buffers[name])
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "module": self.module.state_dict(),
            "updates": self.updates,
            "decay": self.decay,
            "warmup": self.warmup,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
        self.decay = float(state["decay"])
        self.warmup = bool(state["warmup"])


__all__ = ["ModelEMA"]
