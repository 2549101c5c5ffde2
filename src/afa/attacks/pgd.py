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
    init: Tensor | None = None,
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
    the highest objective value is kept (one extra forward per restart). That is the point
    to train on, not a worst case: robust accuracy counts an example broken when any
    iterate of any restart is misclassified (:func:`perturb_worst_case`).

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
        init: a start point instead of the (random) start, e.g. another attack's result;
            projected onto the ball first. Every restart starts there (so use it with one).

    Returns:
        Detached adversarial inputs, same shape and dtype as ``x``. With
        ``steps == 0`` or ``eps == 0``: a copy of ``x`` (``init`` projected, if given).

    Shape:
        x: (B, ...) ; y: (B,) ; result: (B, ...).

    Example:
        >>> threat = ThreatModel(norm="linf", eps=8 / 255, step_size=2 / 255, steps=10)
        >>> x_adv = perturb(model, x, y, threat, cross_entropy)
    """
    x0 = x.detach()
    if threat.steps == 0 or threat.eps == 0 or x0.shape[0] == 0:
        return x0.clone() if init is None else _project(init.detach(), x0, threat).to(x.dtype)
    fwd = model if forward is None else forward

    with attack_mode(model, threat.bn_mode), torch.enable_grad():
        if threat.restarts == 1:
            return _run(fwd, x0, y, threat, objective, generator, init).to(x.dtype)
        best = x0.clone()
        best_loss = torch.full((x0.shape[0],), float("-inf"), device=x0.device)
        for _ in range(threat.restarts):
            adv = _run(fwd, x0, y, threat, objective, generator, init)
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
    init: Tensor | None = None,
) -> Tensor:
    """One PGD run from a (random) start; returns a detached point in the ball and [0, 1]."""
    adv = _start(x0, threat, generator, init)
    for _ in range(threat.steps):
        adv.requires_grad_(True)
        loss = objective(fwd(adv), y)
        _check_loss(loss, x0.shape[0])
        (grad,) = torch.autograd.grad(loss.sum(), adv)
        adv = _step(adv, grad, x0, threat)
    return adv.detach()


def _start(
    x0: Tensor,
    threat: ThreatModel,
    generator: torch.Generator | None,
    init: Tensor | None = None,
) -> Tensor:
    """The first iterate: ``init`` projected, else a random start, else ``x0`` (detached)."""
    if init is not None:
        return _project(init.detach().to(x0.dtype), x0, threat)
    if threat.random_start:
        return _project(x0 + _random_start(x0, threat, generator), x0, threat)
    return x0.clone()


@torch.no_grad()
def _step(adv: Tensor, grad: Tensor, x0: Tensor, threat: ThreatModel) -> Tensor:
    """One ascent step along ``grad`` (sign for Linf, L2-normalised for L2), projected."""
    if threat.norm == "linf":
        adv = adv.detach() + threat.step_size * grad.sign()
    else:
        adv = adv.detach() + threat.step_size * grad / _l2(grad).clamp_min(1e-12)
    return _project(adv, x0, threat)


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


def perturb_worst_case(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    objective: Objective,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """PGD for evaluation: per example, the first iterate of any restart that is misclassified.

    :func:`perturb` keeps, per example, the restart whose final point has the highest
    objective: the strongest point to train on, but not a worst case. A restart with a
    lower loss may end misclassified while the highest-loss one does not, and an iterate
    misclassified before the last step may be stepped back across the boundary. A robust
    accuracy counts an example as broken as soon as any point found in the ball is
    misclassified (as AutoAttack does, Croce & Hein 2020), so here every iterate of every
    restart is checked (the start, each step, the final point): the first one with
    ``argmax model(x_adv) != y`` is returned and that example is attacked no further, by
    the remaining steps or restarts. An example no iterate misclassifies gets, as from
    :func:`perturb`, the final point with the highest objective over its restarts. So
    counting ``model(result).argmax(1) == y`` is the worst case over everything the
    attack tried.

    The iterates are :func:`perturb`'s (same start, step and projection; the first
    restart draws the same random starts from the same generator state); each later
    restart draws random starts only for the examples still correctly classified. Without
    a random start every restart would repeat the first, so one is run. A point whose
    logits are not finite counts as misclassified and is returned as it is, so the
    caller's count meets the non-finite logits. Examples are attacked independently, which
    holds for a model in eval mode (BN uses its running statistics).

    Misclassification is judged on the logits of the forward that also gives the
    gradient, so it costs one extra forward per restart (the final point); the model is
    in eval mode throughout (``threat.bn_mode`` must be ``"eval"``: the evaluated
    function is the model at inference). Gradients, parameter ``.grad`` and modes are
    handled as in :func:`perturb`.

    Args:
        model: the classifier; ``model(x)`` returns logits.
        x: clean inputs in [0, 1].
        y: int labels.
        threat: norm, eps, step_size, steps, random_start, restarts (``bn_mode="eval"``).
        objective: ``(logits, y) -> (B,)`` loss to maximise (``cross_entropy``,
            ``cw_margin``).
        generator: RNG for the random starts (reproducible attacks).

    Returns:
        Detached adversarial inputs, same shape and dtype as ``x``; with ``steps == 0``
        or ``eps == 0``, a copy of ``x``.

    Raises:
        ValueError: ``threat.bn_mode`` is not ``"eval"``.

    Shape:
        x: (B, ...); y: (B,); result: (B, ...).
    """
    if threat.bn_mode != "eval":
        raise ValueError(
            f"perturb_worst_case: threat.bn_mode must be 'eval', got {threat.bn_mode!r}"
        )
    x0 = x.detach()
    if threat.steps == 0 or threat.eps == 0 or x0.shape[0] == 0:
        return x0.clone()
    n = x0.shape[0]
    best = x0.clone()
    best_loss = torch.full((n,), float("-inf"), device=x0.device)
    broken = torch.zeros(n, dtype=torch.bool, device=x0.device)
    with attack_mode(model, "eval"), torch.enable_grad():
        for _ in range(threat.restarts if threat.random_start else 1):
            live = (~broken).nonzero().squeeze(1)
            if live.numel() == 0:
                break
            adv, wrong, loss = _run_until_wrong(
                model, x0[live], y[live], threat, objective, generator
            )
            # strict: among unbroken restarts, ties keep the earlier one (as perturb)
            keep = wrong | (loss > best_loss[live])
            best[live[keep]] = adv[keep]
            best_loss[live] = torch.where(keep, loss, best_loss[live])
            broken[live] = wrong
    return best.to(x.dtype)


def _run_until_wrong(
    model: nn.Module,
    x0: Tensor,
    y: Tensor,
    threat: ThreatModel,
    objective: Objective,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One PGD run that stops, per example, at its first misclassified iterate.

    Only the examples not yet misclassified are forwarded at each step.

    Returns:
        ``(adv, wrong, loss)``: where each example stopped (its first misclassified iterate,
        else the final one), whether that point is misclassified (or has non-finite
        logits), and the objective at the final iterate (``-inf`` where it stopped early).
    """
    n = x0.shape[0]
    adv = _start(x0, threat, generator)
    wrong = torch.zeros(n, dtype=torch.bool, device=x0.device)
    loss_final = torch.full((n,), float("-inf"), device=x0.device)
    active = torch.arange(n, device=x0.device)
    for step in range(threat.steps + 1):
        last = step == threat.steps  # the final point: judged, not stepped from
        a = adv[active].requires_grad_(not last)
        with torch.set_grad_enabled(not last):
            logits = model(a)
            loss = objective(logits, y[active])
        _check_loss(loss, active.shape[0])
        with torch.no_grad():
            hit = (logits.argmax(dim=1) != y[active]) | ~torch.isfinite(logits).all(dim=1)
        wrong[active[hit]] = True
        if last:
            loss_final[active] = loss.detach().float()
            break
        (grad,) = torch.autograd.grad(loss.sum(), a)
        go = ~hit
        active = active[go]
        if active.numel() == 0:
            break
        adv[active] = _step(a[go], grad[go], x0[active], threat)
    return adv, wrong, loss_final


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
