"""The module state an attack runs under, set on entry and restored on exit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

BNMode = Literal["eval", "train"]


@contextmanager
def attack_mode(model: nn.Module, bn_mode: BNMode = "eval") -> Iterator[nn.Module]:
    """Put ``model`` in the state used while crafting adversarial examples.

    On entry:
      * ``bn_mode="eval"``: ``model.eval()`` — batch-norm uses its running statistics
        and dropout is off (the usual choice, e.g. Rice et al. 2020; TRADES crafts in eval).
      * ``bn_mode="train"``: ``model.train()`` — batch-norm normalises with the statistics
        of the batch being attacked (the original PGD-AT code, Madry et al. 2018, crafts in
        train mode). Crafting is not training, so the running statistics
        (``running_mean``, ``running_var``, ``num_batches_tracked``) of every batch-norm
        layer are saved on entry and copied back on exit: the attack's forwards never move
        them. (Zeroing the momentum would not do: ``momentum=None`` layers use a cumulative
        average and ``num_batches_tracked`` would still count.)
      * every parameter gets ``requires_grad=False``, so attacks build no graph towards
        the weights and cannot accumulate into ``.grad`` even if some code calls
        ``backward`` (as AutoAttack's FAB does).

    On exit — also when the body raises — every module's ``training`` flag, every
    parameter's ``requires_grad`` and (train mode) the batch-norm running statistics are
    restored exactly as they were, module by module (a model that was partly in eval
    mode, e.g. a frozen encoder under a training head, comes back the same).

    Under DDP pass the wrapped module or the inner one alike; with ``SyncBatchNorm`` in
    train mode the forwards synchronise batch statistics across ranks, so every rank must
    craft the same number of steps.

    Args:
        model: the module whose state is managed.
        bn_mode: ``"eval"`` or ``"train"``.

    Yields:
        ``model``.
    """
    if bn_mode not in ("eval", "train"):
        raise ValueError(f"bn_mode: expected 'eval' or 'train', got {bn_mode!r}")
    training = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    stats: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        if bn_mode == "train":
            for m in model.modules():
                if isinstance(m, _BatchNorm) and m.track_running_stats:
                    for buf in (m.running_mean, m.running_var, m.num_batches_tracked):
                        if buf is not None:
                            stats.append((buf, buf.detach().clone()))
        model.train(bn_mode == "train")
        for p, _ in grads:
            p.requires_grad_(False)
        yield model
    finally:
        with torch.no_grad():
            for buf, saved in stats:
                buf.copy_(saved)
        for m, flag in training:
            m.training = flag
        for p, flag in grads:
            p.requires_grad_(flag)
