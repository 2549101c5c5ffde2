"""The method contract: a method computes a training loss from one batch.

A method owns its attack(s) and its loss, never the loop, the optimizer or the
schedule. ``afa.training.loop.fit`` is the only training loop; it calls
``method(batch)`` under autocast, back-propagates ``StepOutput.loss`` and steps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args, get_origin, get_type_hints

from torch import Tensor, nn

from afa.attacks.threat import ThreatModel
from afa.errors import ConfigError
from afa.methods.collapse import collapse_reasons
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


#: Epochs of a stage before its features are judged (``epoch`` from 0): a stage starts at
#: its initialisation, which the indicator flags by design.
COLLAPSE_GRACE_EPOCHS = 4


class Method(nn.Module):
    """Base class: holds the classifier (and any extra trainable modules).

    Subclasses are registered with ``@register_method("name")``
    (:mod:`afa.methods.registry`), declare their options as a nested frozen ``Config``
    dataclass and implement ``forward``; every method is built as
    ``Method(model, threat, config)`` with the run's one shared threat model. Extra
    modules (a projection head) are sub-modules, so they are checkpointed with the method.

    A method also carries the traits the planner and the loop ask it for, so that neither
    keeps a list of method names: whether it pre-trains (the planner then adds the
    classifier stage the run's ``classifier`` section names), whether it trains on clean
    inputs only, which validation metric selects ``best.pt`` (:meth:`selection_metric`)
    and what to advise when its features collapse (:attr:`collapse_remedies`).
    """

    name: ClassVar[str] = "method"
    #: True for encoder pre-training methods (afa, supcon, acl, dynacl): the planner adds a
    #: classifier stage.
    pretraining: ClassVar[bool] = False
    #: True when the step crafts no adversary (standard, supcon): its epochs are not counted
    #: in the adversarial budget, and clean accuracy selects ``best.pt``.
    clean_training: ClassVar[bool] = False
    #: Options (dotted config keys, each one of this method's own) the collapse warning
    #: suggests; empty: the warning names none.
    collapse_remedies: ClassVar[tuple[str, ...]] = ()
    #: Where the collapse warning sends the reader (a documentation section about this method's
    #: collapse), or None.
    collapse_reference: ClassVar[str | None] = None

    def __init__(self, model: Classifier, threat: ThreatModel, config: Any = None) -> None:
        super().__init__()
        self.model = model
        #: the run's threat model: every attack of the method crafts within it
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

    def trains_clean(self) -> bool:
        """Whether this instance's step crafts no adversary (default: ``clean_training``)."""
        return self.clean_training

    def splits_bn(self) -> bool:
        """Whether the step routes clean inputs through the ``clean`` BN branch and the
        attack and adversarial inputs through ``adv`` (``model.dual_bn``,
        :mod:`afa.models.dual_bn`). False (the default): every forward uses the model's
        default branch, so a dual-BN model would train one branch and leave the other idle;
        the planner refuses that combination in a run's first stage."""
        return False

    def selection_metric(self, after: Sequence[Method] = ()) -> str | None:
        """The validation metric that selects ``best.pt`` in this method's stage.

        ``"val/pgd_acc"`` (adversarial training, Rice et al. 2020), or ``"val/clean_acc"``
        when this stage and the stages ``after`` which it runs all train clean (PGD
        accuracy would pick an under-trained epoch); None for a pre-training stage, whose
        classifier head means nothing yet.
        """
        if self.pretraining:
            return None
        clean = self.trains_clean() and all(m.trains_clean() for m in after)
        return "val/clean_acc" if clean else "val/pgd_acc"

    def trains_encoder(self) -> bool:
        """Whether the optimizer updates the encoder (a parameter outside ``model.head``).

        The loop judges the collapse of a stage's features only then: a probe of a frozen
        encoder (:class:`~afa.methods.probe.LinearProbe`) cannot change them.
        """
        head = {id(p) for p in self.model.head.parameters()}
        return any(id(p) not in head for p in self.trainable_parameters())

    def collapse_message(self, stats: Mapping[str, float], epoch: int) -> str | None:
        """A warning when the encoder's features look collapsed, else None.

        ``stats`` holds the epoch's ``feat_separation`` and ``feat_erank`` of the encoder
        features g(x) and, when measured on the validation images,
        ``feat_separation_init``, the separation of a randomly initialised copy of the
        encoder on the same images; the rule is :func:`afa.methods.collapse.judge`
        (``docs/method.md#the-collapse-indicator``). Judged from the
        ``COLLAPSE_GRACE_EPOCHS``-th epoch on (``epoch`` counts from 0): every stage
        starts at its initialisation. The advice names this method's own
        :attr:`collapse_remedies` and :attr:`collapse_reference`; a method with neither is
        told what any training that does not learn should check.
        """
        if epoch < COLLAPSE_GRACE_EPOCHS:
            return None
        reasons = collapse_reasons(stats)
        if not reasons:
            return None
        what = "pre-training" if self.pretraining else "training"
        message = (
            f"the encoder's features look collapsed: {'; '.join(reasons)}. "
            f"The {what} may have collapsed"
        )
        if self.collapse_remedies:
            message += f"; remedies: {', '.join(self.collapse_remedies)}"
        else:
            message += "; check the learning rate, its schedule and the radius (threat.eps)"
        if self.collapse_reference:
            message += f" (see {self.collapse_reference})"
        return message


def accuracy_metric(logits: Tensor, y: Tensor) -> Tensor:
    """Fraction of correct predictions in the batch, detached (the loop weights by B)."""
    return (logits.detach().argmax(1) == y).float().mean()


def clean_adv_metrics(
    loss: Tensor, logits_clean: Tensor, logits_adv: Tensor, y: Tensor
) -> dict[str, Tensor]:
    """The step metrics of a method trained on clean and adversarial logits (TRADES, MART).

    Shape:
        loss: scalar; logits_clean, logits_adv: (B, K); y: (B,).
    """
    return {
        "loss": loss.detach(),
        "acc": accuracy_metric(logits_clean, y),
        "adv_acc": accuracy_metric(logits_adv, y),
    }


def check_choices(config: Any) -> None:
    """Raise a :class:`ConfigError` naming the first ``Literal`` field holding another value.

    ``afa.config.from_dict`` checks choices when a config is parsed; this covers a method
    config built directly in Python, for every ``Literal`` field at once.
    """
    for name, tp in get_type_hints(type(config)).items():
        if get_origin(tp) is Literal:
            value = getattr(config, name)
            if value not in get_args(tp):
                allowed = " or ".join(repr(a) for a in get_args(tp))
                raise ConfigError(f"method.{name}: expected {allowed}, got {value!r}")


def check_non_negative(config: Any, *names: str) -> None:
    """Raise a :class:`ConfigError` naming the first of ``names`` that is below 0 (or NaN);
    ``None`` (an option's "not set") passes."""
    for name in names:
        value = getattr(config, name)
        if value is not None and not float(value) >= 0:
            raise ConfigError(f"method.{name}: expected >= 0, got {value!r}")


__all__ = [
    "COLLAPSE_GRACE_EPOCHS",
    "Batch",
    "Method",
    "StepOutput",
    "accuracy_metric",
    "check_choices",
    "check_non_negative",
]
