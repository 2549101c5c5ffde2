"""Projected gradient descent (ascent) in an Linf or L2 ball: the one PGD of `afa`."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from afa.attacks.mode import attack_mode
from afa.attacks.objectives import Objective, _check_loss
from afa.attacks.threat import ThreatModel


def perturb(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    objective: Objective,
    *,
    forward: Callable[[Tensor], Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Adversarial examples by projected gradient ascent (PGD, Madry et al. 2018).

    Maximises ``objective(forward(x_adv), y)`` per example over
    ``{x_adv : ||x_adv - x||_p <= eps, 0 <= x_adv <= 1}``:

    * Linf: ``x_adv += step_size * sign(grad)``, then clip to ``[x - eps, x + eps]``.
    * L2: ``x_adv += step_size * grad / ||grad||_2`` (per example), then scale
      ``x_adv - x`` back onto the ball of radius ``eps`` when it leaves it.
    * Both: clip to [0, 1] after every step. Clipping coordinates towards ``x`` cannot
      leave the ball, so the result lies in the ball and the box.

    Random start (``threat.random_start``): Linf, ``delta ~ U[-eps, eps]`` per coordinate;
    L2, a uniformly random direction scaled by a radius ``U(0, 1) * eps`` (the common
    choice, e.g. torchattacks; not uniform in the ball's volume, which in high dimension
    would put every start on the sphere). The noise comes from ``generator`` when given
    (drawn on the generator's device, then moved to ``x``'s), else from the global RNG
    of ``x``'s device.

    Restarts (``threat.restarts > 1``): independent runs; per example the final point with
    the highest objective value is kept (one extra forward per restart).

    Gradients are taken with respect to the input only (``torch.autograd.grad``); the
    parameters get ``requires_grad=False`` while crafting and their ``.grad`` is never
    touched. Module modes follow ``threat.bn_mode`` (see :func:`attack_mode`) and are
    restored on exit, also on error. Gradients are enabled inside even if the caller is
    under ``torch.no_grad()``; the caller's autocast applies to ``forward`` (objectives
    compute in float32).

    Args:
        model: the module whose modes are managed (and the default forward).
        x: clean inputs in [0, 1].
        y: labels (or whatever ``objective`` takes as its second argument).
        threat: norm, eps, step_size, steps, random_start, restarts, bn_mode.
        objective: ``(forward(x_adv), y) -> (B,)`` loss to maximise.
        forward: what to attack, default ``model``; AFA passes a feature map.
        generator: RNG for the random start (reproducible attacks).

    Returns:
        Detached adversarial inputs, same shape and dtype as ``x``. With
        ``steps == 0`` or ``eps == 0``: a copy of ``x``.

    Shape:
        x: (B, ...) ; y: (B,) ; result: (B, ...).

    Example:
        >>> threat = ThreatModel(norm="linf", eps=8 / 255, step_size=2 / 255, steps=10)
        >>> x_adv = perturb(model, x, y, threat, cross_entropy)
    """
    x0 = x.detach()
    if threat.steps == 0 or threat.eps == 0 or x0.shape[0] == 0:
        return x0.clone()
    fwd = model if forward is None else forward

    with attack_mode(model, threat.bn_mode), torch.enable_grad():
        if threat.restarts == 1:
            return _run(fwd, x0, y, threat, objective, generator).to(x.dtype)
        best = x0.clone()
        best_loss = torch.full((x0.shape[0],), float("-inf"), device=x0.device)
        for _ in range(threat.restarts):
            adv = _run(fwd, x0, y, threat, objective, generator)
            with torch.no_grad():
                loss = objective(fwd(adv), y)
            better = loss > best_loss  # strict: ties keep the earlier restart
            best[better] = adv[better]
            best_loss = torch.where(better, loss, best_loss)
        return best.to(x.dtype)


def _run(
    fwd: Callable[[Tensor], Tensor],
    x0: Tensor,
    y: Tensor,
    threat: ThreatModel,
    objective: Objective,
    generator: torch.Generator | None,
) -> Tensor:
    """One PGD run from a (random) start; returns a detached point in the ball and [0, 1]."""
    adv = x0.clone()
    if threat.random_start:
        adv = _project(x0 + _random_start(x0, threat, generator), x0, threat)
    for _ in range(threat.steps):
        adv.requires_grad_(True)
        loss = objective(fwd(adv), y)
        _check_loss(loss, x0.shape[0])
        (grad,) = torch.autograd.grad(loss.sum(), adv)
        with torch.no_grad():
            if threat.norm == "linf":
                adv = adv.detach() + threat.step_size * grad.sign()
            else:
                adv = adv.detach() + threat.step_size * grad / _l2(grad).clamp_min(1e-12)
            adv = _project(adv, x0, threat)
    return adv.detach()


def _project(adv: Tensor, x0: Tensor, threat: ThreatModel) -> Tensor:
    """Onto the eps-ball around ``x0``, then into [0, 1] (which stays in the ball)."""
    if threat.norm == "linf":
        adv = torch.minimum(torch.maximum(adv, x0 - threat.eps), x0 + threat.eps)
    else:
        delta = adv - x0
        norm = _l2(delta)
        delta = delta * torch.where(norm > threat.eps, threat.eps / norm.clamp_min(1e-12), 1.0)
        adv = x0 + delta
    return adv.clamp(0.0, 1.0)


def _random_start(x0: Tensor, threat: ThreatModel, generator: torch.Generator | None) -> Tensor:
    device = x0.device if generator is None else generator.device
    shape, dtype = x0.shape, torch.float32
    if threat.norm == "linf":
        u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
        delta = (2 * u - 1) * threat.eps
    else:
        direction = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        radius = torch.rand(
            (shape[0],) + (1,) * (len(shape) - 1), generator=generator, device=device, dtype=dtype
        )
        delta = direction / _l2(direction).clamp_min(1e-12) * radius * threat.eps
    return delta.to(device=x0.device, dtype=x0.dtype)


def _l2(t: Tensor) -> Tensor:
    """Per-example L2 norm, shaped to broadcast against ``t``: (B, 1, ..., 1)."""
    return t.flatten(1).norm(dim=1).view((-1,) + (1,) * (t.dim() - 1))


def fgsm_threat(threat: ThreatModel) -> ThreatModel:
    """The one-step attack of ``threat``'s ball: one step of size eps from ``x``, no restart."""
    return threat.with_(steps=1, step_size=threat.eps, random_start=False, restarts=1)


def fgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    objective: Objective,
    *,
    forward: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015; for L2 the fast gradient method).

    ``perturb`` with :func:`fgsm_threat`: one step of size ``threat.eps`` from ``x``
    (no random start), clipped to [0, 1]. Only ``norm``, ``eps`` and ``bn_mode`` of
    ``threat`` are used.

    Shape:
        x: (B, ...); y: (B,); result: (B, ...).
    """
    return perturb(model, x, y, fgsm_threat(threat), objective, forward=forward)
