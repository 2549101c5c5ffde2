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


@register_method("mart")
class MART(Method):
    """Boosted CE on PGD adversaries + β · KL weighted by (1 − p_y(x)) on clean inputs.

    β = 6 as in the authors' official training script.
    """

    @dataclass(frozen=True)
    class Config:
        beta: float = 6.0

        def __post_init__(self) -> None:
            check_non_negative(self, "beta")

    def forward(self, batch: Batch) -> StepOutput:
        x = batch.view()
        x_adv = perturb(self.model, x, batch.y, self.threat, cross_entropy)
        logits_clean = self.model(x)
        logits_adv = self.model(x_adv)
        loss = mart_loss(logits_clean, logits_adv, batch.y, self.config.beta)
        return StepOutput(loss, clean_adv_metrics(loss, logits_clean, logits_adv, batch.y))
