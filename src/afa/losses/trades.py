"""The TRADES outer loss (Zhang et al., "Theoretically Principled Trade-off between
Robustness and Accuracy", ICML 2019)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def trades_terms(logits_clean: Tensor, logits_adv: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """The two terms of the TRADES objective, in float32.

    * ``ce``: the mean cross-entropy of the clean logits, ``CE(f(x), y)``;
    * ``kl``: ``KL(softmax(f(x)) || softmax(f(x')))`` summed over classes and averaged
      over the batch ("batchmean", as the official code's ``KLDivLoss(size_average=False)
      / batch_size``). Gradients flow into both arguments, as in the official code.

    Shape:
        logits_clean, logits_adv: (B, K); y: (B,); results: scalars.
    """
    clean = logits_clean.float()
    log_p = F.log_softmax(clean, dim=1)
    log_q = F.log_softmax(logits_adv.float(), dim=1)
    ce = F.cross_entropy(clean, y)
    kl = F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)
    return ce, kl


def trades_loss(logits_clean: Tensor, logits_adv: Tensor, y: Tensor, beta: float) -> Tensor:
    """``CE(f(x), y) + beta * KL(f(x) || f(x'))`` (Zhang et al. 2019, eq. 5), float32.

    Args:
        logits_clean: f(x) on the clean inputs.
        logits_adv: f(x') on the TRADES adversaries.
        y: labels.
        beta: weight of the robustness (KL) term; 6.0 in the paper's CIFAR-10 runs.

    Shape:
        logits_clean, logits_adv: (B, K); y: (B,); result: scalar.
    """
    ce, kl = trades_terms(logits_clean, logits_adv, y)
    return ce + beta * kl


__all__ = ["trades_loss", "trades_terms"]
