"""TRADES (Zhang et al., "Theoretically Principled Trade-off between Robustness and
Accuracy", ICML 2019)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from afa.attacks import attack_mode, perturb, trades_kl
from afa.attacks.threat import ThreatModel
from afa.losses.trades import trades_loss
from afa.methods.base import (
    Batch,
    Method,
    StepOutput,
    check_non_negative,
    clean_adv_metrics,
)
from afa.methods.registry import register_method
from afa.models.base import Classifier


@register_method("trades")
class TRADES(Method):
    """CE(f(x), y) + β · KL(f(x) ‖ f(x̃)), x̃ maximising the KL inside the ball.

    β = 6 is the value of Zhang et al. for CIFAR-10 (their Table 5 / official code).
    """

    @dataclass(frozen=True)
    class Config:
        beta: float = 6.0

        def __post_init__(self) -> None:
            check_non_negative(self, "beta")

    def forward(self, batch: Batch) -> StepOutput:
        x = batch.view()
        x_adv = trades_adversary(self.model, x, batch.y, self.threat)
        logits_clean = self.model(x)
        logits_adv = self.model(x_adv)
        loss = trades_loss(logits_clean, logits_adv, batch.y, self.config.beta)
        return StepOutput(loss, clean_adv_metrics(loss, logits_clean, logits_adv, batch.y))


def trades_adversary(model: Classifier, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
    """The TRADES inner maximisation: PGD on KL(f(x) ‖ f(x')) from the clean logits.

    Clean logits are taken in the attack's BN mode, like the attack itself.
    """
    with torch.no_grad(), attack_mode(model, threat.bn_mode):
        clean = model(x)
    return perturb(model, x, y, threat, trades_kl(clean))
