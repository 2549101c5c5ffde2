"""Empirical local Lipschitzness (Yang et al. 2020, "A Closer Look at Accuracy vs.
Robustness", NeurIPS, Section 5).

    L(f, x) = max_{x' in B_inf(x, eps)} ||f(x) - f(x')||_1 / ||x - x'||_inf

averaged over test points; smaller means a smoother model around the data. The max is
searched by the project's one PGD (:func:`afa.attacks.perturb`) on the ratio itself: the
attacked forward maps ``x'`` to the per-example ratio and the objective returns it.

Choices, and why:

* ``f`` is the model's **logits** by default, as in Yang et al.'s code
  (``yangarbiter/robust-local-lipschitz``, ``lolip/utils.py``: ``local_lip`` differences
  ``model(x)``, the network's raw outputs). ``output="softmax"`` is available; its values
  are bounded by ``2 / ||x - x'||_inf`` and not comparable with the logit figure.
* A **random start is forced** (``threat.with_(random_start=True)``): at ``x' = x`` the ratio
  is 0/0 and its gradient undefined. Yang et al. start from ``x + 0.001 N(0, I)``; we use the
  threat model's uniform start in the ball, then clip to [0, 1].
* The search uses the run's threat model (``eps``, ``step_size``, ``steps``, ``restarts``,
  ``bn_mode``), so the ball is the one the model was trained and evaluated on (Yang et al.
  use 10 steps of 0.003).
* The estimate is the largest ratio met anywhere on PGD's path (every iterate, every
  restart), not only at its final point: at a vertex of the ball the L∞ denominator's
  subgradient makes sign-PGD oscillate, so the final iterate can be worse than an earlier
  one. (Yang et al. keep the final point.) Any visited point gives a lower bound of the
  true max, so the best one is the tightest (path values are kept only with
  ``bn_mode="eval"``; under ``"train"`` batch-norm statistics would make them incomparable). For the same reason the L∞ search also
  evaluates the vertex ``x + eps sign(x' - x)`` of PGD's final point (where a linear ``f``
  attains its max; one extra forward per example).
* The denominator is clamped at 1e-12 (a start clipped back onto ``x`` by the [0, 1] box
  in every coordinate would otherwise divide by zero).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from afa.attacks import ThreatModel, perturb

__all__ = ["lipschitz_ratio", "local_lipschitz", "summarize_lipschitz"]

Output = Literal["logits", "softmax"]


def lipschitz_ratio(fx: Tensor, fx_adv: Tensor, x: Tensor, x_adv: Tensor) -> Tensor:
    """``||f(x) - f(x')||_1 / ||x - x'||_inf`` per example.

    Shape:
        fx, fx_adv: (B, K); x, x_adv: (B, ...); result: (B,) float32.
    """
    top = (fx.float() - fx_adv.float()).flatten(1).abs().sum(dim=1)
    bottom = (x - x_adv).flatten(1).abs().amax(dim=1).float().clamp_min(1e-12)
    return top / bottom


def local_lipschitz(
    model: nn.Module,
    x: Tensor,
    threat: ThreatModel,
    *,
    output: Output = "logits",
    forward: Callable[[Tensor], Tensor] | None = None,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Per-example empirical local Lipschitz constant of ``f`` over the threat model's ball.

    Args:
        model: the network: in eval mode for ``f(x)`` and the reported ratios, in
            ``threat.bn_mode`` while PGD searches; its modes are restored on return.
        x: inputs in [0, 1], on the model's device.
        threat: the ball (norm ``linf`` as in Yang et al.; ``l2`` works too with the L2
            search but the denominator stays the L∞ norm) and the PGD schedule.
        output: ``"logits"`` (Yang et al.) or ``"softmax"``.
        forward: the function ``f`` (default ``model``), e.g. a feature map.
        batch_size: examples per PGD batch.
        generator: RNG of the random start.

    Returns:
        (N,) float32 on ``x``'s device.

    Shape:
        x: (N, C, H, W); result: (N,).
    """
    fwd = model if forward is None else forward

    def f(inp: Tensor) -> Tensor:
        out = fwd(inp)
        return out.float().softmax(dim=1) if output == "softmax" else out

    was_training = model.training
    model.eval()  # f(x) and the final ratios as at inference; PGD itself follows threat.bn_mode
    try:
        search = threat.with_(random_start=True)
        ratios = []
        for s in range(0, x.shape[0], batch_size):
            xb = x[s : s + batch_size]
            with torch.no_grad():
                fx = f(xb).detach()
            seen = torch.zeros(xb.shape[0], device=xb.device)

            def ratio_at(
                xa: Tensor, xb: Tensor = xb, fx: Tensor = fx, seen: Tensor = seen
            ) -> Tensor:
                # PGD evaluates every iterate here: keep the largest ratio met on the path
                # (only when PGD runs the model as at inference, so the values are comparable).
                r = lipschitz_ratio(fx, f(xa), xb, xa)
                if threat.bn_mode == "eval":
                    torch.maximum(seen, r.detach(), out=seen)
                return r

            x_adv = perturb(
                model,
                xb,
                fx,
                search,
                lambda ratio, _fx: ratio,
                forward=ratio_at,
                generator=generator,
            )
            with torch.no_grad():
                best = torch.maximum(seen, lipschitz_ratio(fx, f(x_adv), xb, x_adv))
                if threat.norm == "linf":
                    # The vertex of the ball in the direction PGD ended in (see the module notes).
                    x_vertex = (xb + threat.eps * (x_adv - xb).sign()).clamp(0.0, 1.0)
                    best = torch.maximum(best, lipschitz_ratio(fx, f(x_vertex), xb, x_vertex))
                ratios.append(best)
    finally:
        model.train(was_training)
    if not ratios:
        return torch.zeros(0, device=x.device)
    return torch.cat(ratios)


def summarize_lipschitz(ratios: Tensor, threat: ThreatModel, output: Output) -> dict[str, Any]:
    """JSON-ready summary: mean (the figure of Yang et al.), spread, and how it was searched."""
    r = ratios.double().cpu()
    n = int(r.numel())
    return {
        "mean": float(r.mean()) if n else None,
        "std": float(r.std()) if n > 1 else None,
        "median": float(r.median()) if n else None,
        "max": float(r.max()) if n else None,
        "n": n,
        "output": output,
        "numerator": "L1 norm of the output difference",
        "denominator": "Linf norm of the input difference",
        "eps": threat.eps,
        "search": f"PGD on the ratio: {threat.with_(random_start=True).describe()}, random start",
    }
