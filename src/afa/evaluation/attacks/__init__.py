"""Evaluation attacks: a registry of named attacks, each a label, its settings and a function.

``afa eval`` and :func:`afa.evaluation.evaluate` take attack *names* (``pgd``, ``cw``,
``autoattack``, ``apgd-ce`` ...) and build each through its registered factory from one
source of settings: the evaluation's threat model (the run's, with any change asked on the
command line applied) and :class:`EvalSettings` (steps of each PGD attack, batch size, seed).
What a factory returns is exactly what runs and exactly what eval.json records, so a label
or a recorded setting cannot disagree with the attack.

Adding an evaluation attack is one file in this package::

    @register_attack("fgsm")
    def fgsm_attack(model, threat, settings, generator):
        t = threat.with_(steps=1, step_size=threat.eps, random_start=False)
        return EvalAttack("fgsm", "FGSM (CE)", attack_settings(t, "cross_entropy"),
                          lambda x, y: perturb(model, x, y, t, cross_entropy))

Every module of this package is imported when the package is, so registering is all a
new file has to do.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from afa._registry import Registry
from afa.attacks import ThreatModel

AttackFn = Callable[[Tensor, Tensor], Tensor]
"""``(x, y) -> x_adv`` on one batch (on the evaluation device)."""


@dataclass(frozen=True)
class EvalSettings:
    """The evaluation's settings besides the threat model (``eval`` section of a run).

    Attributes:
        pgd_steps: steps of "PGD (CE)" and of the sanity checks' PGD runs.
        cw_steps: steps of "PGD (CW margin)".
        batch_size: examples per attack batch.
        seed: seed of every random start and of AutoAttack.
    """

    pgd_steps: int = 20
    cw_steps: int = 30
    batch_size: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("pgd_steps", "cw_steps", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"eval.{key}: expected >= 1, got {getattr(self, key)!r}")


@dataclass(frozen=True)
class EvalAttack:
    """One built evaluation attack.

    Attributes:
        name: the registered name (``pgd``).
        label: what tables and eval.json call it (``PGD-20 (CE, BN eval)``).
        settings: every setting it runs with, recorded verbatim in eval.json; the sanity
            checks find attacks by these (``objective``, ``version``), not by labels.
        run: the attack on one batch.
        chunk: examples per call of ``run`` (``None``: the evaluation's batch size).
    """

    name: str
    label: str
    settings: dict[str, Any]
    run: AttackFn
    chunk: int | None = None


AttackFactory = Callable[[nn.Module, ThreatModel, EvalSettings, torch.Generator], EvalAttack]
"""``(model, threat, settings, generator) -> EvalAttack``; ``generator`` (CPU) seeds
random starts and is shared by the attacks of one evaluation."""

EVAL_ATTACKS: Registry[AttackFactory] = Registry("evaluation attack")


def register_attack(name: str) -> Callable[[AttackFactory], AttackFactory]:
    """Register an evaluation attack factory under ``name``."""
    return EVAL_ATTACKS.register(name)


def attack_settings(threat: ThreatModel, objective: str, **extra: Any) -> dict[str, Any]:
    """The recorded settings of a PGD-type attack: the whole threat model it ran with."""
    return {**dataclasses.asdict(threat), "objective": objective, **extra}


def build_attacks(
    names: list[str] | tuple[str, ...],
    model: nn.Module,
    threat: ThreatModel,
    settings: EvalSettings,
    generator: torch.Generator,
) -> list[EvalAttack]:
    """Build the named attacks, in order (unknown names raise a ConfigError naming them)."""
    return [EVAL_ATTACKS.get(name)(model, threat, settings, generator) for name in names]


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "EVAL_ATTACKS",
    "AttackFactory",
    "AttackFn",
    "EvalAttack",
    "EvalSettings",
    "attack_settings",
    "build_attacks",
    "register_attack",
]
