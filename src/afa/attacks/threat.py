"""The threat model: one object shared by training, validation and evaluation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from afa.errors import ConfigError


@dataclass(frozen=True)
class ThreatModel:
    """An Lp perturbation budget and the PGD schedule used to search it.

    The same instance crafts training adversaries, validation adversaries and the
    evaluation's PGD, so the three cannot silently differ. ``afa eval`` may replace
    fields explicitly (``with_``); the change is recorded with the results.

    Attributes:
        norm: ``"linf"`` or ``"l2"``.
        eps: radius of the ball, in [0, 1] pixel units (``8/255`` in YAML is exact).
        step_size: PGD step (sign step for Linf, normalised-gradient step for L2).
        steps: PGD iterations (0 means no attack: the clean input).
        random_start: start from a uniform point in the ball.
        restarts: independent PGD runs. Training keeps, per example, the run with the
            highest final loss (``perturb``); evaluation counts an example as broken
            when any iterate of any run is misclassified (``perturb_worst_case``).
        bn_mode: batch-norm mode while crafting: ``"eval"`` (default) or ``"train"``.
    """

    norm: Literal["linf", "l2"] = "linf"
    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 10
    random_start: bool = True
    restarts: int = 1
    bn_mode: Literal["eval", "train"] = "eval"

    def __post_init__(self) -> None:
        if self.norm not in ("linf", "l2"):
            raise ConfigError(f"threat.norm: expected 'linf' or 'l2', got {self.norm!r}")
        if self.bn_mode not in ("eval", "train"):
            raise ConfigError(f"threat.bn_mode: expected 'eval' or 'train', got {self.bn_mode!r}")
        if not self.eps >= 0:
            raise ConfigError(f"threat.eps: expected >= 0, got {self.eps!r}")
        if not self.step_size >= 0:
            raise ConfigError(f"threat.step_size: expected >= 0, got {self.step_size!r}")
        if self.steps < 0:
            raise ConfigError(f"threat.steps: expected >= 0, got {self.steps!r}")
        if self.restarts < 1:
            raise ConfigError(f"threat.restarts: expected >= 1, got {self.restarts!r}")

    def with_(self, **changes: Any) -> ThreatModel:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """Short human label, e.g. ``Linf eps=8/255 (0.0314), PGD-10 step 2/255``."""
        return (
            f"{'Linf' if self.norm == 'linf' else 'L2'} eps={format_radius(self.eps)}, "
            f"{self.steps} steps of {format_radius(self.step_size)}"
            + (f", {self.restarts} restarts" if self.restarts > 1 else "")
        )


def pgd_label(threat: ThreatModel, objective: str = "CE") -> str:
    """The name of a PGD attack that says exactly what ran: ``PGD-20 (CE, BN eval)``.

    Every robust figure the project shows (validation in metrics.jsonl, eval.json,
    analysis.json, the report) is labelled with this, so two figures with the same label
    came from the same attack. Restarts and a missing random start are named when they
    differ from the defaults (``PGD-20 (CE, 5 restarts, no random start, BN train)``).

    Args:
        threat: the threat model the attack ran with (its ``steps`` and ``bn_mode``).
        objective: the objective's short name (``CE``, ``CW margin``, ``TRADES KL``).
    """
    parts = [objective]
    if threat.restarts > 1:
        parts.append(f"{threat.restarts} restarts")
    if not threat.random_start:
        parts.append("no random start")
    parts.append(f"BN {threat.bn_mode}")
    return f"PGD-{threat.steps} ({', '.join(parts)})"


def format_radius(x: float) -> str:
    """``8/255`` for the usual small multiples of a pixel level, else a plain number (0.2)."""
    k = x * 255
    if 0 < k <= 32 and abs(k - round(k)) < 1e-6:
        return f"{round(k)}/255"
    return f"{x:.4g}"
