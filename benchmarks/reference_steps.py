"""Training steps written the way the field's reference implementations write them.

These exist only so that ``bench_training_step.py`` can time ``afa``'s steps against the
way the research code computes the same thing. They are our own code, written after
reading the reference repositories (not copied), and they are *not* part of ``afa``:
nothing in ``src/`` may use them.

What the references do that ``afa`` does not:

* **PGD-AT** (``locuslab/robust_overfitting``, ``train_cifar.py``, ``attack_pgd``; Rice et
  al. 2020): the perturbation ``delta`` is a leaf with ``requires_grad`` and every attack
  step calls ``loss.backward()`` while the model's parameters still require gradients.
  So each attack step computes (and accumulates into ``.grad``) the *weight* gradients as
  well as the input gradient; the training loop then calls ``opt.zero_grad()`` before the
  real backward. (The TRADES repository's L2 attack and MART's evaluation PGD use the same
  ``backward()`` pattern.)
* **TRADES** (``yaodongyu/TRADES``, ``trades.py``, the Linf branch of ``trades_loss``; Zhang
  et al. 2019): every attack step runs the model on ``x_adv`` *and again on the clean*
  ``x_natural`` (``KLDivLoss(size_average=False)(log_softmax(model(x_adv)),
  softmax(model(x_natural)))``) under ``enable_grad`` with the parameters requiring grad,
  then takes ``torch.autograd.grad`` with respect to ``x_adv`` only. No weight gradient is
  computed there, but every forward records the graph towards the weights, and the clean
  forward is repeated ``steps`` times. The outer loss runs three forwards (``model(x)`` for
  the CE, ``model(x_adv)`` and ``model(x)`` again for the KL), all back-propagated.

``afa`` instead crafts with the parameters' ``requires_grad`` off and ``autograd.grad``
towards the input only (``afa.attacks.perturb``), computes the clean logits of the TRADES
attack once under ``no_grad``, and reuses one clean forward in the outer loss.

Kept equal to ``afa``'s steps so that only the way of computing differs: the model, the
batch, the threat model (``eps``, ``step_size``, ``steps``, ``bn_mode`` for the attack's
BN mode) and the random start (uniform in the Linf ball, from the global RNG, like
``perturb``; TRADES starts at ``x + 0.001 * N(0, 1)`` and robust_overfitting crafts in
BN train mode, neither of which changes the cost). Logging-only forwards of the reference
training loops (robust_overfitting's extra clean forward for the train accuracy) are left
out, so the comparison does not flatter ``afa``. Linf only.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from afa.attacks.threat import ThreatModel

Autocast = Callable[[], AbstractContextManager[object]]


def _linf_start(x: Tensor, threat: ThreatModel) -> Tensor:
    """``perturb``'s start: ``delta ~ U[-eps, eps]`` (float32 draws of the global RNG)."""
    if not threat.random_start:
        return torch.zeros_like(x)
    u = torch.rand(x.shape, device=x.device, dtype=torch.float32)
    return ((2 * u - 1) * threat.eps).to(x.dtype)


def _check(threat: ThreatModel) -> None:
    if threat.norm != "linf":
        raise ValueError(f"reference steps are Linf only, got norm {threat.norm!r}")


def pgd_at_step_reference(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    forward: Callable[[Tensor], Tensor] | None = None,
    autocast: Autocast = nullcontext,
    scaler: torch.amp.GradScaler | None = None,
) -> Tensor:
    """One PGD-AT training step in the style of robust_overfitting (Rice et al. 2020).

    Madry et al. 2018's objective, ``min CE(f(x + delta), y)`` with ``delta`` from PGD on
    CE; each of the ``threat.steps`` attack steps calls ``loss.backward()`` with the
    parameters requiring grad (weight gradients computed and accumulated), then the
    step zeroes the gradients, back-propagates the training loss and steps the optimizer.

    Args:
        model: the classifier (its modes are set as the reference sets them).
        optimizer: updates ``model``'s parameters.
        x: clean inputs in [0, 1]; y: labels.
        threat: eps, step_size, steps, random_start and bn_mode of the attack.
        forward: what to call instead of ``model`` (a compiled model).
        autocast: context factory wrapped around every forward.
        scaler: gradient scaler for the training loss (fp16); ``None`` for none.

    Returns:
        The training loss, detached.

    Shape:
        x: (B, C, H, W); y: (B,); result: scalar.
    """
    _check(threat)
    fwd = model if forward is None else forward
    was_training = model.training
    model.train(threat.bn_mode == "train")
    delta = _linf_start(x, threat)
    delta = torch.clamp(delta, -x, 1 - x).detach().requires_grad_(True)
    for _ in range(threat.steps):
        with autocast():
            loss = F.cross_entropy(fwd(x + delta).float(), y)
        loss.backward()  # the reference's cost: the weights' .grad is filled too
        grad = delta.grad.detach()
        d = torch.clamp(delta.detach() + threat.step_size * grad.sign(), -threat.eps, threat.eps)
        delta.data = torch.clamp(d, -x, 1 - x)
        delta.grad.zero_()
    model.train(was_training)

    with autocast():
        loss = F.cross_entropy(fwd(torch.clamp(x + delta.detach(), 0, 1)).float(), y)
    optimizer.zero_grad(set_to_none=True)
    _backward_and_step(loss, optimizer, scaler)
    return loss.detach()


def trades_step_reference(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    beta: float = 6.0,
    *,
    forward: Callable[[Tensor], Tensor] | None = None,
    autocast: Autocast = nullcontext,
    scaler: torch.amp.GradScaler | None = None,
) -> Tensor:
    """One TRADES training step in the style of the official ``trades.py`` (Zhang et al. 2019).

    ``CE(f(x), y) + beta * KL(f(x) || f(x_adv))`` with ``x_adv`` maximising the KL; each
    attack step forwards ``x_adv`` and the clean ``x`` with the parameters requiring grad
    and takes ``autograd.grad`` towards ``x_adv``; the outer loss forwards ``x``, ``x_adv``
    and ``x`` again. Arguments as :func:`pgd_at_step_reference`; ``beta`` weighs the KL.

    Returns:
        The training loss, detached.

    Shape:
        x: (B, C, H, W); y: (B,); result: scalar.
    """
    _check(threat)
    fwd = model if forward is None else forward
    was_training = model.training
    model.train(threat.bn_mode == "train")
    x_adv = torch.clamp(x + _linf_start(x, threat), 0, 1).detach()
    for _ in range(threat.steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad(), autocast():
            loss_kl = F.kl_div(
                F.log_softmax(fwd(x_adv).float(), dim=1),
                F.softmax(fwd(x).float(), dim=1),
                reduction="sum",
            )
        (grad,) = torch.autograd.grad(loss_kl, [x_adv])
        x_adv = x_adv.detach() + threat.step_size * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - threat.eps), x + threat.eps)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    model.train(was_training)

    optimizer.zero_grad(set_to_none=True)
    with autocast():
        logits = fwd(x).float()
        loss_natural = F.cross_entropy(logits, y)
        loss_robust = F.kl_div(
            F.log_softmax(fwd(x_adv.detach()).float(), dim=1),
            F.softmax(fwd(x).float(), dim=1),
            reduction="sum",
        ) / len(x)
    loss = loss_natural + beta * loss_robust
    _backward_and_step(loss, optimizer, scaler)
    return loss.detach()


def _backward_and_step(
    loss: Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None
) -> None:
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    optimizer.zero_grad(set_to_none=True)


__all__ = ["pgd_at_step_reference", "trades_step_reference"]
