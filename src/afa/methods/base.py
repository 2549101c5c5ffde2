"""The method contract: a method computes a training loss from one batch.

A method owns its attack(s) and its loss, never the loop, the optimizer or the
schedule. ``afa.training.loop.fit`` is the only training loop; it calls
``method(batch)`` under autocast, back-propagates ``StepOutput.loss`` and steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args, get_origin, get_type_hints

from torch import Tensor, nn

from afa.attacks.threat import ThreatModel
from afa.errors import ConfigError
from afa.models.base import Classifier


@dataclass
class Batch:
    """One training batch on its device.

    ``x`` is the un-augmented batch; ``view()`` draws one random augmented view
    (multi-view methods call it several times). ``augment`` is the identity when the
    dataset's augmentation is off.

    Shape:
        x: (B, C, H, W) float in [0, 1]; y: (B,) int64.
    """

    x: Tensor
    y: Tensor
    augment: Callable[[Tensor], Tensor] = field(default=lambda t: t)

    def view(self) -> Tensor:
        return self.augment(self.x)

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class StepOutput:
    """The loss to minimise and detached scalar metrics to log (averaged per epoch)."""

    loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)


class Method(nn.Module):
    """Base class: holds the classifier (and any extra trainable modules).

    Subclasses set ``name``, declare their options as a nested frozen ``Config``
    dataclass and implement ``forward``; every method is built as
    ``Method(model, threat, config)`` with the run's one shared threat model. Extra
    modules (a projection head) are sub-modules, so they are checkpointed with the method.
    """

    name: ClassVar[str] = "method"
    #: True for encoder pre-training methods (afa, supcon): the planner adds a classifier stage.
    pretraining: ClassVar[bool] = False

    def __init__(
        self, model: Classifier, threat: ThreatModel | None = None, config: Any = None
    ) -> None:
        super().__init__()
        self.model = model
        self.threat = threat
        # A method's options are its nested ``Config`` dataclass (defaults when omitted).
        if config is None and hasattr(type(self), "Config"):
            config = type(self).Config()
        self.config = config

    def forward(self, batch: Batch) -> StepOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimizer updates (default: all of the method's)."""
        return [p for p in self.parameters() if p.requires_grad]

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Hook for per-epoch schedules (e.g. an eps warm-up); ``epoch`` counts from 0."""

    def epoch_metrics(self) -> dict[str, float]:
        """Extra per-epoch metrics computed by the method (e.g. collapse indicators)."""
        return {}


def accuracy_metric(logits: Tensor, y: Tensor) -> Tensor:
    """Fraction of correct predictions in the batch, detached (the loop weights by B)."""
    return (logits.detach().argmax(1) == y).float().mean()


def check_choices(config: Any, prefix: str = "method") -> None:
    """Raise a :class:`ConfigError` naming the first ``Literal`` field holding another value.

    ``afa.config.from_dict`` checks choices when a config is parsed; this covers a method
    config built directly in Python, for every ``Literal`` field at once.
    """
    for name, tp in get_type_hints(type(config)).items():
        if get_origin(tp) is Literal:
            value = getattr(config, name)
            if value not in get_args(tp):
                allowed = " or ".join(repr(a) for a in get_args(tp))
                raise ConfigError(f"{prefix}.{name}: expected {allowed}, got {value!r}")


def check_non_negative(config: Any, *names: str, prefix: str = "method") -> None:
    """Raise a :class:`ConfigError` naming the first of ``names`` that is below 0 (or NaN)."""
    for name in names:
        value = getattr(config, name)
        if not float(value) >= 0:
            raise ConfigError(f"{prefix}.{name}: expected >= 0, got {value!r}")


__all__ = [
    "Batch",
    "Method",
    "StepOutput",
    "accuracy_metric",
    "check_choices",
    "check_non_negative",
]
