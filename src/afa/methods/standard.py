"""Standard training: cross-entropy on clean inputs."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from afa.errors import ConfigError
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

        def __post_init__(self) -> None:
            if not 0 <= self.label_smoothing < 1:  # 1 would leave no weight on the label
                raise ConfigError(
                    "method.label_smoothing: expected a value in [0, 1), "
                    f"got {self.label_smoothing!r}"
                )

    def forward(self, batch: Batch) -> StepOutput:
        logits = self.model(batch.view())
        loss = F.cross_entropy(logits.float(), batch.y, label_smoothing=self.config.label_smoothing)
        return StepOutput(loss, {"loss": loss.detach(), "acc": accuracy_metric(logits, batch.y)})
