"""The optimizer of a stage, built from its ``OptimConfig``."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from afa.runs.options import OptimConfig


class LARS(torch.optim.Optimizer):
    """Momentum SGD with layer-wise adaptive rate scaling (LARS).

    You, Gitman, Ginsburg, "Large Batch Training of Convolutional Networks" (arXiv
    1708.03888), Algorithm 1, in the form of ACL's and DynACL's ``optimizer/lars.py`` (their
    pre-training uses it with lr 5.0, momentum 0.9, weight decay 1e-6, eta 1e-3). For every
    parameter tensor ``w`` with gradient ``g``:

        local_lr = eta * ||w|| / (||g|| + weight_decay * ||w||)   (1 where ||w|| or ||g|| ~ 0)
        v <- momentum * v + lr * local_lr * (g + weight_decay * w);   w <- w - v

    Args:
        params: parameters or parameter groups.
        lr: the global learning rate (the schedule scales it per step).
        momentum: momentum factor.
        weight_decay: L2 coefficient, inside the trust ratio and the update.
        eta: the LARS trust coefficient.
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 1e-3,
    ) -> None:
        if not lr > 0 or not 0 <= momentum < 1 or not weight_decay >= 0 or not eta > 0:
            raise ValueError(
                f"LARS: lr > 0, momentum in [0, 1), weight_decay >= 0 and eta > 0 expected, got "
                f"{lr}, {momentum}, {weight_decay}, {eta}"
            )
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            wd, eta = group["weight_decay"], group["eta"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                trust = eta * w_norm / (g_norm + wd * w_norm)
                trust = torch.where((w_norm < 1e-15) | (g_norm < 1e-15), 1.0, trust)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.mul_(group["momentum"]).add_((g + wd * p) * (trust * group["lr"]))
                p.sub_(buf)
        return loss


def build_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """Momentum SGD, LARS or AdamW over ``params`` (usually ``method.trainable_parameters()``).

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
    if cfg.name == "lars":
        return LARS(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            eta=cfg.lars_eta,
        )
    if cfg.name == "adamw":
        return torch.optim.AdamW(
            params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
        )
    raise ValueError(f"unknown optimizer {cfg.name!r}")  # OptimConfig already checks


__all__ = ["LARS", "build_optimizer"]
