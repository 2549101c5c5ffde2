"""Attack objectives: per-example losses that an attack *maximises*.

An objective is a pure tensor function ``(output, y) -> loss`` with one value per
example. ``output`` is whatever the attacked forward returns (logits for the
classifier attacks; AFA passes a feature map and its own objective). Every
objective computes in float32 (``output.float()``), so crafting under bf16/fp16
autocast sees the same loss surface as float32 crafting, up to the forward's
own rounding.

Shape:
    output: (B, K) logits; y: (B,) int64 labels; result: (B,) float32.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

Objective = Callable[[Tensor, Tensor], Tensor]
"""``(output, y) -> (B,)`` per-example loss to be maximised, float32."""


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Per-example cross-entropy ``-log softmax(z)_y`` (the PGD objective of Madry et al. 2018).

    Shape:
        logits: (B, K); y: (B,); result: (B,) float32.
    """
    return F.cross_entropy(logits.float(), y, reduction="none")


def cw_margin(logits: Tensor, y: Tensor) -> Tensor:
    """Carlini-Wagner margin ``max_{j != y} z_j - z_y`` (Carlini & Wagner 2017, the f_6 loss).

    Positive exactly when the example is misclassified. PGD on this objective is the
    "CW-Linf" attack of the adversarial-training literature (TRADES, MART, AFA report it
    as "CW∞"); we name it "PGD (CW margin)" because "CW" alone means the L2
    optimisation attack. No confidence clamp (kappa = infinity): the margin keeps
    growing past the decision boundary, which only helps restarts pick a winner.

    Shape:
        logits: (B, K) with K >= 2; y: (B,); result: (B,) float32.
    """
    z = logits.float()
    true = z.gather(1, y[:, None]).squeeze(1)
    is_true = F.one_hot(y, z.shape[1]).bool()
    other = z.masked_fill(is_true, float("-inf")).amax(dim=1)
    return other - true


def trades_kl(clean_logits: Tensor) -> Objective:
    """The TRADES inner maximisation ``KL(p(x) || p(x'))`` (Zhang et al. 2019, eq. 5).

    Returns an objective that ignores ``y`` and measures, per example, the KL divergence
    from the clean prediction ``softmax(clean_logits)`` (detached: a constant while
    crafting) to the adversarial prediction ``softmax(output)``.

    Shape:
        clean_logits: (B, K); the objective's output: (B, K); result: (B,) float32.
    """
    log_p = F.log_softmax(clean_logits.detach().float(), dim=1)

    def objective(output: Tensor, y: Tensor) -> Tensor:
        log_q = F.log_softmax(output.float(), dim=1)
        return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(dim=1)

    return objective


def _check_loss(loss: Tensor, batch: int) -> None:
    """An objective must return one value per example (a scalar would attack the batch mean)."""
    if loss.shape != (batch,):
        raise ValueError(
            f"objective must return a per-example loss of shape ({batch},), got {tuple(loss.shape)}"
        )


__all__ = ["Objective", "cross_entropy", "cw_margin", "trades_kl"]
