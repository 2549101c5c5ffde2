"""The optimizer of a stage, built from its ``OptimConfig``."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from afa.runs.options import OptimConfig


def build_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """Momentum SGD or AdamW over ``params`` (usually ``method.trainable_parameters()``).

    Weight decay applies to every parameter (BN and biases included), as in Rice et al.
    2020 and the TRADES/MART code; see ``OptimConfig``.

    Raises:
        ValueError: when ``params`` is empty (a stage with nothing to train).
    """
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("build_optimizer: no trainable parameters (is everything frozen?)")
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
        )
    if cfg.name == "adamw":
        return torch.optim.AdamW(
            params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
        )
    raise ValueError(f"unknown optimizer {cfg.name!r}")  # OptimConfig already checks


__all__ = ["build_optimizer"]
