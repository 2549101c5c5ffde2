"""MART (Wang et al., "Improving Adversarial Robustness Requires Revisiting Misclassified
Examples", ICLR 2020)."""

from __future__ import annotations

from dataclasses import dataclass

from afa.attacks import cross_entropy, perturb
from afa.losses.mart import mart_loss
from afa.methods.base import (
    Batch,
    Method,
    StepOutput,
    check_non_negative,
    clean_adv_metrics,
)
from afa.methods.registry import register_method
from afa.models.dual_bn import on_branch


@register_method("mart")
class MART(Method):
    """Boosted CE on PGD adversaries + β · KL weighted by (1 − p_y(x)) on clean inputs.

    β = 6 as in the authors' official training script. Dual batch norm routes as in
    :class:`~afa.methods.trades.TRADES` (``split_bn``): clean forwards on the ``clean``
    branch, the attack and the adversarial forward on ``adv``.
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
        forward_adv = on_branch(self.model, "adv", self.model, enabled=split)
        x_adv = perturb(self.model, x, batch.y, self.threat, cross_entropy, forward=forward_adv)
        logits_clean = on_branch(self.model, "clean", self.model, enabled=split)(x)
        logits_adv = forward_adv(x_adv)
        loss = mart_loss(logits_clean, logits_adv, batch.y, self.config.beta)
        return StepOutput(loss, clean_adv_metrics(loss, logits_clean, logits_adv, batch.y))
