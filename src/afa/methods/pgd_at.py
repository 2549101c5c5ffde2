"""PGD adversarial training (Madry et al., "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018)."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from afa.attacks import cross_entropy, perturb
from afa.errors import ConfigError
from afa.methods.base import Batch, Method, StepOutput, accuracy_metric
from afa.methods.registry import register_method


@register_method("pgd-at")
class PGDAT(Method):
    """Minimise cross-entropy on PGD adversaries crafted with the run's threat model.

    ``min_θ E max_{‖δ‖≤ε} CE(f_θ(x + δ), y)``; the inner max is PGD on CE.
    """

    @dataclass(frozen=True)
    class Config:
        label_smoothing: float = 0.0

        def __post_init__(self) -> None:
            if not 0 <= self.label_smoothing < 1:  # 1 would leave no weight on the label
                raise ConfigError(
                    "method.label_smoothing: expected a value in [0, 1), "
                    f"got {self.label_smoothing!r}"
                )

    def forward(self, batch: Batch) -> StepOutput:
        x = batch.view()
        x_adv = perturb(self.model, x, batch.y, self.threat, cross_entropy)
        logits = self.model(x_adv)
        loss = F.cross_entropy(logits.float(), batch.y, label_smoothing=self.config.label_smoothing)
        return StepOutput(
            loss, {"loss": loss.detach(), "adv_acc": accuracy_metric(logits, batch.y)}
        )
