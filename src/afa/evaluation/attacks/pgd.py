"""PGD on the cross-entropy (Madry et al. 2018) and on the CW margin (the "CW∞" of
TRADES/MART/AFA tables; Carlini & Wagner 2017's f_6 loss), as evaluation attacks.

Both are the evaluation's threat model with only ``steps`` replaced, by their one setting
of their own (``steps``: ``eval.pgd_steps`` and ``eval.cw_steps`` in a run's config, every
attack's ``afa eval --steps``); BN is in eval mode (the evaluated function is the model at
inference). Both run :func:`~afa.attacks.perturb_worst_case`: an example counts as broken
as soon as any iterate of any restart is misclassified, not only when the restart with the
highest loss is.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from afa.attacks import (
    Objective,
    ThreatModel,
    cross_entropy,
    cw_margin,
    perturb_worst_case,
    pgd_label,
)
from afa.errors import ConfigError
from afa.evaluation.attacks import (
    OPTIONS_KEY,
    EvalAttack,
    EvalSettings,
    attack_settings,
    register_attack,
)


def _pgd(
    name: str,
    model: nn.Module,
    threat: ThreatModel,
    steps: int,
    objective: Objective,
    short: str,
    generator: torch.Generator,
) -> EvalAttack:
    if steps < 1:
        raise ConfigError(f"{OPTIONS_KEY}.{name}.steps: expected >= 1, got {steps!r}")
    t = threat.with_(steps=steps, bn_mode="eval")

    def run(x: Tensor, y: Tensor) -> Tensor:
        return perturb_worst_case(model, x, y, t, objective, generator=generator)

    return EvalAttack(name, pgd_label(t, short), attack_settings(t, objective.__name__), run)


@register_attack("pgd")
def pgd_ce(
    model: nn.Module,
    threat: ThreatModel,
    settings: EvalSettings,
    generator: torch.Generator,
    *,
    steps: int = 20,
) -> EvalAttack:
    """``PGD-{steps} (CE, BN eval)``; its steps are also those of the sanity checks' PGD."""
    return _pgd("pgd", model, threat, steps, cross_entropy, "CE", generator)


@register_attack("cw")
def pgd_cw(
    model: nn.Module,
    threat: ThreatModel,
    settings: EvalSettings,
    generator: torch.Generator,
    *,
    steps: int = 30,
) -> EvalAttack:
    """``PGD-{steps} (CW margin, BN eval)``."""
    return _pgd("cw", model, threat, steps, cw_margin, "CW margin", generator)
