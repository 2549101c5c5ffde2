"""The MART outer loss (Wang et al., "Improving Adversarial Robustness Requires
Revisiting Misclassified Examples", ICLR 2020, eq. 7 and the authors' code)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def mart_terms(logits_clean: Tensor, logits_adv: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """The two terms of MART, in float32.

    * ``bce``: the boosted cross-entropy on the adversarial logits,
      ``mean_i [ -log p'_y - log(1 - max_{k != y} p'_k) ]`` with ``p' = softmax(f(x'))``.
      The runner-up class k is picked without gradient (argmax), as in the authors' code.
      ``log(1 - p'_k)`` is computed exactly as ``logsumexp_{j != k} f_j - logsumexp_j f_j``
      instead of the code's ``log(1.0001 - p'_k + 1e-12)`` clamp.
    * ``kl``: ``mean_i [ KL(p(x_i) || p'(x_i)) * (1 - p_y(x_i)) ]``, the KL summed over
      classes, weighted by the clean probability of the wrong answer. The weight is not
      detached (as in the authors' code), so gradient flows through it too.

    Shape:
        logits_clean, logits_adv: (B, K) with K >= 2; y: (B,); results: scalars.
    """
    clean = logits_clean.float()
    adv = logits_adv.float()
    is_true = F.one_hot(y, adv.shape[1]).bool()
    with torch.no_grad():
        runner_up = adv.masked_fill(is_true, float("-inf")).argmax(dim=1)
    is_runner_up = F.one_hot(runner_up, adv.shape[1]).bool()
    # log(1 - p'_k) = log sum_{j != k} exp(f_j) - log sum_j exp(f_j)
    log_not_k = torch.logsumexp(adv.masked_fill(is_runner_up, float("-inf")), dim=1)
    log_one_minus = log_not_k - torch.logsumexp(adv, dim=1)
    bce = F.cross_entropy(adv, y, reduction="none") - log_one_minus

    log_p = F.log_softmax(clean, dim=1)
    log_q = F.log_softmax(adv, dim=1)
    kl = F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(dim=1)
    p_true = log_p.gather(1, y[:, None]).squeeze(1).exp()
    return bce.mean(), (kl * (1.0 - p_true)).mean()


def mart_loss(logits_clean: Tensor, logits_adv: Tensor, y: Tensor, beta: float) -> Tensor:
    """``BCE(f(x'), y) + beta * mean[KL(p(x) || p(x')) (1 - p_y(x))]`` (Wang et al. 2020).

    Args:
        logits_clean: f(x) on the clean inputs.
        logits_adv: f(x') on the PGD (CE) adversaries.
        y: labels.
        beta: weight of the misclassification-aware KL term (6.0 in the authors' code).

    Shape:
        logits_clean, logits_adv: (B, K); y: (B,); result: scalar.
    """
    bce, kl = mart_terms(logits_clean, logits_adv, y)
    return bce + beta * kl


__all__ = ["mart_loss", "mart_terms"]
