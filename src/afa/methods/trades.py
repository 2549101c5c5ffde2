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
from afa.models.dual_bn import on_branch


@register_method("trades")
class TRADES(Method):
    """CE(f(x), y) + β · KL(f(x) ‖ f(x̃)), x̃ maximising the KL inside the ball.

    β = 6 is the value of Zhang et al. for CIFAR-10 (their Table 5 / official code).
    With dual batch norm (``model.dual_bn``) and ``split_bn`` (the default) the clean
    forwards use the ``clean`` BN branch and the attack and the adversarial forward the
    ``adv`` one (AdvProp's auxiliary BN, Xie et al. 2020); the stage-2 fine-tuning of a
    pre-trained dual-BN encoder (AFF) sets ``split_bn`` false, so that it trains the one
    branch ``model.bn_branch`` names, as ACL and the robust self-supervised benchmark do.
    """

    @dataclass(frozen=True)
    class Config:
        beta: float = 6.0
        split_bn: bool = True

        def __post_init__(self) -> None:
            check_non_negative(self, "beta")

    def splits_bn(self) -> bool:
        return self.config.split_bn

    def forward(self, batch: Batch) -> StepOutput:
        x = batch.view()
        split = self.config.split_bn
        x_adv = trades_adversary(self.model, x, batch.y, self.threat, split_bn=split)
        logits_clean = on_branch(self.model, "clean", self.model, enabled=split)(x)
        logits_adv = on_branch(self.model, "adv", self.model, enabled=split)(x_adv)
        loss = trades_loss(logits_clean, logits_adv, batch.y, self.config.beta)
        return StepOutput(loss, clean_adv_metrics(loss, logits_clean, logits_adv, batch.y))


def trades_adversary(
    model: Classifier, x: Tensor, y: Tensor, threat: ThreatModel, *, split_bn: bool = False
) -> Tensor:
    """The TRADES inner maximisation: PGD on KL(f(x) ‖ f(x')) from the clean logits.

    Clean logits are taken in the attack's BN mode, like the attack itself; with
    ``split_bn`` on the ``clean`` branch, and the attack runs on ``adv`` (no-ops for a
    model without dual BN).
    """
    with torch.no_grad(), attack_mode(model, threat.bn_mode):
        clean = on_branch(model, "clean", model, enabled=split_bn)(x)
    forward = on_branch(model, "adv", model, enabled=split_bn)
    return perturb(model, x, y, threat, trades_kl(clean), forward=forward)
