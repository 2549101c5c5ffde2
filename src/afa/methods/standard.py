"""Standard training: cross-entropy on clean inputs."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from afa.methods.base import Batch, Method, StepOutput, accuracy_metric
from afa.methods.registry import register_method


@register_method("standard")
class Standard(Method):
    """Empirical risk minimisation with (optionally label-smoothed) cross-entropy.

    The threat model is accepted for a uniform constructor and used only by validation.
    """

    clean_training = True

    @dataclass(frozen=True)
    class Config:
        label_smoothing: float = 0.0

    def forward(self, batch: Batch) -> StepOutput:
        logits = self.model(batch.view())
        loss = F.cross_entropy(logits.float(), batch.y, label_smoothing=self.config.label_smoothing)
        return StepOutput(loss, {"loss": loss.detach(), "acc": accuracy_metric(logits, batch.y)})
